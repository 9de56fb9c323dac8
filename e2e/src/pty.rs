//! A program run on a pseudo-terminal, the way a user at a terminal runs it: its stdin, stdout and stderr
//! are the terminal, the test types into the master and reads what it shows. Used to drive the CLI's
//! interactive mode (`sandbox create` / `sandbox connect`) for real.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

/// The screen so far, and whether the terminal closed.
#[derive(Default)]
struct Screen {
    bytes: Vec<u8>,
    closed: bool,
}

pub struct PtyProgram {
    child: Child,
    master: std::fs::File,
    screen: Arc<(Mutex<Screen>, Condvar)>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }
}

impl PtyProgram {
    /// Starts `cmd` on a new terminal of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> Result<PtyProgram> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master: OwnedFd = rustix::pty::openpt(flags).context("openpt")?;
        rustix::pty::unlockpt(&master).context("unlockpt")?;
        let peer: OwnedFd = rustix::pty::ioctl_tiocgptpeer(&master, flags).context("TIOCGPTPEER")?;
        rustix::termios::tcsetwinsize(&master, winsize(rows, cols)).context("window size")?;
        cmd.stdin(Stdio::from(peer.try_clone()?))
            .stdout(Stdio::from(peer.try_clone()?))
            .stderr(Stdio::from(peer));
        let child = cmd.spawn().context("spawning the program on a terminal")?;
        // `cmd` still holds the peer descriptors: drop them so that the master reads EOF/EIO at the end.
        drop(cmd);
        let master = std::fs::File::from(master);
        let screen: Arc<(Mutex<Screen>, Condvar)> = Arc::default();
        let mut reader = master.try_clone()?;
        let shared = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = reader.read(&mut buf).unwrap_or(0);
                let (lock, cv) = &*shared;
                let mut s = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if n == 0 {
                    s.closed = true;
                    cv.notify_all();
                    return;
                }
                s.bytes.extend_from_slice(&buf[..n]);
                cv.notify_all();
            }
        });
        Ok(PtyProgram { child, master, screen })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types `text`.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.master.write_all(text.as_bytes()).context("typing into the terminal")
    }

    /// Everything shown so far, lossily decoded.
    pub fn screen(&self) -> String {
        let s = self.screen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&s.bytes).into_owned()
    }

    /// Waits until the screen, from byte `from` on, contains `needle`; returns the end of the match.
    pub fn expect_from(&self, from: usize, needle: &str, max: Duration) -> Result<usize> {
        let deadline = Instant::now() + max;
        let (lock, cv) = &*self.screen;
        let mut s = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let tail = String::from_utf8_lossy(s.bytes.get(from..).unwrap_or_default()).into_owned();
            if let Some(i) = tail.find(needle) {
                return Ok(from + tail[..i].len() + needle.len());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || s.closed {
                bail!(
                    "{needle:?} did not appear within {max:?}; the screen: {:?}",
                    String::from_utf8_lossy(&s.bytes)
                );
            }
            s = cv.wait_timeout(s, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    /// Waits for `needle` anywhere on the screen.
    pub fn expect(&self, needle: &str, max: Duration) -> Result<usize> {
        self.expect_from(0, needle, max)
    }

    /// Bytes shown so far.
    pub fn len(&self) -> usize {
        self.screen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resizes the terminal and tells the program (SIGWINCH, as a terminal emulator does).
    pub fn resize(&mut self, rows: u16, cols: u16) -> Result<()> {
        rustix::termios::tcsetwinsize(&self.master, winsize(rows, cols)).context("window size")?;
        self.signal(libc::SIGWINCH);
        Ok(())
    }

    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
    }

    /// Waits for the program's exit code (killing it after `max`).
    pub fn wait(&mut self, max: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + max;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                bail!("the program did not exit within {max:?}; the screen: {:?}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
