//! A small line-annotated YAML tree built from yaml-rust2's event parser.
//!
//! Concern: hostile or confusing YAML. The builder bounds input size, nesting
//! depth and node count while streaming events (no recursion over untrusted
//! depth), accepts exactly one document whose root is a mapping, and records
//! YAML features the policy schema does not use (anchors, aliases, tags,
//! non-string keys, duplicate keys) so [`lint`] can report each with its path
//! and line: aliases can never expand ("billion laughs"), and a duplicated key
//! can never silently override an earlier one. A panic inside the parser crate
//! is caught and reported as a syntax error, so a hostile policy cannot take
//! down a long-running process that loads it. Residual risk: the parser crate's
//! own CPU cost on adversarial input, bounded by the 1 MiB size limit.

use std::collections::HashSet;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use crate::error::{PolicyError, PolicyErrorKind};
use crate::limits::{MAX_DEPTH, MAX_NODES, MAX_POLICY_BYTES};
use crate::path::FieldPath;

/// A YAML node and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) line: usize,
    /// A YAML feature the schema does not allow on this node.
    pub(crate) unsupported: Option<Unsupported>,
}

/// The shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// Text and whether it was written plain (unquoted, so it may be a number, bool or null).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; duplicates are kept for [`lint`] to report.
    Map(Vec<(Node, Node)>),
}

/// YAML features rejected by the policy schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Unsupported {
    AnchorOrAlias,
    Tag(String),
}

impl Node {
    /// Whether this is a plain `~`, `null`, or empty scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's type for "expected X, found Y" messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { text, plain: true } if is_bool(text) => "a boolean",
            Value::Scalar { text, plain: true } if text.parse::<f64>().is_ok() => "a number",
            Value::Scalar { .. } => "a string",
        }
    }

    /// The key text when this node is usable as a mapping key.
    pub(crate) fn as_key(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }
}

pub(crate) fn is_bool(text: &str) -> bool {
    matches!(text, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
}

enum Frame {
    Seq { line: usize, unsupported: Option<Unsupported>, items: Vec<Node> },
    Map { line: usize, unsupported: Option<Unsupported>, entries: Vec<(Node, Node)>, key: Option<Node> },
}

fn doc_error(line: Option<usize>, kind: PolicyErrorKind) -> PolicyError {
    PolicyError::new(FieldPath::root().to_string(), line, kind)
}

fn unsupported(anchor: usize, tag: Option<yaml_rust2::parser::Tag>) -> Option<Unsupported> {
    if anchor != 0 {
        Some(Unsupported::AnchorOrAlias)
    } else {
        tag.map(|t| Unsupported::Tag(format!("{}{}", t.handle, t.suffix)))
    }
}

/// Parse `text` into a tree. Fails fast (one error) on problems that make the
/// rest of the document meaningless: size, syntax, depth, node count, document count.
pub(crate) fn parse(text: &str) -> Result<Node, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(doc_error(None, PolicyErrorKind::TooLarge { size: text.len(), limit: MAX_POLICY_BYTES }));
    }
    // The builder only touches local state, so nothing is left half-updated if
    // the parser panics.
    std::panic::catch_unwind(|| build(text)).unwrap_or_else(|_| {
        Err(doc_error(
            None,
            PolicyErrorKind::Syntax { detail: "the YAML parser failed on this input".into() },
        ))
    })
}

fn build(text: &str) -> Result<Node, PolicyError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| {
            doc_error(Some(e.marker().line()), PolicyErrorKind::Syntax { detail: e.info().to_owned() })
        })?;
        let line = mark.line();
        let node = match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => continue,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(doc_error(Some(line), PolicyErrorKind::MultipleDocuments));
                }
                continue;
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(doc_error(Some(line), PolicyErrorKind::TooDeep { limit: MAX_DEPTH }));
                }
                let (is_seq, anchor, tag) = match event {
                    Event::SequenceStart(a, t) => (true, a, t),
                    Event::MappingStart(a, t) => (false, a, t),
                    _ => continue,
                };
                let unsupported = unsupported(anchor, tag);
                stack.push(if is_seq {
                    Frame::Seq { line, unsupported, items: Vec::new() }
                } else {
                    Frame::Map { line, unsupported, entries: Vec::new(), key: None }
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { line, unsupported, items }) => {
                    Node { value: Value::Seq(items), line, unsupported }
                }
                Some(Frame::Map { line, unsupported, entries, .. }) => {
                    Node { value: Value::Map(entries), line, unsupported }
                }
                None => continue,
            },
            Event::Scalar(text, style, anchor, tag) => Node {
                value: Value::Scalar { text, plain: style == TScalarStyle::Plain },
                line,
                unsupported: unsupported(anchor, tag),
            },
            Event::Alias(_) => Node {
                value: Value::Scalar { text: String::new(), plain: true },
                line,
                unsupported: Some(Unsupported::AnchorOrAlias),
            },
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(doc_error(Some(line), PolicyErrorKind::TooManyNodes { limit: MAX_NODES }));
        }
        match stack.last_mut() {
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                Some(k) => {
                    let mut node = node;
                    // An implicit null (`key:` with nothing after it) is marked where
                    // the next token starts; report it on the key's line instead.
                    if matches!(&node.value, Value::Scalar { text, plain: true } if text.is_empty()) {
                        node.line = k.line;
                    }
                    entries.push((k, node));
                }
                None => *key = Some(node),
            },
            None => root = Some(node),
        }
    }
    let root = root.ok_or_else(|| doc_error(None, PolicyErrorKind::Empty))?;
    if root.is_null() {
        return Err(doc_error(Some(root.line), PolicyErrorKind::Empty));
    }
    if !matches!(root.value, Value::Map(_)) {
        return Err(doc_error(
            Some(root.line),
            PolicyErrorKind::WrongType { expected: "a mapping", found: root.type_name() },
        ));
    }
    Ok(root)
}

/// Report every anchor, alias, tag, non-string key and duplicate key in the
/// tree, with its path. Iterative, so depth is bounded only by the builder.
pub(crate) fn lint(root: &Node) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut todo: Vec<(&Node, FieldPath)> = vec![(root, FieldPath::root())];
    while let Some((node, path)) = todo.pop() {
        if let Some(u) = &node.unsupported {
            let kind = match u {
                Unsupported::AnchorOrAlias => PolicyErrorKind::AnchorOrAlias,
                Unsupported::Tag(tag) => PolicyErrorKind::Tag { tag: tag.clone() },
            };
            errors.push(PolicyError::new(path.to_string(), Some(node.line), kind));
        }
        match &node.value {
            Value::Scalar { .. } => {}
            Value::Seq(items) => {
                todo.extend(items.iter().enumerate().rev().map(|(i, n)| (n, path.index(i))));
            }
            Value::Map(entries) => {
                let mut seen = HashSet::new();
                let mut children = Vec::new();
                for (k, v) in entries {
                    let Some(key) = k.as_key() else {
                        errors.push(PolicyError::new(
                            path.to_string(),
                            Some(k.line),
                            PolicyErrorKind::ComplexKey,
                        ));
                        continue;
                    };
                    let child = path.key(key);
                    if k.unsupported.is_some() {
                        todo.push((k, child.clone()));
                    }
                    if !seen.insert(key) {
                        errors.push(PolicyError::new(
                            child.to_string(),
                            Some(k.line),
                            PolicyErrorKind::DuplicateKey { key: key.to_owned() },
                        ));
                        continue;
                    }
                    children.push((v, child));
                }
                todo.extend(children.into_iter().rev());
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based_and_point_at_nodes() {
        let root = parse("version: 1\nlist:\n  - a\n  - {x: 1}\n").unwrap();
        let Value::Map(entries) = &root.value else { panic!() };
        assert_eq!(entries[0].0.line, 1);
        assert_eq!(entries[1].0.line, 2);
        let Value::Seq(items) = &entries[1].1.value else { panic!() };
        assert_eq!(items[0].line, 3);
        assert_eq!(items[1].line, 4);
    }

    #[test]
    fn rejects_documents() {
        let kind = |t: &str| parse(t).unwrap_err().kind;
        assert_eq!(kind(""), PolicyErrorKind::Empty);
        assert_eq!(kind("# only a comment\n"), PolicyErrorKind::Empty);
        assert_eq!(kind("---\n"), PolicyErrorKind::Empty);
        assert_eq!(kind("a: 1\n---\nb: 2\n"), PolicyErrorKind::MultipleDocuments);
        assert!(matches!(kind("- 1\n"), PolicyErrorKind::WrongType { found: "a list", .. }));
        assert!(matches!(kind("a: [1\n"), PolicyErrorKind::Syntax { .. }));
        let deep = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(matches!(kind(&deep), PolicyErrorKind::TooDeep { .. }));
        let big = "#".repeat(MAX_POLICY_BYTES + 1);
        assert!(matches!(kind(&big), PolicyErrorKind::TooLarge { .. }));
    }

    #[test]
    fn lint_reports_yaml_features() {
        let root = parse("a: &x 1\nb: *x\nc: !!str 5\nd: 1\nd: 2\n? [k]\n: v\n").unwrap();
        let errs: Vec<String> = lint(&root).iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            [
                "a: YAML anchors and aliases are not supported; write the value out (line 1)",
                "b: YAML anchors and aliases are not supported; write the value out (line 2)",
                "c: YAML tags are not supported (found `tag:yaml.org,2002:str`) (line 3)",
                "d: duplicate key `d` (line 5)",
                "(root): mapping keys must be plain strings (line 6)",
            ]
        );
    }
}
