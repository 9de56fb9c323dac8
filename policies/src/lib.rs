//! `openshell-policy`: the sandbox policy model, its validation, and network decisions.
//!
//! Produces, from a `version: 1` YAML policy (OpenShell-compatible, extended only
//! additively), a validated [`Policy`] or a list of [`PolicyError`]s with field
//! paths and lines; and, from a policy, a [`NetworkEngine`] that answers "may
//! binary B reach host H on port P?" with a [`Decision`] computed by the bundled
//! Rego module ([`BUNDLED_REGO`]) and cached per generation. [`check_address`]
//! classifies resolved addresses for SSRF protection.
//!
//! Pure library: no I/O, no async runtime, no `unsafe`.

#![forbid(unsafe_code)]

pub mod address;
mod cache;
pub mod cases;
mod decision;
mod engine;
mod error;
mod glob;
mod host;
pub mod limits;
mod model;
mod parse;
mod path;
mod rego_data;
mod yaml;

pub use address::{AddressClass, AddressDenied, check_address};
pub use cases::{Case, CaseFailure, Expectation, parse_cases, run_cases};
pub use decision::{AllowedBy, Decision, DenyReason};
pub use engine::{EngineError, NetworkEngine, NetworkRequest};
pub use error::{PolicyError, PolicyErrorKind, PolicyErrors};
pub use glob::{binary_matches, path_matches, value_matches};
pub use host::{HostPattern, normalize_host};
pub use model::{
    Access, BinaryMatcher, CredentialBinding, Endpoint, Enforcement, FilesystemPolicy, L7Rule,
    LandlockCompatibility, LandlockPolicy, NetworkPolicy, Policy, ProcessPolicy, Protocol, QueryMatcher,
    SUPPORTED_VERSION, TlsMode, UserSpec,
};

/// The bundled Rego module that computes network decisions (package
/// `openshell.network`, rule `decision`). See `rego/network.rego`.
pub const BUNDLED_REGO: &str = include_str!("../rego/network.rego");

/// The policy a sandbox gets when none is given: the host's usual system directories read-only, the
/// workdir and `/tmp` read-write, no network at all (`policies/examples/minimal.yaml`).
pub const DEFAULT_POLICY_YAML: &str = include_str!("../examples/minimal.yaml");
