//! Running `openshell-supervisor run` (as root or as an unprivileged user, always inside a network
//! namespace the test made) and the probe without it (positive control), with timeouts so a hung
//! sandbox fails a test instead of hanging the suite.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::bins;
use crate::events::{self, Event};
use crate::policy::Policy;
use crate::probe_out::ProbeOutput;

/// The unprivileged identity tests use (nobody/nogroup on Debian).
pub const UNPRIV_UID: u32 = 65534;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// PATH given to the supervisor and to direct probe runs.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who starts the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    Root,
    Unprivileged,
}

impl User {
    pub fn label(self) -> &'static str {
        match self {
            User::Root => "root",
            User::Unprivileged => "unprivileged",
        }
    }
    fn prefix(self) -> Vec<String> {
        match self {
            User::Root => vec![],
            User::Unprivileged => ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Per-test directories and staged binaries.
pub struct Ctx {
    pub user: User,
    /// Network namespace every command runs in.
    pub ns: String,
    pub root: PathBuf,
    pub workdir: PathBuf,
    pub events_dir: PathBuf,
    /// Outside every policy: holds `secret` (mode 0644, so only the sandbox can stop a read).
    pub secret_dir: PathBuf,
    pub secret: PathBuf,
    pub secret_text: String,
    /// Outside every policy, mode 0777: only the sandbox can stop a write here.
    pub drop_dir: PathBuf,
    /// Listed read-only by `base_policy`; mode 0777, so only the sandbox can stop a write.
    pub ro_dir: PathBuf,
    pub probe: PathBuf,
    pub supervisor: PathBuf,
    pub bin_dir: PathBuf,
    counter: AtomicU32,
    _dir: tempfile::TempDir,
}

fn mkdir(p: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("mkdir {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

impl Ctx {
    pub fn new(user: User, ns: &str) -> Result<Ctx> {
        let s = bins::staging()?;
        let dir = bins::test_dir("t-")?;
        let root = dir.path().to_path_buf();
        let (workdir, events_dir, secret_dir, drop_dir, ro_dir) =
            (root.join("work"), root.join("events"), root.join("secret"), root.join("drop"), root.join("ro"));
        mkdir(&workdir, 0o777)?;
        mkdir(&events_dir, 0o755)?;
        mkdir(&secret_dir, 0o755)?;
        mkdir(&drop_dir, 0o777)?;
        mkdir(&ro_dir, 0o777)?; // only the sandbox may stop writes here
        if user == User::Unprivileged {
            for d in [&workdir, &events_dir] {
                std::os::unix::fs::chown(d, Some(UNPRIV_UID), Some(UNPRIV_UID))?;
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let secret = secret_dir.join("secret");
        let secret_text = format!(
            "TOPSECRET-{}-{}",
            std::process::id(),
            root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        );
        std::fs::write(&secret, &secret_text)?;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644))?;
        Ok(Ctx {
            user,
            ns: ns.to_string(),
            root,
            workdir,
            events_dir,
            secret_dir,
            secret,
            secret_text,
            drop_dir,
            ro_dir,
            probe: s.probe.clone(),
            supervisor: s.supervisor.clone(),
            bin_dir: s.bin_dir.clone(),
            counter: AtomicU32::new(0),
            _dir: dir,
        })
    }

    fn next(&self) -> u32 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// The base filesystem policy plus the staged binaries and `ro_dir`.
    pub fn base_policy(&self) -> Policy {
        Policy::base().read_only(&self.bin_dir).read_only(&self.ro_dir)
    }

    /// Writes a policy file (0644) and returns its path.
    pub fn policy_file(&self, yaml: &str) -> Result<PathBuf> {
        let p = self.root.join(format!("policy-{}.yaml", self.next()));
        std::fs::write(&p, yaml)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        Ok(p)
    }

    pub fn probe_path(&self) -> String {
        self.probe.display().to_string()
    }

    /// A supervisor invocation with this policy.
    pub fn sandbox(&self, policy: &Path) -> Run<'_> {
        Run {
            ctx: self,
            policy: policy.to_path_buf(),
            env: vec![],
            sup_env: vec![],
            args: vec![],
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs the probe WITHOUT the sandbox (positive control), in the same netns, as `user`.
    pub fn direct_probe(&self, user: User, args: &[&str]) -> Result<ProbeRun> {
        self.direct_probe_env(user, &[], args)
    }

    /// `direct_probe` with extra environment variables.
    pub fn direct_probe_env(&self, user: User, env: &[(&str, &str)], args: &[&str]) -> Result<ProbeRun> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).args(user.prefix()).arg(&self.probe).args(args);
        cmd.env_clear().env("PATH", PATH).current_dir(&self.root);
        cmd.envs(env.iter().copied());
        let out = run_with_timeout(cmd, DEFAULT_TIMEOUT, None)?;
        Ok(ProbeRun { probe: ProbeOutput::find_in(&out.stdout), out })
    }
}

/// One planned supervisor run.
pub struct Run<'a> {
    ctx: &'a Ctx,
    policy: PathBuf,
    env: Vec<(String, String)>,
    sup_env: Vec<(String, String)>,
    args: Vec<String>,
    timeout: Duration,
}

impl Run<'_> {
    /// `--env K=V` for the agent.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Environment of the supervisor process itself (e.g. `SSL_CERT_FILE`).
    pub fn sup_env(mut self, k: &str, v: &str) -> Self {
        self.sup_env.push((k.into(), v.into()));
        self
    }
    /// Extra arguments to `run` (before `--`).
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn command(&self, argv: &[&str]) -> (Command, PathBuf) {
        let c = self.ctx;
        let events = c.events_dir.join(format!("run-{}.jsonl", c.next()));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &c.ns]).args(c.user.prefix()).arg(&c.supervisor).arg("run");
        cmd.arg("--policy").arg(&self.policy).arg("--workdir").arg(&c.workdir).arg("--events").arg(&events);
        for (k, v) in &self.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.args(&self.args).arg("--").args(argv);
        cmd.env_clear().env("PATH", PATH).current_dir(&c.root);
        for (k, v) in &self.sup_env {
            cmd.env(k, v);
        }
        (cmd, events)
    }

    /// Runs to completion (or timeout).
    pub fn run(&self, argv: &[&str]) -> Result<Outcome> {
        let (cmd, events) = self.command(argv);
        run_with_timeout(cmd, self.timeout, Some(events))
    }

    /// Runs the staged probe as the agent.
    pub fn probe(&self, args: &[&str]) -> Result<ProbeRun> {
        let probe = self.ctx.probe_path();
        let mut argv = vec![probe.as_str()];
        argv.extend_from_slice(args);
        let out = self.run(&argv)?;
        Ok(ProbeRun { probe: ProbeOutput::find_in(&out.stdout), out })
    }

    /// Starts without waiting (for signals and reloads).
    pub fn spawn(&self, argv: &[&str]) -> Result<Running> {
        let (cmd, events) = self.command(argv);
        Running::start(cmd, Some(events))
    }
}

/// A started process with captured output.
pub struct Running {
    child: Child,
    pub events_path: Option<PathBuf>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
    started: Instant,
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>, done: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut b) = buf.lock() {
                b.extend_from_slice(&chunk[..n]);
            }
        }
        let _ = done.send(());
    });
}

impl Running {
    pub fn start(mut cmd: Command, events_path: Option<PathBuf>) -> Result<Running> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let (stdout, stderr) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (tx, done) = mpsc::channel();
        pump(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?, stdout.clone(), tx.clone());
        pump(child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?, stderr.clone(), tx);
        Ok(Running { child, events_path, stdout, stderr, done, started })
    }

    /// Host pid of the started process (`ip netns exec` and `setpriv` exec, so this is the supervisor).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let st = Command::new("kill").arg("-s").arg(sig).arg(self.pid().to_string()).status()?;
        anyhow::ensure!(st.success(), "kill -s {sig} {} failed", self.pid());
        Ok(())
    }

    /// Output captured so far.
    pub fn stdout_now(&self) -> String {
        self.stdout.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    pub fn events_now(&self) -> Vec<Event> {
        self.events_path.as_deref().map(|p| events::read(p).0).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout`; on timeout the process is killed and `timed_out` is set.
    pub fn wait(mut self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = self.child.kill();
                break self.child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        // Sandboxed descendants could keep the pipes open: give the readers a bounded grace period.
        for _ in 0..2 {
            let _ = self.done.recv_timeout(Duration::from_secs(3));
        }
        let text = |b: &Arc<Mutex<Vec<u8>>>| {
            b.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        };
        let (events, bad_event_lines) = self.events_path.as_deref().map(events::read).unwrap_or_default();
        Ok(Outcome {
            code: status.code(),
            signal: status.signal(),
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
            events,
            bad_event_lines,
            elapsed,
            timed_out,
        })
    }
}

impl Drop for Running {
    /// A test that panics mid-run must not leave a supervisor (and its sandbox) behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run_with_timeout(cmd: Command, timeout: Duration, events: Option<PathBuf>) -> Result<Outcome> {
    Running::start(cmd, events)?.wait(timeout)
}

/// How a process ended and what it left.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<Event>,
    pub bad_event_lines: Vec<String>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Outcome {
    /// A compact account for assertion messages.
    pub fn describe(&self) -> String {
        let tail = |s: &str| {
            s.lines().rev().take(25).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n    ")
        };
        format!(
            "exit code {:?} signal {:?}{} after {:?}\n  stdout:\n    {}\n  stderr:\n    {}\n  events:\n{}",
            self.code,
            self.signal,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            tail(&self.stdout),
            tail(&self.stderr),
            events::summary(&self.events)
        )
    }
}

/// A probe run: its report (if it ran at all) and the process outcome.
#[derive(Debug)]
pub struct ProbeRun {
    pub probe: Option<ProbeOutput>,
    pub out: Outcome,
}

impl ProbeRun {
    /// The report, or an error explaining that the probe never reported (sandbox did not start it).
    pub fn report(&self) -> Result<&ProbeOutput> {
        self.probe.as_ref().ok_or_else(|| {
            anyhow!("the probe printed no report (did the sandbox start it?)\n{}", self.out.describe())
        })
    }
}
