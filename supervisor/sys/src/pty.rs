//! Pseudo-terminals for agents that run on a terminal (`tty` launches).
//!
//! The supervisor opens the pair in its own mount namespace (the host's `/dev/ptmx`), keeps the master and
//! hands the peer to the launch: sandbox init binds it at `/dev/console` (so `ttyname()` finds it inside
//! the sandbox's own `/dev`), and the agent makes it its controlling terminal ([`make_controlling`]) so
//! that Ctrl-C, job control and SIGWINCH work. The peer is opened with `TIOCGPTPEER` (no path lookup that a
//! racing process could redirect) and `O_NOCTTY` (it never becomes the supervisor's controlling terminal).
//!
//! All calls go through rustix's safe wrappers: this module has no `unsafe`.

use std::os::fd::{AsFd, OwnedFd};

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("opening a pseudo-terminal (/dev/ptmx)")]
    Open(#[source] std::io::Error),
    #[error("unlocking the pseudo-terminal")]
    Unlock(#[source] std::io::Error),
    #[error("opening the pseudo-terminal's peer")]
    Peer(#[source] std::io::Error),
    #[error("setting the window size")]
    WindowSize(#[source] std::io::Error),
    #[error("starting a new session")]
    Session(#[source] std::io::Error),
    #[error("making the terminal the controlling terminal")]
    Controlling(#[source] std::io::Error),
    #[error("giving the terminal to uid {uid}")]
    Owner {
        uid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A master and its peer.
pub struct PtyPair {
    /// The supervisor's side, close-on-exec.
    pub master: OwnedFd,
    /// The agent's side, close-on-exec (dup it onto stdio for the launch).
    pub peer: OwnedFd,
}

/// Opens a new pseudo-terminal pair. `size` 0 x 0 leaves the kernel's default.
pub fn open(rows: u16, cols: u16) -> Result<PtyPair, PtyError> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .map_err(|e| PtyError::Open(e.into()))?;
    rustix::pty::unlockpt(&master).map_err(|e| PtyError::Unlock(e.into()))?;
    let peer = rustix::pty::ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )
    .map_err(|e| PtyError::Peer(e.into()))?;
    if rows > 0 && cols > 0 {
        set_size(&master, rows, cols)?;
    }
    Ok(PtyPair { master, peer })
}

/// Sets the terminal's window size (the kernel sends SIGWINCH to its foreground process group).
pub fn set_size(fd: impl AsFd, rows: u16, cols: u16) -> Result<(), PtyError> {
    let size = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(fd, size).map_err(|e| PtyError::WindowSize(e.into()))
}

/// The terminal's window size as (rows, cols).
pub fn size(fd: impl AsFd) -> Result<(u16, u16), PtyError> {
    let s = rustix::termios::tcgetwinsize(fd).map_err(|e| PtyError::WindowSize(e.into()))?;
    Ok((s.ws_row, s.ws_col))
}

/// Makes reads and writes of `fd` non-blocking (the supervisor serves the master from its runtime).
pub fn set_nonblocking(fd: impl AsFd) -> Result<(), std::io::Error> {
    rustix::io::ioctl_fionbio(fd, true).map_err(std::io::Error::from)
}

/// Gives the peer to the agent's ids (root mode: a terminal the agent cannot reopen by name would break
/// programs that do; mode stays the kernel's 0620).
pub fn give_to(peer: impl AsFd, uid: u32, gid: u32) -> Result<(), PtyError> {
    rustix::fs::fchown(peer, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
        .map_err(|e| PtyError::Owner { uid, source: e.into() })
}

/// In the agent between fork and exec: a new session whose controlling terminal is `tty` (stdin).
pub fn make_controlling(tty: impl AsFd) -> Result<(), PtyError> {
    rustix::process::setsid().map_err(|e| PtyError::Session(e.into()))?;
    rustix::process::ioctl_tiocsctty(tty).map_err(|e| PtyError::Controlling(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn pair_carries_bytes_and_size() {
        let pair = open(33, 101).unwrap();
        assert_eq!(size(&pair.peer).unwrap(), (33, 101));
        set_size(&pair.master, 40, 120).unwrap();
        assert_eq!(size(&pair.peer).unwrap(), (40, 120));
        let mut master = std::fs::File::from(pair.master);
        let mut peer = std::fs::File::from(pair.peer);
        peer.write_all(b"hi\n").unwrap();
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).unwrap();
        // The line discipline turns \n into \r\n on output.
        assert_eq!(&buf[..n], b"hi\r\n");
    }
}
