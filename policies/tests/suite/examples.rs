//! Every example policy parses, and every case in its table holds, both through
//! the Rego engine (`NetworkEngine::decide`) and through an independent Rust
//! oracle built from `Endpoint::matches` and `binary_matches`: the validator's
//! model and the runtime decision must agree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openshell_policy::{
    AllowedBy, Decision, DenyReason, NetworkEngine, NetworkRequest, Policy, binary_matches, normalize_host,
    parse_cases, run_cases,
};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// `(policy file, case file)` for every example.
fn examples() -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".yaml") && !name.ends_with(".cases.yaml")
        })
        .map(|p| {
            let cases = p.with_extension("cases.yaml");
            (p, cases)
        })
        .collect();
    out.sort();
    out
}

/// The decision computed in plain Rust from the typed model.
fn oracle(policy: &Policy, req: &NetworkRequest) -> Decision {
    let host = normalize_host(&req.host);
    let mut hit_policies: Vec<&str> = Vec::new();
    for (name, p) in &policy.network_policies {
        for (i, ep) in p.endpoints.iter().enumerate() {
            if !ep.matches(&req.host, req.port, &req.ips) {
                continue;
            }
            if p.binaries.iter().any(|b| binary_matches(&b.path, &req.binary)) {
                return Decision::Allow(AllowedBy {
                    policy: name.clone(),
                    endpoint: i,
                    enforcement: ep.enforcement,
                });
            }
            if !hit_policies.contains(&name.as_str()) {
                hit_policies.push(name);
            }
        }
    }
    if hit_policies.is_empty() {
        Decision::Deny(DenyReason::NoEndpoint { host, port: req.port })
    } else {
        Decision::Deny(DenyReason::BinaryNotAllowed {
            binary: req.binary.clone(),
            host,
            port: req.port,
            policies: hit_policies.into_iter().map(str::to_owned).collect(),
        })
    }
}

#[test]
fn there_are_examples() {
    let names: Vec<String> =
        examples().iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in ["minimal.yaml", "github.yaml", "pypi-npm.yaml"] {
        assert!(names.iter().any(|n| n == want), "missing example {want}: {names:?}");
    }
}

#[test]
fn every_example_parses() {
    for (path, _) in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(errors) = Policy::from_yaml(&text) {
            panic!("{}:\n{errors}", path.display());
        }
    }
}

#[test]
fn every_case_holds_in_rego_and_rust() {
    for (path, cases_path) in examples() {
        let policy = Arc::new(Policy::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap());
        let cases_text = std::fs::read_to_string(&cases_path)
            .unwrap_or_else(|e| panic!("{}: every example needs a case table: {e}", cases_path.display()));
        let cases = parse_cases(&cases_text).unwrap_or_else(|e| panic!("{}:\n{e}", cases_path.display()));
        assert!(cases.len() >= 3, "{}: too few cases", cases_path.display());
        let engine = NetworkEngine::new(policy.clone(), 1).unwrap();
        let failures = run_cases(&engine, &cases);
        assert!(
            failures.is_empty(),
            "{}:\n{}",
            cases_path.display(),
            failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        );
        for case in &cases {
            let req = case.request();
            let rego = engine.decide(&req);
            assert_eq!(rego, oracle(&policy, &req), "{} line {}", cases_path.display(), case.line);
            assert_eq!(rego, engine.evaluate(&req).unwrap(), "cached and uncached differ");
        }
    }
}

#[test]
fn case_failures_are_reported_with_lines() {
    let policy = Arc::new(Policy::from_yaml("version: 1\n").unwrap());
    let engine = NetworkEngine::new(policy, 1).unwrap();
    let cases =
        parse_cases("cases:\n  - {binary: /usr/bin/curl, host: example.com, port: 443, expect: allow}\n")
            .unwrap();
    let failures = run_cases(&engine, &cases);
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].to_string(),
        "cases[0] (line 2): /usr/bin/curl -> example.com:443: expected allow, got deny: no network policy lists example.com:443"
    );
}
