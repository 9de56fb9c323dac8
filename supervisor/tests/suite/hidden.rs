//! Hidden paths through the real binary (`openshell-supervisor run --hide PATH`), as root and rootless:
//! a "gateway state directory" holding a secret file, a listening unix socket and the sandbox's workdir,
//! below a directory the policy lists read-only. With `--hide` the agent sees the state directory empty
//! (but for the way to its workdir), cannot read the secret, cannot connect to the socket, and writes in
//! its workdir. The positive control is the same run without `--hide`: the agent reads the secret (and,
//! where only the mount view guards unix sockets, connects), so the test would catch a leak.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_openshell-supervisor");
const PYTHON: &str = "/usr/bin/python3";
const TIMEOUT: Duration = Duration::from_secs(60);
/// The unprivileged identity of the rootless runs (nobody/nogroup on Debian).
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    openshell_supervisor_sys::nix::unistd::geteuid().is_root()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The host side: `<base>/state/{secret, gateway.sock, sandboxes/t/workdir}`; `<base>` is listed by the
/// policy. Not below `/tmp`: the sandbox's `/tmp` is its own.
struct Layout {
    base: tempfile::TempDir,
    state: PathBuf,
    secret_text: String,
    socket: PathBuf,
    workdir: PathBuf,
    policy: PathBuf,
    _listener: UnixListener,
}

fn layout(rootless: bool) -> Layout {
    let base = tempfile::Builder::new().prefix("osh-hidden-").tempdir_in("/var/tmp").unwrap();
    chmod(base.path(), 0o755);
    let state = base.path().join("state");
    let workdir = state.join("sandboxes/t/workdir");
    std::fs::create_dir_all(&workdir).unwrap();
    chmod(&state, 0o755);
    // Like the gateway's: the per-sandbox directories are root's and closed; the supervisor of a
    // rootless run must still reach the workdir.
    let closed = if rootless { 0o755 } else { 0o700 };
    chmod(&state.join("sandboxes"), closed);
    chmod(&state.join("sandboxes/t"), closed);
    chmod(&workdir, 0o777);
    let secret_text = format!("gateway-secret-{}", std::process::id());
    std::fs::write(state.join("secret"), &secret_text).unwrap();
    chmod(&state.join("secret"), 0o644); // only the sandbox can stop a read
    let socket = state.join("gateway.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    chmod(&socket, 0o777); // only the sandbox can stop a connect
    let policy = base.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\n\
             filesystem_policy:\n  include_workdir: true\n  \
             read_only: [/usr, /lib, /lib64, /bin, /sbin, /etc, /proc, /dev/urandom, {base}, {secret}]\n  \
             read_write: [/tmp, /dev/null]\n\
             landlock:\n  compatibility: best_effort\n\
             process:\n  run_as_user: sandbox\n  run_as_group: sandbox\n",
            base = base.path().display(),
            secret = state.join("secret").display(),
        ),
    )
    .unwrap();
    chmod(&policy, 0o644);
    Layout { base, state, secret_text, socket, workdir, policy, _listener: listener }
}

/// What the agent reports, one `key=value` per line.
fn agent_script(l: &Layout) -> String {
    let s = l.state.display();
    format!(
        "echo \"list=[$(ls -A {s} | tr '\\n' ' ')]\"\n\
         echo \"sandboxes=[$(ls -A {s}/sandboxes/t 2>&1 | tr '\\n' ' ')]\"\n\
         if cat {s}/secret; then echo; echo secret=read; else echo secret=unreadable; fi\n\
         {PYTHON} -c 'import socket,sys; c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1]); \
         print(\"socket=connected\")' {sock} || echo socket=refused\n\
         cd {wd} && echo from-agent > written && echo workdir=writable\n\
         touch {s}/planted 2>/dev/null && echo mask=writable || echo mask=readonly\n",
        sock = l.socket.display(),
        wd = l.workdir.display(),
    )
}

struct Run {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    /// The `lifecycle` event that says what is enforced.
    enforcement: Value,
}

impl Run {
    fn has(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }
}

enum Outcome {
    Ran(Run),
    Skipped(String),
}

/// Runs the agent script in a sandbox, with `--hide <state>` when `hide`; `rootless` drops to nobody
/// first when running as root.
fn run(l: &Layout, hide: bool, rootless: bool) -> Outcome {
    let events = l.base.path().join(format!("events-{hide}.jsonl"));
    std::fs::write(&events, b"").unwrap();
    chmod(&events, 0o666);
    let mut cmd = if rootless && is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups", "--"]);
        c.arg(SUPERVISOR);
        c
    } else {
        Command::new(SUPERVISOR)
    };
    cmd.arg("run")
        .arg("--policy")
        .arg(&l.policy)
        .arg("--workdir")
        .arg(&l.workdir)
        .arg("--events")
        .arg(&events);
    if hide {
        cmd.arg("--hide").arg(&l.state);
    }
    cmd.args(["--", "/bin/sh", "-c", &agent_script(l)]);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Skipped(format!("cannot run {SUPERVISOR} (setpriv missing?): {e}")),
    };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sandbox did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    if rootless && !status.success() && stderr.contains("user namespace") {
        return Outcome::Skipped(format!("unprivileged user namespaces are unavailable: {stderr}"));
    }
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let enforcement = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|e| e["reason"] == "started")
        .map(|e| e["detail"]["enforcement"].clone())
        .unwrap_or(Value::Null);
    Outcome::Ran(Run { status, stdout, stderr, enforcement })
}

fn check_hidden_state_dir(rootless: bool) {
    let label = if rootless { "rootless" } else { "root" };
    if !Path::new(PYTHON).exists() {
        eprintln!("SKIPPED [{label}]: no {PYTHON} to connect to the unix socket");
        return;
    }
    let l = layout(rootless);

    // Positive control: without --hide the same agent reads the secret (the test can see a leak).
    let control = match run(&l, false, rootless) {
        Outcome::Ran(r) => r,
        Outcome::Skipped(why) => {
            eprintln!("SKIPPED [{label}]: {why}");
            return;
        }
    };
    assert!(control.status.success(), "[{label}] control failed: {}\n{}", control.stderr, control.stdout);
    assert!(control.has("secret=read"), "[{label}] control must read the secret: {}", control.stdout);
    assert!(control.stdout.contains(&l.secret_text), "[{label}] {}", control.stdout);
    assert!(control.has("list=[gateway.sock sandboxes secret ]"), "[{label}] {}", control.stdout);
    let unix = control.enforcement["landlock"]["unix_socket_connect"].as_str().unwrap_or("").to_string();
    if unix.starts_with("mount view only") {
        assert!(control.has("socket=connected"), "[{label}] control must connect: {}", control.stdout);
    } else {
        eprintln!("[{label}] Landlock restricts unix connect ({unix}); control socket: {}", control.stdout);
    }

    let hidden = match run(&l, true, rootless) {
        Outcome::Ran(r) => r,
        Outcome::Skipped(why) => panic!("[{label}] the control ran but the hidden run was skipped: {why}"),
    };
    let out = &hidden.stdout;
    assert!(hidden.status.success(), "[{label}] hidden run failed: {}\n{out}", hidden.stderr);
    // Empty but for the way to the workdir; the workdir's parents are traversable.
    assert!(hidden.has("list=[sandboxes ]"), "[{label}] {out}");
    assert!(hidden.has("sandboxes=[workdir ]"), "[{label}] {out}");
    assert!(hidden.has("secret=unreadable") && !out.contains(&l.secret_text), "[{label}] {out}");
    assert!(hidden.stderr.contains("No such file"), "[{label}] the secret does not exist: {}", hidden.stderr);
    assert!(hidden.has("socket=refused"), "[{label}] {out}");
    assert!(hidden.has("workdir=writable"), "[{label}] {out}\n{}", hidden.stderr);
    assert!(hidden.has("mask=readonly"), "[{label}] {out}");
    assert_eq!(std::fs::read_to_string(l.workdir.join("written")).unwrap(), "from-agent\n");
    assert!(!l.state.join("planted").exists());

    let view = &hidden.enforcement["filesystem_view"];
    let said: Vec<&str> = view["hidden"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let state = l.state.display().to_string();
    assert!(said.contains(&format!("{state}: masked (empty directory, read-only)").as_str()), "{said:?}");
    let secret = format!("{state}/secret: policy path inside a hidden path, no Landlock rule");
    assert!(said.contains(&secret.as_str()), "[{label}] {said:?}");
    let skipped = hidden.enforcement["landlock"]["skipped_paths"].to_string();
    assert!(!skipped.contains("secret"), "[{label}] no Landlock rule was even tried: {skipped}");
}

#[test]
fn hidden_state_dir_is_empty_to_the_agent_as_root() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    check_hidden_state_dir(false);
}

#[test]
fn hidden_state_dir_is_empty_to_the_agent_rootless() {
    check_hidden_state_dir(true);
}

#[test]
fn hidden_path_must_be_absolute() {
    let l = layout(true);
    let out = Command::new(SUPERVISOR)
        .arg("run")
        .arg("--policy")
        .arg(&l.policy)
        .arg("--workdir")
        .arg(&l.workdir)
        .args(["--hide", "relative/state", "--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("hidden") && stderr.contains("relative/state"), "{stderr}");
}
