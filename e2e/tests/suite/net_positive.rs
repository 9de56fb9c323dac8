//! Ordinary tools through the sandbox to the fake internet: with and without proxy variables, IP
//! literals, IPv6, python requests, git, WebSocket, node, and one binary allowed while another is
//! denied on the same host. Each positive also checks the fake internet really saw the request.

use std::path::PathBuf;

use openshell_e2e::events::find_net_deny;
use openshell_e2e::netns::{self, FakeNet};
use openshell_e2e::policy::Endpoint;
use openshell_e2e::sandbox::{Ctx, Outcome, User};

use super::common::{Failures, deny_body, internet_policy, online, real, require_root, require_tool, skip};

fn sandbox_run(ctx: &Ctx, fake: &FakeNet, policy: &std::path::Path, argv: &[&str]) -> Outcome {
    ctx.sandbox(policy).sup_env("SSL_CERT_FILE", &fake.ca_pem.display().to_string()).run(argv).unwrap()
}

/// The first JSON object line of stdout.
fn json_out(o: &Outcome) -> serde_json::Value {
    o.stdout
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok().filter(|v| v.is_object()))
        .unwrap_or_default()
}

fn curl_setup(t: &str, user: User) -> Option<(FakeNet, Ctx, String, PathBuf)> {
    if !require_root(t) {
        return None;
    }
    let curl = real(&require_tool(t, "curl")?);
    let (fake, ctx) = online(user, false);
    let policy =
        ctx.policy_file(&internet_policy(&ctx, &fake, &[&curl, &ctx.probe_path()]).to_yaml()).unwrap();
    Some((fake, ctx, curl, policy))
}

/// (what, curl args, fake-internet address that must answer, TLS, proxy variable curl must use)
type CurlCase<'a> = (&'a str, Vec<&'a str>, &'a str, bool, Option<&'a str>);

fn curl_cases(user: User, t: &str) {
    let Some((fake, ctx, curl, policy)) = curl_setup(t, user) else { return };
    let ca = fake.ca_pem.display().to_string();
    let mut f = Failures::default();
    let cases: [CurlCase; 6] = [
        ("proxy http", vec!["http://allowed.test/c1"], "10.200.0.2:80", false, Some("http_proxy")),
        (
            "proxy https (CONNECT)",
            vec!["--cacert", &ca, "https://allowed.test/c2"],
            "10.200.0.2:443",
            true,
            Some("https_proxy"),
        ),
        (
            "no proxy http (capture)",
            vec!["--noproxy", "*", "http://allowed.test/c3"],
            "10.200.0.2:80",
            false,
            None,
        ),
        (
            "no proxy https (capture)",
            vec!["--noproxy", "*", "--cacert", &ca, "https://allowed.test/c4"],
            "10.200.0.2:443",
            true,
            None,
        ),
        ("ipv6 no proxy", vec!["-6", "--noproxy", "*", "http://v6.test/c5"], "[fd00:200::2]:80", false, None),
        (
            "ipv6 proxy https",
            vec!["--cacert", &ca, "https://v6.test/c6"],
            "[fd00:200::2]:443",
            true,
            Some("https_proxy"),
        ),
    ];
    for (what, args, local, tls, proxy_var) in cases {
        let mut argv = vec![curl.as_str(), "-sS", "-v", "--max-time", "15"];
        argv.extend(args);
        let o = sandbox_run(&ctx, &fake, &policy, &argv);
        let echo = json_out(&o);
        f.check(o.code == Some(0) && echo["local"] == local && echo["tls"] == tls, || {
            format!("[{}] curl {what}: expected echo from {local}\n{}", user.label(), o.describe())
        });
        if let Some(var) = proxy_var {
            // The sandbox must hand curl its proxy variables, and curl must have used them.
            let used = format!("Uses proxy env variable {var} == 'http://127.0.0.1:3128'");
            f.check(o.stderr.contains(&used), || {
                format!("[{}] curl {what}: did not go through the proxy ({used:?} missing)", user.label())
            });
        }
    }
    // Keep-alive: two large downloads on one connection, sizes intact.
    let o = sandbox_run(
        &ctx,
        &fake,
        &policy,
        &[
            &curl,
            "-sS",
            "--max-time",
            "30",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} ",
            "http://allowed.test/big?n=5000000",
            "http://allowed.test/big?n=7000000",
        ],
    );
    f.check(o.stdout.trim() == "5000000 7000000", || {
        format!("[{}] keep-alive downloads\n{}", user.label(), o.describe())
    });
    f.finish(t);
}

#[test]
fn curl_with_and_without_proxy_as_root() {
    curl_cases(User::Root, "net_positive::curl_with_and_without_proxy_as_root");
}

#[test]
fn curl_with_and_without_proxy_unprivileged() {
    curl_cases(User::Unprivileged, "net_positive::curl_with_and_without_proxy_unprivileged");
}

#[test]
fn curl_to_an_ip_literal() {
    let t = "net_positive::curl_to_an_ip_literal";
    let Some((fake, ctx, curl, _)) = curl_setup(t, User::Root) else { return };
    let p = ctx.base_policy().rule(
        "literal",
        vec![Endpoint::new(netns::OTHER_V4, &[80]).allowed_ips(&["10.200.0.3/32"])],
        &[&curl],
    );
    let policy = ctx.policy_file(&p.to_yaml()).unwrap();
    let mut f = Failures::default();
    for extra in [&[][..], &["--noproxy", "*"][..]] {
        let mut argv = vec![curl.as_str(), "-sS", "-v", "--max-time", "15"];
        argv.extend_from_slice(extra);
        argv.push("http://10.200.0.3/literal");
        let o = sandbox_run(&ctx, &fake, &policy, &argv);
        f.check(json_out(&o)["local"] == "10.200.0.3:80", || {
            format!("curl {extra:?} to an IP literal\n{}", o.describe())
        });
        if extra.is_empty() {
            let used = "Uses proxy env variable http_proxy";
            f.check(o.stderr.contains(used), || {
                format!("curl to an IP literal did not use the proxy\n{}", o.describe())
            });
        }
    }
    f.finish(t);
}

#[test]
fn dns_and_raw_tcp_to_an_allowed_host() {
    let t = "net_positive::dns_and_raw_tcp_to_an_allowed_host";
    let Some((fake, ctx, _, policy)) = curl_setup(t, User::Root) else { return };
    let mut f = Failures::default();
    let r = ctx.sandbox(&policy).probe(&["dns", "allowed.test"]).unwrap();
    f.check(
        r.probe
            .as_ref()
            .is_some_and(|p| p.ok && p.extra["answers"] == serde_json::json!([netns::ALLOWED_V4])),
        || format!("dns allowed.test\n{}", r.out.describe()),
    );
    let r = ctx.sandbox(&policy).probe(&["dns", "v6.test", "aaaa"]).unwrap();
    f.check(
        r.probe
            .as_ref()
            .is_some_and(|p| p.ok && p.extra["answers"] == serde_json::json!([netns::ALLOWED_V6])),
        || format!("dns v6.test AAAA\n{}", r.out.describe()),
    );
    let r = ctx.sandbox(&policy).probe(&["connect-name", "allowed.test", "9000"]).unwrap();
    f.check(r.probe.as_ref().is_some_and(|p| p.ok), || {
        format!("raw TCP echo to allowed.test:9000 (capture, name from sandbox DNS)\n{}", r.out.describe())
    });
    f.check(fake.log().iter().any(|e| e.kind == "tcp-echo"), || "the echo server saw no connection".into());
    f.finish(t);
}

#[test]
fn websocket_echo_direct_forward_and_tunnel() {
    let t = "net_positive::websocket_echo_direct_forward_and_tunnel";
    let Some((fake, ctx, _, policy)) = curl_setup(t, User::Root) else { return };
    let mut f = Failures::default();
    for mode in ["direct", "forward", "connect"] {
        let r = ctx.sandbox(&policy).probe(&["ws-echo", "ws://allowed.test/ws", mode]).unwrap();
        f.check(r.probe.as_ref().is_some_and(|p| p.ok), || format!("websocket {mode}\n{}", r.out.describe()));
    }
    f.check(fake.log().iter().filter(|e| e.kind == "ws").count() >= 3, || {
        "the fake internet saw fewer than 3 upgrades".into()
    });
    f.finish(t);
}

/// python3 from Debian (not a shim): `/usr/bin/python3` is a symlink to python3.X, so this also
/// checks that a symlinked interpreter matches its policy path.
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn python_requests_https_through_the_proxy() {
    let t = "net_positive::python_requests_https_through_the_proxy";
    if !require_root(t) {
        return;
    }
    if !std::path::Path::new(PYTHON).exists() {
        return skip(t, "/usr/bin/python3 is not installed");
    }
    let has_requests = std::process::Command::new(PYTHON)
        .args(["-c", "import requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_requests {
        return skip(t, "python3 module `requests` is not installed (apt-get install python3-requests)");
    }
    let (fake, ctx) = online(User::Root, false);
    let policy = ctx.policy_file(&internet_policy(&ctx, &fake, &[PYTHON]).to_yaml()).unwrap();
    let ca = fake.ca_pem.display().to_string();
    let script = format!(
        "import json, requests\nu = 'https://allowed.test/py'\nr = requests.get(u, verify='{ca}', timeout=15)\nprint(json.dumps({{'status': r.status_code, 'echo': r.json(), 'proxies': requests.utils.get_environ_proxies(u)}}))"
    );
    let o = sandbox_run(&ctx, &fake, &policy, &[PYTHON, "-c", &script]);
    let out = json_out(&o);
    assert!(
        out["status"] == 200 && out["echo"]["sni"] == "allowed.test",
        "python requests via HTTPS_PROXY\n{}",
        o.describe()
    );
    assert_eq!(
        out["proxies"]["https"],
        "http://127.0.0.1:3128",
        "requests should see the sandbox proxy\n{}",
        o.describe()
    );
}

#[test]
fn git_clone_over_http() {
    let t = "net_positive::git_clone_over_http";
    if !require_root(t) {
        return;
    }
    let Some(git) = require_tool(t, "git") else { return };
    let git = real(&git);
    let exec_path = std::process::Command::new(&git).arg("--exec-path").output().unwrap();
    let exec_path = String::from_utf8_lossy(&exec_path.stdout).trim().to_string();
    let (fake, ctx) = online(User::Root, true);
    let helper = format!("{exec_path}/git-remote-http*");
    let policy = ctx.policy_file(&internet_policy(&ctx, &fake, &[&git, &helper]).to_yaml()).unwrap();
    let dest = ctx.workdir.join("clone");
    let o = sandbox_run(
        &ctx,
        &fake,
        &policy,
        &[&git, "clone", "-q", "http://allowed.test/repo.git", &dest.display().to_string()],
    );
    let readme = std::fs::read_to_string(dest.join("README")).unwrap_or_default();
    assert_eq!(readme, netns::GIT_README, "git clone through the sandbox\n{}", o.describe());
}

#[test]
fn node_http_through_proxy_and_capture() {
    let t = "net_positive::node_http_through_proxy_and_capture";
    if !require_root(t) {
        return;
    }
    let Some(node) = require_tool(t, "node") else { return };
    let node = real(&node);
    let (fake, ctx) = online(User::Root, false);
    let policy = ctx.policy_file(&internet_policy(&ctx, &fake, &[&node]).to_yaml()).unwrap();
    let script = r#"
const http = require('http');
const get = (opts) => new Promise((ok, bad) => {
  const req = http.get(opts, (res) => { let b = ''; res.on('data', (c) => b += c); res.on('end', () => ok({ status: res.statusCode, body: b })); });
  req.on('error', bad); req.setTimeout(15000, () => req.destroy(new Error('timeout')));
});
(async () => {
  const proxied = await get({ host: '127.0.0.1', port: 3128, path: 'http://allowed.test/node-proxy', headers: { Host: 'allowed.test' } });
  const direct = await get('http://allowed.test/node-direct');
  console.log(JSON.stringify({ proxied: JSON.parse(proxied.body), direct: JSON.parse(direct.body) }));
})().catch((e) => { console.error(String(e)); process.exit(3); });
"#;
    let o = sandbox_run(&ctx, &fake, &policy, &[&node, "-e", script]);
    let out = json_out(&o);
    assert!(
        out["proxied"]["path"] == "/node-proxy" && out["direct"]["path"] == "/node-direct",
        "node through the proxy and through capture\n{}",
        o.describe()
    );
}

#[test]
fn allowed_binary_vs_disallowed_binary_to_the_same_host() {
    let t = "net_positive::allowed_binary_vs_disallowed_binary_to_the_same_host";
    let Some((fake, ctx, curl, _)) = curl_setup(t, User::Root) else { return };
    // Only curl may reach allowed.test; the probe (and python, if present) may not.
    let policy = ctx.policy_file(&internet_policy(&ctx, &fake, &[&curl]).to_yaml()).unwrap();
    let mut f = Failures::default();
    let o =
        sandbox_run(&ctx, &fake, &policy, &[&curl, "-sS", "--max-time", "15", "http://allowed.test/curl-ok"]);
    f.check(json_out(&o)["path"] == "/curl-ok", || {
        format!("curl (allowed) should get through\n{}", o.describe())
    });

    let log0 = fake.log().len();
    let r = ctx.sandbox(&policy).probe(&["http-proxy-get", "http://allowed.test/probe-denied"]).unwrap();
    let p = r.probe.as_ref();
    let body = p.and_then(|p| p.extra_str("body")).and_then(deny_body).unwrap_or_default();
    f.check(p.is_some_and(|p| !p.ok && p.extra_u64("status") == Some(403)), || {
        format!("probe (not listed) should get 403\n{}", r.out.describe())
    });
    f.check(body["reason"] == "binary_not_allowed", || {
        format!("403 body should name binary_not_allowed: {body}")
    });
    f.check(body["binary"].as_str().is_some_and(|b| b.ends_with("/probe")), || {
        format!("403 body should name the binary: {body}")
    });
    let ev = find_net_deny(&r.out.events, &["network"], "allowed.test", Some(80));
    f.check(
        ev.is_some_and(|e| {
            e.str("binary").is_some_and(|b| b.ends_with("/probe"))
                && e.str("binary_sha256").is_some_and(|h| h.len() == 64)
        }),
        || format!("deny event should carry the binary and its sha256\n{}", r.out.describe()),
    );
    f.check(!fake.log().iter().skip(log0).any(|e| e.path.as_deref() == Some("/probe-denied")), || {
        "the denied request reached the server".into()
    });

    if std::path::Path::new(PYTHON).exists() {
        let script = "import urllib.request, urllib.error\ntry:\n    urllib.request.urlopen('http://allowed.test/py-denied', timeout=15)\n    print('{\"status\": 200}')\nexcept urllib.error.HTTPError as e:\n    print('{\"status\": %d, \"body\": %s}' % (e.code, e.read().decode().strip() or 'null'))\n";
        let o = sandbox_run(&ctx, &fake, &policy, &[PYTHON, "-c", script]);
        let out = json_out(&o);
        f.check(out["status"] == 403 && out["body"]["reason"] == "binary_not_allowed", || {
            format!("python (not listed) should get 403 binary_not_allowed\n{}", o.describe())
        });
    }
    f.finish(t);
}

/// `access: read-only` on a plain-http endpoint through the proxy: GET reaches the server, POST is
/// refused with 403 `l7_denied` (and never reaches it); CONNECT to it fails closed.
#[test]
fn read_only_endpoint_allows_get_denies_post() {
    let t = "net_positive::read_only_endpoint_allows_get_denies_post";
    let Some((fake, ctx, curl, _)) = curl_setup(t, User::Root) else { return };
    let ips = [netns::INTERNET_V4_NET, netns::INTERNET_V6_NET];
    let p = ctx.base_policy().read_only(&fake.public_dir).rule(
        "ro",
        vec![
            Endpoint::new("allowed.test", &[netns::HTTP_PORT, netns::HTTPS_PORT])
                .allowed_ips(&ips)
                .access("read-only"),
        ],
        &[&curl],
    );
    let policy = ctx.policy_file(&p.to_yaml()).unwrap();
    let mut f = Failures::default();
    let o =
        sandbox_run(&ctx, &fake, &policy, &[&curl, "-sS", "--max-time", "15", "http://allowed.test/ro-get"]);
    f.check(o.code == Some(0) && json_out(&o)["path"] == "/ro-get", || {
        format!("GET on a read-only endpoint should get through\n{}", o.describe())
    });
    let log0 = fake.log().len();
    let o = sandbox_run(
        &ctx,
        &fake,
        &policy,
        &[
            &curl,
            "-sS",
            "--max-time",
            "15",
            "-X",
            "POST",
            "-d",
            "x=1",
            "-w",
            "\n%{http_code}",
            "http://allowed.test/ro-post",
        ],
    );
    let body = json_out(&o);
    f.check(o.stdout.trim_end().ends_with("403") && body["reason"] == "l7_denied", || {
        format!("POST on a read-only endpoint should get 403 l7_denied\n{}", o.describe())
    });
    f.check(
        body["error"] == "policy_denied" && body["detail"].as_str().is_some_and(|d| d.contains("POST")),
        || format!("403 body should explain the method: {body}"),
    );
    f.check(body["policy"] == "ro" && body["endpoint"] == 0, || {
        format!("403 body should name the endpoint to change (policy ro, endpoint 0): {body}")
    });
    f.check(!fake.log().iter().skip(log0).any(|e| e.path.as_deref() == Some("/ro-post")), || {
        "the denied POST reached the server".into()
    });
    f.finish(t);
}

#[test]
fn spoofed_host_header_or_sni_does_not_reach_another_address() {
    let t = "net_positive::spoofed_host_header_or_sni_does_not_reach_another_address";
    let Some((fake, ctx, curl, policy)) = curl_setup(t, User::Root) else { return };
    let ca = fake.ca_pem.display().to_string();
    let mut f = Failures::default();
    // The agent connects to denied.test's address but claims allowed.test (Host header / SNI).
    for (port, scheme) in [(80, "http"), (443, "https")] {
        let resolve = format!("allowed.test:{port}:{}", netns::DENIED_V4);
        let url = format!("{scheme}://allowed.test/spoof");
        let o = sandbox_run(
            &ctx,
            &fake,
            &policy,
            &[
                &curl,
                "-sS",
                "--max-time",
                "15",
                "--noproxy",
                "*",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                &url,
            ],
        );
        let hit = fake.log().into_iter().find(|e| e.local_ip() == Some(netns::DENIED_V4.parse().unwrap()));
        f.check(hit.is_none(), || {
            format!("{scheme}: a spoofed name reached the forbidden address: {hit:?}\n{}", o.describe())
        });
        // Evidence that curl really ran: either it was refused (curl's own error) or the sandbox sent
        // it to allowed.test's real address. A sandbox that never ran curl must not pass.
        let rerouted = json_out(&o)["local"] == format!("{}:{port}", netns::ALLOWED_V4).as_str();
        let refused = o.code.is_some_and(|c| c != 0) && o.stderr.contains("curl: (");
        f.check(rerouted || refused, || {
            format!("{scheme}: curl neither failed nor reached allowed.test's address\n{}", o.describe())
        });
    }
    f.finish(t);
}
