//! `openshell-supervisor session`: gateway-driven mode.
//!
//! The supervisor dials out to the gateway and keeps one long-lived bidirectional stream
//! (`openshell.supervisor.v1.SupervisorSession/Open`, protocol in its proto file): Hello, then the
//! gateway's Welcome (launch spec) and PolicyPush; the sandbox starts exactly as in standalone mode
//! (`crate::sandbox`), with the agent's stdin on `/dev/null` and its output forwarded as LogBatch; security
//! events go out as EventBatch; later pushes change the network policy like SIGHUP does in standalone
//! mode; Stop or SIGTERM end the agent; AgentExited is the last word, and the supervisor exits with the
//! agent's status. The stream is re-established whenever it fails, for as long as the agent runs.
//!
//! Modules: [`secret`] (the credential from the driver), [`transport`] (endpoint, TLS, metadata),
//! [`link`] (one stream, reconnection), [`outbox`] (bounded buffers, batches), [`stdio`] (the agent's
//! pipes), [`terminal`] and [`relay`] (the agent's pseudo-terminal for `tty` launches, served on relay
//! streams), [`bootstrap`] (assignment and launch), [`running`] (the loop while the agent runs),
//! [`finish`] (the last word).
//!
//! Threat handled: the gateway (or the network to it) failing must not change what is enforced: the agent
//! keeps its last good policy, nothing blocks on the gateway. The secret never reaches argv, the
//! environment, logs or the agent (see [`secret`]).

mod bootstrap;
mod finish;
mod link;
mod outbox;
mod relay;
mod running;
mod secret;
mod stdio;
mod terminal;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use openshell_proto::supervisor::v1::{AgentExited, LaunchFailed, SupervisorMessage, supervisor_message};
use tokio::signal::unix::{Signal, SignalKind, signal};

use self::bootstrap::Interrupted;
use self::link::Connection;
use self::outbox::{EventPump, Outbox};
use self::transport::{Credentials, Transport};

/// Exit status for unusable flags or a secret that cannot be read. Same as clap's usage errors.
const EXIT_USAGE: u8 = 2;
/// Exit status when the supervisor itself cannot run (runtime, signal handlers).
const EXIT_INTERNAL: u8 = 125;
/// How long the exit path may try to deliver the last word to the gateway (reconnecting if needed).
const FINAL_DELIVERY: Duration = Duration::from_secs(5);
/// How long the exit path waits for the agent's last output lines once the sandbox is gone.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct SessionArgs {
    /// The gateway: `unix:///absolute/path.sock`, `http://host:port` or `https://host:port`.
    #[arg(long, value_name = "ENDPOINT")]
    gateway: String,
    /// The sandbox this supervisor serves (sent with every request).
    #[arg(long)]
    sandbox_id: String,
    /// Descriptor to read the sandbox secret from, to end of file. 0 is stdin (then replaced by
    /// /dev/null). The secret is never accepted on the command line or in the environment.
    #[arg(long, value_name = "N")]
    secret_fd: i32,
    /// CA certificate (PEM) that signed the gateway's certificate; required with https.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

pub fn main(args: SessionArgs) -> ExitCode {
    // The secret first: the descriptor is closed (fd 0 replaced by /dev/null) before anything else runs.
    let secret = match secret::read(args.secret_fd) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("openshell-supervisor session: {}", crate::error_chain(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Own session: the terminal's signals (Ctrl-C in the shell that started the gateway) never reach
    // this supervisor or its sandbox. EPERM: already a session (process group) leader, which is as good.
    if let Err(e) = openshell_supervisor_sys::nix::unistd::setsid()
        && e != openshell_supervisor_sys::nix::Error::EPERM
    {
        eprintln!("openshell-supervisor session: setsid: {e}");
    }
    crate::init_tracing("info");
    let transport = Credentials::new(&args.sandbox_id, &secret)
        .and_then(|creds| Transport::new(&args.gateway, args.ca_file.as_deref(), creds));
    drop(secret);
    let transport = match transport {
        Ok(t) => t,
        Err(e) => {
            eprintln!("openshell-supervisor session: {}", crate::error_chain(&e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("openshell-supervisor session: starting the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let code = runtime.block_on(serve(args.sandbox_id, transport));
    // Bounded: a blocking task stuck on a dead sandbox must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

/// The session from the first Hello to the exit status.
async fn serve(sandbox_id: String, transport: Transport) -> u8 {
    // Handlers first: a SIGTERM while the sandbox starts must reach the agent, not kill the supervisor.
    let mut signals = match Signals::register() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("registering signal handlers: {e}");
            return EXIT_INTERNAL;
        }
    };
    tracing::info!(sandbox_id, gateway = transport.display(), "starting the session");
    let mut conn = Connection::new(transport);
    let outbox = Arc::new(Outbox::default());
    let (events, mut pump) = EventPump::new();
    let fresh = bootstrap::idle_hello(&sandbox_id, 0);
    let assignment = match bootstrap::await_assignment(&mut conn, &fresh, &mut signals).await {
        Ok(a) => a,
        Err(Interrupted::Stopped) => {
            tracing::info!("stopped by the gateway before the launch");
            finish::deliver_last(&mut conn, &outbox, Vec::new(), &[], &fresh, FINAL_DELIVERY).await;
            return 0;
        }
        Err(Interrupted::Signal(sig)) => {
            tracing::info!(signal = sig, "stopped by a signal before the launch");
            return (128 + sig).clamp(0, 255) as u8;
        }
    };
    let started = match bootstrap::launch(&sandbox_id, assignment, events, outbox.clone()).await {
        Ok(s) => s,
        Err(failure) => {
            let error = crate::error_chain(&failure);
            tracing::error!("the sandbox could not be started: {error}");
            let mut last: Vec<SupervisorMessage> = Vec::new();
            if let Some(ack) = failure.refused_policy() {
                last.push(msg(supervisor_message::Msg::Ack(ack)));
            }
            last.push(msg(supervisor_message::Msg::LaunchFailed(LaunchFailed { error })));
            finish::deliver_last(&mut conn, &outbox, Vec::new(), &last, &fresh, FINAL_DELIVERY).await;
            return failure.exit_code();
        }
    };
    let bootstrap::Started { sandbox, readers, terminal, revision } = started;
    let ctx = running::Ctx {
        conn: &mut conn,
        terminal: terminal.as_ref(),
        outbox: &outbox,
        pump: &mut pump,
        signals: &mut signals,
        sandbox_id: &sandbox_id,
    };
    let ended = running::supervise(ctx, &sandbox, revision).await;
    let code = match ended.status {
        Ok(code) => code,
        Err(e) => {
            // The agent's status is unknown; the gateway must still learn that it is gone.
            tracing::error!("waiting for the agent failed: {}", crate::error_chain(&e));
            EXIT_INTERNAL
        }
    };
    tracing::info!(code, "the agent exited");
    // Everything the sandbox said before it ended goes out before AgentExited.
    sandbox.finish(code).await;
    readers.finish(OUTPUT_DRAIN).await;
    pump.drain(&outbox);
    let exited = [msg(supervisor_message::Msg::Exited(AgentExited { exit_code: i32::from(code) }))];
    let hello = bootstrap::idle_hello(&sandbox_id, ended.revision);
    finish::deliver_last(&mut conn, &outbox, ended.unsent, &exited, &hello, FINAL_DELIVERY).await;
    code
}

fn msg(m: supervisor_message::Msg) -> SupervisorMessage {
    SupervisorMessage { msg: Some(m) }
}

/// The gateway's heartbeat interval; 0 (unset) means the default.
fn heartbeat_interval(ms: u32) -> Duration {
    if ms == 0 { link::DEFAULT_HEARTBEAT } else { Duration::from_millis(u64::from(ms)) }
}

/// The signals the session handles: SIGTERM and SIGINT stop the agent, SIGHUP is ignored (a reload comes
/// from the gateway). Registered before the launch.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received. Cancel-safe.
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
            _ = self.hup.recv() => libc::SIGHUP,
        }
    }
}
