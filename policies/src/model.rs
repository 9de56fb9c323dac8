//! Typed policy model: what a loaded, validated policy means.
//!
//! Concern: one meaning for one file. Values of these types only come out of
//! [`Policy::from_yaml`], which validates everything, so consumers (supervisor,
//! egress, CLI) never re-validate and never re-interpret strings. Serialization
//! uses the YAML field names so the effective policy can be printed and handed
//! to Rego. Residual risk: code constructing these types by hand bypasses
//! validation; only tests should do that.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

pub use crate::host::HostPattern;

/// The only supported schema version.
pub const SUPPORTED_VERSION: u32 = 1;

/// A complete, validated sandbox policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Schema version; always [`SUPPORTED_VERSION`].
    pub version: u32,
    /// Static: what the agent may read, write and execute.
    #[serde(rename = "filesystem_policy")]
    pub filesystem: FilesystemPolicy,
    /// Static: how strictly Landlock must be enforced.
    pub landlock: LandlockPolicy,
    /// Static: the identity the agent runs as.
    pub process: ProcessPolicy,
    /// Dynamic (hot-reloadable): which binaries may reach which endpoints.
    pub network_policies: BTreeMap<String, NetworkPolicy>,
}

impl Policy {
    /// Every port named by any endpoint (the transparent-capture listeners).
    #[must_use]
    pub fn network_ports(&self) -> BTreeSet<u16> {
        self.network_policies
            .values()
            .flat_map(|p| p.endpoints.iter())
            .flat_map(|e| e.ports.iter().copied())
            .collect()
    }
}

/// Filesystem access. Everything not listed is inaccessible.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilesystemPolicy {
    /// Add the agent's working directory to `read_write` (default true).
    pub include_workdir: bool,
    /// Absolute, normalized paths the agent may read (and below).
    pub read_only: Vec<PathBuf>,
    /// Absolute, normalized paths the agent may read and write (and below); never `/`.
    pub read_write: Vec<PathBuf>,
    /// Extension: when present, only these paths (and below) may be executed.
    /// When absent every readable path is executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<Vec<PathBuf>>,
}

impl Default for FilesystemPolicy {
    fn default() -> Self {
        Self { include_workdir: true, read_only: Vec::new(), read_write: Vec::new(), executable: None }
    }
}

impl FilesystemPolicy {
    /// The paths below which execution is allowed: `executable` when given,
    /// otherwise `read_only` followed by `read_write`.
    #[must_use]
    pub fn effective_executable(&self) -> Vec<&Path> {
        match &self.executable {
            Some(paths) => paths.iter().map(PathBuf::as_path).collect(),
            None => self.read_only.iter().chain(&self.read_write).map(PathBuf::as_path).collect(),
        }
    }
}

/// Landlock settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct LandlockPolicy {
    /// What to do when the kernel cannot enforce everything.
    pub compatibility: LandlockCompatibility,
}

/// Whether degraded Landlock enforcement is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockCompatibility {
    /// Enforce what the kernel supports and report (loudly) what is not enforced.
    #[default]
    BestEffort,
    /// Refuse to start the sandbox unless everything is enforced.
    HardRequirement,
}

/// The identity the agent runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ProcessPolicy {
    /// User; `None` means the platform default (`sandbox`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<UserSpec>,
    /// Group; `None` means the platform default (`sandbox`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<UserSpec>,
}

/// A user or group: the image's `sandbox` account or a numeric id (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSpec {
    /// The `sandbox` user/group of the image.
    Sandbox,
    /// A numeric id in `1..=4294967294`.
    Id(u32),
}

impl Serialize for UserSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Sandbox => s.serialize_str("sandbox"),
            Self::Id(id) => s.serialize_u32(*id),
        }
    }
}

/// One named network policy: these binaries may reach these endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkPolicy {
    /// Optional display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the binaries may connect.
    pub endpoints: Vec<Endpoint>,
    /// Which executables (by real path, glob allowed) may use the endpoints.
    pub binaries: Vec<BinaryMatcher>,
}

/// A binary allowed by a network policy, matched against the real executable path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryMatcher {
    /// Absolute path or glob starting with `/` (see [`crate::binary_matches`]).
    pub path: String,
}

impl BinaryMatcher {
    /// Whether `exe` (an absolute executable path) matches this entry.
    #[must_use]
    pub fn matches(&self, exe: &str) -> bool {
        crate::glob::binary_matches(&self.path, exe)
    }
}

/// A destination (host and ports) plus what may be done there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// Exact name, `*.suffix` wildcard, or IP literal.
    pub host: HostPattern,
    /// One or more ports, no duplicates, in file order.
    pub ports: Vec<u16>,
    /// Optional path prefix/glob restricting HTTP requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Application protocol spoken to this endpoint.
    pub protocol: Protocol,
    /// Whether TLS is intercepted.
    pub tls: TlsMode,
    /// Whether L7 violations are blocked or only reported.
    pub enforcement: Enforcement,
    /// Coarse HTTP method preset (exclusive with `rules`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// Fine-grained allow rules (exclusive with `access`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<L7Rule>,
    /// Deny rules; they win over allows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny_rules: Vec<L7Rule>,
    /// Internal ranges that may be reached despite SSRF protection.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<ipnet::IpNet>,
    /// Credential injected into requests to this endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_binding: Option<CredentialBinding>,
}

impl Endpoint {
    /// Whether this endpoint names `host` (see [`HostPattern::matches`]) on `port`,
    /// or, for an IP-literal endpoint, whether one of `ips` is that address.
    /// This is the Rust mirror of the host/port half of the Rego decision.
    #[must_use]
    pub fn matches(&self, host: &str, port: u16, ips: &[IpAddr]) -> bool {
        if !self.ports.contains(&port) {
            return false;
        }
        if self.host.matches(host) {
            return true;
        }
        match self.host {
            HostPattern::Ip(want) => ips.iter().any(|ip| ip.to_canonical() == want),
            _ => false,
        }
    }
}

/// Application protocol of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// HTTP requests (the default).
    #[default]
    Rest,
    /// HTTP upgraded to WebSocket.
    Websocket,
    /// Opaque TCP: no HTTP inspection.
    Tcp,
    /// GraphQL over HTTP.
    Graphql,
    /// Model Context Protocol over HTTP.
    Mcp,
    /// JSON-RPC over HTTP.
    JsonRpc,
}

impl Protocol {
    /// Whether the proxy sees individual HTTP requests for this protocol.
    #[must_use]
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Tcp)
    }
}

/// TLS handling of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// The proxy terminates TLS so requests can be inspected (the default; also
    /// written `tls: terminate` in OpenShell files).
    #[default]
    Terminate,
    /// Bytes pass through untouched; no L7 inspection, no credential injection.
    Skip,
}

/// Whether L7 violations are blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Violations are denied (the default).
    #[default]
    Enforce,
    /// Violations are allowed and reported.
    Audit,
}

/// Coarse HTTP method presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// GET, HEAD, OPTIONS.
    ReadOnly,
    /// GET, HEAD, OPTIONS, POST, PUT, PATCH.
    ReadWrite,
    /// Every method.
    Full,
}

impl Access {
    /// The policy keyword (`read-only`, `read-write`, `full`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::ReadWrite => "read-write",
            Self::Full => "full",
        }
    }

    /// Whether `method` (case-insensitive) is allowed by this preset.
    #[must_use]
    pub fn allows_method(self, method: &str) -> bool {
        const READ: &[&str] = &["GET", "HEAD", "OPTIONS"];
        const WRITE: &[&str] = &["POST", "PUT", "PATCH"];
        let is = |set: &[&str]| set.iter().any(|m| m.eq_ignore_ascii_case(method));
        match self {
            Self::ReadOnly => is(READ),
            Self::ReadWrite => is(READ) || is(WRITE),
            Self::Full => true,
        }
    }
}

/// An HTTP request matcher used by `rules` (allow) and `deny_rules`.
/// Every present part must match; absent parts match anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L7Rule {
    /// Upper-cased method token; `None` for any method (`*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path glob starting with `/` (`*` stays within a segment, `**` spans segments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Query parameter name -> globs; the parameter must match one of the globs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, QueryMatcher>,
}

/// Globs for one query parameter; a value matching any of them is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueryMatcher {
    /// Non-empty list of globs.
    pub any: Vec<String>,
}

/// Which credential provider is injected into requests to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialBinding {
    /// Provider name (`[a-zA-Z0-9_.-]`).
    pub provider: String,
}
