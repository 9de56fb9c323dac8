//! The agent's terminal in `tty` launches: the supervisor holds the pseudo-terminal's master and serves
//! it to at most one attached client at a time (through a relay, see [`super::relay`]).
//!
//! The master is always read, attached or not, so an agent never blocks on a full terminal because nobody
//! watches. While nobody is attached the newest [`BACKLOG`] bytes are kept and handed to the next
//! attachment first (a shell's prompt written before the client arrived is not lost). While a client is
//! attached its queue is bounded: a slow client slows the agent's output (flow control end to end), never
//! the control stream. A new attachment replaces the previous one, whose output channel closes.
//!
//! The terminal's bytes are not logged: they are keystrokes and screen updates, not lines.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openshell_supervisor_sys::pty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// Output kept while nobody is attached.
pub const BACKLOG: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Chunks queued for an attached client before the reader waits (and the agent with it).
const ATTACHED_QUEUE: usize = 16;

#[derive(Default)]
struct State {
    attached: Option<(u64, mpsc::Sender<Vec<u8>>)>,
    next_id: u64,
    backlog: VecDeque<u8>,
    /// The agent's side is gone (every process holding it exited).
    closed: bool,
}

impl State {
    fn keep(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(BACKLOG)..];
        let overflow = (self.backlog.len() + data.len()).saturating_sub(BACKLOG);
        self.backlog.drain(..overflow);
        self.backlog.extend(data);
    }
}

/// The master side of the agent's terminal.
pub struct Terminal {
    /// A duplicate of the master for writing (tokio's pipe types poll any descriptor; the reading one
    /// belongs to the reader task).
    writer: tokio::sync::Mutex<pipe::Sender>,
    /// Another duplicate for window sizes (an ioctl must not wait for a write in progress).
    control: OwnedFd,
    state: Mutex<State>,
}

/// One client's view: what was written while nobody was attached, then the live output. `output` ends
/// when the terminal closes or another client attaches.
pub struct Attachment {
    pub id: u64,
    pub backlog: Vec<u8>,
    pub output: mpsc::Receiver<Vec<u8>>,
}

impl Terminal {
    /// Takes the master (non-blocking from here on) and starts reading it. Call inside the runtime.
    pub fn start(master: OwnedFd) -> io::Result<Arc<Terminal>> {
        pty::set_nonblocking(&master)?;
        let writer = pipe::Sender::from_owned_fd_unchecked(master.try_clone()?)?;
        let control = master.try_clone()?;
        let reader = pipe::Receiver::from_owned_fd_unchecked(master)?;
        let terminal =
            Arc::new(Terminal { writer: tokio::sync::Mutex::new(writer), control, state: Mutex::default() });
        tokio::spawn(read_loop(reader, Arc::clone(&terminal)));
        Ok(terminal)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attaches a client, replacing the current one. `None` once the terminal is closed.
    pub fn attach(&self) -> Option<Attachment> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        let (tx, output) = mpsc::channel(ATTACHED_QUEUE);
        st.attached = Some((id, tx));
        let backlog = st.backlog.drain(..).collect();
        Some(Attachment { id, backlog, output })
    }

    /// Ends attachment `id` if it is still the current one; output is kept for the next one again.
    pub fn detach(&self, id: u64) {
        let mut st = self.lock();
        if st.attached.as_ref().is_some_and(|(current, _)| *current == id) {
            st.attached = None;
        }
    }

    /// Writes keystrokes to the terminal (waits while its input buffer is full).
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.writer.lock().await.write_all(data).await
    }

    /// Sets the window size; 0 x 0 is ignored.
    pub fn resize(&self, rows: u32, cols: u32) {
        let (Ok(rows), Ok(cols)) = (u16::try_from(rows), u16::try_from(cols)) else { return };
        if rows == 0 || cols == 0 {
            return;
        }
        if let Err(e) = pty::set_size(&self.control, rows, cols) {
            tracing::debug!("resizing the agent's terminal: {e}");
        }
    }
}

async fn read_loop(mut reader: pipe::Receiver, terminal: Arc<Terminal>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = reader.read(&mut buf).await;
        // EIO: no process holds the agent's side any more (the sandbox is gone).
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf[..n].to_vec();
        let tx = {
            let mut st = terminal.lock();
            match &st.attached {
                Some((_, tx)) => Some(tx.clone()),
                None => {
                    st.keep(&chunk);
                    None
                }
            }
        };
        if let Some(tx) = tx
            && let Err(unsent) = tx.send(chunk).await
        {
            // The client left meanwhile: keep it for the next one.
            terminal.lock().keep(&unsent.0);
        }
    }
    let mut st = terminal.lock();
    st.closed = true;
    st.attached = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn backlog_keeps_the_newest_bytes() {
        let mut st = State::default();
        st.keep(&vec![b'a'; BACKLOG - 2]);
        st.keep(b"bcd");
        assert_eq!(st.backlog.len(), BACKLOG);
        assert_eq!(st.backlog.front(), Some(&b'a'));
        assert_eq!(st.backlog.iter().rev().take(3).copied().collect::<Vec<_>>(), b"dcb");
        st.keep(&vec![b'z'; BACKLOG + 10]);
        assert!(st.backlog.iter().all(|&b| b == b'z') && st.backlog.len() == BACKLOG);
    }

    #[tokio::test]
    async fn backlog_then_live_output_then_close() {
        let pair = pty::open(24, 80).unwrap();
        let terminal = Terminal::start(pair.master).unwrap();
        let mut peer = std::fs::File::from(pair.peer);
        peer.write_all(b"early\n").unwrap();
        // Wait until the reader has taken it into the backlog.
        let mut att = None;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if !terminal.lock().backlog.is_empty() {
                att = terminal.attach();
                break;
            }
        }
        let mut att = att.expect("the early output reached the backlog");
        assert_eq!(att.backlog, b"early\r\n");
        terminal.write_all(b"typed\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = peer.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"typed\n");
        // The line discipline echoes input: the echo and the next write arrive live.
        peer.write_all(b"live\n").unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("live") {
            seen.extend(att.output.recv().await.unwrap());
        }
        // A second client replaces the first, whose output ends.
        let second = terminal.attach().unwrap();
        while att.output.recv().await.is_some() {}
        terminal.resize(30, 100);
        assert_eq!(pty::size(&peer).unwrap(), (30, 100));
        drop(peer);
        let mut second = second;
        while second.output.recv().await.is_some() {}
        assert!(terminal.attach().is_none(), "closed once the agent's side is gone");
    }
}
