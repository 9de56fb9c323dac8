//! Small, allocation-light readers of `/proc` used by binary identity.
//!
//! Threat handled: trusting what a process says about itself. Everything here is
//! the kernel's view: `exe` and `fd/*` links, `status` `PPid`, `ns/pid`,
//! `task/*/children`. Nothing reads argv or the environment.
//! Residual risk: `/proc` is a snapshot; a process may exit or exec between two
//! reads. Callers treat every missing piece as "unknown" and deny.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;

/// Root of a procfs mount (normally `/proc`; a fixture directory in tests).
#[derive(Debug, Clone)]
pub(crate) struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub(crate) fn pid_path(&self, pid: i32, rest: &str) -> PathBuf {
        let mut p = self.root.join(pid.to_string());
        if !rest.is_empty() {
            p.push(rest);
        }
        p
    }

    /// `/proc/<pid>/net/<file>` as text.
    pub(crate) fn net_table(&self, pid: i32, file: &str) -> io::Result<String> {
        fs::read_to_string(self.pid_path(pid, "net").join(file))
    }

    /// The pid namespace link text (`pid:[4026531836]`).
    pub(crate) fn pid_ns(&self, pid: i32) -> Option<PathBuf> {
        fs::read_link(self.pid_path(pid, "ns/pid")).ok()
    }

    /// Whether any fd of `pid` is `socket:[inode]`.
    #[cfg(test)]
    pub(crate) fn owns_socket(&self, pid: i32, inode: u64) -> bool {
        self.socket_fd(pid, inode).is_some()
    }

    /// The fd number under which `pid` holds `socket:[inode]`, if it does.
    pub(crate) fn socket_fd(&self, pid: i32, inode: u64) -> Option<u32> {
        let want = socket_link(inode);
        let dir = fs::read_dir(self.pid_path(pid, "fd")).ok()?;
        dir.flatten()
            .find(|e| fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str()))
            .and_then(|e| e.file_name().to_str()?.parse().ok())
    }

    /// Whether fd `fd` of `pid` is `socket:[inode]` (one `readlink`).
    pub(crate) fn fd_is_socket(&self, pid: i32, fd: u32, inode: u64) -> bool {
        let mut p = self.pid_path(pid, "fd");
        p.push(fd.to_string());
        fs::read_link(p).is_ok_and(|t| t.as_os_str() == socket_link(inode).as_str())
    }

    /// The parent pid, from `/proc/<pid>/stat` (several times cheaper for the
    /// kernel to produce than `status`).
    pub(crate) fn ppid(&self, pid: i32) -> Option<i32> {
        // One read: the line is a few hundred bytes (`comm` is at most 16),
        // and a short read still holds the leading fields.
        let mut buf = [0u8; 1024];
        let n = fs::File::open(self.pid_path(pid, "stat")).and_then(|mut f| f.read(&mut buf)).ok()?;
        parse_stat_ppid(&buf[..n])
    }

    /// `readlink /proc/<pid>/exe`.
    pub(crate) fn exe_link(&self, pid: i32) -> io::Result<PathBuf> {
        fs::read_link(self.pid_path(pid, "exe"))
    }

    /// Path through which the executable itself can be opened.
    pub(crate) fn exe_path(&self, pid: i32) -> PathBuf {
        self.pid_path(pid, "exe")
    }

    /// `init` and all its descendants, breadth first (via `task/*/children`).
    /// Bounded by `limit` pids.
    pub(crate) fn descendants(&self, init: i32, limit: usize) -> Vec<i32> {
        let mut out = vec![init];
        let mut seen = std::collections::HashSet::from([init]);
        let mut i = 0;
        while i < out.len() && out.len() < limit {
            let pid = out[i];
            i += 1;
            let Ok(tasks) = fs::read_dir(self.pid_path(pid, "task")) else { continue };
            for task in tasks.flatten() {
                let Ok(text) = fs::read_to_string(task.path().join("children")) else { continue };
                for child in text.split_ascii_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                    if out.len() < limit && seen.insert(child) {
                        out.push(child);
                    }
                }
            }
        }
        out
    }

    /// Every numeric entry of the procfs root (all pids visible to us).
    pub(crate) fn all_pids(&self) -> Vec<i32> {
        fs::read_dir(&self.root)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }
}

fn socket_link(inode: u64) -> String {
    format!("socket:[{inode}]")
}

/// Extracts the parent pid from a `stat` line: `pid (comm) state ppid ...`.
/// The command name may contain spaces and parentheses; it ends at the last `)`.
/// `comm` is raw bytes (any process may name itself anything), so this works on
/// bytes; only the numeric field after it is decoded.
pub(crate) fn parse_stat_ppid(stat: &[u8]) -> Option<i32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn ppid_parser() {
        let stat = b"42 (bash) S 7 42 42 34816 42 4194304 1 0 0 0 0 0 0 0 20 0 1 0 5 0 0\n";
        assert_eq!(parse_stat_ppid(stat), Some(7));
        assert_eq!(parse_stat_ppid(b"42 (a) b) (c) R 9 1 1\n"), Some(9), "comm with ) and spaces");
        assert_eq!(parse_stat_ppid(b"42 (\xff\xfe) S 11 1 1\n"), Some(11), "comm that is not UTF-8");
        assert_eq!(parse_stat_ppid(b"42 (x) S y\n"), None);
        assert_eq!(parse_stat_ppid(b""), None);
        assert_eq!(parse_stat_ppid(b"42 (x)"), None);
        let me = ProcFs::new("/proc").ppid(i32::try_from(std::process::id()).unwrap());
        assert_eq!(me, Some(i32::try_from(std::os::unix::process::parent_id()).unwrap()));
    }

    #[test]
    fn fixture_tree_and_fds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mk = |pid: i32, children: &str, sockets: &[u64]| {
            let task = root.join(format!("{pid}/task/{pid}"));
            fs::create_dir_all(&task).unwrap();
            fs::write(task.join("children"), children).unwrap();
            let fd = root.join(format!("{pid}/fd"));
            fs::create_dir_all(&fd).unwrap();
            symlink("/dev/null", fd.join("0")).unwrap();
            for (i, s) in sockets.iter().enumerate() {
                symlink(format!("socket:[{s}]"), fd.join((i + 3).to_string())).unwrap();
            }
        };
        mk(10, "11 12 ", &[]);
        mk(11, "13", &[5]);
        mk(12, "", &[6, 7]);
        mk(13, "", &[8]);
        fs::create_dir_all(root.join("self")).unwrap();
        let p = ProcFs::new(root);
        assert_eq!(p.descendants(10, 100), vec![10, 11, 12, 13]);
        assert_eq!(p.descendants(10, 2), vec![10, 11]);
        assert!(p.owns_socket(12, 7));
        assert!(!p.owns_socket(12, 8));
        assert!(!p.owns_socket(99, 8));
        assert_eq!(p.socket_fd(12, 7), Some(4));
        assert!(p.fd_is_socket(12, 4, 7));
        assert!(!p.fd_is_socket(12, 3, 7));
        assert!(!p.fd_is_socket(12, 9, 7));
        let mut all = p.all_pids();
        all.sort_unstable();
        assert_eq!(all, vec![10, 11, 12, 13]);
    }
}
