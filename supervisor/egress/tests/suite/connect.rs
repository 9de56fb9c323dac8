//! CONNECT through the explicit proxy.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openshell_egress::{EventDecision, EventKind, IdentitySource, SsrfGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

fn policy(port: u16) -> String {
    format!(
        r#"
version: 1
network_policies:
  local:
    endpoints:
      - {{host: 127.0.0.1, port: {port}}}
      - {{host: echo.test, port: {port}}}
    binaries: [{{path: /usr/bin/curl}}]
"#
    )
}

async fn connect(h: &Harness, target: &str) -> (TcpStream, u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let (status, headers, body) = read_response(&mut s).await.unwrap();
    (s, status, headers, body)
}

#[tokio::test]
async fn connect_allowed_splices_bytes() {
    let echo = Echo::start().await;
    let h = Setup::new(&policy(echo.addr.port())).start().await;
    let (mut s, status, _, _) = connect(&h, &format!("127.0.0.1:{}", echo.addr.port())).await;
    assert_eq!(status, 200);
    s.write_all(b"hello through the tunnel").await.unwrap();
    let mut buf = [0u8; 24];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello through the tunnel");
    eventually(|| h.egress.stats().open_tunnels == 1).await;
    let allow = h.events.events().into_iter().find(|e| e.decision == EventDecision::Allow).unwrap();
    assert_eq!(allow.kind, EventKind::Network);
    assert_eq!(allow.binary.as_deref(), Some(CURL));
    assert_eq!(allow.policy.as_deref(), Some("local"));
    assert_eq!(allow.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(allow.detail["door"], "connect");
    drop(s);
    eventually(|| h.egress.stats().open_tunnels == 0).await;
}

#[tokio::test]
async fn eager_client_bytes_after_connect_are_forwarded() {
    let echo = Echo::start().await;
    let h = Setup::new(&policy(echo.addr.port())).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let target = format!("127.0.0.1:{}", echo.addr.port());
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\n\r\nEARLY").as_bytes()).await.unwrap();
    let (status, _, _) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 200);
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"EARLY");
}

#[tokio::test]
async fn connect_by_name_through_upstream_dns() {
    let echo = Echo::start().await;
    let dns = TestDns::start(&[("echo.test", "127.0.0.1")]).await;
    let mut setup = Setup::new(&policy(echo.addr.port()));
    setup.dns_upstream = Some(dns.addr);
    let h = setup.start().await;
    let (mut s, status, _, _) = connect(&h, &format!("echo.test:{}", echo.addr.port())).await;
    assert_eq!(status, 200);
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
}

#[tokio::test]
async fn connect_denied_with_json_403() {
    let h = Setup::new(&policy(1)).start().await;
    let (mut s, status, headers, body) = connect(&h, "forbidden.example.com:443").await;
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "connection"), Some("close"));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "policy_denied");
    assert_eq!(v["reason"], "no_endpoint");
    assert_eq!(v["host"], "forbidden.example.com");
    assert_eq!(v["port"], 443);
    assert_eq!(v["binary"], CURL);
    assert_eq!(v["policy_generation"], 1);
    assert!(v["hint"].as_str().unwrap().contains("forbidden.example.com"));
    assert!(v["detail"].as_str().is_some());
    // The proxy closes the connection after a CONNECT denial.
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.reason.as_deref(), Some("no_endpoint"));
    assert_eq!(deny.host.as_deref(), Some("forbidden.example.com"));
    assert_eq!(deny.port, Some(443));
    assert_eq!(deny.binary_sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(h.egress.stats().denied, 1);
}

#[tokio::test]
async fn other_binary_is_denied() {
    let echo = Echo::start().await;
    let mut setup = Setup::new(&policy(echo.addr.port()));
    setup.identity = IdentitySource::Fixed(identity("/usr/bin/python3"));
    let h = setup.start().await;
    let (_, status, _, body) = connect(&h, &format!("127.0.0.1:{}", echo.addr.port())).await;
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "binary_not_allowed");
    assert!(v["hint"].as_str().unwrap().contains("network_policies.local.binaries"), "{v}");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn ssrf_loopback_literal_and_name_denied_by_real_guard() {
    let echo = Echo::start().await;
    let dns = TestDns::start(&[("echo.test", "127.0.0.1")]).await;
    let mut setup = Setup::new(&policy(echo.addr.port()));
    setup.guard = Arc::new(SsrfGuard);
    setup.dns_upstream = Some(dns.addr);
    let h = setup.start().await;
    for target in [format!("127.0.0.1:{}", echo.addr.port()), format!("echo.test:{}", echo.addr.port())] {
        let (_, status, _, body) = connect(&h, &target).await;
        assert_eq!(status, 403, "{target}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["reason"], "address_not_allowed", "{v}");
        assert!(v["detail"].as_str().unwrap().contains("loopback"), "{v}");
    }
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0, "nothing may reach loopback");
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.host.as_deref() == Some("echo.test")).await.unwrap();
    assert_eq!(deny.reason.as_deref(), Some("address_not_allowed"));
    assert_eq!(deny.ip, Some("127.0.0.1".parse().unwrap()));
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // Bind then drop a listener to get a closed loopback port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let h = Setup::new(&policy(port)).start().await;
    let (_, status, _, body) = connect(&h, &format!("127.0.0.1:{port}")).await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "upstream_unreachable");
    assert_eq!(v["reason"], "connect_failed");
}

#[tokio::test]
async fn unresolvable_name_is_502() {
    let dns = TestDns::start(&[]).await;
    let mut setup = Setup::new(&policy(443));
    setup.dns_upstream = Some(dns.addr);
    let h = setup.start().await;
    let (_, status, _, body) = connect(&h, "echo.test:443").await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "dns_failed");
}

#[tokio::test]
async fn denied_names_are_never_resolved() {
    let dns = TestDns::start(&[("secret-data.exfil.test", "203.0.113.1")]).await;
    // No IP-literal endpoints: a name no host pattern allows is never looked up.
    let yaml = "version: 1\nnetwork_policies:\n  p:\n    endpoints: [{host: echo.test, port: 443}]\n    binaries: [{path: /usr/bin/curl}]\n";
    let mut setup = Setup::new(yaml);
    setup.dns_upstream = Some(dns.addr);
    let h = setup.start().await;
    let (_, status, _, _) = connect(&h, "secret-data.exfil.test:443").await;
    assert_eq!(status, 403);
    assert_eq!(dns.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_requests_get_json_400() {
    let h = Setup::new(&policy(1)).start().await;
    for req in [
        "CONNECT example.com HTTP/1.1\r\n\r\n".to_owned(),
        "CONNECT example.com:0 HTTP/1.1\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_owned(),
        "GET ftp://example.com/ HTTP/1.1\r\n\r\n".to_owned(),
        "\u{1}\u{2}garbage\r\n\r\n".to_owned(),
        format!("GET http://a/ HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(200)),
    ] {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let (status, headers, body) = read_response(&mut s).await.unwrap();
        assert_eq!(status, 400, "{req:?}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "bad_request");
        assert!(!v["detail"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn oversized_head_is_rejected() {
    let h = Setup::new(&policy(1)).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let big = format!("GET http://a/ HTTP/1.1\r\nX: {}\r\n", "a".repeat(70 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let (status, _, body) = read_response(&mut s).await.unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("larger than"));
}

#[tokio::test]
async fn real_identity_of_this_test_process() {
    for sock_diag in [false, true] {
        real_identity(sock_diag).await;
    }
}

async fn real_identity(sock_diag: bool) {
    let echo = Echo::start().await;
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let yaml = format!(
        "version: 1\nnetwork_policies:\n  me:\n    endpoints: [{{host: 127.0.0.1, port: {}}}]\n    binaries: [{{path: \"{exe}\"}}]\n",
        echo.addr.port()
    );
    let mut setup = Setup::new(&yaml);
    let me = i32::try_from(std::process::id()).unwrap();
    setup.identity = IdentitySource::SandboxInit { init_pid: me };
    setup.sock_diag = sock_diag;
    let h = setup.start().await;
    let (_, status, _, body) = connect(&h, &format!("127.0.0.1:{}", echo.addr.port())).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let allow =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Allow).await.unwrap();
    assert_eq!(allow.binary.as_deref(), Some(exe.as_str()));
    assert_eq!(allow.pid, Some(me));
    assert_eq!(allow.binary_sha256.as_ref().map(String::len), Some(64));
}
