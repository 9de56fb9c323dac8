//! Transparent capture: connections the agent makes to ANY address on a port
//! the policy names, for clients that ignore `HTTP(S)_PROXY`.
//!
//! The agent's netns routes every address to `lo` (see egress.md), so the
//! capture listener on `0.0.0.0:P`/`[::]:P` accepts them and `local_addr()` of
//! the accepted socket IS the original destination.
//!
//! Threats handled:
//! - unlisted destinations: the connection is decided with the host name from
//!   the TLS SNI or HTTP `Host` (a claim, verified against the destination
//!   address: `destination_mismatch`), else the name our DNS answered for that
//!   address, else the IP literal; refusals are a TCP RST (fast, no hang);
//! - SSRF: the original destination is address-checked like any resolution;
//! - stalling: the first bytes are awaited for at most [`SNIFF_TIMEOUT`];
//!   server-speaks-first protocols on well-known ports skip the wait.
//!
//! - L7 rules: captured connections are relayed, never parsed per request, so
//!   an endpoint with `access` other than `full`, `rules`, `deny_rules` or
//!   `path` is refused (`l7_inspection_unavailable`), plain HTTP on port 80
//!   included, unless its enforcement is `audit`.
//!
//! Residual risk: a client that sends nothing within the timeout and whose
//! address our DNS never gave out is decided by IP literal only; protocols
//! that speak first on unusual ports wait [`SNIFF_TIMEOUT`] before connecting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::gate::{Attempt, Origin};
use crate::proxy::connect::run_tunnel_tcp;
use crate::sniff::{MAX_SNIFF, Progress, Sniffed, sniff};
use crate::state::{Counters, Shared};
use crate::tunnels::{Door, TunnelInfo};

/// How long to wait for the client's first bytes (default of
/// [`crate::EgressOptions::capture_sniff_timeout`]).
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(3);

/// Ports whose protocols have the server speak first (FTP, SSH, SMTP, POP3,
/// IMAP, submission, MySQL): no point waiting for client bytes.
const SERVER_FIRST_PORTS: &[u16] = &[21, 22, 25, 110, 143, 587, 3306];

/// Accepts captured connections on `listener` until the task is aborted.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "capture accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        Counters::bump(&shared.counters.capture_connections);
        let Ok(permit) = Arc::clone(&shared.conn_limit).try_acquire_owned() else {
            reset(stream);
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            handle(shared, stream, peer).await;
            drop(permit);
        });
    }
}

async fn handle(shared: Arc<Shared>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else { return };
    let dst = local.ip().to_canonical();
    let port = local.port();
    let (who, (early, sniffed)) =
        tokio::join!(shared.identify(peer, local), first_bytes(&mut stream, port, shared.sniff_timeout));
    let (host, claimed) = match sniffed {
        Sniffed::Tls(Some(name)) | Sniffed::Http(Some(name)) => (name, true),
        _ => (shared.answers.name_for(dst).unwrap_or_else(|| dst.to_string()), false),
    };
    let at = Attempt { door: Door::Capture, host: &host, port };
    let id = match who {
        Ok(id) => id,
        Err(e) => {
            shared.identity_denied(&e, at);
            return reset(stream);
        }
    };
    let checked = match shared.authorize(&id, at, Origin::Captured { dst, claimed }).await {
        Ok(c) => c,
        Err(_) => return reset(stream),
    };
    // Captured bytes are relayed, not parsed per request (plain HTTP included:
    // later requests on a kept-alive connection would go unchecked), so L7
    // rules cannot be enforced here: fail closed.
    if shared.require_no_l7(&id, at, &checked).is_err() {
        return reset(stream);
    }
    let mut up = match shared.connect(&[dst], port).await {
        Ok((s, _)) => s,
        Err(u) => {
            tracing::debug!(host, port, detail = u.detail, "captured destination unreachable");
            return reset(stream);
        }
    };
    shared.allowed(&id, at, dst, &checked);
    if !early.is_empty() && up.write_all(&early).await.is_err() {
        return reset(stream);
    }
    let info = TunnelInfo {
        door: Door::Capture,
        identity: id,
        host,
        port,
        ip: dst,
        policy: checked.allowed.policy.clone(),
        generation: checked.engine.generation(),
    };
    run_tunnel_tcp(&shared, stream, up, info).await;
}

/// Reads the client's first bytes until they identify a protocol, the buffer
/// is full, `wait` has passed since the connection was accepted, or EOF.
async fn first_bytes(stream: &mut TcpStream, port: u16, wait: Duration) -> (Vec<u8>, Sniffed) {
    let mut buf = Vec::new();
    if SERVER_FIRST_PORTS.contains(&port) {
        return (buf, Sniffed::Other);
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = vec![0u8; 4096];
    loop {
        let room = MAX_SNIFF.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return (buf, Sniffed::Other);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (buf, Sniffed::Other),
        }
        if let Progress::Done(s) = sniff(&buf) {
            return (buf, s);
        }
    }
}

/// Closes with RST (`SO_LINGER` 0) so the agent fails fast.
fn reset(stream: TcpStream) {
    // Linger 0 never blocks: the kernel discards unsent data and sends RST.
    #[allow(deprecated)]
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}
