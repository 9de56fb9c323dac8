//! HTTP/1.1 (keep-alive), PING lines, WebSocket echo and static files, over plain TCP or TLS.
//!
//! Routes: `/ws` (WebSocket echo when upgraded), `/big?n=BYTES` (body: `probe_bench::pattern`),
//! `/status/NNN`, a file under the static root, otherwise a JSON echo of what arrived (method, path,
//! Host, SNI, which local address).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Result, bail};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{LogEntry, State};
use crate::ws;

struct Conn {
    local: String,
    peer: String,
    tls: bool,
    sni: Option<String>,
}

pub(super) async fn serve_conn(
    s: TcpStream,
    peer: SocketAddr,
    st: Arc<State>,
    tls: Option<TlsAcceptor>,
) -> Result<()> {
    let local = s.local_addr()?.to_string();
    s.set_nodelay(true)?;
    let mut conn = Conn { local, peer: peer.to_string(), tls: false, sni: None };
    if let Some(acceptor) = tls {
        let mut first = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.peek(&mut first)).await??;
        if n == 1 && first[0] == 0x16 {
            let t = acceptor.accept(s).await?;
            conn.tls = true;
            conn.sni = t.get_ref().1.server_name().map(str::to_string);
            return serve(t, conn, st).await;
        }
    }
    serve(s, conn, st).await
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, c: Conn, st: Arc<State>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Read a request head, or a PING line.
        let end = loop {
            if buf.starts_with(b"PING ")
                && let Some(nl) = buf.iter().position(|&b| b == b'\n')
            {
                let nonce = String::from_utf8_lossy(&buf[5..nl]).trim().to_string();
                st.log(LogEntry {
                    kind: "ping".into(),
                    local: c.local.clone(),
                    peer: c.peer.clone(),
                    sni: c.sni.clone(),
                    path: Some(nonce.clone()),
                    ..Default::default()
                });
                s.write_all(format!("PONG {nonce} local={} tls={}\n", c.local, c.tls).as_bytes()).await?;
                s.flush().await?;
                return Ok(());
            }
            if let Some(e) = head_end(&buf) {
                break e;
            }
            if buf.len() > 64 * 1024 {
                bail!("request head too large");
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&buf[..end]).is_err() {
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            return Ok(());
        }
        let method = req.method.unwrap_or("").to_string();
        let path = req.path.unwrap_or("").to_string();
        let http10 = req.version == Some(0);
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        };
        let host = header("host");
        let ua = header("user-agent");
        let close = http10 || header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let upgrade_ws = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let ws_key = header("sec-websocket-key");
        let all_headers: serde_json::Map<String, serde_json::Value> = req
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), json!(String::from_utf8_lossy(h.value))))
            .collect();
        let body_len = header("content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        while buf.len() < end + body_len {
            if s.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..end + body_len);
        let kind = if upgrade_ws {
            "ws"
        } else if c.tls {
            "https"
        } else {
            "http"
        };
        st.log(LogEntry {
            kind: kind.into(),
            local: c.local.clone(),
            peer: c.peer.clone(),
            host: host.clone(),
            method: Some(method.clone()),
            path: Some(path.clone()),
            sni: c.sni.clone(),
            user_agent: ua,
            ..Default::default()
        });

        // Absolute-form targets (a client talking to us as if we were a proxy) are served by path.
        let route = path
            .split_once("://")
            .map(|(_, r)| r.find('/').map_or("/", |i| &r[i..]))
            .unwrap_or(&path)
            .to_string();
        if upgrade_ws && route.starts_with("/ws") {
            let Some(key) = ws_key else {
                respond(&mut s, 400, "text/plain", b"missing Sec-WebSocket-Key", true).await?;
                return Ok(());
            };
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                ws::accept_key(&key)
            );
            s.write_all(resp.as_bytes()).await?;
            return ws_echo(s, buf).await;
        }
        let (status, ctype, body) = if let Some(n) = route.strip_prefix("/big?n=") {
            let n: usize = n.parse().unwrap_or(0).min(1 << 31);
            big(&mut s, n, close).await?;
            if close {
                return Ok(());
            }
            continue;
        } else if let Some(code) = route.strip_prefix("/status/") {
            (code.parse().unwrap_or(500), "text/plain", Vec::new())
        } else if let Some(bytes) = static_file(&st, &route) {
            (200, "application/octet-stream", bytes)
        } else if route.starts_with("/repo.git/") || route.starts_with("/files/") {
            (404, "text/plain", b"not found".to_vec())
        } else {
            let echo = json!({
                "method": method, "path": path, "host": host, "local": c.local, "peer": c.peer,
                "tls": c.tls, "sni": c.sni, "headers": all_headers,
            });
            (200, "application/json", serde_json::to_vec(&echo)?)
        };
        respond(&mut s, status, ctype, &body, close).await?;
        if close {
            return Ok(());
        }
    }
}

fn static_file(st: &State, route: &str) -> Option<Vec<u8>> {
    let root = st.cfg.static_root.as_ref()?;
    let path = route.split('?').next()?.trim_start_matches('/');
    if path.is_empty() || path.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return None;
    }
    let full = root.join(path);
    if !full.is_file() {
        return None;
    }
    std::fs::read(full).ok()
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    ctype: &str,
    body: &[u8],
    close: bool,
) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Fake-Internet: 1\r\nConnection: {}\r\n\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out).await?;
    s.flush().await?;
    Ok(())
}

async fn big<S: AsyncWrite + Unpin>(s: &mut S, n: usize, close: bool) -> Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nX-Fake-Internet: 1\r\nConnection: {}\r\n\r\n",
        if close { "close" } else { "keep-alive" }
    );
    s.write_all(head.as_bytes()).await?;
    // A position-dependent pattern, so the bench can prove the bytes arrived intact and in order.
    let chunk = crate::probe_bench::pattern_chunk();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        s.write_all(&chunk[..k]).await?;
        left -= k;
    }
    s.flush().await?;
    Ok(())
}

async fn ws_echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, mut buf: Vec<u8>) -> Result<()> {
    loop {
        match ws::decode_frame(&buf) {
            Err(e) => bail!("bad frame: {e}"),
            Ok(Some((f, used))) => {
                buf.drain(..used);
                match f.opcode {
                    ws::OP_TEXT | ws::OP_BINARY => {
                        s.write_all(&ws::encode_frame(f.opcode, &f.payload, None)).await?
                    }
                    ws::OP_PING => s.write_all(&ws::encode_frame(ws::OP_PONG, &f.payload, None)).await?,
                    ws::OP_CLOSE => {
                        s.write_all(&ws::encode_frame(ws::OP_CLOSE, &f.payload, None)).await?;
                        return Ok(());
                    }
                    _ => {}
                }
                s.flush().await?;
            }
            Ok(None) => {
                if s.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
        }
    }
}
