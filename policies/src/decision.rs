//! Network decisions: what the proxy, the capture listeners and DNS act on.
//!
//! Concern: denials nobody can debug, and allow/deny carried as a bool next to
//! a string. A [`Decision`] is an enum; an allow names the policy and endpoint
//! that allowed it; a deny names the reason with a stable [`DenyReason::code`]
//! and a [`DenyReason::hint`] saying which policy entry would have to change.
//! Engine failures are a deny ([`DenyReason::Internal`]): the system fails closed.

use std::fmt;

use crate::model::Enforcement;

/// The answer to "may binary B reach host H on port P?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named endpoint.
    Allow(AllowedBy),
    /// Denied, with the reason.
    Deny(DenyReason),
}

impl Decision {
    /// Whether the connection may proceed (to the SSRF check).
    #[must_use]
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

/// The endpoint that allowed a connection: `network_policies.<policy>.endpoints[<endpoint>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedBy {
    /// Network policy name (key under `network_policies`).
    pub policy: String,
    /// Index into that policy's `endpoints`.
    pub endpoint: usize,
    /// Whether L7 violations on this endpoint are enforced or only audited.
    pub enforcement: Enforcement,
}

/// Why a connection was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// No network policy lists `host:port`.
    NoEndpoint {
        /// Normalized destination host.
        host: String,
        /// Destination port.
        port: u16,
    },
    /// Some policies list `host:port`, but none lists the binary.
    BinaryNotAllowed {
        /// The executable that tried to connect.
        binary: String,
        /// Normalized destination host.
        host: String,
        /// Destination port.
        port: u16,
        /// Policies (sorted) whose endpoints name `host:port`.
        policies: Vec<String>,
    },
    /// The policy engine failed; denied to fail closed.
    Internal {
        /// What failed (for logs and events).
        detail: String,
    },
}

impl DenyReason {
    /// Stable machine-readable reason for events and JSON bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoEndpoint { .. } => "no_endpoint",
            Self::BinaryNotAllowed { .. } => "binary_not_allowed",
            Self::Internal { .. } => "internal_error",
        }
    }

    /// Which policy entry would have to change for this connection to be allowed.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            Self::NoEndpoint { host, port } => format!(
                "add an endpoint {{host: {host}, port: {port}}} to a network policy \
                 (network_policies.NAME.endpoints) and list the binary in its binaries"
            ),
            Self::BinaryNotAllowed { binary, policies, .. } => match policies.as_slice() {
                [one] => format!("add {binary} to network_policies.{one}.binaries"),
                many => format!(
                    "add {binary} to the binaries of one of: {}",
                    many.iter().map(|p| format!("network_policies.{p}")).collect::<Vec<_>>().join(", ")
                ),
            },
            Self::Internal { .. } => {
                "the policy engine failed and the connection was denied; report this with the policy".into()
            }
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEndpoint { host, port } => write!(f, "no network policy lists {host}:{port}"),
            Self::BinaryNotAllowed { binary, host, port, policies } => write!(
                f,
                "{binary} is not allowed to reach {host}:{port} (listed by {} but not for this binary)",
                policies.join(", ")
            ),
            Self::Internal { detail } => write!(f, "policy engine error: {detail}"),
        }
    }
}

impl fmt::Display for AllowedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.enforcement {
            Enforcement::Enforce => "enforce",
            Enforcement::Audit => "audit",
        };
        write!(f, "network_policies.{}.endpoints[{}] ({mode})", self.policy, self.endpoint)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow(by) => write!(f, "allow by {by}"),
            Self::Deny(reason) => write!(f, "deny: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_entry() {
        let r = DenyReason::BinaryNotAllowed {
            binary: "/usr/bin/python3".into(),
            host: "api.github.com".into(),
            port: 443,
            policies: vec!["github".into()],
        };
        assert_eq!(r.code(), "binary_not_allowed");
        assert_eq!(r.hint(), "add /usr/bin/python3 to network_policies.github.binaries");
        let r = DenyReason::NoEndpoint { host: "x.example".into(), port: 443 };
        assert!(r.hint().starts_with("add an endpoint {host: x.example, port: 443}"));
        assert_eq!(Decision::Deny(r).to_string(), "deny: no network policy lists x.example:443");
        let a = AllowedBy { policy: "github".into(), endpoint: 1, enforcement: Enforcement::Audit };
        assert_eq!(Decision::Allow(a).to_string(), "allow by network_policies.github.endpoints[1] (audit)");
    }
}
