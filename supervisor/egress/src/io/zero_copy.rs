//! Zero-copy tunnels between two TCP sockets: `splice(2)` from one socket into
//! a pipe and from the pipe into the other socket, driven by tokio readiness
//! (`readable`/`writable` + `try_io`). The bytes never enter user space.
//!
//! Pipes are taken from a small process-wide pool only while bytes are in
//! flight: a direction takes one when its source becomes readable, keeps it
//! while data keeps coming, and returns it (always empty) as soon as the source
//! would block. A pipe starts at the kernel's default size and grows to
//! [`BULK_PIPE_SIZE`] once a splice fills it (bulk data); a grown pipe is kept
//! across pauses shorter than [`BULK_HOLD`] and shrunk back before it is
//! pooled. An idle tunnel therefore holds no pipe, no buffer and no descriptor
//! besides its two sockets. A pipe that still holds bytes when its direction
//! ends (error, cancellation) is closed, never pooled.
//!
//! Readiness rule: a splice from the socket is only attempted through `try_io`
//! while the pipe is empty, so `EAGAIN` can only mean "the socket has no data"
//! (an empty pipe always has room) and clearing tokio's readiness is correct.
//! The same holds for the write side: the pipe then holds bytes, so `EAGAIN`
//! means "the socket's send buffer is full".
//!
//! Threat handled: none beyond [`crate::io`]'s (idle timeout, cancellation).
//! Residual risk: pipe pages are kernel memory (at most [`BULK_PIPE_SIZE`] per
//! direction in flight, charged to the supervisor's user); when no pipe can be
//! created (descriptor or pipe limits) a direction copies through a
//! [`FALLBACK_BUF`] user-space buffer for that burst instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::Activity;

/// Capacity a pipe grows to once a direction moves bulk data (a splice filled
/// the pipe): fewer, larger splices. Pipes start at the kernel default (64 KiB
/// normally) and are shrunk back before they are pooled.
pub(crate) const BULK_PIPE_SIZE: usize = 1024 * 1024;
/// How long a direction keeps its grown pipe while its source has nothing.
const BULK_HOLD: Duration = Duration::from_millis(50);
/// Idle pipes kept for reuse; more are closed. Small on purpose: pipe capacity
/// is charged to the supervisor's user even when empty (`pipe-user-pages-soft`),
/// and in rootless mode that user also runs the agents.
const POOL_MAX: usize = 4;
/// User-space buffer for a burst copied without a pipe.
const FALLBACK_BUF: usize = 16 * 1024;

/// A pipe (read end, write end), its capacity and its default capacity.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
    default_cap: usize,
}

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(p) = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(p);
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let cap = size_of(&w).unwrap_or(4096);
        Ok(Pipe { r, w, cap, default_cap: cap })
    }

    /// Grows an (empty or not) pipe for bulk transfers; keeps it as it is when
    /// the kernel refuses (pipe limits).
    fn grow(&mut self) {
        if self.cap >= BULK_PIPE_SIZE {
            return;
        }
        let want = i32::try_from(BULK_PIPE_SIZE).unwrap_or(i32::MAX);
        if let Ok(n) = fcntl(&self.w, FcntlArg::F_SETPIPE_SZ(want)) {
            self.cap = usize::try_from(n).unwrap_or(self.cap);
        }
    }

    /// Returns an EMPTY pipe to the pool (at its default size), or closes it.
    fn put(mut self) {
        if self.cap != self.default_cap {
            let want = i32::try_from(self.default_cap).unwrap_or(i32::MAX);
            match fcntl(&self.w, FcntlArg::F_SETPIPE_SZ(want)) {
                Ok(n) => self.cap = usize::try_from(n).unwrap_or(self.cap),
                Err(_) => return,
            }
        }
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }
}

fn size_of(fd: &OwnedFd) -> Option<usize> {
    fcntl(fd, FcntlArg::F_GETPIPE_SZ).ok().and_then(|n| usize::try_from(n).ok()).filter(|&n| n >= 4096)
}

fn spliced(r: nix::Result<usize>) -> io::Result<usize> {
    r.map_err(io::Error::from)
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

/// Moves bytes from `src` to `dst` until EOF on `src` (then half-closes `dst`)
/// or an error. `moved` counts bytes delivered to `dst`.
pub(crate) async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    moved: &mut u64,
) -> io::Result<()> {
    let mut held: Option<Pipe> = None;
    loop {
        match &held {
            // A grown pipe is kept across short pauses of a bulk transfer
            // (regrowing it each time costs two `fcntl`s), not while idle.
            Some(p) if p.cap > p.default_cap => {
                if tokio::time::timeout(BULK_HOLD, src.readable()).await.is_err() {
                    if let Some(p) = held.take() {
                        p.put();
                    }
                    src.readable().await?;
                }
            }
            _ => src.readable().await?,
        }
        let mut pipe = match held.take() {
            Some(p) => p,
            None => match Pipe::take() {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for a tunnel burst; copying in user space");
                    if copy_burst(src, dst, activity, moved).await? {
                        return half_close(dst);
                    }
                    continue;
                }
            },
        };
        match src.try_io(Interest::READABLE, || spliced(splice(src, None, &pipe.w, None, pipe.cap, FLAGS))) {
            Ok(0) => {
                pipe.put();
                return half_close(dst);
            }
            Ok(n) => {
                activity.touch();
                drain(&pipe, n, dst).await?;
                *moved += n as u64;
                // The socket had at least a full pipe queued: bulk data.
                if n >= pipe.cap {
                    pipe.grow();
                }
                held = Some(pipe);
            }
            // The pipe is empty, so the socket had nothing: the burst is over
            // (or, for a grown pipe, paused).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if pipe.cap > pipe.default_cap {
                    held = Some(pipe);
                } else {
                    pipe.put();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => held = Some(pipe),
            // `pipe` may hold nothing here, but it is simply closed.
            Err(e) => return Err(e),
        }
    }
}

/// Writes the `n` bytes in `pipe` to `dst`.
async fn drain(pipe: &Pipe, mut n: usize, dst: &TcpStream) -> io::Result<()> {
    while n > 0 {
        dst.writable().await?;
        match dst.try_io(Interest::WRITABLE, || spliced(splice(&pipe.r, None, dst, None, n, FLAGS))) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => n -= k,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One burst through user space (no pipe available): reads what `src` has,
/// writes it all. Returns `true` on EOF.
async fn copy_burst(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    moved: &mut u64,
) -> io::Result<bool> {
    let mut buf = vec![0u8; FALLBACK_BUF];
    loop {
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        activity.touch();
        let mut off = 0;
        while off < n {
            dst.writable().await?;
            match dst.try_write(&buf[off..n]) {
                Ok(k) => off += k,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        *moved += n as u64;
    }
}

/// Half-closes `dst` after EOF from the other side (like `copy_bidirectional`).
fn half_close(dst: &TcpStream) -> io::Result<()> {
    match nix::sys::socket::shutdown(dst.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Write) {
        // The peer may already be gone; the other direction reports that.
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn pumps_large_transfers_intact_and_half_closes() {
        let (mut writer, src) = pair().await;
        let (dst, mut reader) = pair().await;
        let total = 8 * 1024 * 1024 + 123;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let w = tokio::spawn(async move {
            writer.write_all(&data).await.unwrap();
            writer.shutdown().await.unwrap();
            writer
        });
        let p = tokio::spawn(async move {
            let mut moved = 0;
            let r = pump(&src, &dst, &Activity::new(), &mut moved).await;
            (r.map(|()| moved), src, dst)
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert!(got == expect, "bytes differ (got {} of {})", got.len(), expect.len());
        let (moved, _src, _dst) = p.await.unwrap();
        assert_eq!(moved.unwrap(), total as u64);
        drop(w.await.unwrap());
        let pool = POOL.lock().unwrap();
        assert!(pool.len() <= POOL_MAX);
        assert!(pool.iter().all(|p| p.cap == p.default_cap), "pooled pipes are shrunk back");
    }
}
