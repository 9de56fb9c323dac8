//! YAML text -> validated [`Policy`]: the only way to obtain a policy.
//!
//! Concern: a policy that loads with a meaning its author did not intend.
//! Conversion is by hand over the line-annotated tree (no serde defaults hiding
//! typos): unknown fields are errors at every level, types are exact, and every
//! semantic rule (version, absolute normalized paths, `/` never writable, root
//! never the agent identity, plus the network rules in [`network`]) is checked
//! here, once. All problems are collected and returned together, each with its
//! field path and line. Residual risk: OpenShell fields this crate does not
//! implement yet (e.g. `network_middlewares`, GraphQL/MCP options) are rejected
//! as unknown rather than ignored.

pub(crate) mod checks;
mod network;
pub(crate) mod reader;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{PolicyErrorKind, PolicyErrors};
use crate::limits::{MAX_NETWORK_POLICIES, MAX_PATHS};
use crate::model::{
    FilesystemPolicy, LandlockCompatibility, LandlockPolicy, Policy, ProcessPolicy, SUPPORTED_VERSION,
    UserSpec,
};
use crate::path::FieldPath;
use crate::yaml::{self, Node, Value};
use reader::{Ctx, Fields, boolean, integer, keyword, seq, string};

const TOP_FIELDS: &[&str] = &["version", "filesystem_policy", "landlock", "process", "network_policies"];
const FS_FIELDS: &[&str] = &["include_workdir", "read_only", "read_write", "executable"];
const LANDLOCK_FIELDS: &[&str] = &["compatibility"];
const PROCESS_FIELDS: &[&str] = &["run_as_user", "run_as_group"];
const COMPAT_NAMES: &[&str] = &["best_effort", "hard_requirement"];
const COMPAT_TABLE: &[(&str, LandlockCompatibility)] = &[
    ("best_effort", LandlockCompatibility::BestEffort),
    ("hard_requirement", LandlockCompatibility::HardRequirement),
];

impl Policy {
    /// Parse and validate a policy document.
    ///
    /// # Errors
    /// Every problem found, each with its field path and line, in line order.
    pub fn from_yaml(text: &str) -> Result<Policy, PolicyErrors> {
        let root = yaml::parse(text).map_err(|e| PolicyErrors(vec![e]))?;
        let mut ctx = Ctx { errors: yaml::lint(&root) };
        let policy = convert(&mut ctx, &root);
        PolicyErrors::finish(policy, ctx.errors)
    }
}

fn convert(ctx: &mut Ctx, root: &Node) -> Option<Policy> {
    let top = Fields::read(ctx, root, &FieldPath::root(), TOP_FIELDS)?;
    let version = match top.get("version") {
        Some(node) => integer(ctx, node, &top.at("version")).and_then(|(v, text)| {
            if v == i64::from(SUPPORTED_VERSION) {
                Some(SUPPORTED_VERSION)
            } else {
                let kind = PolicyErrorKind::UnsupportedVersion { found: text.to_owned() };
                ctx.err(&top.at("version"), node.line, kind);
                None
            }
        }),
        None => {
            ctx.err(&top.path, top.line, PolicyErrorKind::MissingField { field: "version" });
            None
        }
    };
    let filesystem = top
        .get("filesystem_policy")
        .map_or(Some(FilesystemPolicy::default()), |n| filesystem(ctx, n, &top.at("filesystem_policy")));
    let landlock = top
        .get("landlock")
        .map_or(Some(LandlockPolicy::default()), |n| landlock(ctx, n, &top.at("landlock")));
    let process =
        top.get("process").map_or(Some(ProcessPolicy::default()), |n| process(ctx, n, &top.at("process")));
    let network_policies = match top.get("network_policies") {
        Some(n) => network_policies(ctx, n, &top.at("network_policies")),
        None => Some(BTreeMap::new()),
    };
    Some(Policy {
        version: version?,
        filesystem: filesystem?,
        landlock: landlock?,
        process: process?,
        network_policies: network_policies?,
    })
}

fn filesystem(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<FilesystemPolicy> {
    let f = Fields::read(ctx, node, path, FS_FIELDS)?;
    let mut ok = true;
    let mut out = FilesystemPolicy::default();
    if let Some(n) = f.get("include_workdir") {
        match boolean(ctx, n, &f.at("include_workdir")) {
            Some(b) => out.include_workdir = b,
            None => ok = false,
        }
    }
    let list = |ctx: &mut Ctx, name: &str, writable: bool| -> Option<Vec<PathBuf>> {
        f.get(name).map_or(Some(Vec::new()), |n| paths(ctx, n, &f.at(name), writable))
    };
    let read_only = list(ctx, "read_only", false);
    let read_write = list(ctx, "read_write", true);
    let executable = f.get("executable").map(|n| paths(ctx, n, &f.at("executable"), false));
    out.read_only = read_only.unwrap_or_else(|| {
        ok = false;
        Vec::new()
    });
    out.read_write = read_write.unwrap_or_else(|| {
        ok = false;
        Vec::new()
    });
    out.executable = match executable {
        Some(Some(v)) => Some(v),
        Some(None) => {
            ok = false;
            None
        }
        None => None,
    };
    ok.then_some(out)
}

fn paths(ctx: &mut Ctx, node: &Node, path: &FieldPath, writable: bool) -> Option<Vec<PathBuf>> {
    let items = seq(ctx, node, path, MAX_PATHS)?;
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = path.index(i);
        let Some(raw) = string(ctx, item, &at, usize::MAX) else {
            ok = false;
            continue;
        };
        match checks::abs_path(raw) {
            Ok("/") if writable => {
                ctx.err(&at, item.line, PolicyErrorKind::RootWritable);
                ok = false;
            }
            Ok(p) => out.push(PathBuf::from(p)),
            Err(kind) => {
                ctx.err(&at, item.line, kind);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn landlock(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<LandlockPolicy> {
    let f = Fields::read(ctx, node, path, LANDLOCK_FIELDS)?;
    let compatibility = match f.get("compatibility") {
        Some(n) => keyword(ctx, n, &f.at("compatibility"), COMPAT_TABLE, COMPAT_NAMES)?,
        None => LandlockCompatibility::default(),
    };
    Some(LandlockPolicy { compatibility })
}

fn process(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<ProcessPolicy> {
    let f = Fields::read(ctx, node, path, PROCESS_FIELDS)?;
    // `Some(None)`: absent (platform default); `None`: present but invalid.
    let mut read = |name: &str| match f.get(name) {
        Some(n) => user_spec(ctx, n, &f.at(name)).map(Some),
        None => Some(None),
    };
    let run_as_user = read("run_as_user");
    let run_as_group = read("run_as_group");
    Some(ProcessPolicy { run_as_user: run_as_user?, run_as_group: run_as_group? })
}

/// `sandbox`, or a uid/gid in 1..=4294967294 written as a number or a quoted
/// number (OpenShell stores these as strings). `root` and 0 are rejected.
fn user_spec(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<UserSpec> {
    let text = match &node.value {
        Value::Scalar { text, .. } if node.unsupported.is_none() && !node.is_null() => text.as_str(),
        _ => {
            string(ctx, node, path, 0)?;
            return None;
        }
    };
    let kind = match text {
        "sandbox" => return Some(UserSpec::Sandbox),
        "root" => PolicyErrorKind::RootUser,
        t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => match t.parse::<u64>() {
            Ok(0) => PolicyErrorKind::RootUser,
            Ok(id) if id < u64::from(u32::MAX) => {
                return u32::try_from(id).ok().map(UserSpec::Id);
            }
            _ => PolicyErrorKind::InvalidUserId { found: t.to_owned() },
        },
        t => PolicyErrorKind::InvalidUserId { found: t.to_owned() },
    };
    ctx.err(path, node.line, kind);
    None
}

fn network_policies(
    ctx: &mut Ctx,
    node: &Node,
    path: &FieldPath,
) -> Option<BTreeMap<String, crate::model::NetworkPolicy>> {
    let f = Fields::read_any(ctx, node, path)?;
    if f.len() > MAX_NETWORK_POLICIES {
        let kind = PolicyErrorKind::TooMany { count: f.len(), limit: MAX_NETWORK_POLICIES };
        ctx.err(path, node.line, kind);
        return None;
    }
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, value, key_line) in f.entries() {
        let at = path.key(name);
        if !checks::is_name(name) {
            ctx.err(&at, key_line, PolicyErrorKind::InvalidPolicyName);
            ok = false;
            continue;
        }
        match network::policy(ctx, value, &at) {
            Some(p) => {
                out.insert(name.to_owned(), p);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}
