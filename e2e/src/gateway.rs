//! A real gateway for end-to-end tests: started from the staged binary on a per-test state directory,
//! killed with SIGKILL and restarted at will; gRPC clients over its unix socket; the staged `openshell`
//! CLI run against it. Dropping it kills the gateway and every supervisor started for its state directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper_util::rt::TokioIo;
use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::gateway_service_client::GatewayServiceClient;
use openshell_proto::gateway::v1::log_service_client::LogServiceClient;
use openshell_proto::gateway::v1::sandbox_service_client::SandboxServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::bins;

pub struct GatewayProc {
    pub state: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Extra command-line arguments of the gateway.
    args: Vec<String>,
    /// Run the gateway as this uid (via setpriv) instead of root.
    uid: Option<u32>,
    /// Kept alive for the gateway's lifetime (the state lives inside it).
    _dir: tempfile::TempDir,
}

impl GatewayProc {
    /// A fresh state directory and a gateway serving it.
    pub fn start() -> Result<GatewayProc> {
        Self::start_with(&[])
    }

    /// Same, with extra gateway arguments (e.g. `--listen-tcp ADDR`, `--http ADDR`).
    pub fn start_with(args: &[&str]) -> Result<GatewayProc> {
        Self::make(args, None)
    }

    /// A gateway run by the unprivileged test user: its sandboxes are rootless.
    pub fn start_unprivileged() -> Result<GatewayProc> {
        Self::make(&[], Some(crate::sandbox::UNPRIV_UID))
    }

    fn make(args: &[&str], uid: Option<u32>) -> Result<GatewayProc> {
        let dir = bins::test_dir("gw-")?;
        let state = dir.path().join("state");
        let log = dir.path().join("gateway.log");
        if let Some(uid) = uid {
            std::fs::create_dir(&state)?;
            std::os::unix::fs::chown(&state, Some(uid), Some(uid))?;
        }
        let args = args.iter().map(ToString::to_string).collect();
        let mut gw = GatewayProc { state, log, child: None, args, uid, _dir: dir };
        gw.spawn()?;
        Ok(gw)
    }

    fn spawn(&mut self) -> Result<()> {
        let s = bins::staging()?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match self.uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups"]);
                c.arg(&s.gateway);
                c
            }
            None => Command::new(&s.gateway),
        };
        let child = cmd
            .args(&self.args)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--reconcile-interval-ms")
            .arg("500")
            .env("OPENSHELL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning the gateway")?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(15))
    }

    fn wait_ready(&mut self, max: Duration) -> Result<()> {
        let deadline = Instant::now() + max;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the gateway exited with {status}: {}", self.log_text());
            }
            let ok = rt.block_on(async {
                let Ok(ch) = self.channel().await else { return false };
                GatewayServiceClient::new(ch).get_status(pb::GetStatusRequest {}).await.is_ok()
            });
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the gateway did not become ready: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.state.join("gateway.sock")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no cleanup at all (the socket file stays behind, as after a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    pub async fn channel(&self) -> Result<Channel> {
        let path = self.socket();
        let ch = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await?;
        Ok(ch)
    }

    pub async fn sandboxes(&self) -> Result<SandboxServiceClient<Channel>> {
        Ok(SandboxServiceClient::new(self.channel().await?))
    }

    pub async fn logs(&self) -> Result<LogServiceClient<Channel>> {
        Ok(LogServiceClient::new(self.channel().await?))
    }

    /// Runs the staged CLI against this gateway (no auto-start, no user config).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        self.cli_env(args, &[])
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let s = bins::staging()?;
        let mut cmd = Command::new(&s.cli);
        cmd.args(args)
            .env("OPENSHELL_STATE_DIR", &self.state)
            .env("OPENSHELL_NO_AUTOSTART", "1")
            .env_remove("OPENSHELL_CONFIG")
            .env("XDG_CONFIG_HOME", self.state.join("no-config-home"))
            .env_remove("OPENSHELL_GATEWAY")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_with_timeout(cmd, Duration::from_secs(120))
    }

    /// The state directory of one sandbox.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state.join("sandboxes").join(id)
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill9();
        kill_supervisors_of(&self.socket());
    }
}

/// SIGKILL every process whose command line names this gateway socket (the supervisors it started).
pub fn kill_supervisors_of(socket: &Path) {
    let needle = socket.display().to_string();
    for pid in supervisor_pids(&needle) {
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    }
}

/// Pids of processes whose argv contains `needle`.
pub fn supervisor_pids(needle: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Runs a command, killing it after `max`.
pub fn run_with_timeout(mut cmd: Command, max: Duration) -> Result<Output> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("spawn")?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(max) {
        Ok(out) => Ok(out?),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            bail!("command timed out after {max:?}")
        }
    }
}

/// Waits until `check` holds for the sandbox (re-read every 20 ms), or fails with its last state.
pub async fn wait_for(
    client: &mut SandboxServiceClient<Channel>,
    name: &str,
    max: Duration,
    check: impl Fn(&pb::Sandbox) -> bool,
) -> Result<pb::Sandbox> {
    let deadline = Instant::now() + max;
    loop {
        let last = client.get_sandbox(pb::GetSandboxRequest { name: name.into() }).await;
        if let Ok(s) = &last
            && check(s.get_ref())
        {
            return Ok(s.get_ref().clone());
        }
        if Instant::now() > deadline {
            bail!("sandbox {name} did not reach the expected state in {max:?}; last: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn phase_is(s: &pb::Sandbox, p: pb::Phase) -> bool {
    s.phase == p as i32
}

/// All stored log entries of a sandbox (no follow).
pub async fn all_logs(gw: &GatewayProc, name: &str) -> Result<Vec<pb::LogEntry>> {
    let mut client = gw.logs().await?;
    let mut stream =
        client.get_logs(pb::GetLogsRequest { name: name.into(), ..Default::default() }).await?.into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await? {
        out.push(e);
    }
    Ok(out)
}

/// Runs the staged CLI against the local gateway of `state` (`OPENSHELL_STATE_DIR`), killing it after
/// `max`. No user config applies: `OPENSHELL_CONFIG` is removed and `XDG_CONFIG_HOME` points at a
/// directory that does not exist (an explicit `OPENSHELL_CONFIG` naming a missing file is an error by
/// design, so it cannot be used to mean "no config"). `autostart: false` sets
/// `OPENSHELL_NO_AUTOSTART=1`; `true` removes it, so the CLI may start a gateway for `state` itself.
pub fn cli_at(
    state: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    autostart: bool,
    max: Duration,
) -> Result<Output> {
    let mut cmd = cli_command(state, args, autostart)?;
    cmd.stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_timeout(cmd, max)
}

/// The staged CLI with `args` against the local gateway of `state`, environment as [`cli_at`] describes;
/// stdio left to the caller.
pub fn cli_command(state: &Path, args: &[&str], autostart: bool) -> Result<Command> {
    let s = bins::staging()?;
    let no_config = state.parent().unwrap_or(state).join("no-such-config-home");
    let mut cmd = Command::new(&s.cli);
    cmd.args(args)
        .env("OPENSHELL_STATE_DIR", state)
        .env_remove("OPENSHELL_CONFIG")
        .env("XDG_CONFIG_HOME", &no_config)
        .env_remove("OPENSHELL_GATEWAY");
    if autostart {
        cmd.env_remove("OPENSHELL_NO_AUTOSTART");
    } else {
        cmd.env("OPENSHELL_NO_AUTOSTART", "1");
    }
    Ok(cmd)
}

impl GatewayProc {
    /// The staged CLI against this gateway with [`cli_at`] (no auto-start, no user config), killed
    /// after `max` (a hung command fails the test instead of hanging the suite).
    pub fn run_cli(&self, args: &[&str], max: Duration) -> Result<Output> {
        cli_at(&self.state, args, &[], false, max)
    }
}

/// Whether `pid` is a live process (a zombie nobody reaped counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses (which may itself contain ')').
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
