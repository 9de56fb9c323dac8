//! Proves the harness itself works, without the supervisor: namespaces come and go, the fake
//! internet answers every protocol the suites rely on, the canary sits on the client's loopback, and
//! nothing outside the namespace pair is routable. If these fail, no other result means anything.

use openshell_e2e::fake::LogEntry;
use openshell_e2e::netns::{self, FakeNet, FakeNetOpts, Netns};
use openshell_e2e::sandbox::User;

use super::common::{Failures, notice, require_root, require_tool, run_in_ns};

fn ns_list() -> String {
    String::from_utf8_lossy(
        &std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list").stdout,
    )
    .into_owned()
}

#[test]
fn netns_is_created_and_removed() {
    if !require_root("harness::netns_is_created_and_removed") {
        return;
    }
    let ns = Netns::isolated().unwrap();
    let name = ns.name.clone();
    assert!(
        ns_list().lines().any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "{name} not listed"
    );
    drop(ns);
    assert!(
        !ns_list().lines().any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "{name} left behind"
    );

    let fake = FakeNet::start(FakeNetOpts::default()).unwrap();
    let (c, i) = (fake.client.name.clone(), fake.internet.name.clone());
    assert!(std::path::Path::new(&format!("/etc/netns/{c}/resolv.conf")).exists());
    drop(fake);
    let list = ns_list();
    assert!(!list.contains(&c) && !list.contains(&i), "namespaces left behind: {list}");
    assert!(!std::path::Path::new(&format!("/etc/netns/{c}")).exists(), "/etc/netns/{c} left behind");
}

#[test]
fn netns_is_removed_when_a_test_panics() {
    if !require_root("harness::netns_is_removed_when_a_test_panics") {
        return;
    }
    let name = std::sync::Mutex::new(String::new());
    let r = std::panic::catch_unwind(|| {
        let ns = Netns::isolated().unwrap();
        *name.lock().unwrap() = ns.name.clone();
        panic!("boom");
    });
    assert!(r.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty() && !ns_list().contains(&name), "{name} survived a panic");
}

fn probe(fake: &FakeNet, args: &[&str]) -> openshell_e2e::sandbox::ProbeRun {
    let ctx = openshell_e2e::sandbox::Ctx::new(User::Root, &fake.client.name).unwrap();
    ctx.direct_probe(User::Root, args).unwrap()
}

#[test]
fn fake_internet_serves_every_protocol() {
    let t = "harness::fake_internet_serves_every_protocol";
    if !require_root(t) {
        return;
    }
    let Some(curl) = require_tool(t, "curl") else { return };
    let Some(git) = require_tool(t, "git") else { return };
    let (curl, git) = (curl.display().to_string(), git.display().to_string());
    let fake = FakeNet::start(FakeNetOpts { git: true }).unwrap();
    let ns = fake.client.name.clone();
    let ca = fake.ca_pem.display().to_string();
    let mut f = Failures::default();

    // DNS (the client namespace's resolv.conf points at the fake internet).
    let r = probe(&fake, &["dns", "allowed.test"]);
    let p = r.report().unwrap();
    f.check(p.ok && p.extra["answers"] == serde_json::json!([netns::ALLOWED_V4]), || {
        format!("dns allowed.test: {p:?}")
    });
    let p = probe(&fake, &["dns", "v6.test", "aaaa"]).probe.unwrap();
    f.check(p.ok && p.extra["answers"] == serde_json::json!([netns::ALLOWED_V6]), || {
        format!("dns v6.test AAAA: {p:?}")
    });
    let p = probe(&fake, &["dns", "nope.test"]).probe.unwrap();
    f.check(!p.ok && p.extra["rcode"] == "NXDomain", || format!("dns nope.test: {p:?}"));
    let p = probe(&fake, &["dns", "rebind.test"]).probe.unwrap();
    f.check(p.extra["answers"] == serde_json::json!(["127.0.0.1"]), || format!("dns rebind.test: {p:?}"));

    // HTTP, HTTPS with the test CA, IPv6.
    let o = run_in_ns(&ns, &[&curl, "-sS", "--max-time", "10", "http://allowed.test/hello"]);
    let echo: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
    f.check(echo["host"] == "allowed.test" && echo["local"] == "10.200.0.2:80", || {
        format!("curl http: {}", o.describe())
    });
    let o = run_in_ns(&ns, &[&curl, "-sS", "--max-time", "10", "--cacert", &ca, "https://allowed.test/tls"]);
    let echo: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
    f.check(echo["tls"] == true && echo["sni"] == "allowed.test", || format!("curl https: {}", o.describe()));
    let o = run_in_ns(&ns, &[&curl, "-sS", "--max-time", "10", "--cacert", &ca, "https://v6.test/"]);
    let echo: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
    f.check(echo["local"] == "[fd00:200::2]:443", || format!("curl https v6: {}", o.describe()));
    let o = run_in_ns(
        &ns,
        &[
            &curl,
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "http://allowed.test/big?n=3000000",
        ],
    );
    f.check(o.stdout.trim() == "3000000", || format!("curl /big: {}", o.describe()));

    // Raw TCP reach (PING/PONG on the HTTP, TLS and echo ports), private address, IPv6, UDP, WebSocket.
    for (ip, port) in [
        (netns::DENIED_V4, "443"),
        (netns::DENIED_V4, "80"),
        (netns::DENIED_V4, "7"),
        (netns::PRIVATE_V4, "80"),
        (netns::DENIED_V6, "443"),
        (netns::ALLOWED_V4, "9000"),
    ] {
        let p = probe(&fake, &["connect", ip, port]).probe.unwrap();
        f.check(p.ok, || format!("connect {ip} {port}: {p:?}"));
    }
    let p = probe(&fake, &["udp-send", netns::DENIED_V4, "9000"]).probe.unwrap();
    f.check(p.ok, || format!("udp echo: {p:?}"));
    let p = probe(&fake, &["ws-echo", "ws://allowed.test/ws", "direct"]).probe.unwrap();
    f.check(p.ok, || format!("websocket echo: {p:?}"));

    // The canary on the client namespace's loopback.
    let p = probe(&fake, &["connect", "127.0.0.1", "80"]).probe.unwrap();
    f.check(p.ok, || format!("canary 127.0.0.1:80: {p:?}"));
    f.check(fake.canary_log().iter().any(|e| e.kind == "ping"), || "canary did not log the ping".into());

    // Nothing outside the pair is routable from the client namespace (no default route).
    let p = probe(&fake, &["connect", netns::METADATA_V4, "80"]).probe.unwrap();
    f.check(!p.ok && p.errno == Some(libc::ENETUNREACH), || {
        format!("169.254.169.254 must be unroutable in the harness: {p:?}")
    });

    // git clone over dumb HTTP.
    let dest = tempfile::tempdir().unwrap();
    let clone = dest.path().join("repo");
    let o =
        run_in_ns(&ns, &[&git, "clone", "-q", "http://allowed.test/repo.git", &clone.display().to_string()]);
    let readme = std::fs::read_to_string(clone.join("README")).unwrap_or_default();
    f.check(readme == netns::GIT_README, || format!("git clone: {}", o.describe()));

    // The request log saw it all.
    let log = fake.log();
    let kinds = |k: &str| log.iter().filter(|e: &&LogEntry| e.kind == k).count();
    for k in ["http", "https", "ping", "tcp-echo", "udp-echo", "dns", "ws"] {
        f.check(kinds(k) > 0, || format!("log has no {k} entry"));
    }
    notice(&format!("harness: fake internet logged {} requests", log.len()));
    f.finish(t);
}

#[test]
fn probe_reports_usage_errors_with_exit_2() {
    if !require_root("harness::probe_reports_usage_errors_with_exit_2") {
        return;
    }
    let ns = Netns::isolated().unwrap();
    let ctx = openshell_e2e::sandbox::Ctx::new(User::Root, &ns.name).unwrap();
    for args in
        [&["no-such-action"][..], &["read"], &["connect", "not-an-ip", "1"], &["setuid-exec", "/bin/true"]]
    {
        let r = ctx.direct_probe(User::Root, args).unwrap();
        assert_eq!(r.out.code, Some(2), "{args:?}: {}", r.out.describe());
        assert!(r.report().unwrap().detail.starts_with("usage error"));
    }
    let r = ctx.direct_probe(User::Unprivileged, &["whoami-euid"]).unwrap();
    assert_eq!(r.report().unwrap().extra["euid"], 65534, "{}", r.out.describe());
}

#[test]
fn probe_proxy_client_speaks_http() {
    // No proxy exists without the supervisor, but the fake internet's HTTP server routes
    // absolute-form requests by path, which is enough to check the probe's proxy client.
    let t = "harness::probe_proxy_client_speaks_http";
    if !require_root(t) {
        return;
    }
    let fake = FakeNet::start(FakeNetOpts::default()).unwrap();
    let ctx = openshell_e2e::sandbox::Ctx::new(User::Root, &fake.client.name).unwrap();
    let env = [("HTTP_PROXY", "http://10.200.0.2:80")];
    let mut f = Failures::default();
    let r =
        ctx.direct_probe_env(User::Root, &env, &["http-proxy-get", "http://allowed.test/via-proxy"]).unwrap();
    let p = r.report().unwrap();
    let body: serde_json::Value = serde_json::from_str(p.extra_str("body").unwrap_or("")).unwrap_or_default();
    f.check(
        p.ok && body["path"] == "http://allowed.test/via-proxy" && body["host"] == "allowed.test",
        || format!("absolute-form GET: {p:?}"),
    );
    let r = ctx
        .direct_probe_env(User::Root, &env, &["http-proxy-get", "http://allowed.test/status/403"])
        .unwrap();
    let p = r.report().unwrap();
    f.check(!p.ok && r.out.code == Some(1) && p.extra_u64("status") == Some(403), || {
        format!("403 is a refusal: {p:?}")
    });
    let r = ctx.direct_probe_env(User::Root, &env, &["ws-echo", "ws://allowed.test/ws", "forward"]).unwrap();
    let p = r.report().unwrap();
    f.check(p.ok, || format!("websocket upgrade in absolute form: {p:?}"));
    f.finish(t);
}
