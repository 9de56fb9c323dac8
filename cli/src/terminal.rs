//! The user's terminal while attached to a sandbox's: raw mode (every keystroke, Ctrl-C included, goes
//! to the agent's terminal, whose line discipline decides what it means), window sizes, and restoring
//! the terminal whatever happens (drop guard).

use std::io::IsTerminal;
use std::os::fd::AsFd;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};

/// Raw mode on stdin until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin to raw mode when it is a terminal; `None` otherwise (input is forwarded as is).
    pub fn enable() -> std::io::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin.as_fd(), OptionalActions::Drain, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), OptionalActions::Drain, &self.saved);
    }
}

/// The window size of the user's terminal as (rows, cols): stdout's, else stdin's.
pub fn size() -> Option<(u32, u32)> {
    let get = |fd: std::os::fd::BorrowedFd<'_>| tcgetwinsize(fd).ok();
    let s = get(std::io::stdout().as_fd()).or_else(|| get(std::io::stdin().as_fd()))?;
    (s.ws_row > 0 && s.ws_col > 0).then_some((u32::from(s.ws_row), u32::from(s.ws_col)))
}
