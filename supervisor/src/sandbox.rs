//! Starting a sandbox and supervising it: the part shared by standalone mode (`run`) and gateway-driven
//! mode (`session`). The modes differ only in where the inputs come from (flags or the gateway's launch
//! spec), where the agent's stdio goes and what drives reloads, signals and the exit.
//!
//! Order (architecture/supervisor.md, steps 1-2 and 8): the policy is validated and its network part
//! compiled before anything starts ([`plan`]); the kernel's audit log is opened before the launch so that
//! no Landlock record of the sandbox is missed; after the launch the denial watchers start first (the
//! agent's refused syscalls wait for their answer), then the egress proxy; one `lifecycle` event states
//! what is enforced.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use openshell_egress::events::{Event, EventDecision, EventKind, EventSink};
use openshell_egress::{Egress, EgressError, EgressOptions, EgressSockets, IdentitySource};
use openshell_policy::{EngineError, NetworkEngine, Policy};

use crate::binaries;
use crate::launch::denials::{self, DenialCtx, Watchers};
use crate::launch::{Control, EnforcementReport, LaunchError, LaunchOptions, Launched, SandboxSpec};
use crate::reload::{ReloadError, Reloader};
use crate::spec::{self, RunInputs};

/// How long the denial watchers may take to report what they still hold once the sandbox is gone.
const WATCHERS_STOP: Duration = Duration::from_millis(500);

/// Invalid inputs, found before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("workdir {}: does not exist", path.display())]
    WorkdirMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("workdir {}: not a directory", path.display())]
    WorkdirNotDir { path: PathBuf },
    #[error("workdir /: the root directory cannot be the writable workdir")]
    WorkdirIsRoot,
    #[error("rootfs {}: not a root filesystem (no /bin or /usr)", path.display())]
    NotARoot { path: PathBuf },
    #[error("`{name}` is not a valid variable name (letters, digits, _; not starting with a digit)")]
    EnvName { name: String },
}

/// Why the sandbox could not be started or supervised.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("compiling the network policy")]
    Compile(#[source] EngineError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("starting the egress proxy")]
    Egress(#[source] EgressError),
    #[error("a supervisor task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Canonical workdir; refuses what the sandbox cannot use as its writable working directory.
pub fn check_workdir(dir: &Path) -> Result<PathBuf, InputError> {
    let canonical = dir
        .canonicalize()
        .map_err(|source| InputError::WorkdirMissing { path: dir.to_path_buf(), source })?;
    if !canonical.is_dir() {
        return Err(InputError::WorkdirNotDir { path: canonical });
    }
    if canonical == Path::new("/") {
        return Err(InputError::WorkdirIsRoot);
    }
    Ok(canonical)
}

/// Refuses a root that is obviously not a root filesystem (a typo would give the agent an empty world).
pub fn check_root(root: &Path) -> Result<(), InputError> {
    if !root.join("bin").exists() && !root.join("usr").exists() {
        return Err(InputError::NotARoot { path: root.to_path_buf() });
    }
    Ok(())
}

/// Environment variable names the agent can be given: letters, digits and `_`, not starting with a digit.
pub fn check_env_name(name: &str) -> Result<(), InputError> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(()) } else { Err(InputError::EnvName { name: name.to_string() }) }
}

/// A validated policy turned into what the launch needs, before anything runs.
pub struct Plan {
    spec: SandboxSpec,
    policy: Arc<Policy>,
    engine: Arc<NetworkEngine>,
    root: PathBuf,
}

impl Plan {
    /// The agent's uid and gid (inside the sandbox's user namespace when rootless).
    pub fn agent_ids(&self) -> (u32, u32) {
        (self.spec.uid, self.spec.gid)
    }
}

/// Resolves the policy's binaries inside the root, builds the launch spec and compiles generation 1 of
/// the network decisions.
pub fn plan(policy: Policy, inputs: &RunInputs<'_>) -> Result<Plan, StartError> {
    let policy = binaries::with_resolved_binaries(policy, inputs.root);
    let spec = spec::sandbox_spec(&policy, inputs);
    let policy = Arc::new(policy);
    let engine = NetworkEngine::new(policy.clone(), 1).map_err(StartError::Compile)?;
    Ok(Plan { spec, policy, engine: Arc::new(engine), root: inputs.root.to_path_buf() })
}

/// The agent's stdin, stdout and stderr (inherited by the launch stage, sandbox init and the agent).
pub enum AgentStdio {
    /// The supervisor's own: the agent talks to the caller's terminal.
    Inherit,
    /// Given descriptors (gateway-driven mode: `/dev/null` and pipes).
    Given { stdin: Stdio, stdout: Stdio, stderr: Stdio },
}

/// A running sandbox served by this supervisor.
pub struct Sandbox {
    /// Host pid of sandbox init (pid 1 of the sandbox).
    pub init_pid: i32,
    pub report: EnforcementReport,
    control: Control,
    egress: Egress,
    watchers: Watchers,
    reloader: Reloader,
    events: EventSink,
    sandbox_id: String,
}

/// Launches the sandbox of `plan` and starts serving it. Call from the runtime that will serve the
/// agent's network; the launch itself runs on the blocking pool.
pub async fn start(plan: Plan, events: EventSink, stdio: AgentStdio) -> Result<Sandbox, StartError> {
    let Plan { spec, policy, engine, root } = plan;
    let sandbox_id = spec.sandbox_id.clone();
    // Opened before the launch so that no Landlock record of the sandbox is missed.
    let audit = denials::prepare_landlock_audit();
    let options = LaunchOptions { landlock_audit: audit.is_ok() };
    // The agent starts here; its first connections wait in the listeners' backlogs until the proxy serves
    // them, its first refused syscalls until the denial watchers answer them.
    let launched = tokio::task::spawn_blocking(move || match stdio {
        AgentStdio::Inherit => crate::launch::launch(&spec, options),
        AgentStdio::Given { stdin, stdout, stderr } => {
            Control::launch_with_stdio(&spec, options, stdin, stdout, stderr)
        }
    })
    .await
    .map_err(StartError::Task)??;
    let Launched { init_pid, agent_pid, listeners, mut report, control, seccomp_listener } = launched;
    let denial_ctx =
        DenialCtx { sandbox_id: sandbox_id.clone(), events: events.clone(), init_pid, agent_pid };
    let watchers = denials::start(denial_ctx, seccomp_listener, audit, &mut report);
    let sockets = EgressSockets {
        proxy: listeners.proxy,
        capture: listeners.capture,
        dns_udp: listeners.dns_udp,
        dns_tcp: listeners.dns_tcp,
        sock_diag: listeners.sock_diag,
        observer: listeners.observer,
    };
    let options = EgressOptions::new(sandbox_id.clone(), IdentitySource::SandboxInit { init_pid });
    // On error, dropping `control` closes the channel: sandbox init exits and takes the agent with it.
    let egress =
        Egress::start(sockets, options, engine.clone(), events.clone()).await.map_err(StartError::Egress)?;
    emit_enforcement(&events, &sandbox_id, &report, engine.generation(), agent_pid);
    let reloader = Reloader::new(
        root,
        (policy, engine.generation()),
        control.clone(),
        events.clone(),
        sandbox_id.clone(),
    );
    Ok(Sandbox { init_pid, report, control, egress, watchers, reloader, events, sandbox_id })
}

/// One `lifecycle` event stating what is enforced, and one more for each reduced or unavailable part.
fn emit_enforcement(
    events: &EventSink,
    sandbox_id: &str,
    report: &EnforcementReport,
    generation: u64,
    pid: i32,
) {
    let mut started = Event::new(sandbox_id, EventKind::Lifecycle, EventDecision::Info)
        .with_detail("enforcement", serde_json::to_value(report).unwrap_or_default());
    started.reason = Some("started".into());
    started.generation = Some(generation);
    started.pid = Some(pid);
    events.emit(started);
    if !report.landlock.fully_enforced {
        let mut degraded = Event::new(sandbox_id, EventKind::Lifecycle, EventDecision::Audit)
            .with_detail("severity", "high")
            .with_detail("landlock", serde_json::to_value(&report.landlock).unwrap_or_default());
        degraded.reason = Some("landlock_degraded".into());
        events.emit(degraded);
    }
    for (field, value, severity) in [
        ("process_events", &report.process_events, "medium"),
        ("filesystem_events", &report.filesystem_events, "low"),
        ("refusal_events", &report.refusal_events, "low"),
    ] {
        if let Some(why) = value.strip_prefix("unavailable: ") {
            let mut off = Event::new(sandbox_id, EventKind::Lifecycle, EventDecision::Audit)
                .with_detail("severity", severity)
                .with_detail(field, why);
            off.reason = Some(format!("{field}_unavailable"));
            events.emit(off);
        }
    }
}

fn process_kill(pid: i32) -> Result<(), openshell_supervisor_sys::nix::Error> {
    openshell_supervisor_sys::process::send_signal(pid, libc::SIGKILL)
}

impl Sandbox {
    /// The enforcement report as JSON (what the gateway stores and shows).
    pub fn enforcement_json(&self) -> String {
        serde_json::to_string(&self.report).unwrap_or_default()
    }

    /// Resolves with the agent's exit code (128+N if killed by signal N) once the sandbox is gone. Only
    /// one caller may wait; the future may be polled across loop iterations (it owns a task handle).
    pub fn wait(&self) -> impl Future<Output = Result<u8, StartError>> + Send + 'static {
        let control = self.control.clone();
        let waiter = tokio::task::spawn_blocking(move || control.wait());
        async move { waiter.await.map_err(StartError::Task)?.map_err(StartError::Launch) }
    }

    /// Applies the network part of the policy in `text`; see [`Reloader::apply`].
    pub async fn apply_policy(&self, text: &str) -> Result<u64, ReloadError> {
        self.reloader.apply(&self.egress, text).await
    }

    /// Reads the policy file again and applies it (standalone SIGHUP).
    pub async fn reload_file(&self, path: &Path) -> Result<u64, ReloadError> {
        self.reloader.reload_file(&self.egress, path).await
    }

    /// Sends `sig` to the agent through sandbox init. Blocking for at most one request to init (it answers
    /// from its poll loop at once).
    pub fn signal_agent(&self, sig: i32) {
        signal_agent(&self.control, sig);
    }

    /// A handle to signal the agent from another task (e.g. the blocking pool).
    pub fn signaller(&self) -> impl Fn(i32) + Send + Sync + 'static {
        let control = self.control.clone();
        move |sig| signal_agent(&control, sig)
    }

    /// Last resort when the agent does not die: SIGKILL sandbox init, which takes every process of the
    /// sandbox's pid namespace with it.
    pub fn kill_init(&self) {
        if let Err(e) = process_kill(self.init_pid) {
            tracing::warn!(init_pid = self.init_pid, "killing sandbox init: {e}");
        }
    }

    /// The sandbox is gone with `code`: the watchers report what they still hold, one `lifecycle` event
    /// says how the agent ended, and the egress layer stops.
    pub async fn finish(self, code: u8) {
        let Sandbox { watchers, events, sandbox_id, egress, .. } = self;
        let _ = tokio::task::spawn_blocking(move || watchers.stop(WATCHERS_STOP)).await;
        let mut exited =
            Event::new(&sandbox_id, EventKind::Lifecycle, EventDecision::Info).with_detail("status", code);
        exited.reason = Some("exited".into());
        events.emit(exited);
        drop(egress);
    }
}

fn signal_agent(control: &Control, sig: i32) {
    if let Err(e) = control.signal_agent(sig) {
        tracing::warn!("forwarding signal {sig} to the agent: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        for ok in ["A", "_x", "PATH", "a1_B"] {
            assert!(check_env_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A=B", "Ä"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn workdir_checks() {
        assert!(matches!(check_workdir(Path::new("/")), Err(InputError::WorkdirIsRoot)));
        assert!(matches!(
            check_workdir(Path::new("/nonexistent/openshell")),
            Err(InputError::WorkdirMissing { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(check_workdir(&file), Err(InputError::WorkdirNotDir { .. })));
        assert_eq!(check_workdir(dir.path()).unwrap(), dir.path().canonicalize().unwrap());
        assert!(check_root(Path::new("/")).is_ok());
        assert!(check_root(dir.path()).is_err());
    }
}
