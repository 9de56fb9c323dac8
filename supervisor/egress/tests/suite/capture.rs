//! Transparent capture. In one namespace the original destination is the
//! capture listener itself, so upstream connections go through `RedirectTo`
//! (the connector seam) to a loopback echo server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use openshell_egress::{EventDecision, EventKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::support::*;

fn policy(port: u16) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  web:\n    endpoints: [{{host: web.test, port: {port}}}]\n    \
         binaries: [{{path: /usr/bin/curl}}]\n"
    )
}

/// A harness whose capture listener port is named by the policy. The port is
/// only known after binding, so bind first, then write the policy.
async fn harness(records: &[(&str, &str)], dns: bool) -> (Harness, Echo, TestDns) {
    let echo = Echo::start().await;
    let upstream = TestDns::start(records).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut setup = Setup::new(&policy(port));
    setup.capture = Some(listener);
    setup.dns = dns;
    setup.dns_upstream = Some(upstream.addr);
    setup.connector = Some(Arc::new(RedirectTo(echo.addr)));
    let h = setup.start().await;
    (h, echo, upstream)
}

async fn assert_reset(mut s: TcpStream) {
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn http_host_allowed_and_first_bytes_replayed() {
    let (h, echo, _dns) = harness(&[("web.test", "127.0.0.1")], false).await;
    let mut s = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n";
    s.write_all(req).await.unwrap();
    let mut back = vec![0u8; req.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, req);
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
    let allow =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Allow).await.unwrap();
    assert_eq!(allow.host.as_deref(), Some("web.test"));
    assert_eq!(allow.detail["door"], "capture");
    assert_eq!(allow.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(h.egress.stats().capture_connections, 1);
}

#[tokio::test]
async fn tls_sni_from_a_real_client_hello() {
    let (h, echo, _dns) = harness(&[("web.test", "127.0.0.1")], false).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("web.test").unwrap();
    // The echo server returns the ClientHello, so the handshake fails; what
    // matters is that the connection was allowed by its SNI.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await;
    let allow =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Allow).await.unwrap();
    assert_eq!(allow.host.as_deref(), Some("web.test"));
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn spoofed_host_for_another_address_is_refused() {
    // web.test really lives at 203.0.113.7; the agent connects to 127.0.0.1
    // claiming web.test.
    let (h, echo, _dns) = harness(&[("web.test", "203.0.113.7")], false).await;
    let mut s = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n").await.unwrap();
    assert_reset(s).await;
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.reason.as_deref(), Some("destination_mismatch"));
    assert_eq!(deny.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unlisted_host_is_reset() {
    let (h, echo, _dns) = harness(&[("web.test", "127.0.0.1")], false).await;
    let mut s = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n").await.unwrap();
    assert_reset(s).await;
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.reason.as_deref(), Some("no_endpoint"));
    assert_eq!(deny.host.as_deref(), Some("other.test"));
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn silent_client_decided_by_sandbox_dns_answer() {
    let (h, echo, _dns) = harness(&[("web.test", "127.0.0.1")], true).await;
    // The agent resolves web.test through the sandbox DNS first.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut q = Message::query();
    q.add_query(Query::query(Name::from_ascii("web.test.").unwrap(), RecordType::A));
    udp.send_to(&q.to_vec().unwrap(), h.dns_udp.unwrap()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), udp.recv(&mut buf)).await.unwrap().unwrap();
    let resp = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(resp.answers.len(), 1);
    // Then connects and sends nothing (server-speaks-first style).
    let mut s = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    let allow = h.events.wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Network).await.unwrap();
    assert_eq!(allow.decision, EventDecision::Allow);
    assert_eq!(allow.host.as_deref(), Some("web.test"));
    s.write_all(b"late").await.unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"late");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn silent_client_without_name_is_decided_by_ip_literal() {
    let (h, echo, _dns) = harness(&[], false).await;
    let s = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    assert_reset(s).await;
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.host.as_deref(), Some("127.0.0.1"));
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn plain_http_capture_to_endpoint_with_l7_rules_fails_closed() {
    let echo = Echo::start().await;
    let upstream = TestDns::start(&[("web.test", "127.0.0.1")]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let yaml = format!(
        "version: 1\nnetwork_policies:\n  web:\n    endpoints: [{{host: web.test, port: {port}, access: read-only}}]\n    \
         binaries: [{{path: /usr/bin/curl}}]\n"
    );
    let mut setup = Setup::new(&yaml);
    setup.capture = Some(listener);
    setup.dns_upstream = Some(upstream.addr);
    setup.connector = Some(Arc::new(RedirectTo(echo.addr)));
    let h = setup.start().await;
    let mut s = TcpStream::connect(h.capture.unwrap()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n").await.unwrap();
    assert_reset(s).await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.reason.as_deref(), Some("l7_inspection_unavailable"));
    assert_eq!(deny.detail["door"], "capture");
}
