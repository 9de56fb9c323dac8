//! From the first session to a running sandbox: wait for the gateway's Welcome (the launch spec) and
//! PolicyPush (the policy), then start the sandbox exactly like standalone mode does, with the agent's
//! stdio on pipes, or on a pseudo-terminal for `tty` launches.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use openshell_egress::events::EventSink;
use openshell_policy::{Policy, PolicyErrors};
use openshell_proto::supervisor::v1::{Hello, LaunchSpec, PolicyAck, PolicyPush, gateway_message};

use super::Signals;
use super::link::{ConnEvent, Connection};
use super::outbox::Outbox;
use super::stdio::{self, ReaderTasks, Readers};
use super::terminal::Terminal;
use crate::sandbox::{self, AgentStdio, InputError, Sandbox, StartError};
use crate::spec::RunInputs;
use openshell_supervisor_sys::pty;

/// Exit status when the gateway's inputs (policy, launch spec) are invalid. Same as `run`.
const EXIT_INVALID_INPUT: u8 = 2;
/// Exit status when the sandbox could not be started. Same as `run`.
const EXIT_START_FAILED: u8 = 125;

/// What the gateway wants run.
pub struct Assignment {
    launch: Option<LaunchSpec>,
    policy: PolicyPush,
}

/// The session ended before anything was launched.
pub enum Interrupted {
    /// The gateway sent Stop.
    Stopped,
    /// The supervisor received this signal.
    Signal(i32),
}

/// Waits, across reconnects, until one session delivered both Welcome and PolicyPush.
pub async fn await_assignment(
    conn: &mut Connection,
    hello: &Hello,
    signals: &mut Signals,
) -> Result<Assignment, Interrupted> {
    let mut welcome = None;
    let mut policy = None;
    loop {
        if let (Some(launch), Some(policy)) = (&welcome, &policy) {
            return Ok(Assignment { launch: Option::clone(launch), policy: PolicyPush::clone(policy) });
        }
        tokio::select! {
            ev = conn.next(|| hello.clone()) => match ev {
                ConnEvent::Message(gateway_message::Msg::Welcome(w)) => {
                    conn.set_heartbeat(super::heartbeat_interval(w.heartbeat_interval_ms));
                    tracing::info!(session_id = %w.session_id, "welcomed by the gateway");
                    welcome = Some(w.launch);
                }
                ConnEvent::Message(gateway_message::Msg::Policy(p)) => policy = Some(p),
                ConnEvent::Message(gateway_message::Msg::Stop(_)) => return Err(Interrupted::Stopped),
                // Nothing to relay before the launch; the gateway's wait for the relay times out.
                ConnEvent::Message(gateway_message::Msg::Heartbeat(_) | gateway_message::Msg::OpenRelay(_))
                | ConnEvent::Up => {}
                // A new session starts from scratch: the gateway sends both again.
                ConnEvent::Down(_) => (welcome, policy) = (None, None),
            },
            sig = signals.next() => if sig != libc::SIGHUP { return Err(Interrupted::Signal(sig)) },
        }
    }
}

/// Why the sandbox was not started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchFailure {
    #[error("invalid policy (revision {revision})")]
    Policy {
        revision: u64,
        #[source]
        errors: PolicyErrors,
    },
    #[error("the gateway sent no launch spec")]
    NoLaunchSpec,
    #[error("the launch spec has no command")]
    NoCommand,
    #[error("the launch spec's {field} is not an absolute path: {value:?}")]
    NotAbsolute { field: &'static str, value: String },
    #[error("invalid launch spec")]
    Input(#[source] InputError),
    #[error("cannot create the agent's output pipes")]
    Pipes(#[source] std::io::Error),
    #[error("cannot create the agent's terminal")]
    Terminal(#[source] std::io::Error),
    #[error("the sandbox could not be started")]
    Start(#[source] StartError),
}

impl LaunchFailure {
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchFailure::Pipes(_) | LaunchFailure::Terminal(_) | LaunchFailure::Start(_) => {
                EXIT_START_FAILED
            }
            _ => EXIT_INVALID_INPUT,
        }
    }

    /// The refusal of the policy revision, when the policy itself is what failed.
    pub fn refused_policy(&self) -> Option<PolicyAck> {
        match self {
            LaunchFailure::Policy { revision, errors } => {
                Some(PolicyAck { revision: *revision, ok: false, error: errors.to_string() })
            }
            _ => None,
        }
    }
}

/// A sandbox started for the gateway.
pub struct Started {
    pub sandbox: Sandbox,
    pub readers: ReaderTasks,
    /// The agent's terminal (`tty` launches).
    pub terminal: Option<Arc<Terminal>>,
    /// The policy revision in force.
    pub revision: u64,
}

/// Validates the assignment and starts the sandbox; its events go to `events`, its output to `outbox`.
pub async fn launch(
    sandbox_id: &str,
    assignment: Assignment,
    events: EventSink,
    outbox: Arc<Outbox>,
) -> Result<Started, LaunchFailure> {
    let Assignment { launch, policy: push } = assignment;
    let policy = Policy::from_yaml(&push.yaml)
        .map_err(|errors| LaunchFailure::Policy { revision: push.revision, errors })?;
    let launch = launch.ok_or(LaunchFailure::NoLaunchSpec)?;
    if launch.command.is_empty() || launch.command[0].is_empty() {
        return Err(LaunchFailure::NoCommand);
    }
    let absolute = |field: &'static str, value: &str| {
        let path = PathBuf::from(value);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(LaunchFailure::NotAbsolute { field, value: value.into() })
        }
    };
    let root =
        if launch.rootfs.is_empty() { PathBuf::from("/") } else { absolute("rootfs", &launch.rootfs)? };
    sandbox::check_root(&root).map_err(LaunchFailure::Input)?;
    let workdir =
        sandbox::check_workdir(&absolute("workdir", &launch.workdir)?).map_err(LaunchFailure::Input)?;
    let hidden =
        launch.hidden_paths.iter().map(|p| absolute("hidden_paths", p)).collect::<Result<Vec<_>, _>>()?;
    // Sorted: the order of a protobuf map is arbitrary, the agent's environment should not be.
    let mut env: Vec<(String, String)> = launch.env.into_iter().collect();
    env.sort();
    for (name, _) in &env {
        sandbox::check_env_name(name).map_err(LaunchFailure::Input)?;
    }
    // Nothing of the supervisor's own environment (the gateway's, inherited through the driver) reaches
    // the agent: the launch spec's `env` is the whole story.
    let lookup = |_: &str| None;
    let inputs = RunInputs {
        sandbox_id,
        root: &root,
        workdir: &workdir,
        argv: &launch.command,
        extra_env: &env,
        lookup_env: &lookup,
        hidden: &hidden,
        chown_workdir: launch.chown_workdir,
        controlling_tty: launch.tty,
    };
    let plan = sandbox::plan(policy, &inputs).map_err(LaunchFailure::Start)?;
    let (stdio, readers, terminal) = if launch.tty {
        let (stdio, terminal) = agent_terminal(plan.agent_ids()).map_err(LaunchFailure::Terminal)?;
        (stdio, Readers::none(), Some(terminal))
    } else {
        let (stdio, readers) = stdio::agent_pipes().map_err(LaunchFailure::Pipes)?;
        (stdio, readers, None)
    };
    // Served before the launch: the agent may write before the launch returns, and a full pipe would stall
    // it.
    let readers = readers.spawn(outbox);
    let sandbox = sandbox::start(plan, events, stdio).await.map_err(LaunchFailure::Start)?;
    tracing::info!(init_pid = sandbox.init_pid, revision = push.revision, "agent started");
    Ok(Started { sandbox, readers, terminal, revision: push.revision })
}

/// A pseudo-terminal for the agent: its side becomes the agent's stdin, stdout and stderr (the supervisor
/// keeps no copy, so the master reads end-of-file once the sandbox is gone), the master is served at once.
fn agent_terminal((uid, gid): (u32, u32)) -> std::io::Result<(AgentStdio, Arc<Terminal>)> {
    let pair = pty::open(0, 0).map_err(std::io::Error::other)?;
    // Root mode: the agent's uid owns its terminal, as a login would arrange. Rootless: the caller owns it,
    // which is who the agent's ids map to.
    if openshell_supervisor_sys::nix::unistd::geteuid().is_root() {
        pty::give_to(&pair.peer, uid, gid).map_err(std::io::Error::other)?;
    }
    let stdio = AgentStdio::Given {
        stdin: Stdio::from(pair.peer.try_clone()?),
        stdout: Stdio::from(pair.peer.try_clone()?),
        stderr: Stdio::from(pair.peer),
    };
    Ok((stdio, Terminal::start(pair.master)?))
}

/// The Hello of a supervisor that has not launched anything (or whose agent is gone).
pub fn idle_hello(sandbox_id: &str, revision: u64) -> Hello {
    Hello {
        sandbox_id: sandbox_id.to_string(),
        supervisor_version: env!("CARGO_PKG_VERSION").to_string(),
        loaded_policy_revision: revision,
        agent_running: false,
        init_pid: 0,
        enforcement_json: String::new(),
    }
}
