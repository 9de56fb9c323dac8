//! L7 rules (`access`, `rules`, `deny_rules`, `path`) on the doors that see
//! requests (forward proxy), and fail-closed on the doors that do not (CONNECT).

use std::sync::atomic::Ordering;
use std::time::Duration;

use openshell_egress::{EventDecision, EventKind};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::*;

/// One endpoint on 127.0.0.1:`port` with `extra` YAML flow fields.
fn policy(port: u16, extra: &str) -> String {
    format!(
        r#"
version: 1
network_policies:
  web:
    endpoints:
      - {{host: 127.0.0.1, ports: [{port}], {extra}}}
    binaries: [{{path: /usr/bin/curl}}]
"#
    )
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Sends `METHOD url` (with an empty body) on `s`; returns status and JSON body.
async fn send(s: &mut TcpStream, method: &str, url: &str) -> (u16, serde_json::Value) {
    s.write_all(format!("{method} {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _, body) = read_response(s).await.unwrap();
    (status, if body.is_empty() { serde_json::Value::Null } else { json(&body) })
}

#[tokio::test]
async fn read_only_allows_get_denies_post_on_a_kept_alive_connection() {
    let up = HttpEcho::start(None).await;
    let port = up.addr.port();
    let h = Setup::new(&policy(port, "access: read-only")).start().await;
    let base = format!("http://127.0.0.1:{port}");
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let (status, v) = send(&mut s, "GET", &format!("{base}/items")).await;
    assert_eq!(status, 200);
    assert_eq!(v["method"], "GET");
    // Second request on the same connection: decided on its own.
    let (status, v) = send(&mut s, "POST", &format!("{base}/items")).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "policy_denied");
    assert_eq!(v["reason"], "l7_denied");
    assert!(v["detail"].as_str().unwrap().contains("read-only"), "{v}");
    assert_eq!((v["policy"].as_str(), v["endpoint"].as_u64()), (Some("web"), Some(0)), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("network_policies.web"), "{v}");
    let deny = h
        .events
        .wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny)
        .await
        .expect("deny event");
    assert_eq!(deny.kind, EventKind::Network);
    assert_eq!(deny.reason.as_deref(), Some("l7_denied"));
    assert_eq!(deny.detail["method"], "POST");
    assert_eq!(deny.detail["path"], "/items");
    // DELETE too; then OPTIONS still works on the same connection.
    let (status, _) = send(&mut s, "DELETE", &format!("{base}/items/1")).await;
    assert_eq!(status, 403);
    let (status, _) = send(&mut s, "OPTIONS", &format!("{base}/items")).await;
    assert_eq!(status, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "denied requests never reach upstream");
}

#[tokio::test]
async fn deny_rules_win_over_rules_and_query_matchers_apply() {
    let up = HttpEcho::start(None).await;
    let port = up.addr.port();
    let extra = "rules: [{allow: {method: GET, path: '/repos/**', query: {per_page: ['1*', '2*']}}}, \
                 {allow: {method: POST, path: /issues}}], \
                 deny_rules: [{method: '*', path: '/repos/secret/**'}]";
    let h = Setup::new(&policy(port, extra)).start().await;
    let base = format!("http://127.0.0.1:{port}");
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    assert_eq!(send(&mut s, "GET", &format!("{base}/repos/a/b?per_page=10")).await.0, 200);
    assert_eq!(send(&mut s, "post", &format!("{base}/issues")).await.0, 200, "methods are case-insensitive");
    let (status, v) = send(&mut s, "GET", &format!("{base}/repos/secret/x?per_page=10")).await;
    assert_eq!(status, 403);
    assert!(v["detail"].as_str().unwrap().contains("deny_rules[0]"), "{v}");
    assert_eq!(send(&mut s, "GET", &format!("{base}/repos/a/b")).await.0, 403, "query key missing");
    assert_eq!(send(&mut s, "GET", &format!("{base}/repos/a/b?per_page=99")).await.0, 403);
    assert_eq!(send(&mut s, "GET", &format!("{base}/repos/a/b?per_page=1&per_page=9")).await.0, 403);
    assert_eq!(send(&mut s, "DELETE", &format!("{base}/issues")).await.0, 403);
    assert_eq!(send(&mut s, "GET", &format!("{base}/other")).await.0, 403);
}

#[tokio::test]
async fn encoded_slash_and_dot_segments_are_refused() {
    let up = HttpEcho::start(None).await;
    let port = up.addr.port();
    let extra = "access: full, deny_rules: [{path: '/admin/**'}]";
    let h = Setup::new(&policy(port, extra)).start().await;
    let base = format!("http://127.0.0.1:{port}");
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    for path in ["/admin%2Fx", "/public/%2e%2e/admin/x", "/public/../admin/x"] {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        let (status, v) = send(&mut s, "GET", &format!("{base}{path}")).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"], "bad_request");
    }
    let (status, _) = send(&mut s, "GET", &format!("{base}/%61dmin/x")).await;
    assert_eq!(status, 403, "encoded unreserved characters are decoded before matching");
    assert_eq!(send(&mut s, "GET", &format!("{base}/public/x")).await.0, 200);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn audit_enforcement_allows_and_reports() {
    let up = HttpEcho::start(None).await;
    let port = up.addr.port();
    let h = Setup::new(&policy(port, "access: read-only, enforcement: audit")).start().await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    let (status, v) = send(&mut s, "POST", &format!("http://127.0.0.1:{port}/w")).await;
    assert_eq!(status, 200);
    assert_eq!(v["method"], "POST");
    let audit = h
        .events
        .wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Audit)
        .await
        .expect("audit event");
    assert_eq!(audit.reason.as_deref(), Some("l7_denied"));
    assert_eq!(audit.detail["method"], "POST");
    assert_eq!(audit.detail["path"], "/w");
    assert_eq!(audit.policy.as_deref(), Some("web"));
    assert!(h.events.events().iter().all(|e| e.decision != EventDecision::Deny));
}

async fn connect(h: &Harness, target: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s).await.unwrap();
    (status, body)
}

#[tokio::test]
async fn connect_to_endpoint_with_l7_rules_fails_closed() {
    let echo = Echo::start().await;
    let port = echo.addr.port();
    let target = format!("127.0.0.1:{port}");
    let h = Setup::new(&policy(port, "access: read-only")).start().await;
    let (status, body) = connect(&h, &target).await;
    assert_eq!(status, 403);
    let v = json(&body);
    assert_eq!(v["reason"], "l7_inspection_unavailable");
    assert!(v["hint"].as_str().unwrap().contains("access: full"), "{v}");
    assert_eq!((v["policy"].as_str(), v["endpoint"].as_u64()), (Some("web"), Some(0)), "{v}");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
    let deny =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Deny).await.unwrap();
    assert_eq!(deny.reason.as_deref(), Some("l7_inspection_unavailable"));

    let h = Setup::new(&policy(port, "access: full")).start().await;
    assert_eq!(connect(&h, &target).await.0, 200);

    let h = Setup::new(&policy(port, "deny_rules: [{method: DELETE}], enforcement: audit")).start().await;
    assert_eq!(connect(&h, &target).await.0, 200, "audit: allowed");
    let audit =
        h.events.wait_for(Duration::from_secs(5), |e| e.decision == EventDecision::Audit).await.unwrap();
    assert_eq!(audit.reason.as_deref(), Some("l7_inspection_unavailable"));
    assert!(audit.detail["message"].as_str().unwrap().contains("WITHOUT enforcing"));
}
