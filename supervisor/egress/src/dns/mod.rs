//! The sandbox DNS server (UDP and TCP on port 53 inside the agent's netns).
//!
//! Threat handled: the agent's only resolver is this server, so every name the
//! agent resolves is policy-checked (see [`answer`]). Resource use is bounded:
//! a fixed number of UDP queries in flight (excess is dropped, clients retry),
//! TCP connections share the egress connection limit and idle out.
//! Residual risk: the server does not know which binary asks (DNS is decided by
//! name only); a UDP sender address is not verified (it is always local to the
//! sandbox netns, so spoofing only reflects answers back into the sandbox).

mod answer;
mod answer_log;
mod dedupe;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

pub(crate) use answer_log::AnswerLog;
pub(crate) use dedupe::DenialDedupe;

use crate::state::Shared;

/// UDP queries resolved concurrently per socket.
const UDP_IN_FLIGHT: usize = 256;
/// A TCP DNS connection with no complete query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Serves DNS over UDP on `sock` until the task is aborted.
pub(crate) async fn serve_udp(shared: Arc<Shared>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let in_flight = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // Transient (e.g. ICMP errors from earlier replies); keep
                // serving, without spinning on a persistent error.
                tracing::debug!(error = %e, "dns udp recv");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            tracing::debug!("dns udp overloaded; query dropped");
            continue;
        };
        let wire = buf[..n].to_vec();
        let (shared, sock) = (Arc::clone(&shared), Arc::clone(&sock));
        tokio::spawn(async move {
            if let Some(reply) = answer::respond(&shared, &wire, true).await
                && let Err(e) = sock.send_to(&reply, from).await
            {
                tracing::debug!(error = %e, %from, "dns udp send");
            }
            drop(permit);
        });
    }
}

/// Serves DNS over TCP on `listener` until the task is aborted.
pub(crate) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.conn_limit).try_acquire_owned() else { continue };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            serve_tcp_conn(&shared, stream).await;
            drop(permit);
        });
    }
}

async fn serve_tcp_conn(shared: &Shared, mut stream: TcpStream) {
    let mut len = [0u8; 2];
    loop {
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut wire = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut wire)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(reply) = answer::respond(shared, &wire, false).await else { return };
        let Ok(n) = u16::try_from(reply.len()) else { return };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
