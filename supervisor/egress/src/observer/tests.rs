//! The observer end to end inside the crate: fixture packets written to one end of a datagram socket
//! pair, events read from a memory sink.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::packet::fixtures::{echo, reset, unreachable};
use crate::events::{Event, EventLog, EventSink};
use crate::{BinaryIdentity, Egress, EgressOptions, EgressSockets, IdentitySource};

const POLICY: &str = "version: 1\nnetwork_policies:\n  web:\n    endpoints: [{host: web.test, port: 443}]\n    \
                      binaries: [{path: /usr/bin/curl}]\n";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Rig {
    egress: Egress,
    events: EventLog,
    wire: UnixDatagram,
    dns_port: u16,
}

async fn rig() -> Rig {
    let (wire, ours) = UnixDatagram::pair().unwrap();
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns_port = dns.local_addr().unwrap().port();
    let sockets =
        EgressSockets { observer: Some(OwnedFd::from(ours)), dns_udp: vec![dns], ..Default::default() };
    let id =
        BinaryIdentity { path: "/usr/bin/nc".into(), sha256: "cd".repeat(32), pid: 77, ancestors: vec![] };
    let opts = EgressOptions::new("sb", IdentitySource::Fixed(id));
    let policy = openshell_policy::Policy::from_yaml(POLICY).unwrap();
    let engine = Arc::new(openshell_policy::NetworkEngine::new(Arc::new(policy), 3).unwrap());
    let (sink, events) = EventSink::memory();
    let egress = Egress::start(sockets, opts, engine, sink).await.unwrap();
    Rig { egress, events, wire, dns_port }
}

fn json(e: &Event) -> Value {
    serde_json::to_value(e).unwrap()
}

#[tokio::test]
async fn a_reset_becomes_a_port_not_allowed_event_with_host_and_binary() {
    let r = rig().await;
    let dst = sa("93.184.216.34:9");
    r.egress.shared.answers.record("denied.test", dst.ip(), 60);
    r.wire.send(&reset(sa("93.184.216.34:40000"), dst, 0, 0x14)).unwrap();
    let e =
        r.events.wait_for(Duration::from_secs(5), |e| e.reason.as_deref() == Some("port_not_allowed")).await;
    let e = json(&e.expect("a port_not_allowed event"));
    assert_eq!(e["kind"], "network");
    assert_eq!(e["decision"], "deny");
    assert_eq!(e["ip"], "93.184.216.34");
    assert_eq!(e["port"], 9);
    assert_eq!(e["host"], "denied.test");
    assert_eq!(e["generation"], 3);
    assert_eq!(e["binary"], "/usr/bin/nc", "attributed through the identity seam: {e}");
    assert_eq!(e["pid"], 77);
    assert_eq!(e["detail"]["door"], "kernel");
    assert_eq!(e["detail"]["proto"], "tcp");
    assert_eq!(e["detail"]["source"], "93.184.216.34:40000");
    assert!(e["hint"].as_str().unwrap().contains("no network policy names port 9"), "{e}");
    assert_eq!(r.egress.stats().refused_by_kernel, 1);
    assert_eq!(r.egress.stats().denied, 1);
}

#[tokio::test]
async fn udp_icmp_and_the_named_port_hint() {
    let r = rig().await;
    r.wire.send(&unreachable(sa("10.200.0.4:40001"), sa("10.200.0.2:9000"))).unwrap();
    r.wire.send(&unreachable(sa("[::1]:40002"), sa("[2001:db8::2]:9000"))).unwrap();
    r.wire.send(&echo("10.0.0.1".parse().unwrap(), "10.0.0.9".parse().unwrap())).unwrap();
    // A late DNS answer to a closed socket: not the agent's refusal.
    r.wire.send(&unreachable(sa(&format!("10.200.0.4:{}", r.dns_port)), sa("10.200.0.4:40003"))).unwrap();
    // A reset on a port the policy names (e.g. a capture listener that could not be opened).
    r.wire.send(&reset(sa("[::1]:40004"), sa("[2001:db8::2]:443"), 0, 0x14)).unwrap();
    // Garbage and non-refusals are ignored.
    r.wire.send(b"\x45garbage").unwrap();
    r.wire.send(&reset(sa("10.0.0.1:1"), sa("10.0.0.2:2"), 0, 0x12)).unwrap();
    let got = |reason: &'static str, ip: &'static str| {
        let events = r.events.clone();
        async move {
            events
                .wait_for(Duration::from_secs(5), |e| {
                    e.reason.as_deref() == Some(reason) && e.ip.is_some_and(|i| i.to_string() == ip)
                })
                .await
                .map(|e| json(&e))
                .unwrap_or_else(|| panic!("no {reason} event for {ip}"))
        }
    };
    let u4 = got("udp_not_allowed", "10.200.0.2").await;
    assert_eq!((u4["port"].as_u64(), u4["detail"]["proto"].as_str()), (Some(9000), Some("udp")));
    assert!(u4["detail"]["attribution"].as_str().unwrap().starts_with("unknown"), "{u4}");
    let u6 = got("udp_not_allowed", "2001:db8::2").await;
    assert_eq!(u6["detail"]["source"], "[::1]:40002");
    let icmp = got("icmp_not_allowed", "10.0.0.9").await;
    assert!(icmp.get("port").is_none());
    assert_eq!(icmp["detail"]["proto"], "icmp");
    let named = got("port_not_allowed", "2001:db8::2").await;
    assert!(named["hint"].as_str().unwrap().contains("named by the policy"), "{named}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.events.events().len(), 4, "{:#?}", r.events.events());
}

#[tokio::test]
async fn repeats_are_summarised_and_the_last_refusals_survive_shutdown() {
    let r = rig().await;
    let p = reset(sa("10.0.0.1:40000"), sa("10.0.0.2:25"), 0, 0x14);
    for _ in 0..10 {
        r.wire.send(&p).unwrap();
    }
    let first = r.events.wait_for(Duration::from_secs(5), |e| e.port == Some(25)).await;
    assert!(first.is_some_and(|e| !e.detail.contains_key("suppressed")));
    let summary = r
        .events
        .wait_for(Duration::from_secs(5), |e| e.detail.contains_key("suppressed"))
        .await
        .map(|e| json(&e))
        .expect("a summary when the window closes");
    assert_eq!((summary["port"].as_u64(), summary["detail"]["suppressed"].as_u64()), (Some(25), Some(9)));
    assert_eq!(r.egress.stats().refused_by_kernel, 10);

    // Queued but not yet read when the egress layer stops: still reported.
    let Rig { egress, events, wire, .. } = r;
    let before = events.events().len();
    wire.send(&unreachable(sa("10.0.0.1:40001"), sa("10.0.0.3:7"))).unwrap();
    drop(egress);
    let after = events.events();
    assert!(
        after[before..].iter().any(|e| e.reason.as_deref() == Some("udp_not_allowed") && e.port == Some(7)),
        "{after:#?}"
    );
}
