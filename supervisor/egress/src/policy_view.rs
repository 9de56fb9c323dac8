//! Name- and port-level questions about the current policy that the Rego
//! decision does not answer directly (the sandbox DNS server has no binary and
//! no port when it must decide).
//!
//! Threat handled: DNS used to learn or reach names the policy never mentions.
//! A name is answerable only if SOME endpoint's host pattern matches it.
//! Residual risk: the check ignores binaries and ports, so any process in the
//! sandbox can resolve every allowed name (it still cannot connect unless its
//! binary is allowed); a wildcard endpoint (`*.example.com`) lets queries for
//! arbitrary labels under it reach the upstream resolver (a low-bandwidth
//! exfiltration channel to that zone's name servers).

use ipnet::IpNet;
use openshell_policy::{Endpoint, HostPattern, NetworkEngine};

/// Every endpoint whose host pattern names `host` (any port, any binary).
pub(crate) fn endpoints_for_name<'a>(engine: &'a NetworkEngine, host: &str) -> Vec<&'a Endpoint> {
    engine
        .policy()
        .network_policies
        .values()
        .flat_map(|p| p.endpoints.iter())
        .filter(|e| e.host.matches(host))
        .collect()
}

/// Union of `allowed_ips` of `endpoints`.
pub(crate) fn allowed_ips(endpoints: &[&Endpoint]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = Vec::new();
    for net in endpoints.iter().flat_map(|e| e.allowed_ips.iter()) {
        if !out.contains(net) {
            out.push(*net);
        }
    }
    out
}

/// Whether any endpoint on `port` is an IP literal (so a host name may match
/// it by resolved address).
pub(crate) fn has_ip_endpoint_on_port(engine: &NetworkEngine, port: u16) -> bool {
    engine
        .policy()
        .network_policies
        .values()
        .flat_map(|p| p.endpoints.iter())
        .any(|e| matches!(e.host, HostPattern::Ip(_)) && e.ports.contains(&port))
}
