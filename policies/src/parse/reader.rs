//! Typed reads from the YAML tree with error collection.
//!
//! Concern: a schema that is enforced everywhere, not only where someone
//! remembered. Every mapping is read through [`Fields`], which reports unknown
//! fields against an explicit list; every scalar is read through a typed
//! accessor that reports the wrong type with path and line. Errors are
//! collected in [`Ctx`] so one pass reports all of them. Nodes flagged by the
//! YAML lint (aliases, tags) are skipped silently: they are already reported.

use std::collections::HashSet;

use crate::error::{PolicyError, PolicyErrorKind};
use crate::path::FieldPath;
use crate::yaml::{Node, Value, is_bool};

/// Error collector for one conversion.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub(crate) errors: Vec<PolicyError>,
}

impl Ctx {
    /// Record one problem.
    pub(crate) fn err(&mut self, path: &FieldPath, line: usize, kind: PolicyErrorKind) {
        self.errors.push(PolicyError::new(path.to_string(), Some(line), kind));
    }
}

/// The fields of one mapping, first occurrence of each key.
pub(crate) struct Fields<'a> {
    pub(crate) path: FieldPath,
    pub(crate) line: usize,
    entries: Vec<(&'a str, &'a Node, usize)>,
}

impl<'a> Fields<'a> {
    /// Read a mapping whose keys must be in `allowed`.
    pub(crate) fn read(
        ctx: &mut Ctx,
        node: &'a Node,
        path: &FieldPath,
        allowed: &'static [&'static str],
    ) -> Option<Self> {
        Self::read_inner(ctx, node, path, Some(allowed))
    }

    /// Read a mapping with free-form keys (names chosen by the author).
    pub(crate) fn read_any(ctx: &mut Ctx, node: &'a Node, path: &FieldPath) -> Option<Self> {
        Self::read_inner(ctx, node, path, None)
    }

    fn read_inner(
        ctx: &mut Ctx,
        node: &'a Node,
        path: &FieldPath,
        allowed: Option<&'static [&'static str]>,
    ) -> Option<Self> {
        if node.unsupported.is_some() {
            return None;
        }
        let Value::Map(raw) = &node.value else {
            let found = node.type_name();
            ctx.err(path, node.line, PolicyErrorKind::WrongType { expected: "a mapping", found });
            return None;
        };
        let mut entries: Vec<(&'a str, &'a Node, usize)> = Vec::with_capacity(raw.len());
        let mut seen = HashSet::with_capacity(raw.len());
        for (k, v) in raw {
            let Some(key) = k.as_key() else { continue };
            if !seen.insert(key) {
                continue;
            }
            if let Some(allowed) = allowed
                && !allowed.contains(&key)
            {
                ctx.err(
                    &path.key(key),
                    k.line,
                    PolicyErrorKind::UnknownField { field: key.to_owned(), expected: allowed },
                );
                continue;
            }
            // In schema'd mappings `key:` (null) means "absent"; under free-form
            // keys (policy names, query parameters) it is kept and reported.
            if allowed.is_none() || !v.is_null() {
                entries.push((key, v, k.line));
            }
        }
        Some(Self { path: path.clone(), line: node.line, entries })
    }

    /// The value of `name`, if present and not null.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _, _)| *k == name).map(|(_, v, _)| *v)
    }

    /// The line of the `name` key (the mapping's line when absent).
    pub(crate) fn key_line(&self, name: &str) -> usize {
        self.entries.iter().find(|(k, _, _)| *k == name).map_or(self.line, |(_, _, l)| *l)
    }

    /// The path of field `name`.
    pub(crate) fn at(&self, name: &str) -> FieldPath {
        self.path.key(name)
    }

    /// All (key, value, key line) entries in document order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&'a str, &'a Node, usize)> + '_ {
        self.entries.iter().copied()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A non-null scalar read as text (plain numbers and booleans included, as
/// OpenShell's serde-based loader does for string fields).
pub(crate) fn string<'a>(ctx: &mut Ctx, node: &'a Node, path: &FieldPath, max: usize) -> Option<&'a str> {
    if node.unsupported.is_some() {
        return None;
    }
    match &node.value {
        Value::Scalar { text, .. } if !node.is_null() => {
            if text.len() > max {
                ctx.err(path, node.line, PolicyErrorKind::TooLong { len: text.len(), limit: max });
                return None;
            }
            Some(text)
        }
        _ => {
            let found = node.type_name();
            ctx.err(path, node.line, PolicyErrorKind::WrongType { expected: "a string", found });
            None
        }
    }
}

/// A plain `true` / `false`.
pub(crate) fn boolean(ctx: &mut Ctx, node: &Node, path: &FieldPath) -> Option<bool> {
    if node.unsupported.is_some() {
        return None;
    }
    match &node.value {
        Value::Scalar { text, plain: true } if is_bool(text) => Some(text.eq_ignore_ascii_case("true")),
        _ => {
            let found = node.type_name();
            ctx.err(path, node.line, PolicyErrorKind::WrongType { expected: "true or false", found });
            None
        }
    }
}

/// A plain decimal integer; out-of-range values saturate (callers range-check).
/// Returns the value and its source text.
pub(crate) fn integer<'a>(ctx: &mut Ctx, node: &'a Node, path: &FieldPath) -> Option<(i64, &'a str)> {
    if node.unsupported.is_some() {
        return None;
    }
    if let Value::Scalar { text, plain: true } = &node.value {
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let value =
                text.parse::<i64>().unwrap_or(if text.starts_with('-') { i64::MIN } else { i64::MAX });
            return Some((value, text));
        }
    }
    let found = node.type_name();
    ctx.err(path, node.line, PolicyErrorKind::WrongType { expected: "an integer", found });
    None
}

/// A list with at most `limit` items.
pub(crate) fn seq<'a>(ctx: &mut Ctx, node: &'a Node, path: &FieldPath, limit: usize) -> Option<&'a [Node]> {
    if node.unsupported.is_some() {
        return None;
    }
    match &node.value {
        Value::Seq(items) if items.len() > limit => {
            ctx.err(path, node.line, PolicyErrorKind::TooMany { count: items.len(), limit });
            None
        }
        Value::Seq(items) => Some(items),
        _ => {
            let found = node.type_name();
            ctx.err(path, node.line, PolicyErrorKind::WrongType { expected: "a list", found });
            None
        }
    }
}

/// A keyword from `table`; `names` lists the accepted spellings for the message.
pub(crate) fn keyword<T: Copy>(
    ctx: &mut Ctx,
    node: &Node,
    path: &FieldPath,
    table: &[(&str, T)],
    names: &'static [&'static str],
) -> Option<T> {
    let text = string(ctx, node, path, 64)?;
    let found = table.iter().find(|(k, _)| *k == text).map(|(_, v)| *v);
    if found.is_none() {
        ctx.err(path, node.line, PolicyErrorKind::UnknownValue { found: text.to_owned(), expected: names });
    }
    found
}
