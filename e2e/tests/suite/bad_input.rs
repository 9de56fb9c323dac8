//! Invalid policies: exit 2, `path: message (line N)` on stderr naming the field, and nothing
//! started (the agent would have written a marker file).

use openshell_e2e::sandbox::User;

use super::common::{Failures, offline, require_root};

/// (name, policy text, field path expected on stderr, text on the offending line or None).
fn cases() -> Vec<(&'static str, String, &'static str, Option<&'static str>)> {
    let net = |endpoint: &str| {
        format!(
            "version: 1\nnetwork_policies:\n  bad:\n    name: bad\n    endpoints:\n      - host: allowed.test\n        port: 443\n{endpoint}    binaries:\n      - path: /usr/bin/curl\n"
        )
    };
    vec![
        ("malformed yaml", "version: 1\nfilesystem_policy:\n  read_only: [/usr\n  read_write: [/tmp]\n".into(), "", None),
        ("unknown top-level field", "version: 1\nfilesystm_policy:\n  read_only: [/usr]\n".into(), "filesystm_policy", Some("filesystm_policy")),
        ("unknown nested field", "version: 1\nfilesystem_policy:\n  read_onyl: [/usr]\n".into(), "filesystem_policy.read_onyl", Some("read_onyl")),
        ("missing version", "filesystem_policy:\n  read_only: [/usr]\n".into(), "version", None),
        ("wrong version", "version: 2\n".into(), "version", Some("version: 2")),
        (
            "wildcard not in the first label",
            "version: 1\nnetwork_policies:\n  bad:\n    name: bad\n    endpoints:\n      - host: \"api.*.example.com\"\n        port: 443\n    binaries:\n      - path: /usr/bin/curl\n".into(),
            "network_policies.bad.endpoints[0].host",
            Some("api.*.example.com"),
        ),
        ("relative path", "version: 1\nfilesystem_policy:\n  read_only:\n    - usr/lib\n".into(), "filesystem_policy.read_only[0]", Some("usr/lib")),
        ("dot-dot in path", "version: 1\nfilesystem_policy:\n  read_only:\n    - /usr/../etc\n".into(), "filesystem_policy.read_only[0]", Some("/usr/../etc")),
        ("root writable", "version: 1\nfilesystem_policy:\n  read_write:\n    - /\n".into(), "filesystem_policy.read_write[0]", Some("- /")),
        ("allowed_ips everything", net("        allowed_ips: [\"0.0.0.0/0\"]\n"), "network_policies.bad.endpoints[0].allowed_ips[0]", Some("0.0.0.0/0")),
        ("allowed_ips loopback", net("        allowed_ips: [\"127.0.0.0/8\"]\n"), "network_policies.bad.endpoints[0].allowed_ips[0]", Some("127.0.0.0/8")),
        ("allowed_ips link-local", net("        allowed_ips: [\"169.254.169.254/32\"]\n"), "network_policies.bad.endpoints[0].allowed_ips[0]", Some("169.254")),
        ("run_as_user root", "version: 1\nprocess:\n  run_as_user: root\n".into(), "process.run_as_user", Some("run_as_user")),
        ("run_as_user 0", "version: 1\nprocess:\n  run_as_user: 0\n".into(), "process.run_as_user", Some("run_as_user")),
    ]
}

#[test]
fn invalid_policies_exit_2_and_start_nothing() {
    let t = "bad_input::invalid_policies_exit_2_and_start_nothing";
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Root);
    let marker = ctx.workdir.join("marker");
    let marker_s = marker.display().to_string();
    let mut f = Failures::default();
    for (name, yaml, field, line_text) in cases() {
        let policy = ctx.policy_file(&yaml).unwrap();
        let r = ctx.sandbox(&policy).probe(&["write", &marker_s]).unwrap();
        let err = r.out.stderr.clone();
        f.check(r.out.code == Some(2), || format!("{name}: exit code should be 2\n{}", r.out.describe()));
        f.check(!marker.exists() && r.probe.is_none(), || {
            format!("{name}: the command RAN despite an invalid policy")
        });
        f.check(r.out.events.iter().all(|e| e.kind() != "lifecycle"), || {
            format!("{name}: a sandbox lifecycle event was emitted\n{}", r.out.describe())
        });
        // The field as the error's path (`field: message`), or, for a missing field, named in the
        // message of its parent (`(root): missing required field `version``).
        if !field.is_empty() {
            let named = err.contains(&format!("{field}: ")) || err.contains(&format!("`{field}`"));
            f.check(named, || format!("{name}: stderr should name the field `{field}`: {err:?}"));
        }
        match line_text {
            Some(text) => {
                let line = yaml.lines().position(|l| l.contains(text)).map(|i| i + 1).unwrap_or(0);
                f.check(err.contains(&format!("(line {line})")), || {
                    format!("{name}: stderr should say (line {line}): {err:?}")
                });
            }
            None => f.check(err.contains("(line "), || format!("{name}: stderr should give a line: {err:?}")),
        }
        let _ = std::fs::remove_file(&marker);
    }
    // The same probe with a valid policy does write the marker (the negative cases above mean something).
    let policy = ctx.policy_file(&ctx.base_policy().to_yaml()).unwrap();
    let r = ctx.sandbox(&policy).probe(&["write", &marker_s]).unwrap();
    f.check(marker.exists(), || {
        format!("control: a valid policy should let the probe write the marker\n{}", r.out.describe())
    });
    f.finish(t);
}

#[test]
fn a_missing_policy_file_exits_2() {
    let t = "bad_input::a_missing_policy_file_exits_2";
    if !require_root(t) {
        return;
    }
    let (_ns, ctx) = offline(User::Root);
    let r = ctx.sandbox(&ctx.root.join("does-not-exist.yaml")).run(&["/bin/true"]).unwrap();
    assert_eq!(r.code, Some(2), "{}", r.describe());
    assert!(r.stderr.contains("does-not-exist.yaml"), "stderr should name the file: {}", r.describe());
}
