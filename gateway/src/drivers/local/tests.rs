//! Tests of the local driver against fake supervisors (small shell scripts). The environment is cleared for
//! the supervisor, so the scripts report through files in their working directory, `sandboxes/<id>/`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::files::{INSTANCE_TMP_FILE, write_instance};
use super::spawn::{PASSED_ENV, exit_reason};
use super::*;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

const SECRET: &str = "sekrit-4f1d9a0c";
const ENDPOINT: &str = "unix:///nonexistent/gateway.sock";

/// Records what it got (argv, initial environment, stdin), then waits like a supervisor would.
const RECORDER: &str = r#"#!/bin/sh
cat /proc/$$/cmdline > cmdline.out
cat /proc/$$/environ > environ.out
echo "$@" > args.out
cat > secret.tmp && mv secret.tmp secret.out
exec sleep 30
"#;

/// Ignores SIGTERM (the disposition survives exec), so only SIGKILL ends it.
const TERM_IGNORER: &str = r#"#!/bin/sh
trap '' TERM
cat > /dev/null
echo ok > ready.out
exec sleep 30
"#;

const EXITS_3: &str = "#!/bin/sh\ncat > /dev/null\nexit 3\n";

struct Fixture {
    tmp: TempDir,
    state: PathBuf,
    bin: PathBuf,
}

impl Fixture {
    fn new(script: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        fs::create_dir(&state).unwrap();
        let src = tmp.path().join("supervisor.src");
        fs::write(&src, script).unwrap();
        // Copied by another process: an executable written through an fd of this (multi-threaded) test
        // process could be inherited by a concurrent test's fork and make its exec fail with ETXTBSY.
        let bin = tmp.path().join("fake-supervisor");
        let copied = std::process::Command::new("cp").arg(&src).arg(&bin).status().unwrap();
        assert!(copied.success());
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        Fixture { tmp, state, bin }
    }

    fn driver(&self) -> LocalDriver {
        LocalDriver::new(self.state.clone(), self.bin.clone())
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.state.join("sandboxes").join(id)
    }
}

fn provision(id: &str) -> Provision {
    let spec = SandboxSpec { driver: "local".to_owned(), ..SandboxSpec::default() };
    Provision {
        sandbox_id: id.to_owned(),
        spec,
        secret: SECRET.to_owned(),
        gateway_endpoint: ENDPOINT.to_owned(),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(s) = fs::read_to_string(path) {
            return s;
        }
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next_exit(rx: &mut mpsc::UnboundedReceiver<Exit>) -> Exit {
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
}

fn alive(pid: u32) -> bool {
    procfs::stat(pid).is_some_and(|s| s.state != 'Z')
}

#[tokio::test]
async fn secret_arrives_on_stdin_only() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let inst = driver.create(&provision("sbx-secret")).await.unwrap();
    let dir = fx.dir("sbx-secret");

    assert_eq!(wait_for_file(&dir.join("secret.out")).await, SECRET);
    let args = wait_for_file(&dir.join("args.out")).await;
    assert_eq!(args.trim(), format!("session --gateway {ENDPOINT} --sandbox-id sbx-secret --secret-fd 0"));
    let cmdline = wait_for_file(&dir.join("cmdline.out")).await;
    assert!(!cmdline.contains(SECRET));
    let environ = wait_for_file(&dir.join("environ.out")).await;
    assert!(!environ.contains(SECRET));
    for var in environ.split('\0').filter(|v| !v.is_empty()) {
        let name = var.split('=').next().unwrap();
        assert!(PASSED_ENV.contains(&name), "unexpected variable {name} passed to the supervisor");
    }
    // And the running process (after exec) shows it nowhere either.
    let proc_dir = PathBuf::from(format!("/proc/{}", inst.pid));
    for file in ["cmdline", "environ"] {
        let bytes = fs::read(proc_dir.join(file)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(SECRET), "secret in /proc/PID/{file}");
    }
    driver.delete("sbx-secret", Some(&inst)).await.unwrap();
}

#[tokio::test]
async fn create_records_instance_with_strict_modes() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let inst = driver.create(&provision("sbx-modes")).await.unwrap();
    let dir = fx.dir("sbx-modes");

    assert_eq!(mode(&fx.state.join("sandboxes")), 0o711);
    assert_eq!(mode(&dir), 0o711);
    assert_eq!(mode(&dir.join("workdir")), 0o700);
    assert_eq!(mode(&dir.join("instance.json")), 0o600);
    assert_eq!(mode(&dir.join("supervisor.log")), 0o600);
    assert!(!dir.join(INSTANCE_TMP_FILE).exists());

    let on_disk: Instance = serde_json::from_slice(&fs::read(dir.join("instance.json")).unwrap()).unwrap();
    assert_eq!(on_disk, inst);
    let canonical_state = fs::canonicalize(&fx.state).unwrap();
    assert_eq!(inst.workdir, canonical_state.join("sandboxes/sbx-modes/workdir"));
    assert_eq!(inst.hidden_paths, vec![canonical_state]);
    assert_eq!(inst.start_time, procfs::stat(inst.pid).unwrap().start_time);

    assert_eq!(driver.inspect("sbx-modes", None).await, InstanceState::Running);
    assert_eq!(driver.inspect("sbx-modes", Some(&inst)).await, InstanceState::Running);
    let again = driver.start(&provision("sbx-modes")).await.unwrap_err();
    assert!(again.to_string().contains("already running"), "{again}");
    driver.delete("sbx-modes", None).await.unwrap();
}

#[tokio::test]
async fn stop_sends_sigterm_and_reports_the_exit() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let mut exits = driver.exits().unwrap();
    assert!(driver.exits().is_none());
    let inst = driver.create(&provision("sbx-term")).await.unwrap();
    wait_for_file(&fx.dir("sbx-term").join("secret.out")).await;

    let started = Instant::now();
    driver.stop("sbx-term", Some(&inst), Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "SIGTERM did not stop it: {:?}", started.elapsed());
    let exit = next_exit(&mut exits).await;
    assert_eq!(
        exit,
        Exit {
            sandbox_id: "sbx-term".to_owned(),
            pid: inst.pid,
            start_time: inst.start_time,
            reason: "supervisor killed by signal 15 (SIGTERM)".to_owned()
        }
    );
    assert_eq!(driver.inspect("sbx-term", None).await, InstanceState::Exited { reason: exit.reason });
    // Stopping what is already stopped is fine; the state (and workdir) stays for a later start.
    driver.stop("sbx-term", None, Duration::from_secs(1)).await.unwrap();
    assert!(fx.dir("sbx-term").join("workdir").is_dir());
    let restarted = driver.start(&provision("sbx-term")).await.unwrap();
    assert_ne!((restarted.pid, restarted.start_time), (inst.pid, inst.start_time));
    assert_eq!(driver.inspect("sbx-term", None).await, InstanceState::Running);
    driver.delete("sbx-term", None).await.unwrap();
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_grace() {
    let fx = Fixture::new(TERM_IGNORER);
    let driver = fx.driver();
    let mut exits = driver.exits().unwrap();
    let inst = driver.create(&provision("sbx-stubborn")).await.unwrap();
    wait_for_file(&fx.dir("sbx-stubborn").join("ready.out")).await;

    let grace = Duration::from_millis(300);
    let started = Instant::now();
    driver.stop("sbx-stubborn", None, grace).await.unwrap();
    assert!(started.elapsed() >= grace);
    assert!(!alive(inst.pid));
    assert_eq!(next_exit(&mut exits).await.reason, "supervisor killed by signal 9 (SIGKILL)");
    driver.delete("sbx-stubborn", None).await.unwrap();
}

#[tokio::test]
async fn delete_is_fast_complete_and_idempotent() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let inst = driver.create(&provision("sbx-del")).await.unwrap();
    let dir = fx.dir("sbx-del");
    wait_for_file(&dir.join("secret.out")).await;
    fs::write(dir.join("workdir").join("agent-file"), "x").unwrap();

    let started = Instant::now();
    driver.delete("sbx-del", Some(&inst)).await.unwrap();
    let took = started.elapsed();
    eprintln!("delete of a running sandbox took {took:?}");
    // The target is well under 50 ms; the bound leaves room for a loaded 2-core CI machine.
    assert!(took < Duration::from_millis(500), "delete took {took:?}");
    assert!(!dir.exists());
    assert!(!alive(inst.pid));

    driver.delete("sbx-del", Some(&inst)).await.unwrap();
    driver.delete("sbx-del", None).await.unwrap();
    assert_eq!(driver.inspect("sbx-del", None).await, InstanceState::Missing);
    assert!(driver.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn external_sigkill_is_reported() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let mut exits = driver.exits().unwrap();
    let inst = driver.create(&provision("sbx-killed")).await.unwrap();

    signal::kill(Pid::from_raw(i32::try_from(inst.pid).unwrap()), Signal::SIGKILL).unwrap();
    let exit = next_exit(&mut exits).await;
    assert_eq!(exit.sandbox_id, "sbx-killed");
    assert_eq!(exit.reason, "supervisor killed by signal 9 (SIGKILL)");
    assert_eq!(
        driver.inspect("sbx-killed", Some(&inst)).await,
        InstanceState::Exited { reason: exit.reason }
    );
    // Reaped by the wait task: no zombie left.
    assert!(procfs::stat(inst.pid).is_none_or(|s| s.start_time != inst.start_time));
    driver.delete("sbx-killed", None).await.unwrap();
}

#[tokio::test]
async fn exit_status_is_reported() {
    let fx = Fixture::new(EXITS_3);
    let driver = fx.driver();
    let mut exits = driver.exits().unwrap();
    driver.create(&provision("sbx-exit3")).await.unwrap();
    assert_eq!(next_exit(&mut exits).await.reason, "supervisor exited with status 3");
    assert_eq!(
        driver.inspect("sbx-exit3", None).await,
        InstanceState::Exited { reason: "supervisor exited with status 3".to_owned() }
    );
    driver.delete("sbx-exit3", None).await.unwrap();
}

#[tokio::test]
async fn reused_pid_is_never_signalled() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    // A live process that is NOT the recorded supervisor: same pid, other start time.
    let mut bystander = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let real = procfs::stat(bystander.id()).unwrap();
    let fake = Instance {
        pid: bystander.id(),
        start_time: real.start_time + 1,
        workdir: PathBuf::from("/nonexistent"),
        hidden_paths: vec![],
    };
    let dir = fx.dir("sbx-reused");
    fs::create_dir_all(&dir).unwrap();
    write_instance(&dir, &fake).unwrap();

    let gone = InstanceState::Exited { reason: format!("supervisor process {} is gone", fake.pid) };
    assert_eq!(driver.inspect("sbx-reused", None).await, gone);
    assert_eq!(driver.inspect("sbx-reused", Some(&fake)).await, gone);
    assert_eq!(
        driver.list().await.unwrap(),
        vec![ListedInstance { sandbox_id: "sbx-reused".to_owned(), running: false }]
    );
    driver.stop("sbx-reused", Some(&fake), Duration::from_millis(50)).await.unwrap();
    driver.delete("sbx-reused", None).await.unwrap();
    assert!(!dir.exists());
    assert!(bystander.try_wait().unwrap().is_none(), "the bystander was signalled");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[tokio::test]
async fn invalid_ids_are_rejected_before_any_io() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let long = "a".repeat(65);
    for id in ["", "UPPER", "../escape", "a/b", "a.b", "sp ace", long.as_str()] {
        let err = driver.create(&provision(id)).await.unwrap_err();
        assert!(matches!(err, DriverError::InvalidSpec(_)), "{id}: {err}");
        assert!(matches!(driver.start(&provision(id)).await, Err(DriverError::InvalidSpec(_))));
        assert!(driver.stop(id, None, Duration::ZERO).await.is_err());
        assert!(driver.delete(id, None).await.is_err());
        assert_eq!(driver.inspect(id, None).await, InstanceState::Missing);
    }
    assert!(!fx.state.join("sandboxes").exists());
    assert!(validate_id(&"a".repeat(64)).is_ok());
}

#[tokio::test]
async fn user_workdir_is_checked_and_never_removed() {
    let fx = Fixture::new(RECORDER);
    let driver = fx.driver();
    let a_file = fx.tmp.path().join("a-file");
    fs::write(&a_file, "").unwrap();
    let inside_state = fx.state.join("inside");
    fs::create_dir(&inside_state).unwrap();
    let bad = [
        "relative/dir".to_owned(),
        fx.tmp.path().join("missing").display().to_string(),
        a_file.display().to_string(),
        inside_state.display().to_string(),
        fx.state.display().to_string(),
    ];
    for workdir in bad {
        let mut p = provision("sbx-userwd");
        p.spec.workdir = Some(workdir.clone());
        let err = driver.create(&p).await.unwrap_err();
        assert!(matches!(err, DriverError::InvalidSpec(ref m) if m.contains(&workdir)), "{workdir}: {err}");
        assert!(!fx.dir("sbx-userwd").exists(), "{workdir}: state left behind");
    }

    let user_dir = fx.tmp.path().join("project");
    fs::create_dir(&user_dir).unwrap();
    fs::write(user_dir.join("keep"), "x").unwrap();
    let mut p = provision("sbx-userwd");
    p.spec.workdir = Some(user_dir.display().to_string());
    let inst = driver.create(&p).await.unwrap();
    assert_eq!(inst.workdir, user_dir);
    assert!(!fx.dir("sbx-userwd").join("workdir").exists());
    driver.delete("sbx-userwd", None).await.unwrap();
    assert!(user_dir.join("keep").exists());
}

#[tokio::test]
async fn failed_spawn_leaves_nothing_behind() {
    let fx = Fixture::new(RECORDER);
    let driver = LocalDriver::new(fx.state.clone(), fx.tmp.path().join("no-such-supervisor"));
    let err = driver.create(&provision("sbx-nobin")).await.unwrap_err();
    assert!(matches!(err, DriverError::Unavailable(..)), "{err}");
    assert!(!fx.dir("sbx-nobin").exists());
    let (ready, detail) = driver.status().await;
    assert!(!ready);
    assert!(detail.contains("no-such-supervisor"), "{detail}");
    let missing = driver.start(&provision("sbx-nobin")).await.unwrap_err();
    assert!(missing.to_string().contains("create it first"), "{missing}");
}

#[tokio::test]
async fn status_names_the_binary_and_privileges() {
    let fx = Fixture::new(RECORDER);
    let (ready, detail) = fx.driver().status().await;
    assert!(ready, "{detail}");
    assert!(detail.contains(&fx.bin.display().to_string()), "{detail}");
    assert!(detail.contains("root"), "{detail}");
    fs::set_permissions(&fx.bin, fs::Permissions::from_mode(0o644)).unwrap();
    // Root may execute anything with an x bit; without one, nobody may.
    let (ready, detail) = fx.driver().status().await;
    assert!(!ready, "{detail}");
}

#[tokio::test]
async fn new_driver_rediscovers_instances() {
    let fx = Fixture::new(RECORDER);
    let first = fx.driver();
    let running = first.create(&provision("sbx-one")).await.unwrap();
    first.create(&provision("sbx-two")).await.unwrap();
    first.stop("sbx-two", None, Duration::from_secs(5)).await.unwrap();
    fs::write(fx.state.join("sandboxes").join("not-a-dir"), "").unwrap();
    drop(first);

    // As after a gateway restart: nothing in memory, only the state directory.
    let second = fx.driver();
    assert_eq!(
        second.list().await.unwrap(),
        vec![
            ListedInstance { sandbox_id: "sbx-one".to_owned(), running: true },
            ListedInstance { sandbox_id: "sbx-two".to_owned(), running: false },
        ]
    );
    assert_eq!(second.inspect("sbx-one", None).await, InstanceState::Running);
    let started = Instant::now();
    second.delete("sbx-one", None).await.unwrap();
    eprintln!("delete of a rediscovered sandbox took {:?}", started.elapsed());
    assert!(!alive(running.pid));
    second.delete("sbx-two", None).await.unwrap();
    assert!(second.list().await.unwrap().is_empty());
}

#[test]
fn exit_reasons_read_well() {
    assert_eq!(exit_reason(ExitStatus::from_raw(3 << 8)), "supervisor exited with status 3");
    assert_eq!(exit_reason(ExitStatus::from_raw(9)), "supervisor killed by signal 9 (SIGKILL)");
}
