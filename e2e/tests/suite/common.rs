//! Shared helpers: loud skips, contexts, policies for the fake internet, assertions.

use std::io::Write;
use std::path::PathBuf;

use openshell_e2e::bins;
use openshell_e2e::netns::{self, FakeNet};
use openshell_e2e::policy::{Endpoint, Policy};
use openshell_e2e::sandbox::{Ctx, User};

/// Writes straight to the process's stderr (not the test harness's capture), so skips and known
/// gaps are visible in every run, also for passing tests.
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Reports a skip; tests call it and return early ONLY when a host prerequisite is missing.
pub fn skip(test: &str, why: &str) {
    notice(&format!("SKIPPED {test}: {why}"));
}

/// Every suite needs root (network namespaces, setpriv). False = skipped loudly.
pub fn require_root(test: &str) -> bool {
    if bins::is_root() {
        return true;
    }
    skip(test, "needs root (creates network namespaces and switches users)");
    false
}

/// A tool on PATH or a loud skip.
pub fn require_tool(test: &str, tool: &str) -> Option<PathBuf> {
    let found = bins::which(tool);
    if found.is_none() {
        skip(test, &format!("`{tool}` is not installed on this host"));
    }
    found
}

/// Canonical path (symlinks resolved) as a string, for policy binary entries.
pub fn real(p: &std::path::Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

/// The positive policy for the fake internet: `binaries` may reach allowed.test on 80/443/9000 (and
/// v6.test on 80/443), with `allowed_ips` covering the fake internet's subnets but not 10.201.0.0/24;
/// private.test and rebind.test are listed too, so only SSRF protection can stop them.
pub fn internet_policy(ctx: &Ctx, fake: &FakeNet, binaries: &[&str]) -> Policy {
    let ips = [netns::INTERNET_V4_NET, netns::INTERNET_V6_NET];
    ctx.base_policy().read_only(&fake.public_dir).rule(
        "fake",
        vec![
            Endpoint::new("allowed.test", &[netns::HTTP_PORT, netns::HTTPS_PORT, netns::ECHO_PORT])
                .allowed_ips(&ips),
            Endpoint::new("v6.test", &[netns::HTTP_PORT, netns::HTTPS_PORT]).allowed_ips(&ips),
            Endpoint::new("private.test", &[netns::HTTP_PORT]).allowed_ips(&ips),
            Endpoint::new("rebind.test", &[netns::HTTP_PORT]).allowed_ips(&ips),
        ],
        binaries,
    )
}

/// Starts a fake internet and a context in its client namespace.
pub fn online(user: User, git: bool) -> (FakeNet, Ctx) {
    let fake = FakeNet::start(netns::FakeNetOpts { git }).expect("start the fake internet");
    let ctx = Ctx::new(user, &fake.client.name).expect("test context");
    (fake, ctx)
}

/// An isolated namespace (lo only) and a context in it.
pub fn offline(user: User) -> (netns::Netns, Ctx) {
    let ns = netns::Netns::isolated().expect("create netns");
    let ctx = Ctx::new(user, &ns.name).expect("test context");
    (ns, ctx)
}

/// Collects named failures so one run reports every broken case, then fails once.
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    pub fn check(&mut self, cond: bool, what: impl FnOnce() -> String) {
        if !cond {
            self.0.push(what());
        }
    }
    pub fn push(&mut self, s: String) {
        self.0.push(s);
    }
    pub fn finish(self, title: &str) {
        if !self.0.is_empty() {
            panic!("{title}: {} failure(s)\n\n{}", self.0.len(), self.0.join("\n\n"));
        }
    }
}

/// The JSON body of a proxy denial (`None` if the body is not JSON).
pub fn deny_body(body: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(body.trim()).ok()
}

/// Runs a host command inside a namespace WITHOUT the sandbox (fixtures, positive controls).
pub fn run_in_ns(ns: &str, argv: &[&str]) -> openshell_e2e::sandbox::Outcome {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(argv)
        .env_clear()
        .env("PATH", openshell_e2e::sandbox::PATH)
        .env("HOME", "/nonexistent");
    openshell_e2e::sandbox::Running::start(cmd, None)
        .and_then(|r| r.wait(std::time::Duration::from_secs(30)))
        .expect("run command in netns")
}
