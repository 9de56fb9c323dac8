//! Byte-stream helpers: replaying already-read bytes, tracking activity, and
//! splicing two streams with an idle timeout and a cancellation signal: two
//! TCP sockets zero-copy ([`splice_tcp`], see [`zero_copy`]), anything else
//! through user-space buffers ([`splice`]).
//!
//! Threat handled: resource exhaustion by idle tunnels (closed after the idle
//! timeout, at least one hour) and tunnels outliving the policy that allowed
//! them (closed when the tunnel registry cancels them on reload).
//! Residual risk: a buffered tunnel (TLS or hyper-upgraded streams) holds two
//! [`SPLICE_BUF`] copy buffers; a zero-copy tunnel holds none while idle.
//!
//! Agent-side sockets never leave the host (the sandbox's network namespace has
//! only `lo`), so [`agent_side`] gives them [`AGENT_SIDE_CC`] instead of the
//! host's default congestion control, which is meant for real networks; the
//! upstream socket keeps the host's choice.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

mod zero_copy;

/// Copy buffer per direction of a buffered tunnel.
pub(crate) const SPLICE_BUF: usize = 64 * 1024;

/// Congestion control of agent-side sockets. The host default is often `bbr`,
/// which paces every socket (an hrtimer per burst) at the rate it measures; on
/// the sandbox's loopback, where the proxy hop competes for the same CPUs as
/// the agent and the server, that rate is the CPU share it got, and the pacing
/// timers cost the CPU the hop needs (the bench's bulk download through a
/// CONNECT tunnel: about +25 % throughput and a third less supervisor CPU per
/// GiB with `reno`). `reno` is always permitted (no `CAP_NET_ADMIN` needed:
/// rootless mode) and has nothing to pace or probe on a lossless loopback.
pub(crate) const AGENT_SIDE_CC: &str = "reno";

/// Prepares an accepted agent-side socket for bulk transfer: loopback
/// congestion control ([`AGENT_SIDE_CC`]). Best effort: a kernel without it
/// leaves the socket as it is (a slower tunnel, never a refused one).
pub(crate) fn agent_side(agent: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt::TcpCongestion};
    if let Err(e) = setsockopt(agent, TcpCongestion, &std::ffi::OsString::from(AGENT_SIDE_CC)) {
        tracing::debug!(error = %e, cc = AGENT_SIDE_CC, "agent-side congestion control unchanged");
    }
}

/// A stream that first yields `prefix`, then reads from `inner`. Writes go to
/// `inner` unchanged.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// The bytes not yet replayed and the inner stream.
    pub(crate) fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Last-activity clock shared by both directions of a tunnel.
#[derive(Debug, Clone)]
struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self { base: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let deadline = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records the time of every successful read and counts bytes read.
struct Tracked<S> {
    inner: S,
    activity: Activity,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if matches!(r, Poll::Ready(Ok(()))) && n > 0 {
            self.activity.touch();
            self.read += n as u64;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why a tunnel ended.
#[derive(Debug)]
pub(crate) enum SpliceEnd {
    /// Both directions reached EOF.
    Finished,
    /// No byte in either direction for the idle timeout.
    Idle,
    /// The tunnel registry closed it (policy reload).
    Cancelled,
    /// An I/O error on either side.
    Error(io::Error),
}

/// How a tunnel ended and what it carried.
#[derive(Debug)]
pub(crate) struct Spliced {
    /// Bytes agent -> upstream.
    pub up: u64,
    /// Bytes upstream -> agent.
    pub down: u64,
    pub end: SpliceEnd,
}

/// Resolves when `cancel` turns `true`; never when it is absent or its sender
/// is gone (the registry entry is gone; the tunnel lives on).
async fn cancelled(cancel: Option<watch::Receiver<bool>>) {
    if let Some(mut rx) = cancel
        && rx.wait_for(|c| *c).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// Zero-copy tunnel between two TCP sockets (see [`zero_copy`]): bytes both
/// ways until EOF on both sides, an error, `idle` without any byte, or
/// `cancel` turning `true`. `agent` gets [`agent_side`] (CONNECT, capture and
/// WebSocket tunnels all come through here).
pub(crate) async fn splice_tcp(
    agent: TcpStream,
    upstream: TcpStream,
    idle: Duration,
    cancel: Option<watch::Receiver<bool>>,
) -> Spliced {
    agent_side(&agent);
    let activity = Activity::new();
    let (mut up, mut down) = (0, 0);
    let end = {
        let both = async {
            tokio::try_join!(
                zero_copy::pump(&agent, &upstream, &activity, &mut up),
                zero_copy::pump(&upstream, &agent, &activity, &mut down),
            )
        };
        tokio::select! {
            r = both => match r {
                Ok(((), ())) => SpliceEnd::Finished,
                Err(e) => SpliceEnd::Error(e),
            },
            () = activity.idle_for(idle) => SpliceEnd::Idle,
            () = cancelled(cancel) => SpliceEnd::Cancelled,
        }
    };
    Spliced { up, down, end }
}

/// Copies bytes both ways through user-space buffers (for streams that are not
/// two plain TCP sockets: TLS, hyper upgrades) until EOF on both sides, an
/// error, `idle` without any byte, or `cancel` turning `true`. Byte counts are
/// bytes read from each side.
pub(crate) async fn splice<A, B>(
    agent: A,
    upstream: B,
    idle: Duration,
    cancel: Option<watch::Receiver<bool>>,
) -> Spliced
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Tracked { inner: agent, activity: activity.clone(), read: 0 };
    let mut b = Tracked { inner: upstream, activity: activity.clone(), read: 0 };
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUF, SPLICE_BUF) => match r {
            Ok(_) => SpliceEnd::Finished,
            Err(e) => SpliceEnd::Error(e),
        },
        () = activity.idle_for(idle) => SpliceEnd::Idle,
        () = cancelled(cancel) => SpliceEnd::Cancelled,
    };
    Spliced { up: a.read, down: b.read, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn prefixed_replays_then_reads() {
        let (mut w, r) = duplex(64);
        w.write_all(b" world").await.unwrap();
        drop(w);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), r);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }

    #[tokio::test]
    async fn splice_copies_and_finishes() {
        let (agent_side, mut agent) = duplex(1024);
        let (up_side, mut up) = duplex(1024);
        let t = tokio::spawn(splice(agent_side, up_side, Duration::from_secs(3600), None));
        agent.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        up.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        up.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        agent.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        drop(agent);
        drop(up);
        match t.await.unwrap() {
            Spliced { up: 4, down: 5, end: SpliceEnd::Finished } => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn splice_idles_out() {
        let (a, _keep_a) = duplex(64);
        let (b, _keep_b) = duplex(64);
        let end = splice(a, b, Duration::from_secs(3600), None).await;
        assert!(matches!(end.end, SpliceEnd::Idle), "{end:?}");
    }

    #[tokio::test]
    async fn splice_cancels() {
        let (a, _keep_a) = duplex(64);
        let (b, _keep_b) = duplex(64);
        let (tx, rx) = watch::channel(false);
        let t = tokio::spawn(splice(a, b, Duration::from_secs(3600), Some(rx)));
        tx.send_replace(true);
        assert!(matches!(t.await.unwrap().end, SpliceEnd::Cancelled));
    }

    /// (client end, the accepted end) of a loopback connection.
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn splice_tcp_copies_both_ways_and_finishes() {
        let (mut agent, agent_side) = tcp_pair().await;
        let (up_side, mut up) = tcp_pair().await;
        let t = tokio::spawn(splice_tcp(agent_side, up_side, Duration::from_secs(3600), None));
        agent.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        up.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        up.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        agent.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        // Half-close is forwarded: the agent's EOF reaches upstream, which can still answer.
        agent.shutdown().await.unwrap();
        assert_eq!(up.read(&mut buf).await.unwrap(), 0);
        up.write_all(b"late").await.unwrap();
        drop(up);
        let mut rest = Vec::new();
        agent.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"late");
        match t.await.unwrap() {
            Spliced { up: 4, down: 9, end: SpliceEnd::Finished } => {}
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn agent_side_sockets_get_loopback_congestion_control() {
        use nix::sys::socket::{getsockopt, sockopt::TcpCongestion};
        let (_agent, agent_side_sock) = tcp_pair().await;
        agent_side(&agent_side_sock);
        let cc = getsockopt(&agent_side_sock, TcpCongestion).unwrap();
        assert_eq!(cc, std::ffi::OsString::from(AGENT_SIDE_CC));
    }

    #[tokio::test(start_paused = true)]
    async fn splice_tcp_idles_out() {
        let (_agent, agent_side) = tcp_pair().await;
        let (up_side, _up) = tcp_pair().await;
        let end = splice_tcp(agent_side, up_side, Duration::from_secs(3600), None).await;
        assert!(matches!(end.end, SpliceEnd::Idle), "{end:?}");
    }

    #[tokio::test]
    async fn splice_tcp_cancels_and_closes_both_sides() {
        let (mut agent, agent_side) = tcp_pair().await;
        let (up_side, mut up) = tcp_pair().await;
        let (tx, rx) = watch::channel(false);
        let t = tokio::spawn(splice_tcp(agent_side, up_side, Duration::from_secs(3600), Some(rx)));
        tx.send_replace(true);
        assert!(matches!(t.await.unwrap().end, SpliceEnd::Cancelled));
        let mut buf = [0u8; 1];
        assert!(matches!(agent.read(&mut buf).await, Ok(0) | Err(_)));
        assert!(matches!(up.read(&mut buf).await, Ok(0) | Err(_)));
    }
}
