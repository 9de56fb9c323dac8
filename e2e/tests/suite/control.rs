//! Positive control: the escape corpus run WITHOUT the supervisor must succeed, proving that each
//! case in `escapes`/`net_deny` would catch a real escape (a case that fails here too proves nothing).

use openshell_e2e::netns;
use openshell_e2e::probe_out::ProbeOutput;
use openshell_e2e::sandbox::User;

use super::common::{Failures, notice, offline, online, require_root};
use super::corpus::{Fixtures, cases};

#[test]
fn corpus_succeeds_without_the_sandbox_as_root() {
    let t = "control::corpus_succeeds_without_the_sandbox_as_root";
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Root);
    let fx = Fixtures::new(&ctx);
    let mut f = Failures::default();
    for case in cases(&ctx, &fx) {
        if case.name == "fs-setuid-binary" {
            continue; // meaningless as root; covered by the unprivileged control
        }
        let args: Vec<&str> = case.control_args.iter().map(String::as_str).collect();
        let r = ctx.direct_probe(User::Root, &args).unwrap();
        match &r.probe {
            Some(p) if p.ok && r.out.code == Some(0) => {}
            _ => f.push(format!(
                "{}: control did not succeed, so the case proves nothing\n{}",
                case.name,
                r.out.describe()
            )),
        }
        if case.name == "fs-read-secret" {
            let p = r.probe.as_ref().map(|p| p.detail.clone()).unwrap_or_default();
            f.check(p.contains(&ctx.secret_text), || format!("control read returned {p:?}, not the secret"));
        }
        if case.name == "proc-read-init-environ" {
            let p = r.probe.as_ref().map(|p| p.detail.clone()).unwrap_or_default();
            f.check(p.contains(&fx.victim_secret), || format!("control environ read returned {p:?}"));
        }
    }
    f.finish(t);
}

#[test]
fn corpus_succeeds_without_the_sandbox_unprivileged() {
    let t = "control::corpus_succeeds_without_the_sandbox_unprivileged";
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Unprivileged);
    let fx = Fixtures::new(&ctx);
    let mut f = Failures::default();
    let mut not_expected = Vec::new();
    for case in cases(&ctx, &fx) {
        let args: Vec<&str> = case.control_args.iter().map(String::as_str).collect();
        let r = ctx.direct_probe(User::Unprivileged, &args).unwrap();
        let ok = matches!(&r.probe, Some(p) if p.ok) && r.out.code == Some(0);
        if case.unpriv_control && !ok {
            f.push(format!("{}: unprivileged control did not succeed\n{}", case.name, r.out.describe()));
        } else if !case.unpriv_control {
            not_expected.push(format!("{}={}", case.name, if ok { "succeeds" } else { "refused" }));
        }
    }
    notice(&format!("control (unprivileged, host policy alone; informational): {}", not_expected.join(" ")));
    f.finish(t);
}

fn direct(ctx: &openshell_e2e::sandbox::Ctx, args: &[&str]) -> (ProbeOutput, String) {
    let r = ctx.direct_probe(User::Root, args).unwrap();
    let d = r.out.describe();
    (r.probe.unwrap_or_else(|| panic!("{args:?}: no report\n{d}")), d)
}

#[test]
fn network_escapes_succeed_without_the_sandbox() {
    let t = "control::network_escapes_succeed_without_the_sandbox";
    if !require_root(t) {
        return;
    }
    let (fake, ctx) = online(User::Root, false);
    let mut f = Failures::default();
    for (ip, port) in [
        (netns::DENIED_V4, "443"),
        (netns::DENIED_V4, "80"),
        (netns::DENIED_V4, "7"),
        (netns::DENIED_V6, "443"),
        (netns::PRIVATE_V4, "80"),
        ("127.0.0.1", "80"),
        ("::1", "80"),
    ] {
        let (p, d) = direct(&ctx, &["connect", ip, port]);
        f.check(p.ok, || format!("connect {ip} {port} should reach without the sandbox\n{d}"));
    }
    let (p, d) = direct(&ctx, &["udp-send", netns::DENIED_V4, "9000"]);
    f.check(p.ok, || format!("udp echo should work without the sandbox\n{d}"));
    let (p, d) = direct(&ctx, &["dns", "denied.test"]);
    f.check(p.ok, || format!("denied.test should resolve without the sandbox\n{d}"));
    let (p, d) = direct(&ctx, &["dns", "rebind.test"]);
    f.check(p.extra["answers"] == serde_json::json!(["127.0.0.1"]), || {
        format!("rebind.test -> 127.0.0.1\n{d}")
    });
    f.check(fake.canary_log().len() >= 2, || "the loopback canary saw nothing".into());
    f.finish(t);
}
