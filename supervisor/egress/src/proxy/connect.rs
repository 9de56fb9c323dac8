//! `CONNECT host:port` tunnels.
//!
//! Threat handled: opaque tunnels to places the policy does not allow. The
//! tunnel is opened only after identity, decision, resolution and address
//! checks (see [`crate::gate`]); the upstream socket is connected to a checked
//! address; the tunnel is registered so a reload can close it.
//! Residual risk: the bytes inside an allowed tunnel are not inspected (no TLS
//! interception yet); therefore an endpoint with L7 rules (`access` other than
//! `full`, `rules`, `deny_rules`, `path`) is refused here with
//! `l7_inspection_unavailable` (fail closed), unless its enforcement is `audit`.

use std::sync::Arc;

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::gate::{Attempt, Origin, Refusal};
use crate::identity::{BinaryIdentity, IdentityError};
use crate::io::{SpliceEnd, Spliced, splice, splice_tcp};
use crate::proxy::reply::{self, DeniedBody, UnreachableBody};
use crate::state::Shared;
use crate::tunnels::{Door, TunnelInfo};

/// Identity of the agent process, looked up once per agent connection.
pub(crate) type Who = Result<Arc<BinaryIdentity>, Arc<IdentityError>>;

/// Decides, checks and connects; on success the upstream socket and what the
/// tunnel was allowed as.
pub(crate) async fn establish(
    shared: &Shared,
    who: &Who,
    door: Door,
    host: &str,
    port: u16,
) -> Result<(TcpStream, TunnelInfo), Refusal> {
    let at = Attempt { door, host, port };
    let id = match who {
        Ok(id) => id,
        Err(e) => return Err(shared.identity_denied(e, at)),
    };
    let checked = shared.authorize(id, at, Origin::Named).await?;
    shared.require_no_l7(id, at, &checked)?;
    let (up, ip) = shared.connect(&checked.addrs, port).await.map_err(Refusal::Unreachable)?;
    shared.allowed(id, at, ip, &checked);
    let info = TunnelInfo {
        door,
        identity: Arc::clone(id),
        host: host.to_owned(),
        port,
        ip,
        policy: checked.allowed.policy.clone(),
        generation: checked.engine.generation(),
    };
    Ok((up, info))
}

/// The raw HTTP response (with `Connection: close`) for a refused CONNECT.
pub(crate) fn refusal_bytes(r: &Refusal, who: &Who, host: &str, port: u16) -> Vec<u8> {
    let binary = who.as_ref().ok().map(|id| id.path.as_str());
    match r {
        Refusal::Denied(d) => {
            reply::raw(StatusCode::FORBIDDEN, &DeniedBody::new(d, host, port, binary), true)
        }
        Refusal::Unreachable(u) => {
            reply::raw(StatusCode::BAD_GATEWAY, &UnreachableBody::new(u, host, port), true)
        }
    }
}

/// Handles a CONNECT read by the hand-written first-request path. `early` are
/// bytes the client sent after the head (e.g. an eager TLS ClientHello).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    mut agent: TcpStream,
    who: Who,
    host: String,
    port: u16,
    early: &[u8],
) {
    match establish(&shared, &who, Door::Connect, &host, port).await {
        Err(r) => {
            let _ = agent.write_all(&refusal_bytes(&r, &who, &host, port)).await;
            let _ = agent.shutdown().await;
        }
        Ok((mut up, info)) => {
            if agent.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_err() {
                return;
            }
            if !early.is_empty() && up.write_all(early).await.is_err() {
                return;
            }
            run_tunnel_tcp(&shared, agent, up, info).await;
        }
    }
}

/// Registers the tunnel and splices two TCP sockets zero-copy until it ends.
pub(crate) async fn run_tunnel_tcp(shared: &Shared, agent: TcpStream, up: TcpStream, info: TunnelInfo) {
    let (door, host, port) = (info.door, info.host.clone(), info.port);
    let handle = shared.tunnels.register(info);
    let spliced = splice_tcp(agent, up, shared.idle_timeout, Some(handle.cancelled())).await;
    drop(handle);
    log_end(door, &host, port, spliced);
}

/// Registers the tunnel and copies through user-space buffers until it ends
/// (for streams that are not two plain TCP sockets).
pub(crate) async fn run_tunnel<A, B>(shared: &Shared, agent: A, up: B, info: TunnelInfo)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (door, host, port) = (info.door, info.host.clone(), info.port);
    let handle = shared.tunnels.register(info);
    let spliced = splice(agent, up, shared.idle_timeout, Some(handle.cancelled())).await;
    drop(handle);
    log_end(door, &host, port, spliced);
}

fn log_end(door: Door, host: &str, port: u16, s: Spliced) {
    let (door, up_bytes, down_bytes) = (door.as_str(), s.up, s.down);
    match s.end {
        SpliceEnd::Finished => tracing::debug!(door, host, port, up_bytes, down_bytes, "tunnel closed"),
        SpliceEnd::Idle => {
            tracing::debug!(door, host, port, up_bytes, down_bytes, "tunnel closed: idle timeout")
        }
        SpliceEnd::Cancelled => {
            tracing::info!(door, host, port, up_bytes, down_bytes, "tunnel closed by policy reload")
        }
        SpliceEnd::Error(e) => {
            tracing::debug!(door, host, port, up_bytes, down_bytes, error = %e, "tunnel closed: error")
        }
    }
}
