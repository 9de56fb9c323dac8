//! Client-side checks of user input, done before any RPC so that mistakes cost nothing and the message
//! says exactly what is wrong: sandbox names and `KEY=VALUE` pairs.

use std::collections::HashMap;

/// Longest sandbox name (a DNS label, so that names can become host names).
pub const MAX_NAME_LEN: usize = 63;

/// Checks a sandbox name: lower-case letters, digits and '-', 1 to 63 characters, starting with a letter,
/// not ending with '-'.
pub fn validate_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("invalid sandbox name: it is empty".into());
    };
    if let Some((i, c)) =
        name.chars().enumerate().find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "invalid sandbox name `{}`: character {:?} at position {} is not allowed (use lower-case letters, digits and '-')",
            name.escape_default(),
            c,
            i + 1
        ));
    }
    // All ASCII from here on, so bytes are characters.
    let len = name.len();
    if len > MAX_NAME_LEN {
        return Err(format!(
            "invalid sandbox name `{name}`: it has {len} characters, at most {MAX_NAME_LEN} are allowed"
        ));
    }
    if !first.is_ascii_lowercase() {
        return Err(format!("invalid sandbox name `{name}`: it must start with a lower-case letter"));
    }
    if name.ends_with('-') {
        return Err(format!("invalid sandbox name `{name}`: it must not end with '-'"));
    }
    Ok(())
}

/// What a `KEY=VALUE` pair is for; decides the key syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// `--env`: the key must be a portable environment variable name.
    Env,
    /// `--label`: letters, digits, '-', '_', '.', '/'.
    Label,
}

impl PairKind {
    fn flag(self) -> &'static str {
        match self {
            Self::Env => "--env",
            Self::Label => "--label",
        }
    }
}

/// Parses one `KEY=VALUE`. The value may be empty and may contain '='.
pub fn parse_pair(text: &str, kind: PairKind) -> Result<(String, String), String> {
    let flag = kind.flag();
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("invalid {flag} `{}`: expected KEY=VALUE", text.escape_default()));
    };
    if key.is_empty() {
        return Err(format!("invalid {flag} `{}`: the key before '=' is empty", text.escape_default()));
    }
    let key_ok = match kind {
        PairKind::Env => {
            key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.starts_with(|c: char| c.is_ascii_digit())
        }
        PairKind::Label => {
            key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        }
    };
    if !key_ok {
        let rule = match kind {
            PairKind::Env => "letters, digits and '_', not starting with a digit",
            PairKind::Label => "letters, digits, '-', '_', '.' and '/'",
        };
        return Err(format!("invalid {flag} key `{}`: use {rule}", key.escape_default()));
    }
    if value.contains('\0') {
        return Err(format!("invalid {flag} `{key}`: the value contains a NUL byte"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Parses every pair; a key given twice is an error (the intent is ambiguous).
pub fn parse_pairs(texts: &[String], kind: PairKind) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for t in texts {
        let (k, v) = parse_pair(t, kind)?;
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("{} `{k}` is given twice", kind.flag()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for n in ["a", "agent-1", "x9", &"a".repeat(63), "a-b-c"] {
            assert_eq!(validate_name(n), Ok(()), "{n}");
        }
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("Agent", "character 'A' at position 1"),
            ("a_b", "character '_' at position 2"),
            ("1abc", "must start with a lower-case letter"),
            ("-abc", "must start with a lower-case letter"),
            ("abc-", "must not end with '-'"),
            ("a b", "character ' ' at position 2"),
            ("é", "character 'é'"),
        ];
        for (name, want) in cases {
            let err = validate_name(name).unwrap_err();
            assert!(err.contains(want), "{name:?}: {err}");
        }
        let long = "a".repeat(64);
        assert!(validate_name(&long).unwrap_err().contains("64 characters, at most 63"));
    }

    #[test]
    fn pairs_parse() {
        assert_eq!(parse_pair("A=b", PairKind::Env), Ok(("A".into(), "b".into())));
        assert_eq!(parse_pair("A=", PairKind::Env), Ok(("A".into(), String::new())));
        assert_eq!(parse_pair("URL=a=b", PairKind::Env), Ok(("URL".into(), "a=b".into())));
        assert_eq!(parse_pair("team/app.v=x", PairKind::Label), Ok(("team/app.v".into(), "x".into())));
    }

    #[test]
    fn bad_pairs_are_explained() {
        assert!(parse_pair("A", PairKind::Env).unwrap_err().contains("expected KEY=VALUE"));
        assert!(parse_pair("=v", PairKind::Label).unwrap_err().contains("key before '=' is empty"));
        assert!(parse_pair("1A=v", PairKind::Env).unwrap_err().contains("not starting with a digit"));
        assert!(parse_pair("A-B=v", PairKind::Env).unwrap_err().contains("--env key `A-B`"));
        assert!(parse_pair("a b=v", PairKind::Label).unwrap_err().contains("--label key"));
        assert!(parse_pair("A=\0", PairKind::Env).unwrap_err().contains("NUL"));
        let twice = parse_pairs(&["A=1".into(), "A=2".into()], PairKind::Env).unwrap_err();
        assert!(twice.contains("given twice"), "{twice}");
    }
}
