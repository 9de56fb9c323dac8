//! The control channel between the supervisor and its sandbox: one `SOCK_SEQPACKET` socketpair, one JSON
//! document per message, descriptors attached with `SCM_RIGHTS`.
//!
//! Supervisor -> sandbox: [`ToSandbox`] (the spec once, then requests that carry an id echoed by the
//! answer). Sandbox -> supervisor: [`FromSandbox`] (from the launch stage: init's host pid; from sandbox
//! init: listeners, ready or failed, answers, the agent's exit).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use openshell_supervisor_sys::fdpass::{self, FdPassError};
use serde::{Deserialize, Serialize};

use super::{EnforcementReport, LaunchOptions, SandboxSpec};

/// Largest message accepted (the spec with its environment is the biggest). A `SOCK_SEQPACKET` message
/// must fit in the socket's send buffer (`net.core.wmem_default`, 208 KiB by default).
pub const MAX_MESSAGE: usize = 192 * 1024;

/// Descriptors per message; below the kernel's 253 so that a batch never fails.
pub const FDS_PER_BATCH: usize = 240;

/// Messages to the sandbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToSandbox {
    /// First message, to the launch stage.
    Start {
        spec: Box<SandboxSpec>,
        #[serde(default)]
        options: LaunchOptions,
    },
    /// Create capture listeners for a TCP port (policy reload).
    OpenCapture { id: u64, port: u16 },
    /// Send a signal to the agent.
    Signal { id: u64, signal: i32 },
}

/// What a batch of descriptors is, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ListenerKind {
    Proxy,
    Capture {
        port: u16,
    },
    DnsUdp,
    DnsTcp,
    /// A `NETLINK_SOCK_DIAG` socket of the agent's netns: exact socket lookups for binary identity.
    SockDiag,
    /// An `AF_PACKET` socket on the agent netns's `lo` that sees only the kernel's refusals
    /// (`openshell_supervisor_sys::observer`): denials that never reach a listener become events.
    RefusalObserver,
}

/// Messages from the sandbox.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromSandbox {
    /// From the launch stage: sandbox init's pid in the supervisor's pid namespace.
    InitPid { pid: i32 },
    /// A batch of listeners; `kinds[i]` describes the i-th attached descriptor.
    Listeners { kinds: Vec<ListenerKind> },
    /// The listener of the agent's seccomp filter (notify mode), attached; sent just before `Ready`.
    /// Sandbox init closes its copy once sent.
    SeccompListener,
    /// The agent passed every step and is executing the command.
    Ready { agent_pid: i32, report: Box<EnforcementReport> },
    /// A step failed; the sandbox is going away.
    Failed { stage: String, message: String },
    /// Answer to `OpenCapture`, with the listeners attached.
    Opened { id: u64, port: u16 },
    /// Answer to `Signal`.
    Signaled { id: u64 },
    /// A request could not be served.
    RequestFailed { id: u64, message: String },
    /// The agent is gone; sandbox init exits with `code` next.
    Exited { code: i32, signal: Option<i32> },
}

/// Errors of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("control channel: {0}")]
    Io(#[from] FdPassError),
    #[error("control channel: cannot encode a message")]
    Encode(#[source] serde_json::Error),
    #[error("control channel: malformed message from the other side")]
    Decode(#[source] serde_json::Error),
    #[error("control channel: message of {len} bytes is larger than {MAX_MESSAGE}")]
    TooLarge { len: usize },
    #[error("control channel: the other side closed it")]
    Closed,
}

/// Sends one message with `fds`.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
    let bytes = serde_json::to_vec(msg).map_err(ChannelError::Encode)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(ChannelError::TooLarge { len: bytes.len() });
    }
    fdpass::send(sock, &bytes, fds)?;
    Ok(())
}

/// Receives one message; `timeout` bounds the wait (`None`: forever).
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
    timeout: Option<Duration>,
) -> Result<(T, Vec<OwnedFd>), ChannelError> {
    if let Some(t) = timeout
        && !fdpass::wait_readable(sock, Some(t))?
    {
        return Err(FdPassError::Timeout(t).into());
    }
    let msg = fdpass::recv(sock, MAX_MESSAGE)?.ok_or(ChannelError::Closed)?;
    let value = serde_json::from_slice(&msg.payload).map_err(ChannelError::Decode)?;
    Ok((value, msg.fds))
}

/// Sends `items` (kind + descriptor) in batches of [`FDS_PER_BATCH`].
pub fn send_listeners(sock: BorrowedFd<'_>, items: &[(ListenerKind, OwnedFd)]) -> Result<(), ChannelError> {
    for chunk in items.chunks(FDS_PER_BATCH) {
        let kinds = chunk.iter().map(|(k, _)| *k).collect();
        let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, fd)| fd.as_fd()).collect();
        send(sock, &FromSandbox::Listeners { kinds }, &fds)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json() {
        let m =
            FromSandbox::Listeners { kinds: vec![ListenerKind::Proxy, ListenerKind::Capture { port: 443 }] };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"type":"listeners","kinds":[{"kind":"proxy"},{"kind":"capture","port":443}]}"#);
        let back: ToSandbox = serde_json::from_str(r#"{"type":"open_capture","id":3,"port":8443}"#).unwrap();
        assert!(matches!(back, ToSandbox::OpenCapture { id: 3, port: 8443 }));
        assert!(
            serde_json::from_str::<ToSandbox>(r#"{"type":"open_capture","id":3,"port":1,"x":1}"#).is_err()
        );
    }

    #[test]
    fn listeners_go_in_batches_with_their_kinds() {
        let (a, b) = fdpass::seqpacket_pair().unwrap();
        let items: Vec<(ListenerKind, OwnedFd)> = (0..FDS_PER_BATCH + 3)
            .map(|i| {
                (ListenerKind::Capture { port: i as u16 }, std::fs::File::open("/dev/null").unwrap().into())
            })
            .collect();
        send_listeners(a.as_fd(), &items).unwrap();
        let (first, fds1): (FromSandbox, _) = recv(b.as_fd(), Some(Duration::from_secs(1))).unwrap();
        let (second, fds2): (FromSandbox, _) = recv(b.as_fd(), Some(Duration::from_secs(1))).unwrap();
        assert!(matches!(first, FromSandbox::Listeners { ref kinds } if kinds.len() == FDS_PER_BATCH));
        assert!(matches!(second, FromSandbox::Listeners { ref kinds } if kinds.len() == 3));
        assert_eq!((fds1.len(), fds2.len()), (FDS_PER_BATCH, 3));
        drop(a);
        assert!(matches!(recv::<FromSandbox>(b.as_fd(), None), Err(ChannelError::Closed)));
    }
}
