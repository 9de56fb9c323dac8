//! `openshell-supervisor run`: standalone mode.
//!
//! Validates the policy before anything starts, launches the sandbox through the single-threaded launch
//! stage, serves the agent's network from the host side, reports what is enforced, reloads the network
//! policy on SIGHUP, and exits with the agent's status. Starting and serving the sandbox is shared with
//! gateway-driven mode (`crate::sandbox`); what is specific here is the command line, the terminal and
//! the policy file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use openshell_egress::events::EventSink;
use openshell_policy::Policy;
use tokio::signal::unix::{SignalKind, signal};

use crate::sandbox::{self, AgentStdio, Sandbox};
use crate::spec::RunInputs;

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
    /// Host path the agent must not see even where the policy covers it: it appears as an empty,
    /// read-only directory (repeatable).
    #[arg(long = "hide", value_name = "PATH")]
    hide: Vec<PathBuf>,
    /// Identifier of this sandbox in events. Default: generated.
    #[arg(long)]
    sandbox_id: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    sandbox::check_env_name(k).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

/// Why `run` failed before the agent's status was known.
enum Failure {
    InvalidInput(anyhow::Error),
    StartFailed(anyhow::Error),
}

pub fn main(args: RunArgs) -> ExitCode {
    crate::init_tracing("warn");
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

fn run(args: RunArgs) -> Result<u8, Failure> {
    let policy = load_policy(&args.policy).map_err(Failure::InvalidInput)?;
    let root = args.rootfs.clone().unwrap_or_else(|| PathBuf::from("/"));
    let workdir = resolve_workdir(args.workdir.as_deref()).map_err(Failure::InvalidInput)?;
    sandbox::check_root(&root).map_err(|e| Failure::InvalidInput(anyhow::anyhow!("--{e}")))?;
    let sandbox_id = args.sandbox_id.clone().unwrap_or_else(generate_id);
    let lookup = |name: &str| std::env::var(name).ok();
    let inputs = RunInputs {
        sandbox_id: &sandbox_id,
        root: &root,
        workdir: &workdir,
        argv: &args.command,
        extra_env: &args.env,
        lookup_env: &lookup,
        hidden: &args.hide,
        chown_workdir: false,
        controlling_tty: false,
    };
    let events = match &args.events {
        Some(path) => EventSink::file(path)
            .with_context(|| format!("--events {}", path.display()))
            .map_err(Failure::InvalidInput)?,
        None => EventSink::null(),
    };
    let plan = sandbox::plan(policy, &inputs).map_err(|e| Failure::StartFailed(e.into()))?;

    let runtime = crate::runtime().context("starting the async runtime").map_err(Failure::StartFailed)?;
    let policy_path = args.policy.clone();
    let sink = events.clone();
    let outcome = runtime.block_on(async move {
        // Handlers first: a SIGTERM that arrives while the sandbox starts must reach the agent, not kill
        // the supervisor with the default action.
        let signals = Signals::register().map_err(|e| Failure::StartFailed(e.into()))?;
        let sandbox = sandbox::start(plan, sink, AgentStdio::Inherit)
            .await
            .map_err(|e| Failure::StartFailed(e.into()))?;
        supervise(sandbox, &policy_path, signals).await
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

/// Forwards signals and reloads the policy file on SIGHUP until the agent exits.
async fn supervise(sandbox: Sandbox, policy_path: &Path, signals: Signals) -> Result<u8, Failure> {
    let waiter = sandbox.wait();
    tokio::pin!(waiter);
    let Signals { mut hup, mut term, mut int, mut quit } = signals;
    let stdin_is_tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let status = loop {
        tokio::select! {
            status = &mut waiter => break status,
            // A refused reload is reported by the reloader (event); the last good generation stays.
            _ = hup.recv() => { let _ = sandbox.reload_file(policy_path).await; }
            _ = term.recv() => sandbox.signal_agent(libc::SIGTERM),
            // A terminal's Ctrl-C and Ctrl-\ already reach the agent (same foreground process group).
            _ = quit.recv() => if !stdin_is_tty { sandbox.signal_agent(libc::SIGQUIT) },
            _ = int.recv() => if !stdin_is_tty { sandbox.signal_agent(libc::SIGINT) },
        }
    };
    let code = status.map_err(|e| Failure::StartFailed(e.into()))?;
    sandbox.finish(code).await;
    Ok(code)
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
    sandbox::check_workdir(&dir).map_err(|e| anyhow::anyhow!("--{e}"))
}

/// A random-enough identifier for events: time and pid, hex.
fn generate_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}{:x}", nanos & 0xffff_ffff_ffff, std::process::id())
}
