//! Value checks shared by the section parsers: paths, names, methods, globs.
//!
//! Concern: values that mean something other than they appear to. Paths must
//! be absolute and normalized (no `..`, `.` or `//`) so Landlock rules and
//! binary patterns name exactly what they say and cannot climb out of a
//! directory; names are restricted to a small alphabet so they are safe in
//! paths, logs and hints; methods are HTTP tokens; globs must compile with the
//! same engine the runtime uses.

use crate::error::PolicyErrorKind;
use crate::limits::{MAX_COMPONENT_LEN, MAX_NAME_LEN, MAX_PATH_LEN};

/// Validate an absolute path (or a binary pattern) and return it with one
/// trailing `/` removed (`/usr/` -> `/usr`; `/` stays `/`).
pub(crate) fn abs_path(raw: &str) -> Result<&str, PolicyErrorKind> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PolicyErrorKind::TooLong { len: raw.len(), limit: MAX_PATH_LEN });
    }
    if raw.contains('\0') {
        return Err(PolicyErrorKind::PathNul);
    }
    if !raw.starts_with('/') {
        return Err(PolicyErrorKind::PathNotAbsolute);
    }
    let path = if raw.len() > 1 { raw.strip_suffix('/').unwrap_or(raw) } else { raw };
    if path.len() > 1 {
        for component in path[1..].split('/') {
            if component.len() > MAX_COMPONENT_LEN {
                return Err(PolicyErrorKind::ComponentTooLong {
                    len: component.len(),
                    limit: MAX_COMPONENT_LEN,
                });
            }
            let found = match component {
                "" => "//",
                "." => ".",
                ".." => "..",
                _ => continue,
            };
            return Err(PolicyErrorKind::PathNotNormalized { found });
        }
    }
    Ok(path)
}

/// `[a-zA-Z0-9_.-]{1,128}`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An HTTP method token (RFC 9110 `token`), at most 32 characters.
pub(crate) fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A glob the runtime (globset, `/`-separated) accepts.
pub(crate) fn glob(pattern: &str) -> Result<(), PolicyErrorKind> {
    crate::glob::compile(pattern).map(drop).map_err(|detail| PolicyErrorKind::InvalidGlob { detail })
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlong_component_is_rejected() {
        let long = format!("/usr/{}", "a".repeat(256));
        assert!(matches!(
            super::abs_path(&long),
            Err(super::PolicyErrorKind::ComponentTooLong { len: 256, .. })
        ));
        assert!(super::abs_path(&format!("/usr/{}", "a".repeat(255))).is_ok());
    }

    use super::*;

    #[test]
    fn paths() {
        assert_eq!(abs_path("/usr/"), Ok("/usr"));
        assert_eq!(abs_path("/"), Ok("/"));
        assert_eq!(abs_path("usr"), Err(PolicyErrorKind::PathNotAbsolute));
        assert_eq!(abs_path("/a/../b"), Err(PolicyErrorKind::PathNotNormalized { found: ".." }));
        assert_eq!(abs_path("/a/./b"), Err(PolicyErrorKind::PathNotNormalized { found: "." }));
        assert_eq!(abs_path("/a//b"), Err(PolicyErrorKind::PathNotNormalized { found: "//" }));
        assert_eq!(abs_path("/a/.."), Err(PolicyErrorKind::PathNotNormalized { found: ".." }));
        assert_eq!(abs_path("/a\0"), Err(PolicyErrorKind::PathNul));
        assert_eq!(abs_path("/a/.hidden/..x"), Ok("/a/.hidden/..x"));
    }

    #[test]
    fn tokens_and_names() {
        assert!(is_http_token("GET"));
        assert!(is_http_token("PROPFIND"));
        assert!(!is_http_token("GET /"));
        assert!(!is_http_token(""));
        assert!(is_name("github.com-api_v2"));
        assert!(!is_name("a/b"));
        assert!(!is_name(&"x".repeat(129)));
    }
}
