//! Policy case tables: requests with the decision the author expects.
//!
//! Concern: a policy edit that silently changes who may reach what. Policy
//! files ship with a case table (`*.cases.yaml`); [`run_cases`] runs every case
//! through [`NetworkEngine::decide`] (the same path the proxy uses) and reports
//! each mismatch with its line. `cargo test` runs the bundled examples' tables;
//! `openshell policy test` runs a user's. The table format:
//!
//! ```yaml
//! cases:
//!   - {binary: /usr/bin/git, host: github.com, port: 443, expect: allow, policy: github}
//!   - {binary: /usr/bin/python3, host: github.com, port: 443, expect: deny, reason: binary_not_allowed}
//!   - {binary: /usr/bin/curl, host: svc.internal, port: 80, ips: [10.0.0.5], expect: deny}
//! ```
//!
//! Parsing uses the same strict reader as policies (unknown fields, types and
//! bounds are errors with path and line).

use std::fmt;
use std::net::IpAddr;

use crate::decision::{Decision, DenyReason};
use crate::engine::{NetworkEngine, NetworkRequest};
use crate::error::{PolicyErrorKind, PolicyErrors};
use crate::limits::{MAX_PATH_LEN, MAX_STRING_LEN};
use crate::parse::reader::{Ctx, Fields, integer, keyword, seq, string};
use crate::path::FieldPath;
use crate::yaml::{self, Node};

/// Most cases in one table.
pub const MAX_CASES: usize = 10_000;

const TOP_FIELDS: &[&str] = &["cases"];
const CASE_FIELDS: &[&str] = &["binary", "host", "port", "ips", "expect", "policy", "reason"];
const EXPECT_NAMES: &[&str] = &["allow", "deny"];
const EXPECTS: &[(&str, bool)] = &[("allow", true), ("deny", false)];
const REASON_NAMES: &[&str] = &["no_endpoint", "binary_not_allowed"];
const REASONS: &[(&str, &str)] =
    &[("no_endpoint", "no_endpoint"), ("binary_not_allowed", "binary_not_allowed")];

/// One request and its expected decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Line of the case in the table.
    pub line: usize,
    /// Executable path.
    pub binary: String,
    /// Destination host.
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Resolved addresses (optional; only IP-literal endpoints look at them).
    pub ips: Vec<IpAddr>,
    /// What the decision must be.
    pub expect: Expectation,
}

impl Case {
    /// The request this case describes.
    #[must_use]
    pub fn request(&self) -> NetworkRequest {
        NetworkRequest {
            binary: self.binary.clone(),
            ancestors: Vec::new(),
            host: self.host.clone(),
            port: self.port,
            ips: self.ips.clone(),
        }
    }
}

/// The expected decision of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Allowed, optionally by this network policy.
    Allow {
        /// Expected `AllowedBy::policy`, when given.
        policy: Option<String>,
    },
    /// Denied, optionally for this reason code (`no_endpoint`, `binary_not_allowed`).
    Deny {
        /// Expected `DenyReason::code`, when given.
        reason: Option<&'static str>,
    },
}

impl Expectation {
    /// Whether `decision` satisfies this expectation.
    #[must_use]
    pub fn is_met_by(&self, decision: &Decision) -> bool {
        match (self, decision) {
            (Self::Allow { policy }, Decision::Allow(by)) => policy.as_ref().is_none_or(|p| *p == by.policy),
            (Self::Deny { reason }, Decision::Deny(r)) => {
                !matches!(r, DenyReason::Internal { .. }) && reason.is_none_or(|want| want == r.code())
            }
            _ => false,
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow { policy: Some(p) } => write!(f, "allow by network_policies.{p}"),
            Self::Allow { policy: None } => f.write_str("allow"),
            Self::Deny { reason: Some(r) } => write!(f, "deny ({r})"),
            Self::Deny { reason: None } => f.write_str("deny"),
        }
    }
}

/// A case whose decision did not meet its expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    /// Position of the case in the table.
    pub index: usize,
    /// The case.
    pub case: Case,
    /// The decision the engine made.
    pub got: Decision,
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.case;
        write!(
            f,
            "cases[{}] (line {}): {} -> {}:{}: expected {}, got {}",
            self.index, c.line, c.binary, c.host, c.port, c.expect, self.got
        )
    }
}

/// Parse a case table.
///
/// # Errors
/// Every problem found, with field path and line.
pub fn parse_cases(text: &str) -> Result<Vec<Case>, PolicyErrors> {
    let root = yaml::parse(text).map_err(|e| PolicyErrors(vec![e]))?;
    let mut ctx = Ctx { errors: yaml::lint(&root) };
    let cases = convert(&mut ctx, &root);
    PolicyErrors::finish(cases, ctx.errors)
}

/// Run every case through [`NetworkEngine::decide`]; return the failures.
#[must_use]
pub fn run_cases(engine: &NetworkEngine, cases: &[Case]) -> Vec<CaseFailure> {
    cases
        .iter()
        .enumerate()
        .filter_map(|(index, case)| {
            let got = engine.decide(&case.request());
            (!case.expect.is_met_by(&got)).then(|| CaseFailure { index, case: case.clone(), got })
        })
        .collect()
}

fn convert(ctx: &mut Ctx, root: &Node) -> Option<Vec<Case>> {
    let top = Fields::read(ctx, root, &FieldPath::root(), TOP_FIELDS)?;
    let Some(list) = top.get("cases") else {
        ctx.err(&top.path, top.line, PolicyErrorKind::MissingField { field: "cases" });
        return None;
    };
    let items = seq(ctx, list, &top.at("cases"), MAX_CASES)?;
    let cases: Vec<Option<Case>> =
        items.iter().enumerate().map(|(i, item)| case(ctx, item, &top.at("cases").index(i))).collect();
    cases.into_iter().collect()
}

fn required<'a>(ctx: &mut Ctx, f: &Fields<'a>, name: &'static str) -> Option<&'a Node> {
    let node = f.get(name);
    if node.is_none() {
        ctx.err(&f.path, f.line, PolicyErrorKind::MissingField { field: name });
    }
    node
}

fn case(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<Case> {
    let f = Fields::read(ctx, node, path, CASE_FIELDS)?;
    let binary = required(ctx, &f, "binary").and_then(|n| string(ctx, n, &f.at("binary"), MAX_PATH_LEN));
    let host = required(ctx, &f, "host").and_then(|n| string(ctx, n, &f.at("host"), MAX_STRING_LEN));
    let port = required(ctx, &f, "port").and_then(|n| {
        let (value, text) = integer(ctx, n, &f.at("port"))?;
        let port = u16::try_from(value).ok().filter(|p| *p > 0);
        if port.is_none() {
            ctx.err(&f.at("port"), n.line, PolicyErrorKind::PortOutOfRange { found: text.to_owned() });
        }
        port
    });
    let ips = match f.get("ips") {
        Some(n) => ips(ctx, n, &f.at("ips")),
        None => Some(Vec::new()),
    };
    let allow =
        required(ctx, &f, "expect").and_then(|n| keyword(ctx, n, &f.at("expect"), EXPECTS, EXPECT_NAMES));
    let policy = f.get("policy").and_then(|n| string(ctx, n, &f.at("policy"), MAX_STRING_LEN));
    let reason = f.get("reason").and_then(|n| keyword(ctx, n, &f.at("reason"), REASONS, REASON_NAMES));
    let expect = match allow? {
        true if f.get("reason").is_some() => {
            let kind = PolicyErrorKind::UnknownField { field: "reason".into(), expected: &["policy"] };
            ctx.err(&f.at("reason"), f.key_line("reason"), kind);
            return None;
        }
        false if f.get("policy").is_some() => {
            let kind = PolicyErrorKind::UnknownField { field: "policy".into(), expected: &["reason"] };
            ctx.err(&f.at("policy"), f.key_line("policy"), kind);
            return None;
        }
        true => Expectation::Allow { policy: policy.map(str::to_owned) },
        false => Expectation::Deny { reason },
    };
    Some(Case {
        line: f.line,
        binary: binary?.to_owned(),
        host: host?.to_owned(),
        port: port?,
        ips: ips?,
        expect,
    })
}

fn ips(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<Vec<IpAddr>> {
    let items = seq(ctx, node, path, 64)?;
    let parsed: Vec<Option<IpAddr>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = path.index(i);
            let raw = string(ctx, item, &at, 64)?;
            let ip = raw.parse::<IpAddr>().ok();
            if ip.is_none() {
                ctx.err(&at, item.line, PolicyErrorKind::InvalidCidr { found: raw.to_owned() });
            }
            ip
        })
        .collect();
    parsed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let cases = parse_cases(
            "cases:\n  - {binary: /b, host: h.example, port: 443, expect: allow, policy: p}\n  - {binary: /b, host: h, port: 1, ips: [10.0.0.1], expect: deny, reason: no_endpoint}\n",
        )
        .unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].line, 2);
        assert_eq!(cases[1].expect, Expectation::Deny { reason: Some("no_endpoint") });
        let errs = parse_cases("cases:\n  - {binary: /b, host: h, port: 0, expect: maybe}\n  - {host: h, port: 1, expect: deny, policy: p}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            errs,
            "cases[0].port: port 0 is out of range; ports are 1..=65535 (line 2)\n\
             cases[0].expect: unknown value `maybe`; expected one of: allow, deny (line 2)\n\
             cases[1]: missing required field `binary` (line 3)\n\
             cases[1].policy: unknown field `policy`; expected one of: reason (line 3)"
        );
    }
}
