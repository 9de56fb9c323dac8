//! `network_policies` entries: endpoints, binaries, L7 rules, allowed_ips.
//!
//! Concern: egress allow-lists that are broader than they look or that cannot
//! be enforced. Hosts go through [`HostPattern::parse`]; ports are exact and
//! unique; `access` and `rules` are exclusive; HTTP-level restrictions and
//! credential bindings are rejected on traffic the proxy does not inspect
//! (`protocol: tcp`, `tls: skip`) instead of being silently unenforced;
//! `allowed_ips` may never cover loopback, link-local, unspecified, broadcast or
//! multicast space (directly or via IPv4-carrying IPv6 forms); binary patterns
//! must be absolute, normalized and compile with the runtime glob engine; and a
//! policy with endpoints but no binaries is an error, since nothing could use it.
//!
//! `deny_rules` entries accept the OpenShell flat form (`- method: DELETE`) and,
//! for symmetry with `rules`, a `deny:` wrapper (`- deny: {method: DELETE}`).
//! `tls: terminate` (OpenShell's explicit spelling of the default) is accepted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::checks;
use super::reader::{Ctx, Fields, boolean, integer, keyword, seq, string};
use crate::address::forbidden_overlap;
use crate::error::PolicyErrorKind;
use crate::host::HostPattern;
use crate::limits::{
    MAX_ALLOWED_IPS, MAX_BINARIES, MAX_ENDPOINTS, MAX_PORTS, MAX_QUERY_ITEMS, MAX_RULES, MAX_STRING_LEN,
};
use crate::model::{
    Access, BinaryMatcher, CredentialBinding, Endpoint, Enforcement, L7Rule, NetworkPolicy, Protocol,
    QueryMatcher, TlsMode,
};
use crate::path::FieldPath;
use crate::yaml::{Node, Value};

const POLICY_FIELDS: &[&str] = &["name", "endpoints", "binaries"];
const ENDPOINT_FIELDS: &[&str] = &[
    "host",
    "port",
    "ports",
    "path",
    "protocol",
    "tls",
    "enforcement",
    "access",
    "rules",
    "deny_rules",
    "allowed_ips",
    "credential_binding",
];
/// `harness` is accepted and ignored, as OpenShell does (deprecated there).
const BINARY_FIELDS: &[&str] = &["path", "harness"];
const RULE_BODY_FIELDS: &[&str] = &["method", "path", "query"];
const CREDENTIAL_FIELDS: &[&str] = &["provider"];
const ANY_FIELDS: &[&str] = &["any"];

const PROTOCOL_NAMES: &[&str] = &["rest", "websocket", "tcp", "graphql", "mcp", "json-rpc"];
const PROTOCOLS: &[(&str, Protocol)] = &[
    ("rest", Protocol::Rest),
    ("websocket", Protocol::Websocket),
    ("tcp", Protocol::Tcp),
    ("graphql", Protocol::Graphql),
    ("mcp", Protocol::Mcp),
    ("json-rpc", Protocol::JsonRpc),
];
const TLS_NAMES: &[&str] = &["skip", "terminate"];
const TLS: &[(&str, TlsMode)] = &[("skip", TlsMode::Skip), ("terminate", TlsMode::Terminate)];
const ENFORCEMENT_NAMES: &[&str] = &["enforce", "audit"];
const ENFORCEMENTS: &[(&str, Enforcement)] =
    &[("enforce", Enforcement::Enforce), ("audit", Enforcement::Audit)];
const ACCESS_NAMES: &[&str] = &["read-only", "read-write", "full"];
const ACCESSES: &[(&str, Access)] =
    &[("read-only", Access::ReadOnly), ("read-write", Access::ReadWrite), ("full", Access::Full)];

/// Tracks whether every part of one entry converted cleanly.
struct Clean(bool);

impl Clean {
    fn take<T>(&mut self, v: Option<T>) -> Option<T> {
        if v.is_none() {
            self.0 = false;
        }
        v
    }
}

/// Convert one `network_policies.<name>` value.
pub(super) fn policy(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<NetworkPolicy> {
    let f = Fields::read(ctx, node, path, POLICY_FIELDS)?;
    let mut ok = Clean(true);
    let name = match f.get("name") {
        Some(n) => ok.take(string(ctx, n, &f.at("name"), MAX_STRING_LEN)).filter(|s| !s.is_empty()),
        None => None,
    };
    let mut endpoints = Vec::new();
    if let Some(n) = f.get("endpoints")
        && let Some(items) = ok.take(seq(ctx, n, &f.at("endpoints"), MAX_ENDPOINTS))
    {
        for (i, item) in items.iter().enumerate() {
            if let Some(e) = ok.take(endpoint(ctx, item, &f.at("endpoints").index(i))) {
                endpoints.push(e);
            }
        }
    }
    let mut binaries = Vec::new();
    if let Some(n) = f.get("binaries")
        && let Some(items) = ok.take(seq(ctx, n, &f.at("binaries"), MAX_BINARIES))
    {
        for (i, item) in items.iter().enumerate() {
            if let Some(b) = ok.take(binary(ctx, item, &f.at("binaries").index(i))) {
                binaries.push(b);
            }
        }
    }
    let has_endpoints =
        f.get("endpoints").is_some_and(|n| matches!(&n.value, Value::Seq(v) if !v.is_empty()));
    let has_binaries = f.get("binaries").is_some_and(|n| matches!(&n.value, Value::Seq(v) if !v.is_empty()));
    if has_endpoints && !has_binaries {
        ctx.err(path, f.line, PolicyErrorKind::NoBinaries);
        ok.0 = false;
    }
    ok.0.then_some(NetworkPolicy { name: name.map(str::to_owned), endpoints, binaries })
}

fn binary(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<BinaryMatcher> {
    let f = Fields::read(ctx, node, path, BINARY_FIELDS)?;
    if let Some(n) = f.get("harness") {
        boolean(ctx, n, &f.at("harness"))?;
    }
    let Some(n) = f.get("path") else {
        ctx.err(path, f.line, PolicyErrorKind::MissingField { field: "path" });
        return None;
    };
    let at = f.at("path");
    let raw = string(ctx, n, &at, usize::MAX)?;
    match checks::abs_path(raw).and_then(|p| checks::glob(p).map(|()| p)) {
        Ok(p) => Some(BinaryMatcher { path: p.to_owned() }),
        Err(kind) => {
            ctx.err(&at, n.line, kind);
            None
        }
    }
}

fn endpoint(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<Endpoint> {
    let f = Fields::read(ctx, node, path, ENDPOINT_FIELDS)?;
    let mut ok = Clean(true);

    let host = match f.get("host") {
        Some(n) => string(ctx, n, &f.at("host"), MAX_STRING_LEN).and_then(|raw| {
            HostPattern::parse(raw).map_err(|kind| ctx.err(&f.at("host"), n.line, kind)).ok()
        }),
        None => {
            ctx.err(path, f.line, PolicyErrorKind::MissingField { field: "host" });
            None
        }
    };
    let host = ok.take(host);
    let ports = ok.take(ports(ctx, &f));

    let protocol = opt_keyword(ctx, &f, &mut ok, "protocol", PROTOCOLS, PROTOCOL_NAMES).unwrap_or_default();
    let tls = opt_keyword(ctx, &f, &mut ok, "tls", TLS, TLS_NAMES).unwrap_or_default();
    let enforcement =
        opt_keyword(ctx, &f, &mut ok, "enforcement", ENFORCEMENTS, ENFORCEMENT_NAMES).unwrap_or_default();
    let access = opt_keyword(ctx, &f, &mut ok, "access", ACCESSES, ACCESS_NAMES);

    let http_path = match f.get("path") {
        Some(n) => ok.take(http_path(ctx, n, &f.at("path"))),
        None => None,
    };
    let rules = match f.get("rules") {
        Some(n) => ok.take(rule_list(ctx, n, &f.at("rules"), "allow")).unwrap_or_default(),
        None => Vec::new(),
    };
    let deny_rules = match f.get("deny_rules") {
        Some(n) => ok.take(rule_list(ctx, n, &f.at("deny_rules"), "deny")).unwrap_or_default(),
        None => Vec::new(),
    };
    let allowed_ips = match f.get("allowed_ips") {
        Some(n) => ok.take(allowed_ips(ctx, n, &f.at("allowed_ips"))).unwrap_or_default(),
        None => Vec::new(),
    };
    let credential_binding = match f.get("credential_binding") {
        Some(n) => ok.take(credential(ctx, n, &f.at("credential_binding"))),
        None => None,
    };

    if access.is_some() && f.get("rules").is_some() {
        ctx.err(&f.at("rules"), f.key_line("rules"), PolicyErrorKind::AccessAndRules);
        ok.0 = false;
    }
    let why = if protocol == Protocol::Tcp {
        Some("`protocol: tcp` traffic is not inspected")
    } else if tls == TlsMode::Skip {
        Some("`tls: skip` passes bytes through uninspected")
    } else {
        None
    };
    if let Some(why) = why {
        let restrictive_access = matches!(access, Some(Access::ReadOnly | Access::ReadWrite));
        let present = [
            ("access", "`access`", restrictive_access),
            ("rules", "`rules`", f.get("rules").is_some()),
            ("deny_rules", "`deny_rules`", f.get("deny_rules").is_some()),
            ("path", "`path`", f.get("path").is_some()),
            ("credential_binding", "`credential_binding`", f.get("credential_binding").is_some()),
        ];
        for (field, what, is_present) in present {
            if is_present {
                ctx.err(&f.at(field), f.key_line(field), PolicyErrorKind::NotInspectable { what, why });
                ok.0 = false;
            }
        }
    }

    if !ok.0 {
        return None;
    }
    Some(Endpoint {
        host: host?,
        ports: ports?,
        path: http_path,
        protocol,
        tls,
        enforcement,
        access,
        rules,
        deny_rules,
        allowed_ips,
        credential_binding,
    })
}

fn opt_keyword<T: Copy>(
    ctx: &mut Ctx,
    f: &Fields<'_>,
    ok: &mut Clean,
    name: &str,
    table: &[(&str, T)],
    names: &'static [&'static str],
) -> Option<T> {
    let node = f.get(name)?;
    ok.take(keyword(ctx, node, &f.at(name), table, names))
}

fn ports(ctx: &mut Ctx, f: &Fields<'_>) -> Option<Vec<u16>> {
    match (f.get("port"), f.get("ports")) {
        (Some(_), Some(_)) => {
            ctx.err(&f.at("ports"), f.key_line("ports"), PolicyErrorKind::PortAndPorts);
            None
        }
        (None, None) => {
            ctx.err(&f.path, f.line, PolicyErrorKind::NoPort);
            None
        }
        (Some(n), None) => port(ctx, n, &f.at("port")).map(|p| vec![p]),
        (None, Some(n)) => {
            let at = f.at("ports");
            let items = seq(ctx, n, &at, MAX_PORTS)?;
            if items.is_empty() {
                ctx.err(&at, n.line, PolicyErrorKind::EmptyPorts);
                return None;
            }
            let mut out: Vec<u16> = Vec::with_capacity(items.len());
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                match port(ctx, item, &at.index(i)) {
                    Some(p) if out.contains(&p) => {
                        ctx.err(&at.index(i), item.line, PolicyErrorKind::DuplicatePort { port: p });
                        ok = false;
                    }
                    Some(p) => out.push(p),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    }
}

fn port(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<u16> {
    let (value, text) = integer(ctx, node, path)?;
    match u16::try_from(value) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            ctx.err(path, node.line, PolicyErrorKind::PortOutOfRange { found: text.to_owned() });
            None
        }
    }
}

/// An HTTP path glob: starts with `/`, compiles.
fn http_path(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<String> {
    let raw = string(ctx, node, path, MAX_STRING_LEN)?;
    let checked =
        if raw.starts_with('/') { checks::glob(raw) } else { Err(PolicyErrorKind::PathNotAbsolute) };
    match checked {
        Ok(()) => Some(raw.to_owned()),
        Err(kind) => {
            ctx.err(path, node.line, kind);
            None
        }
    }
}

/// `rules` (entries `{allow: {...}}`) or `deny_rules` (entries `{method, path,
/// query}` or `{deny: {...}}`).
fn rule_list(ctx: &mut Ctx, node: &Node, path: &FieldPath, key: &'static str) -> Option<Vec<L7Rule>> {
    let items = seq(ctx, node, path, MAX_RULES)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = path.index(i);
        let wrapped = key == "allow" || has_key(item, key);
        let rule = if key == "allow" && matches!(item.value, Value::Map(_)) && !has_key(item, key) {
            ctx.err(&at, item.line, PolicyErrorKind::MissingRuleKey { key });
            None
        } else if wrapped {
            let fields: &'static [&'static str] = if key == "allow" { &["allow"] } else { &["deny"] };
            Fields::read(ctx, item, &at, fields).and_then(|f| match f.get(key) {
                Some(body) => rule_body(ctx, body, &f.at(key)),
                None => {
                    ctx.err(&at, item.line, PolicyErrorKind::MissingRuleKey { key });
                    None
                }
            })
        } else {
            rule_body(ctx, item, &at)
        };
        match rule {
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn has_key(node: &Node, key: &str) -> bool {
    matches!(&node.value, Value::Map(entries) if entries.iter().any(|(k, _)| k.as_key() == Some(key)))
}

fn rule_body(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<L7Rule> {
    let f = Fields::read(ctx, node, path, RULE_BODY_FIELDS)?;
    let mut ok = Clean(true);
    let method = match f.get("method") {
        Some(n) => ok.take(string(ctx, n, &f.at("method"), MAX_STRING_LEN).and_then(|m| {
            if m == "*" {
                Some(None)
            } else if checks::is_http_token(m) {
                Some(Some(m.to_ascii_uppercase()))
            } else {
                ctx.err(&f.at("method"), n.line, PolicyErrorKind::InvalidMethod { found: m.to_owned() });
                None
            }
        })),
        None => Some(None),
    };
    let rule_path = match f.get("path") {
        Some(n) => ok.take(http_path(ctx, n, &f.at("path"))),
        None => None,
    };
    let query = match f.get("query") {
        Some(n) => ok.take(query(ctx, n, &f.at("query"))).unwrap_or_default(),
        None => BTreeMap::new(),
    };
    let method = method.flatten();
    if ok.0 && method.is_none() && rule_path.is_none() && query.is_empty() {
        ctx.err(path, f.line, PolicyErrorKind::EmptyRule);
        return None;
    }
    ok.0.then_some(L7Rule { method, path: rule_path, query })
}

/// `query: {key: glob | [globs] | {any: [globs]}}`.
fn query(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<BTreeMap<String, QueryMatcher>> {
    let f = Fields::read_any(ctx, node, path)?;
    if f.len() > MAX_QUERY_ITEMS {
        ctx.err(path, node.line, PolicyErrorKind::TooMany { count: f.len(), limit: MAX_QUERY_ITEMS });
        return None;
    }
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (key, value, _) in f.entries() {
        let at = path.key(key);
        let list = match &value.value {
            Value::Map(_) => Fields::read(ctx, value, &at, ANY_FIELDS).and_then(|any| match any.get("any") {
                Some(n) => globs(ctx, n, &any.at("any")),
                None => {
                    ctx.err(&at, value.line, PolicyErrorKind::MissingField { field: "any" });
                    None
                }
            }),
            Value::Seq(_) => globs(ctx, value, &at),
            Value::Scalar { .. } => glob_item(ctx, value, &at).map(|g| vec![g]),
        };
        match list {
            Some(any) => {
                out.insert(key.to_owned(), QueryMatcher { any });
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn globs(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<Vec<String>> {
    let items = seq(ctx, node, path, MAX_QUERY_ITEMS)?;
    if items.is_empty() {
        ctx.err(path, node.line, PolicyErrorKind::EmptyValue);
        return None;
    }
    let out: Vec<Option<String>> =
        items.iter().enumerate().map(|(i, item)| glob_item(ctx, item, &path.index(i))).collect();
    out.into_iter().collect()
}

fn glob_item(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<String> {
    let raw = string(ctx, node, path, MAX_STRING_LEN)?;
    match checks::glob(raw) {
        Ok(()) => Some(raw.to_owned()),
        Err(kind) => {
            ctx.err(path, node.line, kind);
            None
        }
    }
}

fn allowed_ips(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<Vec<IpNet>> {
    let items = seq(ctx, node, path, MAX_ALLOWED_IPS)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = path.index(i);
        let Some(raw) = string(ctx, item, &at, 64) else {
            ok = false;
            continue;
        };
        let parsed =
            raw.parse::<IpNet>().or_else(|_| raw.parse::<IpAddr>().map(IpNet::from)).map(|n| n.trunc());
        let kind = match parsed {
            Err(_) => PolicyErrorKind::InvalidCidr { found: raw.to_owned() },
            Ok(net) => match forbidden_overlap(&net) {
                None => {
                    out.push(net);
                    continue;
                }
                Some(o) => PolicyErrorKind::ForbiddenAllowedIps {
                    net: net.to_string(),
                    class: o.class,
                    range: o.range,
                },
            },
        };
        ctx.err(&at, item.line, kind);
        ok = false;
    }
    ok.then_some(out)
}

fn credential(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<CredentialBinding> {
    let f = Fields::read(ctx, node, path, CREDENTIAL_FIELDS)?;
    let Some(n) = f.get("provider") else {
        ctx.err(path, f.line, PolicyErrorKind::MissingField { field: "provider" });
        return None;
    };
    let provider = string(ctx, n, &f.at("provider"), MAX_STRING_LEN)?;
    if !checks::is_name(provider) {
        ctx.err(&f.at("provider"), n.line, PolicyErrorKind::InvalidName);
        return None;
    }
    Some(CredentialBinding { provider: provider.to_owned() })
}
