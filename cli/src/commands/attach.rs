//! Joining the user's terminal to a sandbox's (`sandbox connect`, and `sandbox create` with a terminal).
//!
//! Keystrokes go up as they are typed (raw mode), window changes follow SIGWINCH, the agent's terminal
//! output is written to stdout as it comes. The call ends when the agent's terminal closes (it exited:
//! the exit status comes from the sandbox), when another client attaches, or when the gateway goes away.
//! SIGTERM or SIGHUP (the user's terminal closed) detach: the agent keeps running.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use openshell_proto::gateway::v1::{
    AttachInput, AttachStart, GetSandboxRequest, Phase, TerminalSize, WatchSandboxRequest, attach_input,
    attach_output,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::Gateway;
use crate::exit::{CliError, OK, OTHER, sanitize};
use crate::terminal::{self, RawMode};

const INPUT_CHUNK: usize = 16 * 1024;
/// VEOF of a terminal in its default settings (Ctrl-D).
const EOF_CHAR: u8 = 0x04;
const INPUT_QUEUE: usize = 16;
/// After the terminal closed, how long the agent's exit may take to reach the sandbox's record.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How an attachment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The stream ended on the other side (agent exited, another client, gateway gone).
    Closed,
    /// We left (a signal): the agent keeps running.
    Detached,
}

fn input(msg: attach_input::Msg) -> AttachInput {
    AttachInput { msg: Some(msg) }
}

/// Attaches to `name` until the stream ends or a signal detaches.
pub async fn attach(gw: &mut Gateway, name: &str) -> Result<Ended, CliError> {
    let signal_err = |e: std::io::Error| CliError::other(format!("cannot handle signals: {e}"));
    let mut winch = signal(SignalKind::window_change()).map_err(signal_err)?;
    let mut term = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let size = terminal::size().map(|(rows, cols)| TerminalSize { rows, cols });
    let start = AttachStart { name: name.to_string(), size };
    // A fresh channel has room for the first message.
    let _ = tx.try_send(input(attach_input::Msg::Start(start)));
    let mut output = match gw.sandboxes.attach(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return Err(gw.fail(s)),
    };
    let raw = RawMode::enable()
        .map_err(|e| CliError::other(format!("cannot put the terminal in raw mode: {e}")))?;
    spawn_stdin_reader(tx.clone());
    let mut stdout = std::io::stdout();
    let ended = loop {
        tokio::select! {
            msg = output.message() => match msg {
                Ok(Some(m)) => {
                    if let Some(attach_output::Msg::Data(bytes)) = m.msg {
                        // A reader that went away must not end the agent's session.
                        let _ = stdout.write_all(&bytes).and_then(|()| stdout.flush());
                    }
                }
                Ok(None) | Err(_) => break Ended::Closed,
            },
            _ = winch.recv() => if let Some((rows, cols)) = terminal::size() {
                let _ = tx.send(input(attach_input::Msg::Resize(TerminalSize { rows, cols }))).await;
            },
            _ = term.recv() => break Ended::Detached,
            _ = hup.recv() => break Ended::Detached,
        }
    };
    drop(raw);
    Ok(ended)
}

/// Reads stdin on a thread of its own (a blocking read must not keep the runtime from exiting) and
/// forwards what it reads. At the end of input that is not a terminal (`cmds | openshell sandbox create`)
/// it types the terminal's end-of-file character (Ctrl-D), as a user would, so a shell reading the
/// commands ends; the attachment stays until the agent's terminal closes.
fn spawn_stdin_reader(tx: mpsc::Sender<AttachInput>) {
    let piped = !std::io::stdin().is_terminal();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; INPUT_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => {
                    if piped {
                        let _ = tx.blocking_send(input(attach_input::Msg::Data(vec![EOF_CHAR])));
                    }
                    return;
                }
                Ok(n) => {
                    if tx.blocking_send(input(attach_input::Msg::Data(buf[..n].to_vec()))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    });
}

/// What the user learns after an attachment ended: the agent's exit status once it exited, or a note
/// that the sandbox keeps running.
pub async fn outcome(gw: &mut Gateway, name: &str, ended: Ended) -> Result<u8, CliError> {
    if ended == Ended::Detached {
        eprintln!(
            "openshell: detached from sandbox {name}; it keeps running (`openshell sandbox connect {name}`)"
        );
        return Ok(OK);
    }
    // The terminal closes a moment before the agent's exit is recorded: follow the sandbox briefly.
    let mut watch = match gw.sandboxes.watch_sandbox(WatchSandboxRequest { name: name.into() }).await {
        Ok(w) => Some(w.into_inner()),
        Err(_) => None,
    };
    let deadline = tokio::time::Instant::now() + EXIT_GRACE;
    loop {
        let sb = match watch.as_mut() {
            Some(w) => match tokio::time::timeout_at(deadline, w.message()).await {
                Ok(Ok(Some(sb))) => Some(sb),
                // The watch ended (or failed): one last look below.
                Ok(_) => {
                    watch = None;
                    None
                }
                Err(_) => None,
            },
            None => None,
        };
        let sb = match sb {
            Some(sb) => sb,
            None => match gw.sandboxes.get_sandbox(GetSandboxRequest { name: name.into() }).await {
                Ok(r) => r.into_inner(),
                Err(s) => return Err(gw.fail(s)),
            },
        };
        match sb.phase() {
            Phase::Stopped => {
                return Ok(sb.exit_code.map_or(OTHER, |c| u8::try_from(c).unwrap_or(OTHER)));
            }
            Phase::Failed => {
                return Err(CliError::SandboxFailed(format!(
                    "sandbox {name} failed: {}",
                    sanitize(&sb.phase_reason)
                )));
            }
            _ if tokio::time::Instant::now() >= deadline || watch.is_none() => {
                eprintln!(
                    "openshell: the connection to sandbox {name} ended (another client attached, or the gateway \
                     went away); it keeps running (`openshell sandbox connect {name}`)"
                );
                return Ok(OK);
            }
            _ => {}
        }
    }
}
