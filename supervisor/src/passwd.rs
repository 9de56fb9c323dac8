//! User and group lookup in a root filesystem's `/etc/passwd` and `/etc/group`.
//!
//! The supervisor is a static glibc binary, where NSS (`getpwnam`) does not work reliably, and the names
//! must be resolved in the *sandbox's* root filesystem, not the host's. So the files are read by hand.

use std::fs;
use std::path::Path;

/// The ids of a named account, as found in `<root>/etc/passwd` and `<root>/etc/group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// Looks `name` up in `<root>/etc/passwd`. A missing or unreadable file means "not found": callers fall back
/// to a fixed default and say so.
pub fn lookup_user(root: &Path, name: &str) -> Option<Account> {
    let text = fs::read_to_string(root.join("etc/passwd")).ok()?;
    parse_passwd(&text, name)
}

/// Looks the group `name` up in `<root>/etc/group`.
pub fn lookup_group(root: &Path, name: &str) -> Option<u32> {
    let text = fs::read_to_string(root.join("etc/group")).ok()?;
    parse_group(&text, name)
}

fn parse_passwd(text: &str, name: &str) -> Option<Account> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some(Account { uid, gid })
    })
}

fn parse_group(text: &str, name: &str) -> Option<u32> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_user_and_group() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n#sandbox:x:1:1::/:/bin/sh\nsandbox:x:1500:1600::/sandbox:/bin/sh\n";
        assert_eq!(parse_passwd(passwd, "sandbox"), Some(Account { uid: 1500, gid: 1600 }));
        assert_eq!(parse_passwd(passwd, "nobody"), None);
        assert_eq!(parse_group("sandbox:x:1600:\n", "sandbox"), Some(1600));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse_passwd("sandbox:x:notanumber:1\nsandbox\n", "sandbox"), None);
    }
}
