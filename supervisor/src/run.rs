//! `openshell-supervisor run`: standalone mode.
//!
//! Validates the policy before anything starts, launches the sandbox through the single-threaded launch
//! stage, serves the agent's network from the host side, reports what is enforced, reloads the network
//! policy on SIGHUP, and exits with the agent's status.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use openshell_egress::events::{Event, EventDecision, EventKind, EventSink};
use openshell_egress::{Egress, EgressOptions, EgressSockets, IdentitySource};
use openshell_policy::{NetworkEngine, Policy};
use tokio::signal::unix::{SignalKind, signal};

use crate::binaries;
use crate::launch::denials::{self, DenialCtx};
use crate::launch::{self, LaunchOptions, Launched};
use crate::reload::Reloader;
use crate::spec::{self, RunInputs};

/// Exit status when the input (policy, flags) is invalid. Same as clap's usage errors.
const EXIT_INVALID_INPUT: u8 = 2;
/// Exit status when the sandbox could not be started (container convention).
const EXIT_START_FAILED: u8 = 125;

#[derive(Args)]
pub struct RunArgs {
    /// Policy file (YAML, `version: 1`).
    #[arg(long)]
    policy: PathBuf,
    /// Directory the agent works in (read-write, its cwd and HOME). Default: the current directory.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Root filesystem for the sandbox. Default: the host's `/`, read-only.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Append one JSON object per line for every security-relevant event to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Extra environment variable for the agent (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Identifier of this sandbox in events. Default: generated.
    #[arg(long)]
    sandbox_id: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    let valid = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{k}` is not a valid variable name (letters, digits, _; not starting with a digit)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Why `run` failed before the agent's status was known.
enum Failure {
    InvalidInput(anyhow::Error),
    StartFailed(anyhow::Error),
}

pub fn main(args: RunArgs) -> ExitCode {
    init_tracing();
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::InvalidInput(e)) => {
            eprintln!("openshell-supervisor: {e:#}");
            ExitCode::from(EXIT_INVALID_INPUT)
        }
        Err(Failure::StartFailed(e)) => {
            eprintln!("openshell-supervisor: the sandbox could not be started: {e:#}");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENSHELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn run(args: RunArgs) -> Result<u8, Failure> {
    let policy = load_policy(&args.policy).map_err(Failure::InvalidInput)?;
    let root = args.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
    let workdir = resolve_workdir(args.workdir.as_deref()).map_err(Failure::InvalidInput)?;
    if !root.join("bin").exists() && !root.join("usr").exists() {
        return Err(Failure::InvalidInput(anyhow::anyhow!(
            "--rootfs {}: not a root filesystem (no /bin or /usr)",
            root.display()
        )));
    }
    let sandbox_id = args.sandbox_id.clone().unwrap_or_else(generate_id);
    let lookup = |name: &str| std::env::var(name).ok();
    let inputs = RunInputs {
        sandbox_id: &sandbox_id,
        root: &root,
        workdir: &workdir,
        argv: &args.command,
        extra_env: &args.env,
        lookup_env: &lookup,
    };
    let policy = binaries::with_resolved_binaries(policy, &root);
    let sandbox = spec::sandbox_spec(&policy, &inputs);
    let events = match &args.events {
        Some(path) => EventSink::file(path)
            .with_context(|| format!("--events {}", path.display()))
            .map_err(Failure::InvalidInput)?,
        None => EventSink::null(),
    };
    let policy = Arc::new(policy);
    let engine = NetworkEngine::new(policy.clone(), 1)
        .context("compiling the network policy")
        .map_err(Failure::StartFailed)?;

    // One worker: the supervisor is I/O-bound (tunnels splice in the kernel) and shares the host with
    // hundreds of others; a second worker costs memory and cross-thread wakeups, not latency. Blocking
    // work (slow identity lookups, hashing, the launch) runs on the blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")
        .map_err(Failure::StartFailed)?;
    // Opened before the launch so that no Landlock record of the sandbox is missed.
    let audit = denials::prepare_landlock_audit();
    let options = LaunchOptions { landlock_audit: audit.is_ok() };
    let ctx =
        Ctx { events: events.clone(), sandbox_id, policy_path: args.policy.clone(), policy, root, audit };
    let outcome = runtime.block_on(async move {
        // Handlers first: a SIGTERM that arrives while the sandbox starts must reach the agent, not kill
        // the supervisor with the default action.
        let signals = Signals::register().map_err(|e| Failure::StartFailed(e.into()))?;
        // The agent starts here; its first connections wait in the listeners' backlogs until the proxy
        // serves them, its first refused syscalls until the denial watchers answer them.
        let launched = tokio::task::spawn_blocking(move || launch::launch(&sandbox, options))
            .await
            .map_err(|e| Failure::StartFailed(e.into()))?
            .map_err(|e| Failure::StartFailed(e.into()))?;
        supervise(launched, Arc::new(engine), ctx, signals).await
    });
    events.flush(Duration::from_secs(2));
    outcome
}

/// The signals the supervisor handles, registered before the sandbox starts.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }
}

/// What the supervision loop needs besides the launched sandbox.
struct Ctx {
    events: EventSink,
    sandbox_id: String,
    policy_path: PathBuf,
    policy: Arc<Policy>,
    root: PathBuf,
    /// Landlock's audit records, or why they cannot be read.
    audit: Result<denials::AuditSource, String>,
}

async fn supervise(
    launched: Launched,
    engine: Arc<NetworkEngine>,
    ctx: Ctx,
    signals: Signals,
) -> Result<u8, Failure> {
    let Ctx { events, sandbox_id, policy_path, policy, root, audit } = ctx;
    let Launched { init_pid, agent_pid, listeners, mut report, control, seccomp_listener } = launched;
    // First: the agent's refused syscalls wait for an answer.
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
    let egress = Egress::start(sockets, options, engine.clone(), events.clone())
        .await
        .context("starting the egress proxy")
        .map_err(Failure::StartFailed)?;
    let mut started = Event::new(&sandbox_id, EventKind::Lifecycle, EventDecision::Info)
        .with_detail("enforcement", serde_json::to_value(&report).unwrap_or_default());
    started.reason = Some("started".into());
    started.generation = Some(engine.generation());
    started.pid = Some(agent_pid);
    events.emit(started);
    if !report.landlock.fully_enforced {
        let mut degraded = Event::new(&sandbox_id, EventKind::Lifecycle, EventDecision::Audit)
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
            let mut off = Event::new(&sandbox_id, EventKind::Lifecycle, EventDecision::Audit)
                .with_detail("severity", severity)
                .with_detail(field, why);
            off.reason = Some(format!("{field}_unavailable"));
            events.emit(off);
        }
    }

    let reloader = Reloader::new(
        (policy_path, root),
        policy,
        engine.generation(),
        control.clone(),
        events.clone(),
        sandbox_id.clone(),
    );
    let waiter = {
        let control = control.clone();
        tokio::task::spawn_blocking(move || control.wait())
    };
    tokio::pin!(waiter);
    let Signals { mut hup, mut term, mut int, mut quit } = signals;
    let stdin_is_tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let status = loop {
        tokio::select! {
            status = &mut waiter => break status,
            _ = hup.recv() => reloader.reload(&egress).await,
            _ = term.recv() => forward(&control, libc::SIGTERM),
            // A terminal's Ctrl-C and Ctrl-\ already reach the agent (same foreground process group).
            _ = quit.recv() => if !stdin_is_tty { forward(&control, libc::SIGQUIT) },
            _ = int.recv() => if !stdin_is_tty { forward(&control, libc::SIGINT) },
        }
    };
    // The sandbox is gone: the watchers report what they still hold.
    let _ = tokio::task::spawn_blocking(move || watchers.stop(Duration::from_millis(500))).await;
    let code = match status {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => return Err(Failure::StartFailed(e.into())),
        Err(e) => return Err(Failure::StartFailed(e.into())),
    };
    let mut exited =
        Event::new(&sandbox_id, EventKind::Lifecycle, EventDecision::Info).with_detail("status", code);
    exited.reason = Some("exited".into());
    events.emit(exited);
    drop(egress);
    Ok(code)
}

fn forward(control: &launch::Control, sig: i32) {
    if let Err(e) = control.signal_agent(sig) {
        tracing::warn!("forwarding signal {sig} to the agent: {e}");
    }
}

fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read policy {}", path.display()))?;
    Policy::from_yaml(&text).map_err(|errors| anyhow::anyhow!("invalid policy {}:\n{errors}", path.display()))
}

fn resolve_workdir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().context("cannot determine the current directory")?,
    };
    let dir = dir.canonicalize().with_context(|| format!("--workdir {}: does not exist", dir.display()))?;
    if !dir.is_dir() {
        anyhow::bail!("--workdir {}: not a directory", dir.display());
    }
    if dir == Path::new("/") {
        anyhow::bail!("--workdir /: the root directory cannot be the writable workdir");
    }
    Ok(dir)
}

/// A random-enough identifier for events: time and pid, hex.
fn generate_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}
