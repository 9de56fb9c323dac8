//! HTTP-level (L7) rules of an endpoint: `access`, `rules`, `deny_rules` and
//! `path`, checked per request on the doors that see requests (absolute-form
//! forward proxying, `http://` and `https://` URLs).
//!
//! Threats handled: a destination allowed for reading being written to
//! (`POST`/`DELETE` to a `read-only` endpoint), requests outside the allowed
//! paths/queries, and path tricks meant to dodge a `deny_rules` glob:
//! - the path is decided as sent, except that percent-encoded unreserved
//!   characters (`%61` = `a`, RFC 3986 §6.2.2.2) are decoded first, so `/%61dmin`
//!   is decided as `/admin`;
//! - a path containing an encoded slash or backslash (`%2F`, `%5C`), a raw
//!   backslash, a `.`/`..` segment (also encoded, `%2e%2e`) or an empty segment
//!   (`//`) is refused with a 400 on endpoints with L7 rules (servers disagree on
//!   what these mean);
//! - query values are percent-decoded (`+` is a space) and, for an allow rule,
//!   EVERY occurrence of a named key must match (`?id=ok&id=evil` does not pass);
//!   a deny rule matches when ANY occurrence matches;
//! - doors that cannot see requests (CONNECT tunnels, transparent capture: TLS
//!   without interception) fail closed for endpoints with L7 rules (see
//!   [`restricts`]).
//!
//! Residual risk: servers that give meaning to other path syntax (`;` matrix
//! parameters, case-insensitive paths, other encodings) may serve a resource a
//! `deny_rules` glob meant to exclude; allow-lists (`rules`, `access`) fail
//! closed on such paths.

use openshell_policy::{Access, Endpoint, L7Rule, path_matches, value_matches};

/// Whether `ep` restricts HTTP requests (methods, paths, queries), i.e. needs a
/// door that sees each request.
pub(crate) fn restricts(ep: &Endpoint) -> bool {
    ep.access.is_some_and(|a| a != Access::Full)
        || !ep.rules.is_empty()
        || !ep.deny_rules.is_empty()
        || ep.path.is_some()
}

/// The outcome of checking one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Allowed by the endpoint's L7 rules (or it has none).
    Allowed,
    /// Refused: which rule or preset refused it.
    Denied(String),
    /// The path uses syntax that is refused on endpoints with L7 rules (400).
    BadPath(String),
}

/// Checks `method` and `target` (origin form: path and query) against `ep`.
pub(crate) fn check(ep: &Endpoint, method: &str, target: &str) -> Verdict {
    if !restricts(ep) {
        return Verdict::Allowed;
    }
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let path = match normalize_path(raw_path) {
        Ok(p) => p,
        Err(why) => return Verdict::BadPath(why),
    };
    let query = parse_query(raw_query);
    for (i, rule) in ep.deny_rules.iter().enumerate() {
        if rule_matches(rule, method, &path, &query, Mode::Deny) {
            return Verdict::Denied(format!("{method} {path} matches deny_rules[{i}]"));
        }
    }
    if let Some(pattern) = &ep.path
        && !endpoint_path_matches(pattern, &path)
    {
        return Verdict::Denied(format!("{path} is outside the endpoint path {pattern:?}"));
    }
    if !ep.rules.is_empty() {
        if ep.rules.iter().any(|r| rule_matches(r, method, &path, &query, Mode::Allow)) {
            return Verdict::Allowed;
        }
        return Verdict::Denied(format!("{method} {path} matches none of the {} rules", ep.rules.len()));
    }
    let access = ep.access.unwrap_or(Access::Full);
    if access.allows_method(method) {
        Verdict::Allowed
    } else {
        Verdict::Denied(format!("method {method} is not allowed by access: {}", access.as_str()))
    }
}

/// Endpoint `path`: a glob, or (without glob characters) a prefix ending at a
/// segment boundary (`/api` covers `/api` and `/api/x`, not `/apix`).
fn endpoint_path_matches(pattern: &str, path: &str) -> bool {
    if path_matches(pattern, path) {
        return true;
    }
    if pattern.contains(['*', '?', '[', '{', '\\']) {
        return false;
    }
    let prefix = pattern.trim_end_matches('/');
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Allow,
    Deny,
}

fn rule_matches(rule: &L7Rule, method: &str, path: &str, query: &[(String, String)], mode: Mode) -> bool {
    if let Some(m) = &rule.method
        && m != "*"
        && !m.eq_ignore_ascii_case(method)
    {
        return false;
    }
    if let Some(p) = &rule.path
        && !path_matches(p, path)
    {
        return false;
    }
    rule.query.iter().all(|(key, matcher)| {
        let mut values = query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).peekable();
        if values.peek().is_none() {
            return false;
        }
        let ok = |v: &str| matcher.any.iter().any(|g| value_matches(g, v));
        match mode {
            Mode::Allow => values.all(ok),
            Mode::Deny => values.any(ok),
        }
    })
}

/// Decodes percent-encoded unreserved characters and refuses ambiguous syntax.
fn normalize_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') {
        return Err(format!("path {raw:?} does not start with /"));
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let Some(v) = hex_byte(bytes, i + 1) else {
                return Err(format!("path {raw:?} has an invalid percent-encoding"));
            };
            if v == b'/' || v == b'\\' {
                return Err(format!("path {raw:?} contains an encoded slash or backslash"));
            }
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(v));
            } else {
                out.push_str(&raw[i..i + 3]);
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(format!("path {raw:?} contains a backslash"));
        }
        // Multi-byte UTF-8 sequences are copied byte-wise through the str.
        let ch_len = raw[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&raw[i..i + ch_len]);
        i += ch_len;
    }
    let segments: Vec<&str> = out[1..].split('/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        if *seg == "." || *seg == ".." {
            return Err(format!("path {raw:?} contains a {seg:?} segment"));
        }
        if seg.is_empty() && n != last {
            return Err(format!("path {raw:?} contains an empty segment (//)"));
        }
    }
    Ok(out)
}

/// `k=v&k2=v2`, percent-decoded (`+` is a space), lossy UTF-8.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// The byte written as two hex digits at `b[at..at + 2]`, if they are hex digits.
fn hex_byte(b: &[u8], at: usize) -> Option<u8> {
    b.get(at..at + 2).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
}

fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let Some(v) = hex_byte(b, i + 1) {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openshell_policy::Policy;

    fn endpoint(extra: &str) -> Endpoint {
        let yaml = format!(
            "version: 1\nnetwork_policies:\n  p:\n    endpoints:\n      - {{host: a.test, ports: [80], {extra}}}\n    binaries: [{{path: /usr/bin/curl}}]\n"
        );
        let p = Policy::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
        p.network_policies["p"].endpoints[0].clone()
    }

    #[test]
    fn access_presets() {
        let ro = endpoint("access: read-only");
        assert!(restricts(&ro));
        assert_eq!(check(&ro, "GET", "/x"), Verdict::Allowed);
        assert_eq!(check(&ro, "head", "/x"), Verdict::Allowed);
        assert!(matches!(check(&ro, "POST", "/x"), Verdict::Denied(d) if d.contains("read-only")));
        let full = endpoint("access: full");
        assert!(!restricts(&full));
        assert_eq!(check(&full, "DELETE", "/%2f/../x"), Verdict::Allowed, "no L7 rules: nothing refused");
    }

    #[test]
    fn paths_refused_and_normalized() {
        let ro = endpoint("access: read-only");
        for bad in ["/a%2Fb", "/a%2fb", "/a/../b", "/a/%2e%2E/b", "/./a", "//a", "/a%5Cb", "/a\\b", "/a%zz"] {
            assert!(matches!(check(&ro, "GET", bad), Verdict::BadPath(_)), "{bad}");
        }
        assert_eq!(normalize_path("/%61dmin/x%20y/").unwrap(), "/admin/x%20y/");
        let deny = endpoint("deny_rules: [{method: GET, path: /admin/**}]");
        assert!(matches!(check(&deny, "GET", "/%61dmin/x"), Verdict::Denied(_)));
        assert_eq!(check(&deny, "GET", "/public/x"), Verdict::Allowed);
    }

    #[test]
    fn rules_with_query_and_deny() {
        let ep = endpoint(
            "rules: [{allow: {method: GET, path: /repos/**, query: {per_page: ['1*', '2*']}}}], \
             deny_rules: [{method: '*', path: /repos/secret/**}]",
        );
        assert_eq!(check(&ep, "get", "/repos/a/b?per_page=10"), Verdict::Allowed);
        assert!(matches!(check(&ep, "GET", "/repos/a/b"), Verdict::Denied(_)), "key missing");
        assert!(matches!(check(&ep, "GET", "/repos/a/b?per_page=30"), Verdict::Denied(_)));
        assert!(matches!(check(&ep, "GET", "/repos/a?per_page=1&per_page=9"), Verdict::Denied(_)));
        assert!(matches!(check(&ep, "POST", "/repos/a?per_page=1"), Verdict::Denied(_)));
        assert!(
            matches!(check(&ep, "GET", "/repos/secret/x?per_page=1"), Verdict::Denied(d) if d.contains("deny_rules[0]"))
        );
    }

    #[test]
    fn endpoint_path_prefix_and_glob() {
        let ep = endpoint("path: /api");
        assert_eq!(check(&ep, "GET", "/api"), Verdict::Allowed);
        assert_eq!(check(&ep, "DELETE", "/api/x?y"), Verdict::Allowed);
        assert!(matches!(check(&ep, "GET", "/apix"), Verdict::Denied(_)));
        let ep = endpoint("path: '/v*/items'");
        assert_eq!(check(&ep, "GET", "/v2/items"), Verdict::Allowed);
        assert!(matches!(check(&ep, "GET", "/v2/items/1"), Verdict::Denied(_)));
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1&b=x+y%2Fz&&c&%zz=%"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y/z".into()),
                ("c".into(), String::new()),
                ("%zz".into(), "%".into())
            ]
        );
    }
}
