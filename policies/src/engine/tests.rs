use std::collections::BTreeMap;
use std::time::Instant;

use super::*;
use crate::glob::binary_matches;
use crate::model::{BinaryMatcher, Enforcement, NetworkPolicy, Protocol, TlsMode};

const POLICY: &str = r#"
version: 1
network_policies:
  zeta:
    endpoints:
      - {host: api.github.com, port: 443}
    binaries: [{path: /usr/bin/curl}]
  github:
    endpoints:
      - {host: github.com, port: 22}
      - {host: "*.github.com", ports: [443, 8443], enforcement: audit}
    binaries:
      - path: /usr/bin/git
      - path: /usr/lib/git-core/*
      - path: /usr/bin/curl
  internal:
    endpoints:
      - {host: 10.1.2.3, port: 8080, allowed_ips: [10.1.2.3]}
    binaries: [{path: /opt/**}]
"#;

fn engine() -> NetworkEngine {
    NetworkEngine::new(Arc::new(Policy::from_yaml(POLICY).unwrap()), 7).unwrap()
}

fn req(binary: &str, host: &str, port: u16) -> NetworkRequest {
    NetworkRequest { binary: binary.into(), ancestors: vec![], host: host.into(), port, ips: vec![] }
}

#[test]
fn engine_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<NetworkEngine>();
}

#[test]
fn allows_and_names_the_endpoint() {
    let e = engine();
    assert_eq!(e.generation(), 7);
    let d = e.decide(&req("/usr/bin/git", "GitHub.com.", 22));
    assert_eq!(
        d,
        Decision::Allow(AllowedBy {
            policy: "github".into(),
            endpoint: 0,
            enforcement: Enforcement::Enforce
        })
    );
    let d = e.decide(&req("/usr/lib/git-core/git-remote-https", "codeload.github.com", 8443));
    let Decision::Allow(by) = d else { panic!("{d}") };
    assert_eq!((by.policy.as_str(), by.endpoint, by.enforcement), ("github", 1, Enforcement::Audit));
    assert_eq!(e.endpoint(&by).map(|ep| ep.ports.clone()), Some(vec![443, 8443]));
}

#[test]
fn lowest_policy_name_wins() {
    // api.github.com:443 is listed by `github` (wildcard) and `zeta` (exact); both allow curl.
    let d = engine().decide(&req("/usr/bin/curl", "api.github.com", 443));
    assert_eq!(
        d,
        Decision::Allow(AllowedBy { policy: "github".into(), endpoint: 1, enforcement: Enforcement::Audit })
    );
}

#[test]
fn deny_reasons() {
    let e = engine();
    let d = e.decide(&req("/usr/bin/python3", "api.github.com", 443));
    let Decision::Deny(r) = &d else { panic!("{d}") };
    assert_eq!(
        *r,
        DenyReason::BinaryNotAllowed {
            binary: "/usr/bin/python3".into(),
            host: "api.github.com".into(),
            port: 443,
            policies: vec!["github".into(), "zeta".into()],
        }
    );
    assert_eq!(r.code(), "binary_not_allowed");
    let d = e.decide(&req("/usr/bin/git", "github.com", 443));
    assert_eq!(d, Decision::Deny(DenyReason::NoEndpoint { host: "github.com".into(), port: 443 }));
    let d = e.decide(&req("/usr/bin/git", "a.b.github.com", 443));
    assert_eq!(d, Decision::Deny(DenyReason::NoEndpoint { host: "a.b.github.com".into(), port: 443 }));
    let d = e.decide(&req("/usr/lib/git-core/sub/x", "github.com", 22));
    assert!(matches!(d, Decision::Deny(DenyReason::BinaryNotAllowed { .. })), "{d}");
    let long = "a".repeat(300);
    assert!(matches!(
        e.decide(&req("/usr/bin/git", &long, 22)),
        Decision::Deny(DenyReason::NoEndpoint { .. })
    ));
}

#[test]
fn ip_literal_endpoints_match_resolved_addresses_and_key_the_cache() {
    let e = engine();
    let by_name = |ips: Vec<IpAddr>| {
        e.decide(&NetworkRequest { ips, ..req("/opt/tool/bin/run", "svc.internal.example", 8080) })
    };
    assert!(!by_name(vec![]).is_allow());
    assert!(by_name(vec!["10.1.2.3".parse().unwrap()]).is_allow());
    assert!(by_name(vec!["::ffff:10.1.2.3".parse().unwrap(), "1.1.1.1".parse().unwrap()]).is_allow());
    assert!(!by_name(vec!["10.1.2.4".parse().unwrap()]).is_allow());
    assert!(e.decide(&req("/opt/x", "10.1.2.3", 8080)).is_allow());
    assert!(e.decide(&req("/opt/x", "[::ffff:10.1.2.3]", 8080)).is_allow());
}

#[test]
fn cached_equals_uncached() {
    let e = engine();
    let cases = [
        req("/usr/bin/git", "github.com", 22),
        req("/usr/bin/python3", "api.github.com", 443),
        req("/usr/bin/git", "example.com", 443),
    ];
    for r in &cases {
        let first = e.decide(r);
        assert_eq!(first, e.evaluate(r).unwrap());
        assert_eq!(first, e.decide(r));
    }
    assert_eq!(e.cache.len(), 3);
}

#[test]
fn malformed_rego_output_is_an_error() {
    let e = engine();
    let raw = RawDecision {
        allow: true,
        policy: Some("nope".into()),
        endpoint: Some(0),
        reason: None,
        policies: vec![],
    };
    let err = e.to_decision(&req("/b", "h", 1), "h".into(), raw).unwrap_err();
    assert!(matches!(err, EngineError::UnknownEndpoint { .. }), "{err}");
    let raw = RawDecision {
        allow: false,
        policy: None,
        endpoint: None,
        reason: Some("x".into()),
        policies: vec![],
    };
    assert!(matches!(
        e.to_decision(&req("/b", "h", 1), "h".into(), raw),
        Err(EngineError::UnknownReason { .. })
    ));
}

#[test]
fn evaluate_input_returns_the_raw_document() {
    let out = engine()
        .evaluate_input(&json!({
            "binary": {"path": "/usr/bin/git", "ancestors": ["/bin/sh"]},
            "destination": {"host": "GITHUB.COM.", "port": 22, "ips": []},
        }))
        .unwrap();
    assert_eq!(out, json!({"allow": true, "policy": "github", "endpoint": 0, "enforcement": "enforce"}));
}

/// A hand-built policy (bypassing validation, so odd patterns can be tried)
/// with one endpoint `host` on port 443 usable by `binary`.
fn single(host: HostPattern, binary: &str) -> Policy {
    let endpoint = Endpoint {
        host,
        ports: vec![443],
        path: None,
        protocol: Protocol::Rest,
        tls: TlsMode::Terminate,
        enforcement: Enforcement::Enforce,
        access: None,
        rules: vec![],
        deny_rules: vec![],
        allowed_ips: vec![],
        credential_binding: None,
    };
    let p = NetworkPolicy {
        name: None,
        endpoints: vec![endpoint],
        binaries: vec![BinaryMatcher { path: binary.into() }],
    };
    let mut policy = Policy::from_yaml("version: 1\n").unwrap();
    policy.network_policies = BTreeMap::from([("p".to_owned(), p)]);
    policy
}

#[test]
fn rego_and_rust_binary_matching_agree() {
    let table = [
        ("/usr/bin/curl", "/usr/bin/curl"),
        ("/usr/bin/curl", "/usr/bin/curl2"),
        ("/usr/bin/*", "/usr/bin/curl"),
        ("/usr/bin/*", "/usr/bin/x/curl"),
        ("/usr/bin/*", "/usr/bin/"),
        ("/usr/**", "/usr/bin/curl"),
        ("/usr/**", "/usr"),
        ("/usr/**", "/usrx/bin"),
        ("/**/node", "/node"),
        ("/**/node", "/opt/n/bin/node"),
        ("/**/bin/*", "/opt/x/bin/python3"),
        ("/**", "/any/thing"),
        ("/usr/bin/python3.?", "/usr/bin/python3.9"),
        ("/usr/bin/python3.?", "/usr/bin/python3.12"),
        ("/usr/bin/python3.[0-9]*", "/usr/bin/python3.12"),
        ("/usr/bin/[!a]*", "/usr/bin/curl"),
        ("/usr/bin/{curl,wget}", "/usr/bin/wget"),
        ("/usr/bin/{curl,wget}", "/usr/bin/git"),
        ("/usr/b?n/git", "/usr/bin/git"),
        ("/usr/b?n/git", "/usr/b/n/git"),
        ("/opt/a*b/x", "/opt/a/b/x"),
        ("/opt/**/x", "/opt/x"),
        ("/opt/x**", "/opt/x/y"),
        ("/opt/\\*", "/opt/*"),
        ("/opt/\\*", "/opt/a"),
        ("/usr/bin/git", "/USR/BIN/GIT"),
    ];
    for (pattern, path) in table {
        let engine =
            NetworkEngine::new(Arc::new(single(HostPattern::parse("a.example.com").unwrap(), pattern)), 1)
                .unwrap();
        let rego = engine.evaluate(&req(path, "a.example.com", 443)).unwrap().is_allow();
        assert_eq!(rego, binary_matches(pattern, path), "pattern {pattern} path {path}");
    }
}

#[test]
fn rego_and_rust_host_matching_agree() {
    let patterns = ["*.github.com", "github.com", "10.0.0.1", "2001:db8::1", "*.a-b_c.example"];
    let hosts = [
        "github.com",
        "api.github.com",
        "API.GITHUB.COM.",
        "a.b.github.com",
        "xgithub.com",
        "github.com.evil.example",
        "10.0.0.1",
        "::ffff:10.0.0.1",
        "[2001:DB8::1]",
        "2001:db8:0::1",
        "x.a-b_c.example",
        "",
        ".github.com",
    ];
    for pattern in patterns {
        let host_pattern = HostPattern::parse(pattern).unwrap();
        let engine = NetworkEngine::new(Arc::new(single(host_pattern.clone(), "/**")), 1).unwrap();
        for host in hosts {
            let rego = engine.evaluate(&req("/bin/x", host, 443)).unwrap().is_allow();
            assert_eq!(rego, host_pattern.matches(host), "pattern {pattern} host {host}");
            let ep = &engine.policy().network_policies["p"].endpoints[0];
            assert_eq!(rego, ep.matches(host, 443, &[]), "pattern {pattern} host {host}");
        }
    }
}

/// Prints rough timings; asserts nothing about them (shared 2-core machine,
/// debug build). Run with `--nocapture` to see them.
#[test]
fn timing() {
    let t = Instant::now();
    let e = engine();
    println!("timing: NetworkEngine::new {:?}", t.elapsed());
    for (name, r) in [
        ("no endpoint", req("/usr/bin/python3", "example.com", 443)),
        ("allow, literal binary", req("/usr/bin/git", "github.com", 22)),
        ("deny, glob binary checked", req("/usr/bin/python3", "api.github.com", 443)),
    ] {
        let n = 100u32;
        let t = Instant::now();
        for _ in 0..n {
            e.evaluate(&r).unwrap();
        }
        let uncached = t.elapsed() / n;
        let _ = e.decide(&r);
        let m = 50_000u32;
        let t = Instant::now();
        for _ in 0..m {
            std::hint::black_box(e.decide(&r));
        }
        let cached = t.elapsed() / m;
        println!("timing: {name}: evaluate {uncached:?}/call, decide (cached) {cached:?}/call");
    }
    // A larger policy: 200 network policies x 5 endpoints, 3 binaries each.
    let mut text = String::from("version: 1\nnetwork_policies:\n");
    for i in 0..200 {
        text.push_str(&format!("  p{i:03}:\n    endpoints:\n"));
        for j in 0..5 {
            text.push_str(&format!("      - {{host: \"*.s{j}.d{i}.example\", ports: [443, 8443]}}\n"));
        }
        text.push_str("    binaries: [{path: /usr/bin/curl}, {path: /usr/bin/git}, {path: \"/opt/**\"}]\n");
    }
    let t = Instant::now();
    let big = NetworkEngine::new(Arc::new(Policy::from_yaml(&text).unwrap()), 1).unwrap();
    let build = t.elapsed();
    let r = req("/usr/bin/curl", "api.s4.d199.example", 443);
    assert!(big.evaluate(&r).unwrap().is_allow());
    let n = 20u32;
    let t = Instant::now();
    for _ in 0..n {
        big.evaluate(&r).unwrap();
    }
    println!("timing: 1000 endpoints: parse+new {build:?}, evaluate {:?}/call", t.elapsed() / n);
}

#[test]
fn concurrent_decisions() {
    let e = engine();
    let expected = e.evaluate(&req("/usr/bin/git", "github.com", 22)).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let e = &e;
            let expected = &expected;
            s.spawn(move || {
                for i in 0..50 {
                    assert_eq!(e.decide(&req("/usr/bin/git", "github.com", 22)), *expected);
                    let host = format!("h{t}-{i}.example");
                    assert!(!e.decide(&req("/usr/bin/git", &host, 443)).is_allow());
                }
            });
        }
    });
}
