//! Sandbox names (chosen by people) and ids (opaque, never reused).

use rand::Rng;

pub const MAX_NAME_LEN: usize = 63;

/// Lower-case letters, digits and '-', 1 to 63 characters, starting with a letter, not ending with '-'.
/// The error says exactly what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("sandbox name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "sandbox name `{}` is {} characters long; at most {MAX_NAME_LEN}",
            name,
            name.len()
        ));
    }
    if let Some((i, c)) = name.char_indices().find(|(_, c)| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        return Err(format!(
            "sandbox name `{}` contains {:?} at position {}: only lower-case letters, digits and '-' are allowed",
            name.escape_debug(),
            c,
            i + 1
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("sandbox name `{name}` must start with a lower-case letter"));
    }
    if name.ends_with('-') {
        return Err(format!("sandbox name `{name}` must not end with '-'"));
    }
    Ok(())
}

const ADJECTIVES: &[&str] = &[
    "amber", "brisk", "calm", "deft", "eager", "fond", "gentle", "hardy", "keen", "lucid", "merry", "noble",
];
const NOUNS: &[&str] = &[
    "otter", "heron", "lynx", "finch", "badger", "marten", "ibis", "wren", "stoat", "crane", "vole", "pika",
];

/// `adjective-noun-xxxx`, e.g. `brisk-otter-3f2a`.
#[must_use]
pub fn generate_name() -> String {
    let mut rng = rand::rng();
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let noun = NOUNS[rng.random_range(0..NOUNS.len())];
    format!("{adjective}-{noun}-{:04x}", rng.random::<u16>())
}

/// `sbx-` and 16 hex digits.
#[must_use]
pub fn generate_id() -> String {
    format!("sbx-{:016x}", rand::rng().random::<u64>())
}

/// Environment variable names the agent may be given.
pub fn validate_env_name(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "environment variable name `{}` is invalid (letters, digits, '_'; not starting with a digit)",
            key.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("dev-1").is_ok());
        assert!(validate_name(&"a".repeat(63)).is_ok());
        assert!(validate_name(&"a".repeat(64)).unwrap_err().contains("at most 63"));
        assert!(validate_name("Dev").unwrap_err().contains("'D'"));
        assert!(validate_name("1dev").unwrap_err().contains("start with"));
        assert!(validate_name("dev-").unwrap_err().contains("end with"));
        assert!(validate_name("de v").unwrap_err().contains("position 3"));
        assert!(validate_name("").is_err());
        for _ in 0..100 {
            assert_eq!(validate_name(&generate_name()), Ok(()));
        }
        assert!(generate_id().starts_with("sbx-"));
        assert!(validate_env_name("A_1").is_ok());
        assert!(validate_env_name("1A").is_err());
        assert!(validate_env_name("A=B").is_err());
    }
}
