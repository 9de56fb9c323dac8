//! Tunnels over hyper upgrades (WebSocket `101`, CONNECT on a kept-alive
//! forward connection): when both ends turn out to be plain TCP sockets, the
//! bytes hyper already read are replayed first and the sockets are then spliced
//! zero-copy; otherwise (TLS upstream, unknown stream types) the tunnel copies
//! through user-space buffers.
//!
//! Threat handled: none beyond the tunnel's (see [`crate::proxy::connect`]);
//! this only picks the data path. Residual risk: none specific.

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::io::Prefixed;
use crate::proxy::connect::{run_tunnel, run_tunnel_tcp};
use crate::proxy::forward::UpIo;
use crate::state::Shared;
use crate::tunnels::TunnelInfo;

/// Any byte stream a buffered tunnel can use.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One end of a tunnel: a TCP socket with bytes to deliver from it first, or
/// another stream (already replaying its own buffered bytes).
pub(crate) enum End {
    Tcp(Bytes, TcpStream),
    Other(Box<dyn Stream>),
}

impl End {
    /// The agent's side of an upgraded forward-proxy connection.
    pub(crate) fn agent(u: Upgraded) -> End {
        match u.downcast::<TokioIo<Prefixed<TcpStream>>>() {
            Ok(parts) => {
                // Stream order: what hyper read (its leftovers are `read_buf`),
                // then what the prefix still holds, then the socket.
                let (rest, tcp) = parts.io.into_inner().into_parts();
                End::Tcp(concat(parts.read_buf, rest), tcp)
            }
            Err(u) => End::Other(Box::new(TokioIo::new(u))),
        }
    }

    /// The upstream side of an upgraded client connection.
    pub(crate) fn upstream(u: Upgraded) -> End {
        match u.downcast::<TokioIo<UpIo>>() {
            Ok(parts) => match parts.io.into_inner() {
                UpIo::Plain(tcp) => End::Tcp(parts.read_buf, tcp),
                tls @ UpIo::Tls(_) => End::Other(Box::new(Prefixed::new(parts.read_buf, tls))),
            },
            Err(u) => End::Other(Box::new(TokioIo::new(u))),
        }
    }

    fn into_stream(self) -> Box<dyn Stream> {
        match self {
            End::Tcp(pending, tcp) => Box::new(Prefixed::new(pending, tcp)),
            End::Other(s) => s,
        }
    }
}

fn concat(a: Bytes, b: Bytes) -> Bytes {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a.chunk());
    v.extend_from_slice(b.chunk());
    Bytes::from(v)
}

/// Runs the tunnel between `agent` and `up`: zero-copy when both are TCP.
pub(crate) async fn run(shared: &Shared, agent: End, up: End, info: TunnelInfo) {
    match (agent, up) {
        (End::Tcp(to_up, mut a), End::Tcp(to_agent, mut b)) => {
            if !to_up.is_empty() && b.write_all(&to_up).await.is_err() {
                return;
            }
            if !to_agent.is_empty() && a.write_all(&to_agent).await.is_err() {
                return;
            }
            run_tunnel_tcp(shared, a, b, info).await;
        }
        (a, b) => run_tunnel(shared, a.into_stream(), b.into_stream(), info).await,
    }
}
