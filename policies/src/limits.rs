//! Size and count bounds for policy input.
//!
//! Concern: resource exhaustion by a hostile or broken policy file (the policy
//! can arrive over the gateway API). Every list, map and string in a policy is
//! bounded so that parsing, validation and Rego evaluation stay cheap. The bounds
//! are far above any real policy; the residual risk is a legitimate policy that
//! needs more, which fails loudly with the limit in the message.

/// Largest accepted policy text, in bytes.
pub const MAX_POLICY_BYTES: usize = 1024 * 1024;
/// Deepest YAML nesting accepted (a valid policy needs about 10).
pub const MAX_DEPTH: usize = 32;
/// Most YAML nodes accepted in one document.
pub const MAX_NODES: usize = 200_000;
/// Most paths in one filesystem list.
pub const MAX_PATHS: usize = 256;
/// Longest path or binary pattern, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component, in bytes (Linux `NAME_MAX`): a longer one can never exist.
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most network policies.
pub const MAX_NETWORK_POLICIES: usize = 1024;
/// Most endpoints in one network policy.
pub const MAX_ENDPOINTS: usize = 256;
/// Most binaries in one network policy.
pub const MAX_BINARIES: usize = 256;
/// Most ports on one endpoint.
pub const MAX_PORTS: usize = 64;
/// Most L7 rules (allow or deny) on one endpoint.
pub const MAX_RULES: usize = 256;
/// Most `allowed_ips` entries on one endpoint.
pub const MAX_ALLOWED_IPS: usize = 256;
/// Most query keys in one rule, and most globs for one key.
pub const MAX_QUERY_ITEMS: usize = 64;
/// Longest network policy key or credential provider name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest display name, glob or other free-form string.
pub const MAX_STRING_LEN: usize = 4096;
/// Longest host name (RFC 1035).
pub const MAX_HOST_LEN: usize = 253;
