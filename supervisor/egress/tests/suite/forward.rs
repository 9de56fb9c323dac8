//! Absolute-form forwarding, keep-alive, https:// upstreams, WebSocket upgrades.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openshell_egress::EventDecision;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

fn policy(ports: &[u16]) -> String {
    let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    format!(
        r#"
version: 1
network_policies:
  web:
    endpoints:
      - {{host: 127.0.0.1, ports: [{ports}]}}
      - {{host: secure.test, ports: [{ports}]}}
    binaries: [{{path: /usr/bin/curl}}]
"#
    )
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn keep_alive_two_requests_one_upstream_connection() {
    let up = HttpEcho::start(None).await;
    let h = Setup::new(&policy(&[up.addr.port()])).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let base = format!("http://127.0.0.1:{}", up.addr.port());
    s.write_all(
        format!(
            "GET {base}/a?x=1 HTTP/1.1\r\nHost: wrong.example\r\nProxy-Authorization: Basic eDp5\r\n\
             Proxy-Connection: keep-alive\r\nConnection: X-Drop\r\nX-Drop: secret\r\nX-Keep: 1\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, headers, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "keep-alive"), None, "hop-by-hop response header must be stripped");
    let v = json(&body);
    assert_eq!(v["target"], "/a?x=1", "origin-form upstream");
    assert_eq!(v["headers"]["host"], format!("127.0.0.1:{}", up.addr.port()));
    assert_eq!(v["headers"]["x-keep"], "1");
    for dropped in ["proxy-authorization", "proxy-connection", "x-drop", "connection"] {
        assert!(v["headers"].get(dropped).is_none(), "{dropped} forwarded: {v}");
    }
    s.write_all(format!("GET {base}/b HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 200);
    let v2 = json(&body);
    assert_eq!(v2["target"], "/b");
    assert_eq!(v2["conn"], v["conn"], "the upstream connection is reused");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(h.egress.stats().proxy_connections, 1);
}

#[tokio::test]
async fn request_bodies_fixed_and_chunked() {
    let up = HttpEcho::start(None).await;
    let h = Setup::new(&policy(&[up.addr.port()])).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let url = format!("http://127.0.0.1:{}/p", up.addr.port());
    s.write_all(format!("POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").as_bytes())
        .await
        .unwrap();
    let (_, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(json(&body)["body"], "hello");
    s.write_all(
        format!("POST {url} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (_, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(json(&body)["body"], "abcde");
}

#[tokio::test]
async fn forward_denial_is_403_and_connection_stays_usable() {
    let up = HttpEcho::start(None).await;
    let h = Setup::new(&policy(&[up.addr.port()])).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(b"GET http://denied.example.com/ HTTP/1.1\r\nHost: denied.example.com\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let v = json(&body);
    assert_eq!(v["error"], "policy_denied");
    assert_eq!(v["reason"], "no_endpoint");
    assert_eq!(v["port"], 80);
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.detail["door"], "forward");
    s.write_all(format!("GET http://127.0.0.1:{}/ok HTTP/1.1\r\nHost: x\r\n\r\n", up.addr.port()).as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn https_url_fetched_over_tls_with_extra_ca() {
    let pki = pki("secure.test");
    let up = HttpEcho::start(Some(pki.acceptor.clone())).await;
    let dns = TestDns::start(&[("secure.test", "127.0.0.1")]).await;
    let mut setup = Setup::new(&policy(&[up.addr.port()]));
    setup.dns_upstream = Some(dns.addr);
    setup.extra_ca = Some(pki.ca_file.path().to_owned());
    let h = setup.start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let port = up.addr.port();
    s.write_all(
        format!("GET https://secure.test:{port}/tls HTTP/1.1\r\nHost: secure.test\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (status, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["target"], "/tls");
    assert_eq!(v["headers"]["host"], format!("secure.test:{port}"));
}

#[tokio::test]
async fn https_url_with_untrusted_certificate_is_502() {
    let pki = pki("secure.test");
    let up = HttpEcho::start(Some(pki.acceptor.clone())).await;
    let dns = TestDns::start(&[("secure.test", "127.0.0.1")]).await;
    let mut setup = Setup::new(&policy(&[up.addr.port()]));
    setup.dns_upstream = Some(dns.addr);
    let h = setup.start().await; // no extra CA
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(
        format!("GET https://secure.test:{}/ HTTP/1.1\r\nHost: x\r\n\r\n", up.addr.port()).as_bytes(),
    )
    .await
    .unwrap();
    let (status, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 502);
    assert_eq!(json(&body)["reason"], "tls_failed");
}

#[tokio::test]
async fn websocket_upgrade_is_spliced() {
    let up = HttpEcho::start(None).await;
    let h = Setup::new(&policy(&[up.addr.port()])).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(
        format!(
            "GET http://127.0.0.1:{}/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            up.addr.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, headers, _) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 101);
    assert_eq!(header(&headers, "upgrade"), Some("websocket"));
    s.write_all(b"frame-bytes").await.unwrap();
    let mut buf = [0u8; 11];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"frame-bytes");
    eventually(|| h.egress.stats().open_tunnels == 1).await;
}

#[tokio::test]
async fn connect_after_forward_on_same_connection() {
    let up = HttpEcho::start(None).await;
    let echo = Echo::start().await;
    let h = Setup::new(&policy(&[up.addr.port(), echo.addr.port()])).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: x\r\n\r\n", up.addr.port()).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().0, 200);
    let t = format!("127.0.0.1:{}", echo.addr.port());
    s.write_all(format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().0, 200);
    s.write_all(b"in-band").await.unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"in-band");
    // A denied in-band CONNECT is a 403 with Connection: close.
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: x\r\n\r\n", up.addr.port()).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await.unwrap().0, 200);
    s.write_all(b"CONNECT nope.example.com:443 HTTP/1.1\r\nHost: nope.example.com:443\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, _) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "connection"), Some("close"));
}
