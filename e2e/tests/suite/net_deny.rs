//! Network escapes through the fake internet, as root and unprivileged. Each must be refused (fast,
//! never a hang), leave its event, and - checked on the fake internet's request log and on the
//! loopback canary - must NOT have reached the destination.

use std::net::IpAddr;

use openshell_e2e::events::{self, find_net_deny};
use openshell_e2e::fake::LogEntry;
use openshell_e2e::netns::{self, FakeNet};
use openshell_e2e::probe_out::ProbeOutput;
use openshell_e2e::sandbox::{Ctx, ProbeRun, User};

use super::common::{Failures, deny_body, internet_policy, notice, online, require_root};
use super::corpus::judge_event;

/// Names of the fake internet that no policy in this suite lists.
const UNLISTED_NAMES: &[&str] = &["denied.test", "other.test"];

/// Fast means well under the probe's 5 s connect timeout and the suites' 1 s budget.
const FAST_MS: u64 = 1000;

struct Net<'a> {
    ctx: &'a Ctx,
    fake: &'a FakeNet,
    policy: std::path::PathBuf,
    user: User,
    f: Failures,
    gaps: Vec<String>,
}

impl Net<'_> {
    fn probe(&self, args: &[&str]) -> (ProbeRun, usize, usize) {
        let (log0, canary0) = (self.fake.log().len(), self.fake.canary_log().len());
        let r = self
            .ctx
            .sandbox(&self.policy)
            .sup_env("SSL_CERT_FILE", &self.fake.ca_pem.display().to_string())
            .probe(args)
            .unwrap();
        (r, log0, canary0)
    }

    fn fail(&mut self, name: &str, msg: String, r: &ProbeRun) {
        self.f.push(format!("[{}] {name}: {msg}\n{}", self.user.label(), r.out.describe()));
    }

    /// Common checks: the probe reported, was refused, the supervisor exited 1.
    fn refused<'r>(&mut self, name: &str, r: &'r ProbeRun) -> Option<&'r ProbeOutput> {
        match &r.probe {
            None => {
                self.fail(name, "the probe never reported".into(), r);
                None
            }
            Some(p) if r.out.code == Some(2) => {
                self.fail(
                    name,
                    format!(
                        "probe usage error (a test bug, or the sandbox gave no proxy variables): {}",
                        p.detail
                    ),
                    r,
                );
                None
            }
            Some(p) if p.ok || r.out.code != Some(1) => {
                self.fail(name, format!("NOT BLOCKED (ok={}, exit {:?}): {}", p.ok, r.out.code, p.detail), r);
                None
            }
            Some(p) => Some(p),
        }
    }

    /// Nothing new reached `ip` on the fake internet, the canary, or asked upstream DNS for `qname`.
    fn not_reached(
        &mut self,
        name: &str,
        r: &ProbeRun,
        log0: usize,
        canary0: usize,
        ip: Option<&str>,
        qname: Option<&str>,
    ) {
        let log: Vec<LogEntry> = self.fake.log().into_iter().skip(log0).collect();
        if let Some(ip) = ip {
            let ip: IpAddr = ip.parse().unwrap();
            if let Some(e) = log.iter().find(|e| e.local_ip() == Some(ip)) {
                self.fail(name, format!("the destination {ip} WAS reached: {e:?}"), r);
            }
        }
        if let Some(q) = qname
            && let Some(e) = log.iter().find(|e| e.kind == "dns" && e.qname.as_deref() == Some(q))
        {
            self.fail(
                name,
                format!("the forbidden name {q} was resolved upstream (a DNS exfiltration channel): {e:?}"),
                r,
            );
        }
        let canary: Vec<LogEntry> = self.fake.canary_log().into_iter().skip(canary0).collect();
        if !canary.is_empty() {
            self.fail(name, format!("the supervisor's loopback was reached: {canary:?}"), r);
        }
    }

    fn event(&mut self, name: &str, r: &ProbeRun, kinds: &[&str], host_or_ip: &str, port: Option<u16>) {
        let found = find_net_deny(&r.out.events, kinds, host_or_ip, port).is_some();
        match judge_event(name, found, &format!("{kinds:?} deny for {host_or_ip}")) {
            Ok(None) => {}
            Ok(Some(n)) => self.gaps.push(n),
            Err(e) => self.fail(name, e, r),
        }
    }

    /// The event of a refusal the sandbox kernel made (no supervisor listener involved) names `reason`.
    fn kernel_reason(&mut self, name: &str, r: &ProbeRun, ip: &str, port: u16, reason: &str) {
        if let Some(e) = find_net_deny(&r.out.events, &["network"], ip, Some(port))
            && (e.str("reason") != Some(reason) || e.0["detail"]["door"] != "kernel")
        {
            self.fail(name, format!("expected reason {reason} from the refusal observer: {}", e.text()), r);
        }
    }

    /// A proxy denial: 403 with a JSON body (error=policy_denied, a reason), the event, not reached.
    fn proxy_denied(
        &mut self,
        name: &str,
        args: &[&str],
        host: &str,
        port: u16,
        ip: Option<&str>,
        reason: Option<&str>,
    ) {
        let (r, log0, canary0) = self.probe(args);
        let refused = self.refused(name, &r).is_some();
        if let Some(p) = r.probe.as_ref().filter(|_| refused) {
            let status = p.extra_u64("status").unwrap_or(0);
            let body = p.extra_str("body").unwrap_or("").to_string();
            if status != 403 {
                self.fail(name, format!("expected 403, got {status}: {body}"), &r);
            }
            match deny_body(&body) {
                None => self.fail(name, format!("403 body is not JSON: {body:?}"), &r),
                Some(j) => {
                    if j["error"] != "policy_denied" {
                        self.fail(name, format!("body.error should be \"policy_denied\": {j}"), &r);
                    }
                    if !j["reason"].is_string() || !j["hint"].is_string() {
                        self.fail(name, format!("body must name a reason and a hint: {j}"), &r);
                    }
                    if let Some(want) = reason
                        && j["reason"] != want
                    {
                        self.fail(name, format!("body.reason should be {want:?}: {j}"), &r);
                    }
                }
            }
        }
        if refused {
            self.event(name, &r, &["network"], host, Some(port));
        }
        // A name no policy lists must not even be resolved upstream (listed names such as
        // rebind.test or private.test must be resolved: that is how the SSRF check sees them).
        let unlisted = UNLISTED_NAMES.contains(&host);
        self.not_reached(name, &r, log0, canary0, ip, Some(host).filter(|_| unlisted));
    }

    /// A transparent TCP attempt: refused or closed fast, not reached.
    fn tcp_denied(&mut self, name: &str, ip: &str, port: u16, want_refused: bool) {
        let port_s = port.to_string();
        let (r, log0, canary0) = self.probe(&["connect", ip, &port_s]);
        let refused = self.refused(name, &r).is_some();
        if let Some(p) = r.probe.as_ref().filter(|_| refused) {
            let total = p
                .extra_u64("elapsed_ms")
                .unwrap_or(u64::MAX)
                .saturating_add(p.extra_u64("reply_ms").unwrap_or(0));
            if total >= FAST_MS {
                self.fail(name, format!("refusal took {total} ms (must be fast, never a hang)"), &r);
            }
            if want_refused && p.errno != Some(libc::ECONNREFUSED) {
                self.fail(name, format!("expected ECONNREFUSED, got {} ({})", p.errno_name(), p.detail), &r);
            }
        }
        if refused {
            self.event(name, &r, &["network"], ip, Some(port));
            if want_refused {
                self.kernel_reason(name, &r, ip, port, "port_not_allowed");
            }
        }
        self.not_reached(name, &r, log0, canary0, Some(ip), None);
    }
}

fn run(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    let (fake, ctx) = online(user, false);
    let probe = ctx.probe_path();
    let policy = ctx.policy_file(&internet_policy(&ctx, &fake, &[&probe]).to_yaml()).unwrap();
    let mut n = Net { ctx: &ctx, fake: &fake, policy, user, f: Failures::default(), gaps: vec![] };

    n.proxy_denied(
        "net-proxy-forbidden-host",
        &["http-proxy-get", "http://denied.test/escape"],
        "denied.test",
        80,
        Some(netns::DENIED_V4),
        None,
    );
    n.proxy_denied(
        "net-connect-forbidden-host",
        &["connect-proxy", "denied.test", "443"],
        "denied.test",
        443,
        Some(netns::DENIED_V4),
        None,
    );
    n.proxy_denied(
        "net-connect-allowed-host-other-port",
        &["connect-proxy", "allowed.test", "22"],
        "allowed.test",
        22,
        None,
        None,
    );
    n.proxy_denied(
        "net-proxy-ip-literal",
        &["http-proxy-get", "http://10.200.0.4/escape"],
        netns::DENIED_V4,
        80,
        Some(netns::DENIED_V4),
        None,
    );
    n.proxy_denied(
        "net-connect-ipv6-literal",
        &["connect-proxy", netns::DENIED_V6, "443"],
        netns::DENIED_V6,
        443,
        Some(netns::DENIED_V6),
        None,
    );
    n.proxy_denied(
        "net-proxy-private-address",
        &["http-proxy-get", "http://private.test/escape"],
        "private.test",
        80,
        Some(netns::PRIVATE_V4),
        Some("address_not_allowed"),
    );
    n.proxy_denied(
        "net-proxy-rebind-to-loopback",
        &["http-proxy-get", "http://rebind.test/escape"],
        "rebind.test",
        80,
        None,
        None,
    );
    n.proxy_denied(
        "net-proxy-metadata",
        &["http-proxy-get", "http://169.254.169.254/latest/meta-data/"],
        netns::METADATA_V4,
        80,
        None,
        None,
    );

    n.tcp_denied("net-tcp-named-port", netns::DENIED_V4, netns::HTTPS_PORT, false);
    n.tcp_denied("net-tcp-unlisted-port", netns::DENIED_V4, netns::UNLISTED_ECHO_PORT, true);
    n.tcp_denied("net-tcp-ipv6-unlisted-port", netns::DENIED_V6, netns::UNLISTED_ECHO_PORT, true);
    n.tcp_denied("net-tcp-ipv6", netns::DENIED_V6, netns::HTTPS_PORT, false);
    n.tcp_denied("net-tcp-loopback", "127.0.0.1", netns::HTTP_PORT, false);
    n.tcp_denied("net-tcp-loopback-v6", "::1", netns::HTTP_PORT, false);
    n.tcp_denied("net-tcp-metadata", netns::METADATA_V4, netns::HTTP_PORT, false);
    n.tcp_denied("net-tcp-private", netns::PRIVATE_V4, netns::HTTP_PORT, false);

    // UDP other than DNS: dropped, even to an allowed host.
    for (name, ip) in
        [("net-udp", netns::DENIED_V4), ("net-udp", netns::ALLOWED_V4), ("net-udp-ipv6", netns::DENIED_V6)]
    {
        let (r, log0, canary0) = n.probe(&["udp-send", ip, "9000"]);
        if n.refused(name, &r).is_some() {
            n.event(name, &r, &["network"], ip, Some(9000));
            n.kernel_reason(name, &r, ip, 9000, "udp_not_allowed");
        }
        let reached = fake.log().into_iter().skip(log0).any(|e| e.kind == "udp-echo");
        if reached {
            n.fail(name, format!("UDP reached {ip}:9000"), &r);
        }
        n.not_reached(name, &r, log0, canary0, None, None);
    }

    // DNS of a forbidden name: NXDOMAIN from the sandbox DNS, an event, and no upstream query.
    let (r, log0, canary0) = n.probe(&["dns", "denied.test"]);
    let refused = n.refused("net-dns-forbidden-name", &r).is_some();
    if let Some(p) = r.probe.as_ref().filter(|_| refused)
        && p.extra_str("rcode") != Some("NXDomain")
    {
        n.fail("net-dns-forbidden-name", format!("expected NXDOMAIN, got {:?}", p.extra), &r);
    }
    if refused {
        n.event("net-dns-forbidden-name", &r, &["dns"], "denied.test", None);
    }
    n.not_reached("net-dns-forbidden-name", &r, log0, canary0, None, Some("denied.test"));

    // DNS rebinding: an allowed name whose answer is loopback must not become reachable.
    let (r, log0, canary0) = n.probe(&["connect-name", "rebind.test", "80"]);
    n.refused("net-rebind-transparent", &r);
    n.not_reached("net-rebind-transparent", &r, log0, canary0, None, None);

    for g in &n.gaps {
        notice(&format!("[{}] {g}", user.label()));
    }
    let bad: Vec<String> = events::read(&ctx.events_dir.join("run-0.jsonl")).1;
    n.f.check(bad.is_empty(), || format!("malformed event lines: {bad:?}"));
    n.f.finish(t);
}

#[test]
fn network_escapes_are_blocked_as_root() {
    run(User::Root, "net_deny::network_escapes_are_blocked_as_root");
}

#[test]
fn network_escapes_are_blocked_unprivileged() {
    run(User::Unprivileged, "net_deny::network_escapes_are_blocked_unprivileged");
}
