//! Glob matching for binary paths and HTTP paths.
//!
//! Concern: the validator, the Rust matcher and the Rego decision disagreeing
//! about what a pattern means (a known complaint about the reference system).
//! All three use the same engine with the same options: `globset` with
//! `literal_separator(true)`, exactly what regorus' `glob.match(pattern, ["/"],
//! value)` builds. So `*`, `?` and `[...]` never cross `/`; `**` as a whole
//! path component spans any number of components (`/usr/**` matches `/usr/bin/x`
//! but not `/usr` itself); `{a,b}` alternates; `\` escapes. A pattern that
//! compiles here compiles in Rego, and matches the same strings.
//! Residual risk: patterns are compiled per call on this path (tests, CLI); the
//! hot path goes through the decision cache.

use globset::{Glob, GlobBuilder, GlobMatcher};

/// Compile `pattern` with the options regorus uses for `glob.match(p, ["/"], v)`.
///
/// # Errors
/// The globset error text when the pattern is invalid.
pub(crate) fn compile(pattern: &str) -> Result<GlobMatcher, String> {
    build(pattern).map(|g| g.compile_matcher()).map_err(|e| e.kind().to_string())
}

fn build(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// Whether the executable `path` matches the binary `pattern` of a network
/// policy, with exactly the semantics of the bundled Rego module
/// (`glob.match(pattern, ["/"], path)`). An invalid pattern matches nothing.
#[must_use]
pub fn binary_matches(pattern: &str, path: &str) -> bool {
    compile(pattern).is_ok_and(|m| m.is_match(path))
}

/// Whether an HTTP request path matches a rule's path glob (same semantics as
/// [`binary_matches`]: `/` separates segments).
#[must_use]
pub fn path_matches(pattern: &str, path: &str) -> bool {
    binary_matches(pattern, path)
}

/// Whether a query parameter value matches a rule's query glob. Unlike paths,
/// values have no segments: `*` and `?` match any character, `/` included (so a
/// `deny_rules` glob `*` cannot be dodged with a value containing `/`).
/// An invalid pattern matches nothing.
#[must_use]
pub fn value_matches(pattern: &str, value: &str) -> bool {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .is_ok_and(|g| g.compile_matcher().is_match(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_in_component() {
        assert!(binary_matches("/usr/bin/*", "/usr/bin/curl"));
        assert!(!binary_matches("/usr/bin/*", "/usr/bin/sub/curl"));
        assert!(binary_matches("/usr/bin/python3*", "/usr/bin/python3.12"));
        assert!(!binary_matches("/usr/*/curl", "/usr/local/bin/curl"));
    }

    #[test]
    fn double_star_spans_components() {
        assert!(binary_matches("/usr/**", "/usr/bin/curl"));
        assert!(binary_matches("/usr/**", "/usr/local/bin/node"));
        assert!(!binary_matches("/usr/**", "/usr"));
        assert!(binary_matches("/**/bin/node", "/opt/node/bin/node"));
        assert!(binary_matches("/**/bin/node", "/bin/node"));
        assert!(binary_matches("/**", "/anything/at/all"));
    }

    #[test]
    fn exact_and_classes() {
        assert!(binary_matches("/usr/bin/git", "/usr/bin/git"));
        assert!(!binary_matches("/usr/bin/git", "/usr/bin/git2"));
        assert!(binary_matches("/usr/bin/python3.1[0-9]", "/usr/bin/python3.12"));
        assert!(binary_matches("/usr/bin/{curl,wget}", "/usr/bin/wget"));
        assert!(!binary_matches("/usr/bin/?", "/usr/bin//"));
    }

    #[test]
    fn query_values_have_no_segments() {
        assert!(value_matches("*", "a/b"));
        assert!(value_matches("v1*", "v1/x"));
        assert!(!value_matches("v1*", "v2"));
        assert!(value_matches("{read,list}", "list"));
        assert!(!value_matches("[", "["));
    }

    #[test]
    fn invalid_matches_nothing() {
        assert!(compile("/usr/bin/[").is_err());
        assert!(!binary_matches("/usr/bin/[", "/usr/bin/["));
    }
}
