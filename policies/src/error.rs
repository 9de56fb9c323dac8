//! Policy load errors: every problem carries the field path and the source line.
//!
//! Concern: policy debugging. A policy that does not load must say *where* and
//! *why* in one line per problem (`network_policies.github.endpoints[0].host:
//! wildcard allowed in the first label only (line 12)`), and all problems are
//! reported at once so an operator fixes a file in one pass. Nothing here is
//! security-relevant by itself; the residual risk is a confusing message, never
//! a policy that loads with a silently different meaning.

use std::fmt;

/// One problem found while loading a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Dotted field path (`network_policies.github.endpoints[0].host`); `(root)`
    /// for problems with the whole document.
    pub path: String,
    /// 1-based source line, when the problem can be attributed to one.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: PolicyErrorKind,
}

impl PolicyError {
    pub(crate) fn new(path: impl Into<String>, line: Option<usize>, kind: PolicyErrorKind) -> Self {
        Self { path: path.into(), line, kind }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.kind)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a policy, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl PolicyErrors {
    /// The converted value if no problem was recorded, else every problem in
    /// line order. Never returns an empty error list.
    pub(crate) fn finish<T>(value: Option<T>, mut errors: Vec<PolicyError>) -> Result<T, Self> {
        match value {
            Some(value) if errors.is_empty() => Ok(value),
            _ => {
                if errors.is_empty() {
                    // Every failing conversion step records why; this is a backstop.
                    let detail = "internal: conversion failed without a recorded reason".to_owned();
                    errors.push(PolicyError::new("(root)", None, PolicyErrorKind::Syntax { detail }));
                }
                errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
                errors.dedup();
                Err(Self(errors))
            }
        }
    }

    /// Iterate over the individual problems.
    pub fn iter(&self) -> std::slice::Iter<'_, PolicyError> {
        self.0.iter()
    }

    /// Number of problems.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false for errors returned by this crate; present for API symmetry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

impl<'a> IntoIterator for &'a PolicyErrors {
    type Item = &'a PolicyError;
    type IntoIter = std::slice::Iter<'a, PolicyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The kind of a policy problem. The `Display` text is the user-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    // --- document / YAML level -------------------------------------------------
    /// The input holds no YAML document at all.
    #[error("policy is empty; it must be a mapping starting with `version: 1`")]
    Empty,
    /// The input exceeds [`crate::limits::MAX_POLICY_BYTES`].
    #[error("policy is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The YAML scanner or parser rejected the text.
    #[error("YAML syntax error: {detail}")]
    Syntax { detail: String },
    /// More than one YAML document (`---`) in the input.
    #[error("only one YAML document is allowed")]
    MultipleDocuments,
    /// Nesting deeper than any valid policy needs.
    #[error("nesting is deeper than {limit} levels")]
    TooDeep { limit: usize },
    /// More YAML nodes than any valid policy needs.
    #[error("more than {limit} YAML nodes")]
    TooManyNodes { limit: usize },
    /// `&anchor` or `*alias`.
    #[error("YAML anchors and aliases are not supported; write the value out")]
    AnchorOrAlias,
    /// `!tag`.
    #[error("YAML tags are not supported (found `{tag}`)")]
    Tag { tag: String },
    /// A mapping key that is a list, a mapping or null.
    #[error("mapping keys must be plain strings")]
    ComplexKey,
    /// The same key twice in one mapping.
    #[error("duplicate key `{key}`")]
    DuplicateKey { key: String },
    /// A key the schema does not know.
    #[error("unknown field `{field}`; expected one of: {}", .expected.join(", "))]
    UnknownField { field: String, expected: &'static [&'static str] },
    /// A required key is absent.
    #[error("missing required field `{field}`")]
    MissingField { field: &'static str },
    /// The value has the wrong YAML type.
    #[error("expected {expected}, found {found}")]
    WrongType { expected: &'static str, found: &'static str },
    /// A keyword outside its allowed set.
    #[error("unknown value `{found}`; expected one of: {}", .expected.join(", "))]
    UnknownValue { found: String, expected: &'static [&'static str] },
    /// A list or map with more entries than the limit.
    #[error("too many entries ({count}); the limit is {limit}")]
    TooMany { count: usize, limit: usize },
    /// A string longer than the limit.
    #[error("too long ({len} bytes); the limit is {limit}")]
    TooLong { len: usize, limit: usize },
    /// A path component longer than any file name can be.
    #[error("a path component is too long ({len} bytes); file names are at most {limit} bytes")]
    ComponentTooLong { len: usize, limit: usize },

    // --- top level ----------------------------------------------------------------
    /// `version` other than 1.
    #[error("unsupported version `{found}`; only version 1 is supported")]
    UnsupportedVersion { found: String },

    // --- filesystem -----------------------------------------------------------------
    /// A path that does not start with `/`.
    #[error("path must be absolute (start with `/`)")]
    PathNotAbsolute,
    /// A path with `.`, `..` or an empty (`//`) component.
    #[error("path must be normalized (found `{found}`)")]
    PathNotNormalized { found: &'static str },
    /// A path with a NUL byte.
    #[error("path must not contain NUL bytes")]
    PathNul,
    /// `/` listed in `read_write`.
    #[error("`/` cannot be writable; list the directories the agent needs to write")]
    RootWritable,

    // --- process ---------------------------------------------------------------------
    /// `root` or 0 for `run_as_user` / `run_as_group`.
    #[error("root is not allowed; use `sandbox` or a uid in 1..=4294967294")]
    RootUser,
    /// Neither `sandbox` nor a number in range.
    #[error("`{found}` is not allowed; use `sandbox` or a uid in 1..=4294967294")]
    InvalidUserId { found: String },

    // --- network: policy -----------------------------------------------------------------
    /// A network policy key outside `[a-zA-Z0-9_.-]{1,128}`.
    #[error("network policy names must be 1 to 128 characters from [a-zA-Z0-9_.-]")]
    InvalidPolicyName,
    /// Endpoints without binaries can never be used.
    #[error("no binary may use these endpoints; list binaries")]
    NoBinaries,

    // --- network: host ------------------------------------------------------------------
    /// `host: ""`.
    #[error("host must not be empty")]
    EmptyHost,
    /// `host: https://...`.
    #[error("host must be a name, not a URL; remove the scheme")]
    HostHasScheme,
    /// `host: example.com:443`.
    #[error("host must not include a port; use `port` or `ports`")]
    HostHasPort,
    /// `host: example.com/path`.
    #[error("host must not include a path; use `path`")]
    HostHasPath,
    /// `api.*.com`, `a*.example.com`.
    #[error("wildcard allowed in the first label only, as the whole label (`*.example.com`)")]
    WildcardPosition,
    /// `*`, `*.com`.
    #[error("wildcard is too broad; it must be followed by at least two labels (`*.example.com`)")]
    WildcardTooBroad,
    /// Not a DNS name (bad characters, empty or over-long label, numeric TLD).
    #[error("not a valid host name: {problem}")]
    InvalidHost { problem: &'static str },

    // --- network: ports -------------------------------------------------------------------
    /// Both `port` and `ports`.
    #[error("set `port` or `ports`, not both")]
    PortAndPorts,
    /// Neither `port` nor `ports`.
    #[error("missing `port` (or `ports`)")]
    NoPort,
    /// `ports: []`.
    #[error("`ports` must not be empty")]
    EmptyPorts,
    /// 0, negative or above 65535.
    #[error("port {found} is out of range; ports are 1..=65535")]
    PortOutOfRange { found: String },
    /// The same port twice.
    #[error("port {port} is listed more than once")]
    DuplicatePort { port: u16 },

    // --- network: L7 -----------------------------------------------------------------------
    /// Both `access` and `rules`.
    #[error("set `access` or `rules`, not both")]
    AccessAndRules,
    /// HTTP-level restrictions on traffic the proxy does not inspect.
    #[error("{what} cannot be enforced because {why}; remove it, or inspect the traffic")]
    NotInspectable { what: &'static str, why: &'static str },
    /// A method that is not an HTTP token.
    #[error("`{found}` is not an HTTP method (a token such as GET, or `*`)")]
    InvalidMethod { found: String },
    /// A rule without method, path or query.
    #[error("rule matches every request; use `access: full` if that is intended")]
    EmptyRule,
    /// A rule entry without its `allow:` / `deny:` key.
    #[error("each entry needs its `{key}:` mapping (`- {key}: {{method: GET}}`)")]
    MissingRuleKey { key: &'static str },
    /// A glob globset rejects.
    #[error("invalid glob: {detail}")]
    InvalidGlob { detail: String },
    /// Empty string where a glob, name or value is required.
    #[error("must not be empty")]
    EmptyValue,
    /// A name outside `[a-zA-Z0-9_.-]`.
    #[error("must be 1 to 128 characters from [a-zA-Z0-9_.-]")]
    InvalidName,

    // --- network: allowed_ips --------------------------------------------------------------
    /// Neither a CIDR nor an IP address.
    #[error("`{found}` is not a CIDR (10.0.0.0/8) or an IP address")]
    InvalidCidr { found: String },
    /// A range that covers never-reachable addresses.
    #[error("{net} covers {class} addresses ({range}), which are never reachable; narrow the range")]
    ForbiddenAllowedIps { net: String, class: &'static str, range: String },
}
