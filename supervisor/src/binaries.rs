//! Symlinked binaries in network policies.
//!
//! Binary identity comes from the kernel (`/proc/<pid>/exe`), which names the *resolved* file: a policy
//! that lists `/usr/bin/python3` sees connections from `/usr/bin/python3.11`. So that the policy means what
//! its author wrote, every literal (non-glob) binary path is resolved inside the sandbox's root filesystem
//! when the policy is loaded, and the resolved path is added next to the written one. Globs are left as
//! written: they already match the resolved names they were written for, or they do not.
//!
//! Residual risk: a symlink changed after load keeps the old alias until the next reload.

use std::path::{Component, Path, PathBuf};

use openshell_policy::{BinaryMatcher, Policy};

/// Symlinks followed before a path is considered a loop (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// `policy` with, after each literal binary path that is a symlink under `root`, the path it resolves to.
pub fn with_resolved_binaries(mut policy: Policy, root: &Path) -> Policy {
    for net in policy.network_policies.values_mut() {
        let mut out: Vec<BinaryMatcher> = Vec::with_capacity(net.binaries.len());
        for b in net.binaries.drain(..) {
            let alias = if is_glob(&b.path) { None } else { resolve_in_root(root, Path::new(&b.path)) };
            out.push(b.clone());
            if let Some(resolved) = alias.and_then(|p| p.to_str().map(str::to_owned))
                && resolved != b.path
                && !out.iter().any(|e| e.path == resolved)
            {
                out.push(BinaryMatcher { path: resolved });
            }
        }
        net.binaries = out;
    }
    policy
}

fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// Resolves `path` as the sandbox would see it: symlinks are followed, absolute link targets are taken
/// relative to `root`, `..` never climbs above `root`. `None` if a component is missing or on a loop.
pub fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut resolved = PathBuf::from("/");
    let mut links = 0usize;
    while let Some(next) = pending.pop() {
        let mut components: Vec<Component<'_>> = next.components().collect();
        components.reverse();
        while let Some(c) = components.pop() {
            match c {
                Component::RootDir => resolved = PathBuf::from("/"),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let on_host = root.join(candidate.strip_prefix("/").ok()?);
                    let meta = std::fs::symlink_metadata(&on_host).ok()?;
                    if meta.file_type().is_symlink() {
                        links += 1;
                        if links > MAX_LINKS {
                            return None;
                        }
                        let target = std::fs::read_link(&on_host).ok()?;
                        // Finish the link target first, then the rest of this path.
                        let rest: PathBuf = components.iter().rev().map(|c| c.as_os_str()).collect();
                        pending.push(rest);
                        pending.push(target);
                        break;
                    }
                    resolved = candidate;
                }
            }
        }
    }
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_relative_and_absolute_links_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("python3.11"), b"").unwrap();
        symlink("python3.11", bin.join("python3")).unwrap();
        symlink("/usr/bin/python3", bin.join("python")).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        symlink("../usr/bin/python", root.path().join("bin/py")).unwrap();
        let r = |p: &str| resolve_in_root(root.path(), Path::new(p));
        assert_eq!(r("/usr/bin/python3"), Some(PathBuf::from("/usr/bin/python3.11")));
        assert_eq!(r("/usr/bin/python"), Some(PathBuf::from("/usr/bin/python3.11")));
        assert_eq!(r("/bin/py"), Some(PathBuf::from("/usr/bin/python3.11")));
        assert_eq!(r("/usr/bin/missing"), None);
    }

    #[test]
    fn links_cannot_escape_the_root_and_loops_end() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../../etc", root.path().join("up")).unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        assert_eq!(resolve_in_root(root.path(), Path::new("/up")), Some(PathBuf::from("/etc")));
        symlink("b", root.path().join("a")).unwrap();
        symlink("a", root.path().join("b")).unwrap();
        assert_eq!(resolve_in_root(root.path(), Path::new("/a")), None);
    }

    #[test]
    fn policy_gains_aliases_for_symlinked_binaries_only() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("python3.11"), b"").unwrap();
        std::fs::write(bin.join("curl"), b"").unwrap();
        symlink("python3.11", bin.join("python3")).unwrap();
        let yaml = "version: 1\nnetwork_policies:\n  p:\n    endpoints: [{host: a.example.com, port: 443}]\n    binaries: [{path: /usr/bin/python3}, {path: /usr/bin/curl}, {path: /usr/bin/py*}]\n";
        let policy = with_resolved_binaries(Policy::from_yaml(yaml).unwrap(), root.path());
        let paths: Vec<&str> =
            policy.network_policies["p"].binaries.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(paths, ["/usr/bin/python3", "/usr/bin/python3.11", "/usr/bin/curl", "/usr/bin/py*"]);
    }
}
