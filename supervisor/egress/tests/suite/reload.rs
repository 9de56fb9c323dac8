//! Reloading the network policy re-decides live tunnels.

use std::time::Duration;

use openshell_egress::EventDecision;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

fn policy(port: u16, binary: &str) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  local:\n    endpoints: [{{host: 127.0.0.1, port: {port}}}]\n    \
         binaries: [{{path: {binary}}}]\n"
    )
}

async fn tunnel(h: &Harness, port: u16) -> TcpStream {
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
    let (status, _, _) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 200);
    s.write_all(b"up").await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    s
}

#[tokio::test]
async fn reload_closes_tunnels_no_longer_allowed() {
    let echo = Echo::start().await;
    let port = echo.addr.port();
    let h = Setup::new(&policy(port, CURL)).start().await;
    let mut kept = tunnel(&h, port).await;
    eventually(|| h.egress.stats().open_tunnels == 1).await;

    // Same rule in a new generation: nothing closes.
    assert_eq!(h.egress.reload(engine(&policy(port, CURL), 2)), 0);
    kept.write_all(b"ok").await.unwrap();
    let mut b = [0u8; 2];
    kept.read_exact(&mut b).await.unwrap();

    // The binary loses access: the tunnel is closed and reported.
    assert_eq!(h.egress.reload(engine(&policy(port, "/usr/bin/wget"), 3)), 1);
    let mut rest = Vec::new();
    let n =
        tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut rest)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "tunnel must be closed");
    let e = h
        .events
        .wait_for(Duration::from_secs(5), |e| e.reason.as_deref() == Some("policy_reloaded"))
        .await
        .unwrap();
    assert_eq!(e.decision, EventDecision::Deny);
    assert_eq!(e.generation, Some(3));
    assert_eq!(e.detail["denied_by"], "binary_not_allowed");
    assert_eq!(e.detail["previous_generation"], 2);
    eventually(|| h.egress.stats().open_tunnels == 0).await;
    assert_eq!(h.egress.stats().generation, 3);

    // New connections use the new generation at once.
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["policy_generation"], 3);
}

#[tokio::test]
async fn capture_listeners_can_be_added_later() {
    let echo = Echo::start().await;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let yaml = format!(
        "version: 1\nnetwork_policies:\n  p:\n    endpoints: [{{host: 127.0.0.1, port: {port}}}]\n    \
         binaries: [{{path: /usr/bin/curl}}]\n"
    );
    let mut setup = Setup::new(&yaml);
    setup.connector = Some(std::sync::Arc::new(RedirectTo(echo.addr)));
    let h = setup.start().await;
    h.egress.add_capture_listeners(port, vec![l]).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut b = [0u8; 3];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"GET");
}

#[tokio::test]
async fn reload_adding_l7_rules_closes_connect_tunnels() {
    let echo = Echo::start().await;
    let port = echo.addr.port();
    let h = Setup::new(&policy(port, CURL)).start().await;
    let _t = tunnel(&h, port).await;
    eventually(|| h.egress.stats().open_tunnels == 1).await;
    let ro = format!(
        "version: 1\nnetwork_policies:\n  local:\n    endpoints: [{{host: 127.0.0.1, port: {port}, \
         access: read-only}}]\n    binaries: [{{path: {CURL}}}]\n"
    );
    assert_eq!(h.egress.reload(engine(&ro, 2)), 1);
    let e = h
        .events
        .wait_for(Duration::from_secs(5), |e| e.reason.as_deref() == Some("policy_reloaded"))
        .await
        .unwrap();
    assert_eq!(e.detail["denied_by"], "l7_inspection_unavailable");
    eventually(|| h.egress.stats().open_tunnels == 0).await;
}
