//! Endpoint host patterns: parsing, normalization and matching.
//!
//! Concern: an allow-list entry that matches more than its author meant.
//! Wildcards are restricted to one whole first label followed by at least two
//! labels (`*.github.com` matches `api.github.com`, not `github.com`, not
//! `a.b.github.com`, and `*.com` / `*` are rejected). Names are compared
//! lower-cased without a trailing dot; numeric look-alikes (`127.1`, `1.2.3`)
//! are rejected because resolvers would read them as IP addresses. IP literals
//! are canonicalized (IPv4-mapped IPv6 becomes IPv4) so one address has one form.
//! The Rego module implements the same matching; `tests` cross-check both.
//! Residual risk: a name that is allowed can still resolve to anything, which is
//! why resolved addresses go through [`crate::address::check_address`].

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

use crate::error::PolicyErrorKind;
use crate::limits::MAX_HOST_LEN;

/// The host part of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// An exact DNS name, lower-cased, without trailing dot.
    Exact(String),
    /// `*.suffix`: exactly one extra label in front of `suffix` (which has at least two labels).
    Wildcard {
        /// The part after `*.`, e.g. `github.com` for `*.github.com`.
        suffix: String,
    },
    /// An IP literal (IPv4-mapped IPv6 stored as IPv4).
    Ip(IpAddr),
}

impl HostPattern {
    /// Parse and validate a policy `host:` value.
    ///
    /// # Errors
    /// The [`PolicyErrorKind`] describing the first problem found.
    pub fn parse(raw: &str) -> Result<Self, PolicyErrorKind> {
        if raw.is_empty() {
            return Err(PolicyErrorKind::EmptyHost);
        }
        if raw.contains("://") {
            return Err(PolicyErrorKind::HostHasScheme);
        }
        if let Some(ip) = parse_ip_literal(raw) {
            return Ok(Self::Ip(ip.to_canonical()));
        }
        if raw.contains('/') {
            return Err(PolicyErrorKind::HostHasPath);
        }
        if raw.contains(':') {
            return Err(PolicyErrorKind::HostHasPort);
        }
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if name.len() > MAX_HOST_LEN {
            return Err(PolicyErrorKind::InvalidHost { problem: "longer than 253 characters" });
        }
        let labels: Vec<&str> = name.split('.').collect();
        for (i, label) in labels.iter().enumerate() {
            if label.contains('*') && (i > 0 || *label != "*") {
                return Err(PolicyErrorKind::WildcardPosition);
            }
        }
        if labels.first() == Some(&"*") {
            let rest = &labels[1..];
            if rest.len() < 2 {
                return Err(PolicyErrorKind::WildcardTooBroad);
            }
            check_labels(rest)?;
            return Ok(Self::Wildcard { suffix: rest.join(".") });
        }
        check_labels(&labels)?;
        Ok(Self::Exact(name))
    }

    /// Whether a destination host matches this pattern. Case-insensitive; a
    /// trailing dot and IPv6 brackets are ignored; IP literals compare as
    /// addresses (`::ffff:1.2.3.4` equals `1.2.3.4`).
    #[must_use]
    pub fn matches(&self, host: &str) -> bool {
        let host = normalize_host(host);
        match self {
            Self::Exact(name) => *name == host,
            Self::Wildcard { suffix } => wildcard_matches(suffix, &host),
            Self::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard { suffix } => write!(f, "*.{suffix}"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The canonical form of a destination host used for matching and caching:
/// lower-case, no trailing dot, IPv6 brackets removed, IP literals in canonical
/// text form (IPv4-mapped IPv6 written as IPv4).
#[must_use]
pub fn normalize_host(host: &str) -> String {
    if let Some(ip) = parse_ip_literal(host) {
        return ip.to_canonical().to_string();
    }
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// `true` when `host` (already normalized) is exactly one label in front of `suffix`.
pub(crate) fn wildcard_matches(suffix: &str, host: &str) -> bool {
    host.strip_suffix(suffix)
        .and_then(|front| front.strip_suffix('.'))
        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

fn parse_ip_literal(raw: &str) -> Option<IpAddr> {
    let inner = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(raw);
    inner.parse::<IpAddr>().ok()
}

fn check_labels(labels: &[&str]) -> Result<(), PolicyErrorKind> {
    for label in labels {
        if label.is_empty() {
            return Err(PolicyErrorKind::InvalidHost { problem: "empty label (`..` or leading `.`)" });
        }
        if label.len() > 63 {
            return Err(PolicyErrorKind::InvalidHost { problem: "label longer than 63 characters" });
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(PolicyErrorKind::InvalidHost {
                problem: "only letters, digits, `-`, `_` and `.` are allowed",
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(PolicyErrorKind::InvalidHost { problem: "a label must not start or end with `-`" });
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(PolicyErrorKind::InvalidHost {
            problem: "numeric last label; write IP addresses in full (`127.0.0.1`)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn parses_kinds() {
        assert_eq!(p("API.GitHub.com."), HostPattern::Exact("api.github.com".into()));
        assert_eq!(p("*.github.com"), HostPattern::Wildcard { suffix: "github.com".into() });
        assert_eq!(p("10.0.0.1"), HostPattern::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(p("[::1]"), HostPattern::Ip("::1".parse().unwrap()));
        assert_eq!(p("::ffff:10.0.0.1"), HostPattern::Ip("10.0.0.1".parse().unwrap()));
        assert_eq!(p("my_host.internal.example"), HostPattern::Exact("my_host.internal.example".into()));
    }

    #[test]
    fn rejects_bad_hosts() {
        use PolicyErrorKind as K;
        assert_eq!(HostPattern::parse(""), Err(K::EmptyHost));
        assert_eq!(HostPattern::parse("*"), Err(K::WildcardTooBroad));
        assert_eq!(HostPattern::parse("*.com"), Err(K::WildcardTooBroad));
        assert_eq!(HostPattern::parse("api.*.com"), Err(K::WildcardPosition));
        assert_eq!(HostPattern::parse("a*.example.com"), Err(K::WildcardPosition));
        assert_eq!(HostPattern::parse("*.*.example.com"), Err(K::WildcardPosition));
        assert_eq!(HostPattern::parse("https://github.com"), Err(K::HostHasScheme));
        assert_eq!(HostPattern::parse("github.com:443"), Err(K::HostHasPort));
        assert_eq!(HostPattern::parse("github.com/x"), Err(K::HostHasPath));
        assert!(matches!(HostPattern::parse("127.1"), Err(K::InvalidHost { .. })));
        assert!(matches!(HostPattern::parse("a..b.com"), Err(K::InvalidHost { .. })));
        assert!(matches!(HostPattern::parse("-a.com"), Err(K::InvalidHost { .. })));
        assert!(matches!(HostPattern::parse("a b.com"), Err(K::InvalidHost { .. })));
        assert!(matches!(HostPattern::parse("*..com"), Err(K::InvalidHost { .. })));
    }

    #[test]
    fn wildcard_matches_one_label() {
        let w = p("*.github.com");
        assert!(w.matches("a.github.com"));
        assert!(w.matches("A.GitHub.COM."));
        assert!(!w.matches("github.com"));
        assert!(!w.matches("a.b.github.com"));
        assert!(!w.matches("agithub.com"));
        assert!(!w.matches(".github.com"));
        assert!(!w.matches("a.github.com.evil.com"));
    }

    #[test]
    fn exact_and_ip_match() {
        assert!(p("api.github.com").matches("API.github.com."));
        assert!(!p("api.github.com").matches("api.github.com.evil"));
        let ip = p("10.0.0.1");
        assert!(ip.matches("10.0.0.1"));
        assert!(ip.matches("::ffff:10.0.0.1"));
        assert!(ip.matches("[::ffff:10.0.0.1]"));
        assert!(!ip.matches("10.0.0.2"));
        assert!(p("2001:db8::1").matches("[2001:DB8:0::1]"));
    }

    #[test]
    fn normalizes() {
        assert_eq!(normalize_host("Api.Example.COM."), "api.example.com");
        assert_eq!(normalize_host("[::FFFF:1.2.3.4]"), "1.2.3.4");
        assert_eq!(normalize_host("2001:DB8::0:1"), "2001:db8::1");
    }
}
