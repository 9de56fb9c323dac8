//! The data document handed to the Rego module, built from a validated policy.
//!
//! Concern: Rego seeing a different policy than Rust validated, and decision
//! cost growing with policy size. The document is derived mechanically from
//! [`Policy`] (never from the raw YAML); hosts are in the same normalized form
//! [`crate::host`] matches against; endpoints are indexed by host (exact name,
//! wildcard suffix, IP) so an evaluation only touches endpoints that can match.
//! The shape is documented at the top of `rego/network.rego`. No security
//! decision is made here.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::host::HostPattern;
use crate::model::Policy;

/// `{"openshell": {"network_policies": {...}, "endpoints": {"exact", "wildcard", "ip"}}}`.
pub(crate) fn network_data(policy: &Policy) -> Value {
    let mut policies = serde_json::Map::new();
    let mut exact: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut wildcard: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut ip: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, p) in &policy.network_policies {
        for (index, e) in p.endpoints.iter().enumerate() {
            let (bucket, key) = match &e.host {
                HostPattern::Exact(host) => (&mut exact, host.clone()),
                HostPattern::Wildcard { suffix } => (&mut wildcard, suffix.clone()),
                HostPattern::Ip(addr) => (&mut ip, addr.to_string()),
            };
            bucket.entry(key).or_default().push(json!({
                "policy": name,
                "index": index,
                "ports": e.ports,
                "enforcement": e.enforcement,
            }));
        }
        let binaries: Vec<&str> = p.binaries.iter().map(|b| b.path.as_str()).collect();
        let (globs, paths): (Vec<&str>, Vec<&str>) = binaries.iter().partition(|b| is_glob(b));
        policies.insert(
            name.clone(),
            json!({ "binaries": binaries, "binary_paths": paths, "binary_globs": globs }),
        );
    }
    json!({
        "openshell": {
            "network_policies": policies,
            "endpoints": { "exact": exact, "wildcard": wildcard, "ip": ip },
        }
    })
}

/// Whether `pattern` contains a character globset treats specially; without
/// one, globset matches exactly the pattern text, so Rego compares strings.
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
}
