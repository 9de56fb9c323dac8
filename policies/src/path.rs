//! Field paths (`network_policies.github.endpoints[0].host`) for error messages.
//!
//! Concern: unambiguous error locations. Keys that are not plain identifiers
//! (policy names may contain `.`) are quoted (`network_policies["a.b"]`) so a path
//! always names exactly one field. No security impact.

use std::fmt;

/// A path from the document root to a field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    /// The document root, displayed as `(root)`.
    pub(crate) fn root() -> Self {
        Self(String::new())
    }

    /// The path of mapping key `key` below this one.
    pub(crate) fn key(&self, key: &str) -> Self {
        let plain =
            !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let mut s = self.0.clone();
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            s.push('[');
            s.push_str(&serde_json::Value::String(key.to_owned()).to_string());
            s.push(']');
        }
        Self(s)
    }

    /// The path of list item `i` below this one.
    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str("(root)") } else { f.write_str(&self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let p = FieldPath::root().key("network_policies").key("github").key("endpoints").index(0).key("host");
        assert_eq!(p.to_string(), "network_policies.github.endpoints[0].host");
        assert_eq!(
            FieldPath::root().key("network_policies").key("a.b").to_string(),
            "network_policies[\"a.b\"]"
        );
        assert_eq!(FieldPath::root().to_string(), "(root)");
    }
}
