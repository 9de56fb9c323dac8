//! Descriptor passing over `SOCK_SEQPACKET` unix sockets: one message = one payload + up to
//! [`MAX_FDS_PER_MESSAGE`] descriptors (`SCM_RIGHTS`), received close-on-exec (`MSG_CMSG_CLOEXEC`).
//!
//! Threat handled: descriptors leaking into programs the receiver later executes, and silent truncation of
//! a message or of its descriptors (both are errors here). Residual risk: none specific; the channel is a
//! private socketpair between the supervisor and its own launch stage.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, sendmsg,
    socketpair,
};

/// The kernel accepts at most 253 descriptors per `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub const MAX_FDS_PER_MESSAGE: usize = 253;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    #[error("socketpair(AF_UNIX, SOCK_SEQPACKET) failed")]
    SocketPair {
        #[source]
        source: nix::Error,
    },
    #[error("sendmsg of {len} bytes and {fds} descriptors failed")]
    Send {
        len: usize,
        fds: usize,
        #[source]
        source: nix::Error,
    },
    #[error("too many descriptors in one message: {fds} > {MAX_FDS_PER_MESSAGE}")]
    TooManyFds { fds: usize },
    #[error("recvmsg failed")]
    Recv {
        #[source]
        source: nix::Error,
    },
    #[error("received message was truncated (buffer {buffer} bytes); the peer sent more than allowed")]
    Truncated { buffer: usize },
    #[error("received descriptors were truncated (MSG_CTRUNC)")]
    FdsTruncated,
    #[error("poll on the control socket failed")]
    Poll {
        #[source]
        source: nix::Error,
    },
    #[error("no message within {0:?}")]
    Timeout(Duration),
}

/// A connected, close-on-exec `SOCK_SEQPACKET` pair.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), FdPassError> {
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|source| FdPassError::SocketPair { source })
}

/// Sends one message with `payload` and `fds`. Never raises `SIGPIPE` (peer gone = `EPIPE` error).
pub fn send(sock: BorrowedFd<'_>, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), FdPassError> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(FdPassError::TooManyFds { fds: fds.len() });
    }
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(payload)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(FdPassError::Send { len: payload.len(), fds: fds.len(), source }),
        }
    }
}

/// A received message.
#[derive(Debug)]
pub struct Message {
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Receives one message of at most `max_len` bytes. `Ok(None)` means the peer closed its end.
pub fn recv(sock: BorrowedFd<'_>, max_len: usize) -> Result<Option<Message>, FdPassError> {
    let mut buf = vec![0u8; max_len];
    let mut cmsg_space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS_PER_MESSAGE]);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(FdPassError::Recv { source }),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|source| FdPassError::Recv { source })? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in this process for this message (SCM_RIGHTS);
                    // nothing else refers to it, so taking ownership is sound.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(FdPassError::FdsTruncated);
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(FdPassError::Truncated { buffer: max_len });
        }
        let len = msg.bytes;
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        buf.truncate(len);
        return Ok(Some(Message { payload: buf, fds }));
    }
}

/// Waits until `fd` is readable (or hung up); `None` waits forever. Returns `false` on timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool, FdPassError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d).unwrap_or(PollTimeout::MAX),
    };
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, t) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(FdPassError::Poll { source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn payload_and_fds_round_trip_cloexec() {
        let (a, b) = seqpacket_pair().unwrap();
        let (mut r, mut w) = std::io::pipe().unwrap();
        send(a.as_fd(), b"hello", &[w.as_fd()]).unwrap();
        let msg = recv(b.as_fd(), 64).unwrap().unwrap();
        assert_eq!(msg.payload, b"hello");
        assert_eq!(msg.fds.len(), 1);
        let flags = nix::fcntl::fcntl(&msg.fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0, "received descriptor must be close-on-exec");
        let mut passed = std::fs::File::from(msg.fds.into_iter().next().unwrap());
        passed.write_all(b"x").unwrap();
        w.flush().unwrap();
        let mut got = [0u8; 1];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn oversized_message_is_an_error_and_eof_is_none() {
        let (a, b) = seqpacket_pair().unwrap();
        send(a.as_fd(), &[7u8; 100], &[]).unwrap();
        assert!(matches!(recv(b.as_fd(), 10), Err(FdPassError::Truncated { .. })));
        drop(a);
        assert!(recv(b.as_fd(), 10).unwrap().is_none());
        assert!(wait_readable(b.as_fd(), Some(Duration::from_millis(1))).unwrap());
    }
}
