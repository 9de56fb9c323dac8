//! Gateway-driven mode through the real binary: `openshell-supervisor session` against an in-process fake
//! gateway (a tonic `SupervisorSession` server on a unix socket in a temp dir) that records every message
//! it receives, answers Hello with Welcome and PolicyPush like the real one, and lets the test push
//! messages, restart the gateway, or refuse the credentials.

mod fake_gateway;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openshell_proto::supervisor::v1::{
    Hello, LaunchSpec, PolicyPush, Stop, gateway_message, supervisor_message::Msg,
};

use self::fake_gateway::{FakeGateway, Rec};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_openshell-supervisor");
const SECRET: &str = "s3cret-0f-this-sandbox-9a7c";
const SANDBOX_ID: &str = "sbx-session-test";
/// Bound on a sandbox start on a loaded 2-core host.
const START: Duration = Duration::from_secs(20);

fn policy_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples").join(name);
    std::fs::read_to_string(path).unwrap()
}

/// The supervisor under test; killed on drop if still running.
struct Supervisor {
    child: Child,
    log: PathBuf,
}

impl Supervisor {
    fn spawn(dir: &Path, socket: &Path) -> Self {
        let log = dir.join("supervisor.log");
        let mut child = Command::new(SUPERVISOR)
            .args(["session", "--gateway"])
            .arg(format!("unix://{}", socket.display()))
            .args(["--sandbox-id", SANDBOX_ID, "--secret-fd", "0"])
            .env("OPENSHELL_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Like the local driver: the secret through a pipe on fd 0, then EOF.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(SECRET.as_bytes()).unwrap();
        drop(stdin);
        Supervisor { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn signal(&self, sig: openshell_supervisor_sys::nix::sys::signal::Signal) {
        let pid = openshell_supervisor_sys::nix::unistd::Pid::from_raw(self.child.id() as i32);
        openshell_supervisor_sys::nix::sys::signal::kill(pid, sig).unwrap();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir with the socket and an agent workdir, a fake gateway and the supervisor.
struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    gw: FakeGateway,
    sup: Supervisor,
}

fn launch_spec(workdir: &Path, script: &str) -> LaunchSpec {
    LaunchSpec {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        workdir: workdir.display().to_string(),
        rootfs: String::new(),
        env: HashMap::from([("GREETING".to_string(), "hello".to_string())]),
        hidden_paths: vec![],
        chown_workdir: false,
        tty: false,
    }
}

impl Harness {
    fn start(script: &str, policy: &str) -> Self {
        Self::start_with(script, policy, false)
    }

    fn start_with(script: &str, policy: &str, reject: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // The agent runs as another uid and must reach its workdir.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let socket = dir.path().join("gateway.sock");
        let launch = launch_spec(dir.path(), script);
        let gw = FakeGateway::start(&socket, launch, PolicyPush { revision: 1, yaml: policy.to_string() });
        gw.shared.reject.store(reject, Ordering::SeqCst);
        let sup = Supervisor::spawn(dir.path(), &socket);
        Harness { _dir: dir, socket, gw, sup }
    }

    /// Waits for a message; panics with the supervisor's log when it does not come.
    fn expect(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Rec) -> bool) -> Rec {
        match self.gw.wait_for(timeout, pred) {
            Some(r) => r,
            None => panic!(
                "no {what} within {timeout:?}; received {:#?}\nsupervisor log:\n{}",
                self.gw.all(),
                self.sup.log()
            ),
        }
    }

    fn expect_started(&mut self) -> (i32, serde_json::Value) {
        let started = self.expect("AgentStarted", START, |r| matches!(r.msg, Msg::Started(_)));
        let Msg::Started(s) = started.msg else { unreachable!() };
        let enforcement: serde_json::Value = serde_json::from_str(&s.enforcement_json).unwrap();
        (s.init_pid, enforcement)
    }

    fn expect_exit(&mut self, code: i32) {
        let exited = self.expect("AgentExited", START, |r| matches!(r.msg, Msg::Exited(_)));
        let Msg::Exited(e) = exited.msg else { unreachable!() };
        assert_eq!(e.exit_code, code, "{}", self.sup.log());
        let status = self.sup.wait(Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(code), "supervisor exit; log:\n{}", self.sup.log());
    }
}

fn hello(r: &Rec) -> Option<&Hello> {
    match &r.msg {
        Msg::Hello(h) => Some(h),
        _ => None,
    }
}

fn ack(r: &Rec, revision: u64) -> Option<(bool, String)> {
    match &r.msg {
        Msg::Ack(a) if a.revision == revision => Some((a.ok, a.error.clone())),
        _ => None,
    }
}

#[test]
fn session_launches_reports_output_and_exit_status() {
    let script = "echo out; echo \"greeting=$GREETING\"; echo err >&2; exit 3";
    let mut h = Harness::start(script, &policy_text("minimal.yaml"));
    let first = h.expect("Hello", START, |r| hello(r).is_some());
    let hello = hello(&first).unwrap();
    assert_eq!(
        (hello.sandbox_id.as_str(), hello.loaded_policy_revision, hello.agent_running, hello.init_pid),
        (SANDBOX_ID, 0, false, 0)
    );
    let (init_pid, enforcement) = h.expect_started();
    assert!(init_pid > 1);
    assert!(enforcement["landlock"].is_object(), "{enforcement}");
    assert_eq!(enforcement["process_events"], "seccomp-notify", "{enforcement}");
    let (ok, error) = h.expect("Ack(1)", START, |r| ack(r, 1).is_some()).msg.into_ack();
    assert!(ok, "{error}");

    h.expect_exit(3);
    let lines: Vec<(i32, String)> =
        h.gw.all()
            .into_iter()
            .filter_map(|r| match r.msg {
                Msg::Logs(b) => Some(b.lines.into_iter().map(|l| (l.stream, l.text))),
                _ => None,
            })
            .flatten()
            .collect();
    let (stdout, stderr) = (1, 2);
    assert!(lines.contains(&(stdout, "out".into())), "{lines:?}");
    assert!(lines.contains(&(stdout, "greeting=hello".into())), "the launch spec's env: {lines:?}");
    assert!(lines.contains(&(stderr, "err".into())), "{lines:?}");
    // One session, and the last word comes after the output.
    let all = h.gw.all();
    assert!(all.iter().all(|r| r.session == 1), "{all:#?}");
    let exited_at = all.iter().position(|r| matches!(r.msg, Msg::Exited(_))).unwrap();
    let last_log = all.iter().rposition(|r| matches!(r.msg, Msg::Logs(_))).unwrap();
    assert!(last_log < exited_at, "logs after AgentExited: {all:#?}");
    // Every request carried the credentials.
    let creds = h.gw.shared.credentials.lock().unwrap().clone();
    assert!(!creds.is_empty());
    assert!(
        creds.iter().all(|(auth, id)| auth == &format!("Bearer {SECRET}") && id == SANDBOX_ID),
        "{creds:?}"
    );
    assert!(!h.sup.log().contains(SECRET), "the secret is in the supervisor's log");
}

trait IntoAck {
    fn into_ack(self) -> (bool, String);
}

impl IntoAck for Msg {
    fn into_ack(self) -> (bool, String) {
        match self {
            Msg::Ack(a) => (a.ok, a.error),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

#[test]
fn policy_pushes_are_acked_and_an_invalid_one_keeps_the_last_good() {
    let mut h = Harness::start("sleep 30", &policy_text("minimal.yaml"));
    h.expect_started();
    h.expect("Ack(1)", START, |r| ack(r, 1).is_some_and(|(ok, _)| ok));

    // The secret came through a pipe on fd 0: nothing of it in the supervisor's argv or environment.
    let pid = h.sup.child.id();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("--secret-fd"));
    for (what, bytes) in [("cmdline", &cmdline), ("environ", &environ)] {
        assert!(!String::from_utf8_lossy(bytes).contains(SECRET), "the secret is in /proc/{pid}/{what}");
    }
    // Its stdin no longer leads to the driver's pipe.
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, Path::new("/dev/null"));

    let pushed = Instant::now();
    h.gw.push(gateway_message::Msg::Policy(PolicyPush { revision: 2, yaml: policy_text("github.yaml") }));
    let (ok, error) = h.expect("Ack(2)", Duration::from_secs(5), |r| ack(r, 2).is_some()).msg.into_ack();
    assert!(ok, "valid revision refused: {error}");
    assert!(pushed.elapsed() < Duration::from_secs(2), "ack took {:?}", pushed.elapsed());

    let invalid = "version: 1\nnetwork_policies:\n  broken: {endpoints: 7}\n";
    h.gw.push(gateway_message::Msg::Policy(PolicyPush { revision: 3, yaml: invalid.into() }));
    let (ok, error) = h.expect("Ack(3)", Duration::from_secs(5), |r| ack(r, 3).is_some()).msg.into_ack();
    assert!(!ok, "an invalid revision was accepted");
    eprintln!("refused revision: {error}");
    assert!(error.contains("invalid policy") && error.contains("endpoints"), "{error}");
    // The agent keeps running under revision 2.
    std::thread::sleep(Duration::from_millis(300));
    assert!(h.sup.running(), "{}", h.sup.log());
    assert!(!h.gw.all().iter().any(|r| matches!(r.msg, Msg::Exited(_))));
    h.gw.push(gateway_message::Msg::Stop(Stop { grace_ms: 2000 }));
    h.expect_exit(128 + libc::SIGTERM);
}

#[test]
fn a_denied_connection_is_a_network_event() {
    let script = "curl -sS -m 10 http://example.com/ >/dev/null 2>&1; echo curl=$?";
    let mut h = Harness::start(script, &policy_text("minimal.yaml"));
    let batch = h.expect("a network deny event", START, |r| match &r.msg {
        Msg::Events(b) => b.events_json.iter().any(|e| {
            let v: serde_json::Value = serde_json::from_str(e).unwrap();
            v["kind"] == "network" && v["decision"] == "deny" && v["host"] == "example.com"
        }),
        _ => false,
    });
    let Msg::Events(b) = batch.msg else { unreachable!() };
    let event = b
        .events_json
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .find(|v| v["kind"] == "network" && v["host"] == "example.com")
        .unwrap();
    assert_eq!(event["sandbox_id"], SANDBOX_ID);
    assert!(event["reason"].is_string(), "{event}");
    h.expect_exit(0);
}

#[test]
fn the_supervisor_reconnects_to_a_restarted_gateway() {
    let policy = policy_text("minimal.yaml");
    let mut h = Harness::start("sleep 30", &policy);
    let (init_pid, _) = h.expect_started();
    h.expect("Ack(1)", START, |r| ack(r, 1).is_some());
    let launch = h.gw.shared.launch.clone();
    // The gateway dies (every connection with it) and comes back on the same socket.
    h.gw.crash();
    // Long enough for the backoff to reach its cap: the supervisor must still be back within about a second.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(h.sup.running(), "the supervisor must survive the gateway: {}", h.sup.log());
    let restarted = Instant::now();
    h.gw = FakeGateway::start(&h.socket, launch, PolicyPush { revision: 1, yaml: policy });
    let again = h.expect("Hello after the restart", Duration::from_secs(5), |r| hello(r).is_some());
    let elapsed = restarted.elapsed();
    let hello = hello(&again).unwrap();
    eprintln!("reconnected {elapsed:?} after the gateway came back");
    assert!(elapsed < Duration::from_millis(1500), "reconnected after {elapsed:?}");
    assert_eq!(again.session, 1, "the first session of the new gateway");
    assert_eq!((hello.loaded_policy_revision, hello.agent_running, hello.init_pid), (1, true, init_pid));
    assert!(hello.enforcement_json.contains("landlock"), "{}", hello.enforcement_json);
    // Still the same agent: no second launch.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!h.gw.all().iter().any(|r| matches!(r.msg, Msg::Started(_))));
    // SIGTERM to the supervisor reaches the agent and takes the normal exit path.
    h.sup.signal(openshell_supervisor_sys::nix::sys::signal::Signal::SIGTERM);
    h.expect_exit(128 + libc::SIGTERM);
}

#[test]
fn stop_escalates_to_sigkill_after_the_grace_period() {
    let mut h = Harness::start("trap '' TERM; sleep 30", &policy_text("minimal.yaml"));
    h.expect_started();
    h.expect("Ack(1)", START, |r| ack(r, 1).is_some());
    let stopped = Instant::now();
    h.gw.push(gateway_message::Msg::Stop(Stop { grace_ms: 500 }));
    h.expect_exit(128 + libc::SIGKILL);
    let took = stopped.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn refused_credentials_are_retried_not_fatal() {
    let mut h = Harness::start_with("echo recovered", &policy_text("minimal.yaml"), true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.gw.shared.attempts.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(h.gw.shared.attempts.load(Ordering::SeqCst) >= 3, "{}", h.sup.log());
    assert!(h.sup.running(), "the supervisor gave up: {}", h.sup.log());
    assert!(h.sup.log().contains("Unauthenticated"), "{}", h.sup.log());
    // Accepted again (e.g. the gateway's store came back): the session proceeds from the start.
    h.gw.shared.reject.store(false, Ordering::SeqCst);
    h.expect_started();
    h.expect_exit(0);
}

#[test]
fn an_invalid_first_policy_is_a_launch_failure() {
    let mut h = Harness::start("echo never", "version: 1\nfilesystem_policy: 12\n");
    let (ok, error) = h.expect("Ack(1)", START, |r| ack(r, 1).is_some()).msg.into_ack();
    assert!(!ok);
    assert!(error.contains("filesystem_policy"), "{error}");
    let failed = h.expect("LaunchFailed", START, |r| matches!(r.msg, Msg::LaunchFailed(_)));
    let Msg::LaunchFailed(f) = failed.msg else { unreachable!() };
    assert!(f.error.contains("invalid policy"), "{}", f.error);
    assert_eq!(h.sup.wait(Duration::from_secs(10)).and_then(|s| s.code()), Some(2), "{}", h.sup.log());
    assert!(!h.gw.all().iter().any(|r| matches!(r.msg, Msg::Started(_) | Msg::Logs(_))));
}
