//! The explicit HTTP proxy (`HTTP(S)_PROXY=http://127.0.0.1:3128` in the agent).
//!
//! Threat handled: the agent reaching anything the policy does not allow, and
//! hostile input on the proxy port. Each accepted connection gets a binary
//! identity (looked up while the first request head is read), then:
//! - `CONNECT host:port` is handled without hyper (one read, one decision, a
//!   `200`, then a spliced tunnel) — the fast path for HTTPS;
//! - absolute-form requests are served by hyper's HTTP/1.1 server (keep-alive,
//!   upgrades) replaying the bytes already read;
//! - anything else gets a 400 with a JSON body naming the problem.
//!
//! Residual risk: see [`head`] (later requests parsed by hyper) and
//! [`forward`]. Connections beyond the global limit are closed at once.

pub(crate) mod connect;
pub(crate) mod forward;
pub(crate) mod head;
pub(crate) mod reply;
pub(crate) mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::io::Prefixed;
use crate::state::{Counters, Shared};
use head::{FirstRequest, HeadError, classify, read_head};
use reply::BadRequestBody;

/// Accepts proxy connections on `listener` until the task is aborted.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        Counters::bump(&shared.counters.proxy_connections);
        let Ok(permit) = Arc::clone(&shared.conn_limit).try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; proxy connection refused");
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
    let mut buf = BytesMut::with_capacity(4096);
    let (who, head) = tokio::join!(shared.identify(peer, local), read_head(&mut stream, &mut buf));
    let head_len = match head {
        Ok(n) => n,
        Err(HeadError::Eof | HeadError::Io(_)) => return,
        Err(e) => {
            let msg = e.to_string();
            let _ = stream
                .write_all(&reply::raw(StatusCode::BAD_REQUEST, &BadRequestBody::new(&msg), true))
                .await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    match classify(&buf[..head_len]) {
        Ok(FirstRequest::Connect { host, port, head_len }) => {
            let early = buf.split_off(head_len);
            connect::handle(shared, stream, who, host, port, &early).await;
        }
        Ok(FirstRequest::Forward) => {
            // Responses stream to the agent through this socket (tunnels get it in `splice_tcp`).
            crate::io::agent_side(&stream);
            forward::serve(shared, Prefixed::new(buf.freeze(), stream), who).await;
        }
        Err(msg) => {
            let _ = stream
                .write_all(&reply::raw(StatusCode::BAD_REQUEST, &BadRequestBody::new(&msg), true))
                .await;
            let _ = stream.shutdown().await;
        }
    }
}
