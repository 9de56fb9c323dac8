//! What the agent sees inside the sandbox (both users): the environment contract, the enforcement
//! state (no privileges, no_new_privs, seccomp), its own pid namespace, the tools real agents need
//! (memfd_create, nice), the filesystem it is allowed, and the start-up `lifecycle` event.

use openshell_e2e::events;
use openshell_e2e::sandbox::User;

use super::common::{Failures, offline, require_root};

const PROXY: &str = "http://127.0.0.1:3128";

fn contract(user: User, t: &str) {
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(user);
    let ro_file = ctx.ro_dir.join("readable");
    std::fs::write(&ro_file, "readable").unwrap();
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    let mut f = Failures::default();
    let u = user.label();

    // Environment contract; the supervisor's own environment must not leak to the agent.
    let r = ctx
        .sandbox(&policy)
        .env("E2E_EXPLICIT", "given")
        .sup_env("E2E_SUPERVISOR_ONLY", "must-not-leak")
        .probe(&["env"])
        .unwrap();
    match r.report() {
        Err(e) => f.push(format!("[{u}] env: {e}")),
        Ok(p) => {
            let env = &p.extra["env"];
            for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
                f.check(env[k] == PROXY, || format!("[{u}] {k} should be {PROXY}: {}", env[k]));
            }
            for k in ["NO_PROXY", "no_proxy"] {
                f.check(env[k] == "localhost,127.0.0.1,::1", || format!("[{u}] {k}: {}", env[k]));
            }
            let w = ctx.workdir.display().to_string();
            f.check(env["HOME"] == w.as_str(), || {
                format!("[{u}] HOME should be the workdir {w}: {}", env["HOME"])
            });
            f.check(p.extra["cwd"] == w.as_str(), || {
                format!("[{u}] cwd should be the workdir {w}: {}", p.extra["cwd"])
            });
            f.check(env["E2E_EXPLICIT"] == "given", || format!("[{u}] --env did not reach the agent: {env}"));
            f.check(env.get("E2E_SUPERVISOR_ONLY").is_none(), || {
                format!("[{u}] the supervisor's environment leaked into the agent: {env}")
            });
            let ns = openshell_e2e::dnswire::nameserver(p.extra_str("resolv_conf").unwrap_or(""));
            f.check(ns == "127.0.0.1".parse().ok(), || {
                format!("[{u}] resolv.conf should name 127.0.0.1: {:?}", p.extra["resolv_conf"])
            });
        }
    }
    // Startup event and event format.
    f.check(r.out.events.iter().any(|e| e.kind() == "lifecycle"), || {
        format!("[{u}] no lifecycle event stating what is enforced\n{}", r.out.describe())
    });
    for e in &r.out.events {
        let v = events::violations(e);
        f.check(v.is_empty(), || format!("[{u}] event violates the contract {v:?}: {}", e.text()));
    }
    f.check(r.out.bad_event_lines.is_empty(), || {
        format!("[{u}] malformed event lines: {:?}", r.out.bad_event_lines)
    });

    // Enforcement state as the kernel reports it.
    let r = ctx.sandbox(&policy).probe(&["id"]).unwrap();
    match r.report() {
        Err(e) => f.push(format!("[{u}] id: {e}")),
        Ok(p) => {
            let x = &p.extra;
            let field = |k: &str| x[k].as_str().unwrap_or("").to_string();
            f.check(!field("Uid").split_whitespace().any(|id| id == "0"), || {
                format!("[{u}] agent has uid 0 somewhere: {}", field("Uid"))
            });
            f.check(!field("Gid").split_whitespace().any(|id| id == "0"), || {
                format!("[{u}] agent has gid 0 somewhere: {}", field("Gid"))
            });
            for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
                f.check(field(k) == "0000000000000000", || {
                    format!("[{u}] {k} should be empty: {}", field(k))
                });
            }
            f.check(field("NoNewPrivs") == "1", || format!("[{u}] NoNewPrivs: {}", field("NoNewPrivs")));
            f.check(field("Seccomp") == "2", || {
                format!("[{u}] Seccomp should be 2 (filter): {}", field("Seccomp"))
            });
        }
    }

    // Own pid namespace: a handful of pids, none of the host's.
    let r = ctx.sandbox(&policy).probe(&["list-pids"]).unwrap();
    match r.report() {
        Err(e) => f.push(format!("[{u}] list-pids: {e}")),
        Ok(p) => {
            let pids: Vec<u64> = p.extra["pids"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default();
            f.check(!pids.is_empty() && pids.len() <= 5, || {
                format!("[{u}] the agent sees {} pids: {pids:?}", pids.len())
            });
            f.check(!pids.contains(&u64::from(std::process::id())), || {
                format!("[{u}] the agent sees the test runner's pid")
            });
            f.check(p.pid <= 10, || format!("[{u}] probe pid {} (not in a fresh pid namespace?)", p.pid));
        }
    }

    // What real agents need must keep working.
    for action in ["memfd", "nice"] {
        let r = ctx.sandbox(&policy).probe(&[action]).unwrap();
        f.check(r.probe.as_ref().is_some_and(|p| p.ok), || {
            format!("[{u}] {action} must work in the sandbox (real agents need it)\n{}", r.out.describe())
        });
    }
    // The filesystem it is allowed: workdir and /tmp writable, read_only readable.
    let wfile = ctx.workdir.join("written");
    let r = ctx.sandbox(&policy).probe(&["write", &wfile.display().to_string()]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok) && wfile.exists(), || {
        format!("[{u}] writing into the workdir\n{}", r.out.describe())
    });
    // A unique name: a stale file from another run must not decide this check.
    let tmp_file = format!("/tmp/osh-e2e-{}", ctx.root.file_name().unwrap().to_string_lossy());
    let r = ctx.sandbox(&policy).probe(&["write", &tmp_file]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok), || format!("[{u}] writing /tmp\n{}", r.out.describe()));
    f.check(!std::path::Path::new(&tmp_file).exists(), || {
        format!("[{u}] the sandbox /tmp is the host's /tmp (should be private)")
    });
    let r = ctx.sandbox(&policy).probe(&["read", &ro_file.display().to_string()]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok && p.detail == "readable"), || {
        format!("[{u}] reading a read_only path\n{}", r.out.describe())
    });
    f.finish(t);
}

#[test]
fn agent_contract_as_root() {
    contract(User::Root, "contract::agent_contract_as_root");
}

#[test]
fn agent_contract_unprivileged() {
    contract(User::Unprivileged, "contract::agent_contract_unprivileged");
}

#[test]
fn check_reports_what_the_host_enforces() {
    let t = "contract::check_reports_what_the_host_enforces";
    if !require_root(t) {
        return;
    }
    let s = openshell_e2e::bins::staging().unwrap();
    let out = std::process::Command::new(&s.supervisor).arg("check").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        .to_lowercase();
    assert!(out.status.success(), "check failed: {text}");
    for word in ["landlock", "seccomp", "user"] {
        assert!(text.contains(word), "check output does not mention {word}: {text}");
    }
}
