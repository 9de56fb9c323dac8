//! The sandbox DNS server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use openshell_egress::{EventDecision, EventKind, SsrfGuard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::support::*;

const POLICY: &str = r#"
version: 1
network_policies:
  p:
    endpoints:
      - {host: api.test, port: 443}
      - {host: internal.test, port: 443}
      - {host: both.test, port: 443}
      - {host: corp.test, port: 443, allowed_ips: [10.0.0.0/8]}
    binaries: [{path: /usr/bin/curl}]
"#;

async fn harness() -> (Harness, TestDns) {
    let upstream = TestDns::start(&[
        ("api.test", "93.184.216.34"),
        ("internal.test", "10.0.0.5"),
        ("both.test", "93.184.216.34"),
        ("both.test", "10.0.0.5"),
        ("corp.test", "10.1.2.3"),
    ])
    .await;
    let mut setup = Setup::new(POLICY);
    setup.dns = true;
    setup.guard = Arc::new(SsrfGuard);
    setup.dns_upstream = Some(upstream.addr);
    (setup.start().await, upstream)
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    q
}

async fn ask_udp(server: SocketAddr, msg: &[u8]) -> Option<Message> {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(msg, server).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_millis(2000), udp.recv(&mut buf)).await.ok()?.unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn ask(h: &Harness, name: &str, rtype: RecordType) -> Message {
    let q = query(name, rtype);
    let r = ask_udp(h.dns_udp.unwrap(), &q.to_vec().unwrap()).await.expect("no DNS response");
    assert_eq!(r.metadata.id, q.metadata.id);
    r
}

fn ips(m: &Message) -> Vec<String> {
    m.answers.iter().filter_map(|r| r.data.ip_addr()).map(|ip| ip.to_string()).collect()
}

#[tokio::test]
async fn allowed_name_answered_with_capped_ttl() {
    let (h, _up) = harness().await;
    let r = ask(&h, "API.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&r), vec!["93.184.216.34"]);
    assert!(r.answers.iter().all(|a| a.ttl <= 60), "TTL must be capped");
    let r = ask(&h, "api.test.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert!(h.egress.stats().dns_queries >= 2);
}

#[tokio::test]
async fn unlisted_name_is_nxdomain_and_never_forwarded() {
    let (h, up) = harness().await;
    let r = ask(&h, "exfil-4142.attacker.example.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.queries.load(Ordering::SeqCst), 0);
    let e = h.events.wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Dns).await.unwrap();
    assert_eq!(e.decision, EventDecision::Deny);
    assert_eq!(e.reason.as_deref(), Some("no_endpoint"));
    assert_eq!(e.host.as_deref(), Some("exfil-4142.attacker.example"));
    assert_eq!(e.detail["qtype"], "A");
    // Resolvers retry and ask AAAA too: one event per name per window.
    let r = ask(&h, "exfil-4142.attacker.example.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let dns_events = h.events.events().into_iter().filter(|e| e.kind == EventKind::Dns).count();
    assert_eq!(dns_events, 1);
    assert_eq!(h.egress.stats().denied, 2);
}

#[tokio::test]
async fn private_answer_without_allowed_ips_is_refused() {
    let (h, _up) = harness().await;
    let r = ask(&h, "internal.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    let e = h.events.wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Dns).await.unwrap();
    assert_eq!(e.reason.as_deref(), Some("rebinding"));
    assert_eq!(e.ip, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(e.detail["address_classes"][0], "private");
}

#[tokio::test]
async fn mixed_answers_keep_only_allowed_addresses() {
    let (h, _up) = harness().await;
    let r = ask(&h, "both.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&r), vec!["93.184.216.34"]);
    assert!(
        h.events
            .wait_for(Duration::from_secs(5), |e| e.reason.as_deref() == Some("rebinding"))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn allowed_ips_admit_private_answers() {
    let (h, _up) = harness().await;
    let r = ask(&h, "corp.test.", RecordType::A).await;
    assert_eq!(ips(&r), vec!["10.1.2.3"]);
}

#[tokio::test]
async fn localhost_answered_locally() {
    let (h, up) = harness().await;
    assert_eq!(ips(&ask(&h, "localhost.", RecordType::A).await), vec!["127.0.0.1"]);
    assert_eq!(ips(&ask(&h, "db.localhost.", RecordType::AAAA).await), vec!["::1"]);
    assert_eq!(up.queries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_queries() {
    let (h, _up) = harness().await;
    let server = h.dns_udp.unwrap();
    // A header claiming one question that is not there: FORMERR, id kept.
    let garbage = [0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff];
    let r = ask_udp(server, &garbage).await.expect("FORMERR expected");
    assert_eq!(r.metadata.id, 0xbeef);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Not even an id: dropped.
    assert!(ask_udp(server, &[0x01]).await.is_none());
    // Two questions: FORMERR.
    let mut two = query("api.test.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("api.test.").unwrap(), RecordType::AAAA));
    let r = ask_udp(server, &two.to_vec().unwrap()).await.unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // The server is still alive.
    assert_eq!(ask(&h, "api.test.", RecordType::A).await.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn tcp_queries() {
    let (h, _up) = harness().await;
    let mut s = TcpStream::connect(h.dns_tcp.unwrap()).await.unwrap();
    for _ in 0..2 {
        let q = query("api.test.", RecordType::A).to_vec().unwrap();
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.unwrap();
        let r = Message::from_vec(&buf).unwrap();
        assert_eq!(ips(&r), vec!["93.184.216.34"]);
    }
}
