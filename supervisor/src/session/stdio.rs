//! The agent's stdin, stdout and stderr in gateway-driven mode: `/dev/null` and two pipes whose lines go
//! to the outbox (and from there to the gateway's log store).
//!
//! The pipes are always read, whatever the gateway's state (the outbox drops and counts when full), so an
//! agent never blocks on a full pipe because the gateway is away. Lines are decoded as lossy UTF-8; a
//! line longer than [`MAX_LINE`] is split (at a character boundary where one is near); a partial line
//! that sits unfinished for [`PARTIAL_LINE_DELAY`] is sent as it is (a prompt would otherwise never show).

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use openshell_proto::supervisor::v1::Stream;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::outbox::Outbox;
use crate::sandbox::AgentStdio;

pub const MAX_LINE: usize = 16 * 1024;
const PARTIAL_LINE_DELAY: Duration = Duration::from_millis(500);

/// The read ends, not yet served.
pub struct Readers {
    pipes: Vec<(Stream, pipe::Receiver)>,
}

/// Creates the pipes: the write ends go to the launch stage (which passes them on to init and the agent;
/// the supervisor keeps no copy), the read ends are registered with the runtime. Call inside the runtime.
pub fn agent_pipes() -> std::io::Result<(AgentStdio, Readers)> {
    let (out_r, out_w) = std::io::pipe()?;
    let (err_r, err_w) = std::io::pipe()?;
    let stdio =
        AgentStdio::Given { stdin: Stdio::null(), stdout: Stdio::from(out_w), stderr: Stdio::from(err_w) };
    let pipes = vec![
        (Stream::Stdout, pipe::Receiver::from_owned_fd(OwnedFd::from(out_r))?),
        (Stream::Stderr, pipe::Receiver::from_owned_fd(OwnedFd::from(err_r))?),
    ];
    Ok((stdio, Readers { pipes }))
}

impl Readers {
    /// No pipes (the agent runs on a terminal).
    pub fn none() -> Self {
        Readers { pipes: Vec::new() }
    }

    pub fn spawn(self, outbox: Arc<Outbox>) -> ReaderTasks {
        ReaderTasks(
            self.pipes
                .into_iter()
                .map(|(stream, rx)| tokio::spawn(read_lines(rx, stream, outbox.clone())))
                .collect(),
        )
    }
}

/// The running readers.
pub struct ReaderTasks(Vec<JoinHandle<()>>);

impl ReaderTasks {
    /// Waits (at most `timeout`) until both pipes reached end of file, i.e. every line the sandbox wrote is
    /// in the outbox. The pipes close when the last process of the sandbox is gone.
    pub async fn finish(self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for task in self.0 {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("the agent's output did not end within {timeout:?}; not waiting for the rest");
                abort.abort();
            }
        }
    }
}

async fn read_lines(mut rx: pipe::Receiver, stream: Stream, outbox: Arc<Outbox>) {
    let mut buf = vec![0u8; MAX_LINE];
    let mut lines = LineSplitter::default();
    let emit = |text: String| outbox.push_line(stream, text);
    loop {
        let read = if lines.has_partial() {
            match tokio::time::timeout(PARTIAL_LINE_DELAY, rx.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    lines.flush(emit);
                    continue;
                }
            }
        } else {
            rx.read(&mut buf).await
        };
        match read {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n], emit),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(?stream, "reading the agent's output: {e}");
                break;
            }
        }
    }
    lines.flush(emit);
}

/// Splits a byte stream into lines without their newline (`\n` or `\r\n`), at most [`MAX_LINE`] bytes.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(String)) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    if self.pending.last() == Some(&b'\r') {
                        self.pending.pop();
                    }
                    self.split_long(&mut emit);
                    emit(String::from_utf8_lossy(&self.pending).into_owned());
                    self.pending.clear();
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                    self.split_long(&mut emit);
                }
            }
        }
    }

    /// Emits [`MAX_LINE`]-sized pieces while more than that is pending, cutting before a UTF-8
    /// continuation byte when there is one within the last 3 bytes (so a character is not cut in two).
    fn split_long(&mut self, emit: &mut impl FnMut(String)) {
        while self.pending.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while cut > MAX_LINE - 3 && (self.pending[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            if (self.pending[cut] & 0xC0) == 0x80 {
                cut = MAX_LINE;
            }
            let rest = self.pending.split_off(cut);
            emit(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending = rest;
        }
    }

    /// Emits what is pending (end of stream, or a pause in the middle of a line).
    fn flush(&mut self, mut emit: impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(String::from_utf8_lossy(&self.pending).into_owned());
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        for c in chunks {
            s.feed(c, |l| out.push(l));
        }
        s.flush(|l| out.push(l));
        out
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(split(&[b"a\nb", b"c\r\n\nlast"]), ["a", "bc", "", "last"]);
        assert_eq!(split(&[b"\xff\xfeok\n"]), ["\u{fffd}\u{fffd}ok"]);
        assert!(split(&[]).is_empty());
    }

    #[test]
    fn long_lines_are_split_at_character_boundaries() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let got = split(&[&long, b"\n"]);
        assert_eq!(got.iter().map(String::len).collect::<Vec<_>>(), [MAX_LINE, MAX_LINE, 5]);
        // A 3-byte character straddling the limit moves whole to the next piece.
        let mut text = vec![b'y'; MAX_LINE - 1];
        text.extend_from_slice("€tail".as_bytes());
        let got = split(&[&text]);
        assert_eq!(got[0].len(), MAX_LINE - 1);
        assert_eq!(got[1], "€tail");
        assert!(got.iter().all(|l| !l.contains('\u{fffd}')));
    }

    #[tokio::test]
    async fn pipes_feed_the_outbox_until_eof() {
        let (stdio, readers) = agent_pipes().unwrap();
        let outbox = Arc::new(Outbox::default());
        let tasks = readers.spawn(outbox.clone());
        // Stand-in for the agent: write through the write ends, then close them.
        let AgentStdio::Given { stdout, stderr, .. } = stdio else { panic!("pipes expected") };
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "echo out; echo err >&2; printf partial"])
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        child.wait().unwrap();
        tasks.finish(Duration::from_secs(5)).await;
        let mut got = Vec::new();
        while let Some(m) = outbox.take_batch(None) {
            if let Some(openshell_proto::supervisor::v1::supervisor_message::Msg::Logs(b)) = m.msg {
                got.extend(b.lines.into_iter().map(|l| (l.stream, l.text)));
            }
        }
        got.sort();
        assert_eq!(
            got,
            [
                (Stream::Stdout as i32, "out".to_string()),
                (Stream::Stdout as i32, "partial".to_string()),
                (Stream::Stderr as i32, "err".to_string()),
            ]
        );
    }
}
