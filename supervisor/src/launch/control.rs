//! Supervisor side of the control channel: spawning the launch stage, collecting the sandbox's listeners
//! and report, then [`Control`] for requests (capture ports, signals) and the exit status.
//!
//! The launch stage is spawned, then waited for, by one dedicated thread that lives exactly as long as the
//! stage: the stage's parent-death signal (`PR_SET_PDEATHSIG`) fires when the thread that forked it exits,
//! so the caller's thread may return at once without killing the sandbox.
//!
//! The stage's stdin, stdout and stderr are inherited by sandbox init and the agent. Standalone mode lets
//! them inherit the supervisor's (the agent talks to the caller's terminal); gateway-driven mode gives
//! `/dev/null` and two pipes ([`Control::launch_with_stdio`]) whose lines it forwards to the gateway.

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openshell_supervisor_sys::{fdpass, process};

use super::protocol::{self, ChannelError, FromSandbox, ListenerKind, ToSandbox};
use super::{LaunchError, LaunchOptions, Launched, Listeners, SandboxSpec};

/// Bound on the whole start (exec of the stage, namespaces, mounts, agent setup).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one request to sandbox init (it answers from its poll loop at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Handle on a running sandbox. Cheap to clone; requests from several threads are serialised, and
/// [`Control::wait`] may block in one thread while others send requests.
#[derive(Clone, Debug)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sock: Mutex<OwnedFd>,
    next_id: AtomicU64,
    exit: Mutex<Option<Receiver<std::io::Result<ExitStatus>>>>,
}

fn chan(step: &'static str) -> impl FnOnce(ChannelError) -> LaunchError {
    move |source| LaunchError::Protocol { step, source }
}

/// 0..=255; 128+N when killed by signal N.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => (c & 0xff) as u8,
        (None, Some(s)) => (128 + s).clamp(0, 255) as u8,
        (None, None) => 255,
    }
}

/// Where the launch stage's standard descriptors come from; sandbox init and the agent inherit them.
struct StageStdio {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
}

pub(super) fn start(spec: &SandboxSpec, options: LaunchOptions) -> Result<Launched, LaunchError> {
    let inherit = StageStdio { stdin: Stdio::inherit(), stdout: Stdio::inherit(), stderr: Stdio::inherit() };
    start_with(spec, options, inherit)
}

fn start_with(
    spec: &SandboxSpec,
    options: LaunchOptions,
    stdio: StageStdio,
) -> Result<Launched, LaunchError> {
    let (ours, theirs) = fdpass::seqpacket_pair().map_err(LaunchError::Channel)?;
    let (spawned_tx, spawned_rx) = sync_channel::<std::io::Result<()>>(1);
    let (exit_tx, exit_rx) = sync_channel(1);
    std::thread::Builder::new()
        .name("sandbox-launch".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let child = spawn_stage(theirs, stdio);
            match child {
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                }
                Ok(mut child) => {
                    let _ = spawned_tx.send(Ok(()));
                    let _ = exit_tx.send(child.wait());
                }
            }
        })
        .map_err(LaunchError::Spawn)?;
    spawned_rx
        .recv()
        .map_err(|_| LaunchError::Spawn(std::io::Error::other("launch thread ended early")))?
        .map_err(LaunchError::Spawn)?;

    let control = Control {
        inner: Arc::new(Inner {
            sock: Mutex::new(ours),
            next_id: AtomicU64::new(1),
            exit: Mutex::new(Some(exit_rx)),
        }),
    };
    match collect(&control, spec, options) {
        Ok(launched) => Ok(launched),
        Err(e) => {
            // The sandbox tears itself down after a failure; reap the stage so no zombie is left, and
            // prefer its exit status over a bare "channel closed".
            let status = control.take_exit().ok().and_then(|rx| rx.recv_timeout(Duration::from_secs(5)).ok());
            match (e, status) {
                (LaunchError::Protocol { source: ChannelError::Closed, .. }, Some(Ok(st))) => {
                    Err(LaunchError::StageExited { status: exit_code(st).to_string() })
                }
                (e, _) => Err(e),
            }
        }
    }
}

/// Spawns `/proc/self/exe __launch --control-fd N` with an empty environment. The control descriptor is
/// duplicated without close-on-exec just for the spawn, then closed. The `Command` owns `stdio` and drops
/// it when this returns: the supervisor keeps no copy of the write ends of pipes given to the agent, so
/// their readers see end-of-file once the sandbox is gone.
fn spawn_stage(theirs: OwnedFd, stdio: StageStdio) -> std::io::Result<std::process::Child> {
    let inheritable = process::dup_inheritable(theirs.as_fd()).map_err(std::io::Error::other)?;
    let child = Command::new("/proc/self/exe")
        .arg0("openshell-supervisor")
        .arg("__launch")
        .arg("--control-fd")
        .arg(inheritable.as_raw_fd().to_string())
        .env_clear()
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .stderr(stdio.stderr)
        .spawn();
    drop(inheritable);
    drop(theirs);
    child
}

fn collect(control: &Control, spec: &SandboxSpec, options: LaunchOptions) -> Result<Launched, LaunchError> {
    let sock = control.inner.sock.lock().unwrap_or_else(|p| p.into_inner());
    protocol::send(sock.as_fd(), &ToSandbox::Start { spec: Box::new(spec.clone()), options }, &[])
        .map_err(chan("sending the sandbox spec"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut init_pid = None;
    let mut listeners = Listeners::default();
    let mut seccomp_listener = None;
    let (agent_ns_pid, mut report) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (msg, fds) =
            protocol::recv::<FromSandbox>(sock.as_fd(), Some(left)).map_err(chan("starting the sandbox"))?;
        match msg {
            FromSandbox::InitPid { pid } => init_pid = Some(pid),
            FromSandbox::Listeners { kinds } => add_listeners(&mut listeners, &kinds, fds)?,
            FromSandbox::SeccompListener => seccomp_listener = fds.into_iter().next(),
            FromSandbox::Ready { agent_pid, report } => break (agent_pid, report),
            FromSandbox::Failed { stage, message } => return Err(LaunchError::Setup { stage, message }),
            other => return Err(LaunchError::Unexpected { step: "start", message: format!("{other:?}") }),
        }
    };
    // The launch stage sends init's pid right after the fork, normally long before init is ready; a
    // missing pid means a broken stage. On a loaded host the stage may be descheduled until after an agent
    // that fails fast (a refused connect) has already exited: its `Exited` is skipped here, the status
    // comes from `wait()`.
    let init_pid = match init_pid {
        Some(p) => p,
        None => loop {
            let (msg, _) = protocol::recv::<FromSandbox>(sock.as_fd(), Some(Duration::from_secs(1)))
                .map_err(chan("waiting for init's pid"))?;
            match msg {
                FromSandbox::InitPid { pid } => break pid,
                FromSandbox::Exited { .. } => continue,
                other => {
                    return Err(LaunchError::Unexpected { step: "init pid", message: format!("{other:?}") });
                }
            }
        },
    };
    drop(sock);
    if seccomp_listener.is_none() && report.process_events == super::agent::PROCESS_EVENTS_NOTIFY {
        report.process_events =
            "unavailable: the seccomp listener did not reach the supervisor; refused syscalls fail with \
             ENOSYS and are not reported"
                .into();
    }
    let agent_pid = agent_host_pid(init_pid).unwrap_or(0);
    tracing::debug!(init_pid, agent_pid, agent_ns_pid, "sandbox ready");
    Ok(Launched {
        init_pid,
        agent_pid,
        listeners,
        report: *report,
        control: control.clone(),
        seccomp_listener,
    })
}

fn add_listeners(into: &mut Listeners, kinds: &[ListenerKind], fds: Vec<OwnedFd>) -> Result<(), LaunchError> {
    if kinds.len() != fds.len() {
        return Err(LaunchError::Unexpected {
            step: "listeners",
            message: format!("{} kinds for {} descriptors", kinds.len(), fds.len()),
        });
    }
    for (kind, fd) in kinds.iter().zip(fds) {
        match *kind {
            ListenerKind::Proxy => into.proxy.push(TcpListener::from(fd)),
            ListenerKind::Capture { port } => into.capture.push((port, TcpListener::from(fd))),
            ListenerKind::DnsUdp => into.dns_udp.push(UdpSocket::from(fd)),
            ListenerKind::DnsTcp => into.dns_tcp.push(TcpListener::from(fd)),
            ListenerKind::SockDiag => into.sock_diag = Some(fd),
            ListenerKind::RefusalObserver => into.observer = Some(fd),
        }
    }
    Ok(())
}

/// The agent is sandbox init's only child when init reports ready.
fn agent_host_pid(init_pid: i32) -> Option<i32> {
    let path = format!("/proc/{init_pid}/task/{init_pid}/children");
    if let Ok(text) = std::fs::read_to_string(path) {
        return text.split_whitespace().next().and_then(|p| p.parse().ok());
    }
    // No CONFIG_PROC_CHILDREN: scan for a process whose parent is init.
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let ppid: i32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == init_pid).then_some(pid)
    })
}

impl Control {
    /// Like [`super::launch`], with the launch stage's (and so the agent's) stdin, stdout and stderr taken
    /// from `stdin`, `stdout`, `stderr` instead of inherited from the supervisor. Blocking.
    pub fn launch_with_stdio(
        spec: &SandboxSpec,
        options: LaunchOptions,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Result<Launched, LaunchError> {
        super::validate(spec)?;
        start_with(spec, options, StageStdio { stdin, stdout, stderr })
    }

    fn take_exit(&self) -> Result<Receiver<std::io::Result<ExitStatus>>, LaunchError> {
        self.inner.exit.lock().unwrap_or_else(|p| p.into_inner()).take().ok_or(LaunchError::AlreadyWaited)
    }

    /// Sends `req` (built from a fresh id) and waits for the answer with that id.
    fn request(
        &self,
        req: impl FnOnce(u64) -> ToSandbox,
    ) -> Result<(FromSandbox, Vec<OwnedFd>), LaunchError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let sock = self.inner.sock.lock().unwrap_or_else(|p| p.into_inner());
        match protocol::send(sock.as_fd(), &req(id), &[]) {
            Ok(()) => {}
            Err(ChannelError::Io(fdpass::FdPassError::Send {
                source: openshell_supervisor_sys::nix::Error::EPIPE,
                ..
            })) => return Err(LaunchError::Gone),
            Err(e) => return Err(chan("sending a request to sandbox init")(e)),
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (msg, fds) = match protocol::recv::<FromSandbox>(sock.as_fd(), Some(left)) {
                Ok(m) => m,
                Err(ChannelError::Closed) => return Err(LaunchError::Gone),
                Err(e) => return Err(chan("waiting for sandbox init's answer")(e)),
            };
            let answer_id = match &msg {
                FromSandbox::Opened { id, .. }
                | FromSandbox::Signaled { id }
                | FromSandbox::RequestFailed { id, .. } => *id,
                // The agent's exit and stale messages are not answers; the exit status comes from wait().
                _ => continue,
            };
            if answer_id != id {
                continue;
            }
            if let FromSandbox::RequestFailed { message, .. } = msg {
                return Err(LaunchError::Request { message });
            }
            return Ok((msg, fds));
        }
    }

    /// Opens capture listeners for `port` (on `0.0.0.0` and `[::]`) in the sandbox's network namespace.
    pub fn open_capture_port(&self, port: u16) -> Result<Vec<TcpListener>, LaunchError> {
        let (_, fds) = self.request(|id| ToSandbox::OpenCapture { id, port })?;
        Ok(fds.into_iter().map(TcpListener::from).collect())
    }

    /// Sends `sig` to the agent (through sandbox init, which is its parent: no pid reuse race).
    pub fn signal_agent(&self, sig: i32) -> Result<(), LaunchError> {
        self.request(|id| ToSandbox::Signal { id, signal: sig }).map(|_| ())
    }

    /// Blocks until the sandbox is gone and returns the agent's exit code (128+N if killed by signal N).
    /// Only one handle may wait.
    pub fn wait(self) -> Result<u8, LaunchError> {
        let rx = self.take_exit()?;
        let status =
            rx.recv().map_err(|_| LaunchError::Wait(std::io::Error::other("launch thread vanished")))?;
        status.map(exit_code).map_err(LaunchError::Wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
    }
}
