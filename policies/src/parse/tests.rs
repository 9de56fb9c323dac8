use std::path::PathBuf;

use crate::error::{PolicyErrorKind, PolicyErrors};
use crate::model::*;

/// Parse, expecting failure; return the errors as `path: message (line N)` strings.
fn errors(text: &str) -> Vec<String> {
    let errs: PolicyErrors = Policy::from_yaml(text).expect_err("policy unexpectedly valid");
    errs.iter().map(ToString::to_string).collect()
}

/// Parse, expecting exactly one error; return (path, line, kind).
fn one(text: &str) -> (String, Option<usize>, PolicyErrorKind) {
    let errs = Policy::from_yaml(text).expect_err("policy unexpectedly valid");
    assert_eq!(errs.len(), 1, "expected one error, got:\n{errs}");
    let e = errs.0.into_iter().next().unwrap();
    (e.path, e.line, e.kind)
}

/// A network policy document with one endpoint whose body is `endpoint`
/// (indented at 8 spaces); the endpoint's first line is line 5.
fn net(endpoint: &str) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  github:\n    endpoints:\n      - {}\n    binaries:\n      - path: /usr/bin/git\n",
        endpoint.trim_start().replace('\n', "\n        ")
    )
}

const FULL: &str = r#"version: 1
filesystem_policy:
  include_workdir: false
  read_only: [/usr, /lib/, /etc]
  read_write: [/tmp]
  executable: [/usr, /bin]
landlock:
  compatibility: hard_requirement
process:
  run_as_user: sandbox
  run_as_group: "1000"
network_policies:
  github:
    name: GitHub
    endpoints:
      - host: api.github.com
        ports: [443, 8443]
        path: /repos/**
        protocol: rest
        enforcement: audit
        rules:
          - allow: {method: get, path: "/repos/**", query: {per_page: "1*", state: [open, closed]}}
        deny_rules:
          - method: DELETE
            path: /**
          - deny: {method: POST, query: {force: {any: ["true"]}}}
        allowed_ips: [10.0.0.0/8, 192.168.1.7]
        credential_binding: {provider: github}
      - {host: "*.githubusercontent.com", port: 443, access: read-only, tls: terminate}
      - {host: 10.1.2.3, port: 22, protocol: tcp}
    binaries:
      - path: /usr/bin/git
      - {path: "/usr/lib/git-core/*", harness: true}
"#;

#[test]
fn full_policy_parses() {
    let p = Policy::from_yaml(FULL).unwrap();
    assert!(!p.filesystem.include_workdir);
    assert_eq!(p.filesystem.read_only, [PathBuf::from("/usr"), "/lib".into(), "/etc".into()]);
    assert_eq!(p.filesystem.executable.as_ref().map(Vec::len), Some(2));
    assert_eq!(p.landlock.compatibility, LandlockCompatibility::HardRequirement);
    assert_eq!(p.process.run_as_user, Some(UserSpec::Sandbox));
    assert_eq!(p.process.run_as_group, Some(UserSpec::Id(1000)));
    let gh = &p.network_policies["github"];
    assert_eq!(gh.name.as_deref(), Some("GitHub"));
    let e = &gh.endpoints[0];
    assert_eq!(e.ports, [443, 8443]);
    assert_eq!(e.enforcement, Enforcement::Audit);
    assert_eq!(e.rules[0].method.as_deref(), Some("GET"));
    assert_eq!(e.rules[0].query["state"].any, ["open", "closed"]);
    assert_eq!(e.deny_rules.len(), 2);
    assert_eq!(e.deny_rules[1].query["force"].any, ["true"]);
    assert_eq!(e.allowed_ips[1].to_string(), "192.168.1.7/32");
    assert_eq!(e.credential_binding.as_ref().map(|c| c.provider.as_str()), Some("github"));
    assert_eq!(gh.endpoints[1].host, HostPattern::Wildcard { suffix: "githubusercontent.com".into() });
    assert_eq!(gh.endpoints[1].access, Some(Access::ReadOnly));
    assert_eq!(gh.endpoints[2].protocol, Protocol::Tcp);
    assert_eq!(p.network_ports().into_iter().collect::<Vec<_>>(), [22, 443, 8443]);
    // The effective policy serializes with the YAML field names.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["filesystem_policy"]["read_write"][0], "/tmp");
    assert_eq!(json["network_policies"]["github"]["endpoints"][1]["host"], "*.githubusercontent.com");
    assert_eq!(json["process"]["run_as_group"], 1000);
}

#[test]
fn defaults() {
    let p = Policy::from_yaml("version: 1\n").unwrap();
    assert!(p.filesystem.include_workdir);
    assert_eq!(p.filesystem.executable, None);
    assert_eq!(p.landlock.compatibility, LandlockCompatibility::BestEffort);
    assert_eq!(p.process.run_as_user, None);
    assert!(p.network_policies.is_empty());
    let p = Policy::from_yaml(&net("host: a.example.com\nport: 443")).unwrap();
    let e = &p.network_policies["github"].endpoints[0];
    assert_eq!(
        (e.protocol, e.tls, e.enforcement, e.access),
        (Protocol::Rest, TlsMode::Terminate, Enforcement::Enforce, None)
    );
}

#[test]
fn malformed_yaml() {
    let (path, line, kind) = one("version: 1\nfilesystem_policy:\n  read_only: [/usr\n");
    assert_eq!(path, "(root)");
    assert!(matches!(kind, PolicyErrorKind::Syntax { .. }), "{kind:?}");
    assert!(line.is_some());
    let (_, line, _) = one("version: 1\n  bad: indent\n");
    assert_eq!(line, Some(2));
    assert_eq!(errors(""), ["(root): policy is empty; it must be a mapping starting with `version: 1`"]);
    assert_eq!(errors("- a\n"), ["(root): expected a mapping, found a list (line 1)"]);
    assert_eq!(
        errors("version: 1\n---\nversion: 1\n"),
        ["(root): only one YAML document is allowed (line 2)"]
    );
}

#[test]
fn version_rules() {
    assert_eq!(errors("filesystem_policy: {}\n"), ["(root): missing required field `version` (line 1)"]);
    assert_eq!(
        errors("version: 2\n"),
        ["version: unsupported version `2`; only version 1 is supported (line 1)"]
    );
    assert_eq!(errors("version: \"1\"\n"), ["version: expected an integer, found a string (line 1)"]);
}

#[test]
fn unknown_fields_everywhere() {
    let text = "version: 1\nfilesytem_policy: {}\nprocess:\n  run_as: sandbox\nnetwork_policies:\n  gh:\n    endpoints:\n      - host: a.example.com\n        port: 443\n        hots: x\n    binaries: [{path: /bin/x, sha: 1}]\n";
    assert_eq!(
        errors(text),
        [
            "filesytem_policy: unknown field `filesytem_policy`; expected one of: version, filesystem_policy, landlock, process, network_policies (line 2)",
            "process.run_as: unknown field `run_as`; expected one of: run_as_user, run_as_group (line 4)",
            "network_policies.gh.endpoints[0].hots: unknown field `hots`; expected one of: host, port, ports, path, protocol, tls, enforcement, access, rules, deny_rules, allowed_ips, credential_binding (line 10)",
            "network_policies.gh.binaries[0].sha: unknown field `sha`; expected one of: path, harness (line 11)",
        ]
    );
}

#[test]
fn duplicate_keys_and_aliases() {
    assert_eq!(
        errors("version: 1\nprocess:\n  run_as_user: sandbox\n  run_as_user: 1000\n"),
        ["process.run_as_user: duplicate key `run_as_user` (line 4)"]
    );
    assert_eq!(
        errors("version: 1\nfilesystem_policy:\n  read_only: &ro [/usr]\n  read_write: *ro\n"),
        [
            "filesystem_policy.read_only: YAML anchors and aliases are not supported; write the value out (line 3)",
            "filesystem_policy.read_write: YAML anchors and aliases are not supported; write the value out (line 4)",
        ]
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        errors("version: 1\nfilesystem_policy:\n  include_workdir: yes\n  read_only: /usr\n"),
        [
            "filesystem_policy.include_workdir: expected true or false, found a string (line 3)",
            "filesystem_policy.read_only: expected a list, found a string (line 4)",
        ]
    );
    assert_eq!(
        errors("version: 1\nnetwork_policies: [a]\n"),
        ["network_policies: expected a mapping, found a list (line 2)"]
    );
    assert_eq!(
        errors("version: 1\nnetwork_policies:\n  gh:\n"),
        ["network_policies.gh: expected a mapping, found null (line 3)"]
    );
}

#[test]
fn filesystem_paths() {
    let text = "version: 1\nfilesystem_policy:\n  read_only:\n    - usr/lib\n    - /usr/../etc\n    - /\n  read_write:\n    - /\n    - /tmp/./x\n  executable: [\"/a//b\"]\n";
    assert_eq!(
        errors(text),
        [
            "filesystem_policy.read_only[0]: path must be absolute (start with `/`) (line 4)",
            "filesystem_policy.read_only[1]: path must be normalized (found `..`) (line 5)",
            "filesystem_policy.read_write[0]: `/` cannot be writable; list the directories the agent needs to write (line 8)",
            "filesystem_policy.read_write[1]: path must be normalized (found `.`) (line 9)",
            "filesystem_policy.executable[0]: path must be normalized (found `//`) (line 10)",
        ]
    );
    let many = format!("version: 1\nfilesystem_policy:\n  read_only: [{}]\n", vec!["/a"; 257].join(", "));
    assert_eq!(
        errors(&many),
        ["filesystem_policy.read_only: too many entries (257); the limit is 256 (line 3)"]
    );
    let long = format!("version: 1\nfilesystem_policy:\n  read_only: [/{}]\n", "a".repeat(4096));
    assert_eq!(
        errors(&long),
        ["filesystem_policy.read_only[0]: too long (4097 bytes); the limit is 4096 (line 3)"]
    );
}

#[test]
fn root_user_rejected() {
    let root = "root is not allowed; use `sandbox` or a uid in 1..=4294967294";
    assert_eq!(
        errors("version: 1\nprocess:\n  run_as_user: root\n"),
        [format!("process.run_as_user: {root} (line 3)")]
    );
    assert_eq!(
        errors("version: 1\nprocess:\n  run_as_group: 0\n"),
        [format!("process.run_as_group: {root} (line 3)")]
    );
    assert_eq!(
        errors("version: 1\nprocess:\n  run_as_user: 4294967295\n"),
        [
            "process.run_as_user: `4294967295` is not allowed; use `sandbox` or a uid in 1..=4294967294 (line 3)"
        ]
    );
    assert_eq!(
        one("version: 1\nprocess:\n  run_as_user: -1\n").2,
        PolicyErrorKind::InvalidUserId { found: "-1".into() }
    );
    let p = Policy::from_yaml("version: 1\nprocess:\n  run_as_user: 4294967294\n").unwrap();
    assert_eq!(p.process.run_as_user, Some(UserSpec::Id(4_294_967_294)));
}

#[test]
fn wildcard_misuse() {
    assert_eq!(
        errors(&net("host: api.*.com\nport: 443")),
        [
            "network_policies.github.endpoints[0].host: wildcard allowed in the first label only, as the whole label (`*.example.com`) (line 5)"
        ]
    );
    assert_eq!(
        errors(&net("host: \"*\"\nport: 443")),
        [
            "network_policies.github.endpoints[0].host: wildcard is too broad; it must be followed by at least two labels (`*.example.com`) (line 5)"
        ]
    );
    assert_eq!(one(&net("host: \"*.com\"\nport: 443")).2, PolicyErrorKind::WildcardTooBroad);
    assert_eq!(one(&net("host: https://github.com\nport: 443")).2, PolicyErrorKind::HostHasScheme);
    assert_eq!(one(&net("host: github.com:443\nport: 443")).2, PolicyErrorKind::HostHasPort);
    assert_eq!(one(&net("host: github.com/x\nport: 443")).2, PolicyErrorKind::HostHasPath);
    assert_eq!(one(&net("host: \"\"\nport: 443")).2, PolicyErrorKind::EmptyHost);
}

#[test]
fn ports() {
    let at = |t: &str| {
        let (path, line, kind) = one(&net(t));
        (path, line, kind.to_string())
    };
    let ep = "network_policies.github.endpoints[0]";
    assert_eq!(
        at("host: a.example.com\nport: 0"),
        (format!("{ep}.port"), Some(6), "port 0 is out of range; ports are 1..=65535".into())
    );
    assert_eq!(
        at("host: a.example.com\nport: 70000"),
        (format!("{ep}.port"), Some(6), "port 70000 is out of range; ports are 1..=65535".into())
    );
    assert_eq!(
        at("host: a.example.com\nport: 443\nports: [443]"),
        (format!("{ep}.ports"), Some(7), "set `port` or `ports`, not both".into())
    );
    assert_eq!(at("host: a.example.com"), (ep.to_string(), Some(5), "missing `port` (or `ports`)".into()));
    assert_eq!(
        at("host: a.example.com\nports: []"),
        (format!("{ep}.ports"), Some(6), "`ports` must not be empty".into())
    );
    assert_eq!(
        at("host: a.example.com\nports: [443, 80, 443]"),
        (format!("{ep}.ports[2]"), Some(6), "port 443 is listed more than once".into())
    );
    assert_eq!(
        at("host: a.example.com\nport: \"443\""),
        (format!("{ep}.port"), Some(6), "expected an integer, found a string".into())
    );
}

#[test]
fn access_rules_and_l7() {
    let ep = "network_policies.github.endpoints[0]";
    assert_eq!(
        errors(&net("host: a.example.com\nport: 443\naccess: read-only\nrules:\n  - allow: {method: GET}")),
        [format!("{ep}.rules: set `access` or `rules`, not both (line 8)")]
    );
    assert_eq!(
        errors(&net(
            "host: a.example.com\nport: 443\nrules:\n  - allow: {method: \"GET /\"}\n  - allow: {path: repos}\n  - allow: {method: \"*\"}\n  - {method: GET}"
        )),
        [
            format!(
                "{ep}.rules[0].allow.method: `GET /` is not an HTTP method (a token such as GET, or `*`) (line 8)"
            ),
            format!("{ep}.rules[1].allow.path: path must be absolute (start with `/`) (line 9)"),
            format!(
                "{ep}.rules[2].allow: rule matches every request; use `access: full` if that is intended (line 10)"
            ),
            format!(
                "{ep}.rules[3]: each entry needs its `allow:` mapping (`- allow: {{method: GET}}`) (line 11)"
            ),
        ]
    );
    assert_eq!(
        errors(&net("host: a.example.com\nport: 443\naccess: readonly")),
        [format!(
            "{ep}.access: unknown value `readonly`; expected one of: read-only, read-write, full (line 7)"
        )]
    );
    assert_eq!(
        errors(&net("host: a.example.com\nport: 443\ntls: off")),
        [format!("{ep}.tls: unknown value `off`; expected one of: skip, terminate (line 7)")]
    );
    assert_eq!(
        errors(&net("host: a.example.com\nport: 443\ntls: skip\naccess: read-only")),
        [format!(
            "{ep}.access: `access` cannot be enforced because `tls: skip` passes bytes through uninspected; remove it, or inspect the traffic (line 8)"
        )]
    );
    Policy::from_yaml(&net("host: a.example.com\nport: 22\nprotocol: tcp\naccess: full")).unwrap();
}

#[test]
fn allowed_ips_rules() {
    let ep = "network_policies.github.endpoints[0]";
    assert_eq!(
        errors(&net(
            "host: a.example.com\nport: 443\nallowed_ips:\n  - 0.0.0.0/0\n  - 127.0.0.1\n  - 10.0.0.0/33\n  - ::ffff:0:0/96\n  - 10.1.0.0/16"
        )),
        [
            format!(
                "{ep}.allowed_ips[0]: 0.0.0.0/0 covers loopback addresses (127.0.0.0/8), which are never reachable; narrow the range (line 8)"
            ),
            format!(
                "{ep}.allowed_ips[1]: 127.0.0.1/32 covers loopback addresses (127.0.0.0/8), which are never reachable; narrow the range (line 9)"
            ),
            format!(
                "{ep}.allowed_ips[2]: `10.0.0.0/33` is not a CIDR (10.0.0.0/8) or an IP address (line 10)"
            ),
            format!(
                "{ep}.allowed_ips[3]: ::ffff:0.0.0.0/96 covers loopback addresses (::ffff:127.0.0.0/104), which are never reachable; narrow the range (line 11)"
            ),
        ]
    );
    let p = Policy::from_yaml(&net("host: a.example.com\nport: 443\nallowed_ips: [10.1.2.3/8]")).unwrap();
    assert_eq!(p.network_policies["github"].endpoints[0].allowed_ips[0].to_string(), "10.0.0.0/8");
}

#[test]
fn binaries() {
    let text = "version: 1\nnetwork_policies:\n  gh:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries:\n      - path: git\n      - path: \"**\"\n      - path: /usr/bin/[\n      - path: /usr/../bin/x\n      - {}\n";
    assert_eq!(
        errors(text),
        [
            "network_policies.gh.binaries[0].path: path must be absolute (start with `/`) (line 6)",
            "network_policies.gh.binaries[1].path: path must be absolute (start with `/`) (line 7)",
            "network_policies.gh.binaries[2].path: invalid glob: unclosed character class; missing ']' (line 8)",
            "network_policies.gh.binaries[3].path: path must be normalized (found `..`) (line 9)",
            "network_policies.gh.binaries[4]: missing required field `path` (line 10)",
        ]
    );
    assert_eq!(
        errors("version: 1\nnetwork_policies:\n  gh:\n    endpoints: [{host: a.example.com, port: 443}]\n"),
        ["network_policies.gh: no binary may use these endpoints; list binaries (line 4)"]
    );
    assert_eq!(
        errors(
            "version: 1\nnetwork_policies:\n  gh:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries: []\n"
        ),
        ["network_policies.gh: no binary may use these endpoints; list binaries (line 4)"]
    );
}

#[test]
fn policy_names() {
    assert_eq!(
        errors("version: 1\nnetwork_policies:\n  \"my policy\": {}\n  ok.name-1_x: {}\n"),
        [
            "network_policies[\"my policy\"]: network policy names must be 1 to 128 characters from [a-zA-Z0-9_.-] (line 3)"
        ]
    );
}

#[test]
fn all_errors_reported_in_line_order() {
    let text = "version: 3\nfilesystem_policy:\n  read_write: [/]\nprocess:\n  run_as_user: root\nnetwork_policies:\n  gh:\n    endpoints:\n      - {host: \"api.*.com\", port: 0}\n";
    let errs = errors(text);
    assert_eq!(
        errs.iter().map(|e| e.split(':').next().unwrap_or_default()).collect::<Vec<_>>(),
        [
            "version",
            "filesystem_policy.read_write[0]",
            "process.run_as_user",
            "network_policies.gh",
            "network_policies.gh.endpoints[0].host",
            "network_policies.gh.endpoints[0].port",
        ],
        "{errs:#?}"
    );
    let joined = Policy::from_yaml(text).unwrap_err().to_string();
    assert_eq!(joined.lines().count(), 6);
}

#[test]
fn too_many_network_policies() {
    let mut text = String::from("version: 1\nnetwork_policies:\n");
    for i in 0..1025 {
        text.push_str(&format!("  p{i}: {{}}\n"));
    }
    assert_eq!(errors(&text), ["network_policies: too many entries (1025); the limit is 1024 (line 3)"]);
}

#[test]
fn truncated_and_mangled_input_never_panics() {
    for (i, _) in FULL.char_indices() {
        let _ = Policy::from_yaml(&FULL[..i]);
    }
    for needle in [":", "-", "[", "{", " ", "\n"] {
        for (i, _) in FULL.match_indices(needle) {
            let mut mangled = FULL.to_owned();
            mangled.replace_range(i..i + needle.len(), "\"");
            let _ = Policy::from_yaml(&mangled);
        }
    }
}
