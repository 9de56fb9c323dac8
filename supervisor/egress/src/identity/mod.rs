//! Binary identity: which executable opened a connection we accepted.
//!
//! Threat handled: a process in the sandbox claiming to be another one. The
//! identity comes only from the kernel: the accepted connection's addresses are
//! looked up in the sandbox network namespace's TCP table to get the socket inode
//! of the agent's end, the owner of that inode is searched among the sandbox's
//! processes, and the executable is `/proc/<pid>/exe`, hashed and pinned per path
//! (see [`hash`]). Every failure is an error, and callers deny (fail closed).
//!
//! Cost: one exact `NETLINK_SOCK_DIAG` query per connection when the
//! supervisor passed a netlink socket from the sandbox netns (see [`sockdiag`]),
//! else one read of `/proc/<init>/net/tcp` (or `tcp6`); then a scan of the fds of the most recently seen owner pids before walking the
//! process tree; hashes are cached by file identity so a binary is hashed once.
//!
//! Residual risks:
//! - the identity is that of the processes holding the socket at lookup time.
//!   A socket shared between processes (fork without `CLOEXEC`, `SCM_RIGHTS`)
//!   is attributed only when every holder in the sandbox process tree runs the
//!   same executable; otherwise the connection is refused (`ambiguous_owner`).
//!   A holder that received the socket after the lookup, or a process that
//!   joined the sandbox pid namespace from outside the tree, is not seen.
//! - a process that execs between `connect()` and the lookup is identified by
//!   its new executable.
//! - interpreters are identified as the interpreter (`/usr/bin/python3`), not the
//!   script they run; ancestors are reported for context only.

mod fast;
mod hash;
mod procfs;
pub(crate) mod procnet;
mod sockdiag;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use hash::{HashStore, Pin};
use procfs::ProcFs;
use sockdiag::{Lookup, SockDiag};

/// Pids remembered as recent socket owners (checked first).
const MRU_PIDS: usize = 8;
/// Upper bound on processes walked per lookup.
const MAX_PIDS: usize = 16_384;
/// Upper bound on ancestors collected.
const MAX_ANCESTORS: usize = 64;
/// Suffix the kernel appends to `exe` links of unlinked files.
const DELETED_SUFFIX: &str = " (deleted)";

/// The executable behind a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryIdentity {
    /// Path of the executable as the sandbox sees it (`/proc/<pid>/exe`).
    pub path: String,
    /// SHA-256 (hex) of the executable file.
    pub sha256: String,
    /// Host pid of the process holding the socket.
    pub pid: i32,
    /// Executables of the parent chain up to sandbox init, nearest first.
    pub ancestors: Vec<String>,
}

/// Where binary identities come from.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// Real lookups in `/proc` for the sandbox whose init has this host pid.
    SandboxInit {
        /// Host pid of sandbox init (pid 1 of the sandbox pid namespace).
        init_pid: i32,
    },
    /// Every connection has this identity. Only for tests of the seam.
    Fixed(BinaryIdentity),
}

/// Why a connection has no trustworthy identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The connection's agent end is not in the sandbox TCP tables.
    #[error("no socket {agent} -> {ours} in the sandbox TCP table of pid {init}")]
    SocketNotFound {
        /// The agent's end (our peer address).
        agent: SocketAddr,
        /// Our end (the listener address the agent connected to).
        ours: SocketAddr,
        /// Sandbox init pid.
        init: i32,
    },
    /// A TCP table could not be read.
    #[error("cannot read /proc/{init}/net/{table}")]
    NetTable {
        /// Sandbox init pid.
        init: i32,
        /// `tcp` or `tcp6`.
        table: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No sandbox process holds the socket (it exited, or passed it outside).
    #[error("no sandbox process holds socket inode {inode}")]
    NoOwner {
        /// Socket inode.
        inode: u64,
    },
    /// The owner's executable could not be read.
    #[error("cannot read the executable of pid {pid}")]
    Exe {
        /// Host pid.
        pid: i32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The executable path is not UTF-8 and cannot be matched against the policy.
    #[error("executable path of pid {pid} is not UTF-8: {path:?}")]
    NonUtf8Path {
        /// Host pid.
        pid: i32,
        /// The path.
        path: PathBuf,
    },
    /// The executable was unlinked or replaced while running.
    #[error("executable {path} of pid {pid} was deleted or replaced while running")]
    Deleted {
        /// Host pid.
        pid: i32,
        /// The path the process was started from.
        path: String,
    },
    /// The process executed another binary while being identified.
    #[error("pid {pid} changed its executable during identification")]
    Raced {
        /// Host pid.
        pid: i32,
    },
    /// Several sandbox processes running different executables hold the socket
    /// (an inherited or passed descriptor): no single binary can be named.
    #[error("socket inode {inode} is held by processes running different executables: {}", binaries.join(", "))]
    AmbiguousOwner {
        /// Socket inode.
        inode: u64,
        /// `exe` of each holder (`pid:path`), the first found first.
        binaries: Vec<String>,
    },
    /// The path was first seen with another hash (trust on first use).
    #[error("{path} now has sha256 {now}, but {pinned} was pinned on first use")]
    BinaryChanged {
        /// Executable path.
        path: String,
        /// Hash pinned on first use.
        pinned: String,
        /// Hash seen now.
        now: String,
    },
}

impl IdentityError {
    /// Reason code used in denials and events.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Deleted { .. } | Self::BinaryChanged { .. } => "binary_changed",
            Self::AmbiguousOwner { .. } => "ambiguous_owner",
            _ => "unknown_process",
        }
    }

    /// What the user can do about it.
    #[must_use]
    pub fn hint(&self) -> String {
        match self {
            Self::Deleted { path, .. } => {
                format!(
                    "{path} was replaced while running; restart the process (binaries are pinned on first use)"
                )
            }
            Self::BinaryChanged { path, .. } => format!(
                "{path} changed after it was first used; recreate the sandbox to trust the new binary"
            ),
            Self::AmbiguousOwner { .. } => {
                "the connection's socket is shared by processes running different \
                binaries (an inherited or passed descriptor), so it cannot be attributed to one; open the \
                connection in the process that uses it, or close the descriptor in the others (CLOEXEC)"
                    .to_owned()
            }
            _ => "the connection could not be attributed to a sandbox process; it was refused".to_owned(),
        }
    }
}

/// Resolves identities for accepted connections. Blocking (reads `/proc`).
#[derive(Debug)]
pub(crate) struct IdentityResolver {
    source: IdentitySource,
    diag: Option<SockDiag>,
    proc: ProcFs,
    hashes: HashStore,
    init_ns: Option<PathBuf>,
    /// Recent socket owners, most recent first, with the fd number under which
    /// each last held the looked-up socket (a hint for [`Self::lookup_fast`]).
    recent: Mutex<VecDeque<(i32, u32)>>,
}

impl IdentityResolver {
    pub(crate) fn new(source: IdentitySource, diag: Option<std::os::fd::OwnedFd>) -> Self {
        let diag = diag.and_then(|fd| match SockDiag::new(fd) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "sock_diag socket unusable; identity falls back to /proc/<init>/net/tcp");
                None
            }
        });
        let proc = ProcFs::new("/proc");
        let init_ns = match &source {
            IdentitySource::SandboxInit { init_pid } => proc.pid_ns(*init_pid),
            IdentitySource::Fixed(_) => None,
        };
        Self {
            source,
            diag,
            proc,
            hashes: HashStore::default(),
            init_ns,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Identity of the process whose socket has local address `agent` and remote
    /// address `ours` (i.e. `peer_addr()` and `local_addr()` of what we accepted).
    pub(crate) fn lookup(
        &self,
        agent: SocketAddr,
        ours: SocketAddr,
    ) -> Result<BinaryIdentity, IdentityError> {
        let init = match &self.source {
            IdentitySource::Fixed(id) => return Ok(id.clone()),
            IdentitySource::SandboxInit { init_pid } => *init_pid,
        };
        let inode = self.socket_inode(init, agent, ours)?;
        let (pid, fd) = self.owner(init, inode).ok_or(IdentityError::NoOwner { inode })?;
        let exe = self.exe_string(pid)?;
        let tree = self.proc.descendants(init, MAX_PIDS);
        self.sole_executable(&tree, inode, pid, &exe)?;
        let identity = self.identify(init, pid)?;
        if identity.path != exe {
            return Err(IdentityError::Raced { pid });
        }
        self.remember(pid, fd);
        Ok(identity)
    }

    fn socket_inode(&self, init: i32, agent: SocketAddr, ours: SocketAddr) -> Result<u64, IdentityError> {
        if let Some(diag) = &self.diag {
            match diag.lookup(agent, ours) {
                Ok(Lookup::Found(inode)) => return Ok(inode),
                // Rare (the agent already closed, or an address-family corner
                // case): confirm with the tables below.
                Ok(Lookup::NotFound) => {}
                Err(e) => tracing::debug!(error = %e, "sock_diag lookup failed; reading the TCP table"),
            }
        }
        let tables: &[(&'static str, bool)] = match agent.ip().to_canonical() {
            IpAddr::V4(_) => &[("tcp", false), ("tcp6", true)],
            IpAddr::V6(_) => &[("tcp6", true)],
        };
        for &(table, v6) in tables {
            let text = match self.proc.net_table(init, table) {
                Ok(t) => t,
                // IPv6 may be disabled in the kernel; IPv4 is always there.
                Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(IdentityError::NetTable { init, table, source }),
            };
            if let Some(inode) = procnet::find_inode(&text, v6, agent, ours) {
                return Ok(inode);
            }
        }
        Err(IdentityError::SocketNotFound { agent, ours, init })
    }

    /// Finds a sandbox pid holding `socket:[inode]`, and the fd number: recent
    /// owners first, then the process tree under init, then (for orphans outside
    /// the tree) every pid in init's pid namespace.
    fn owner(&self, init: i32, inode: u64) -> Option<(i32, u32)> {
        let recent: Vec<i32> =
            self.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|&(p, _)| p).collect();
        let found = |p: i32| self.proc.socket_fd(p, inode).map(|fd| (p, fd));
        if let Some((pid, fd)) = recent.iter().copied().filter_map(found).find(|&(p, _)| self.in_sandbox(p)) {
            return Some((pid, fd));
        }
        let tree = self.proc.descendants(init, MAX_PIDS);
        if let Some((pid, fd)) = tree.iter().copied().filter(|p| !recent.contains(p)).find_map(found) {
            return self.in_sandbox(pid).then_some((pid, fd));
        }
        self.proc
            .all_pids()
            .into_iter()
            .filter(|p| !tree.contains(p))
            .filter(|&p| self.in_sandbox(p))
            .find_map(found)
    }

    /// `Err(AmbiguousOwner)` when a process of `tree` other than `owner` holds
    /// `socket:[inode]` and runs another executable than `exe`. Holders running
    /// the same executable do not matter (same path, same pinned hash), so only
    /// the fds of processes with another (or unreadable) `exe` are scanned.
    fn sole_executable(&self, tree: &[i32], inode: u64, owner: i32, exe: &str) -> Result<(), IdentityError> {
        let mut others = Vec::new();
        for &pid in tree.iter().filter(|&&p| p != owner) {
            let theirs = match self.exe_string(pid) {
                Ok(e) if e == exe => continue,
                Ok(e) => e,
                Err(_) => "<unreadable>".to_owned(),
            };
            if self.proc.socket_fd(pid, inode).is_some() && self.in_sandbox(pid) {
                others.push(format!("{pid}:{theirs}"));
            }
        }
        if others.is_empty() {
            return Ok(());
        }
        let mut binaries = vec![format!("{owner}:{exe}")];
        binaries.extend(others);
        Err(IdentityError::AmbiguousOwner { inode, binaries })
    }

    /// Whether `pid` is in sandbox init's pid namespace.
    fn in_sandbox(&self, pid: i32) -> bool {
        match &self.init_ns {
            Some(ns) => self.proc.pid_ns(pid).as_ref() == Some(ns),
            None => false,
        }
    }

    fn identify(&self, init: i32, pid: i32) -> Result<BinaryIdentity, IdentityError> {
        let path = self.exe_string(pid)?;
        if let Some(orig) = path.strip_suffix(DELETED_SUFFIX) {
            return Err(IdentityError::Deleted { pid, path: orig.to_owned() });
        }
        let sha = self
            .hashes
            .hash(&self.proc.exe_path(pid))
            .map_err(|source| IdentityError::Exe { pid, source })?;
        if self.exe_string(pid)? != path {
            return Err(IdentityError::Raced { pid });
        }
        if let Pin::Changed { pinned } = self.hashes.pin(&path, &sha) {
            return Err(IdentityError::BinaryChanged {
                path,
                pinned: pinned.to_string(),
                now: sha.to_string(),
            });
        }
        Ok(BinaryIdentity { path, sha256: sha.to_string(), pid, ancestors: self.ancestors(init, pid) })
    }

    fn exe_string(&self, pid: i32) -> Result<String, IdentityError> {
        let link = self.proc.exe_link(pid).map_err(|source| IdentityError::Exe { pid, source })?;
        link.into_os_string().into_string().map_err(|p| IdentityError::NonUtf8Path { pid, path: p.into() })
    }

    fn ancestors(&self, init: i32, pid: i32) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = pid;
        while cur != init && out.len() < MAX_ANCESTORS {
            let Some(parent) = self.proc.ppid(cur).filter(|&p| p > 0) else { break };
            match self.proc.exe_link(parent) {
                Ok(p) => out.push(p.to_string_lossy().into_owned()),
                Err(_) => break,
            }
            cur = parent;
        }
        out
    }

    fn remember(&self, pid: i32, fd: u32) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.front() == Some(&(pid, fd)) {
            return;
        }
        recent.retain(|&(p, _)| p != pid);
        recent.push_front((pid, fd));
        recent.truncate(MRU_PIDS);
    }

    #[cfg(test)]
    fn with_proc_root(source: IdentitySource, root: &std::path::Path) -> Self {
        let mut r = Self::new(source, None);
        r.proc = ProcFs::new(root);
        r.init_ns = match &r.source {
            IdentitySource::SandboxInit { init_pid } => r.proc.pid_ns(*init_pid),
            IdentitySource::Fixed(_) => None,
        };
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn real_lookup_of_own_loopback_connection() {
        let me = i32::try_from(std::process::id()).unwrap();
        let resolver = IdentityResolver::new(IdentitySource::SandboxInit { init_pid: me }, None);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let id = resolver.lookup(peer, accepted.local_addr().unwrap()).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(id.path, exe.to_string_lossy());
        assert_eq!(id.pid, me);
        assert_eq!(id.sha256.len(), 64);
        assert!(id.ancestors.is_empty(), "the test process is its own init");
        // Second lookup: served from the recent-owner list and the hash cache.
        let _client2 = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted2, peer2) = listener.accept().unwrap();
        let id2 = resolver.lookup(peer2, accepted2.local_addr().unwrap()).unwrap();
        assert_eq!(id2.sha256, id.sha256);
    }

    #[test]
    fn real_lookup_v6_when_available() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else { return };
        let me = i32::try_from(std::process::id()).unwrap();
        let resolver = IdentityResolver::new(IdentitySource::SandboxInit { init_pid: me }, None);
        let Ok(_client) = TcpStream::connect(listener.local_addr().unwrap()) else { return };
        let (accepted, peer) = listener.accept().unwrap();
        let id = resolver.lookup(peer, accepted.local_addr().unwrap()).unwrap();
        assert_eq!(id.pid, me);
    }

    #[test]
    fn unknown_connection_fails_closed() {
        let me = i32::try_from(std::process::id()).unwrap();
        let resolver = IdentityResolver::new(IdentitySource::SandboxInit { init_pid: me }, None);
        let err =
            resolver.lookup("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()).unwrap_err();
        assert_eq!(err.code(), "unknown_process");
        assert!(matches!(err, IdentityError::SocketNotFound { .. }));
    }

    #[test]
    fn missing_proc_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let resolver =
            IdentityResolver::with_proc_root(IdentitySource::SandboxInit { init_pid: 1 }, dir.path());
        let err =
            resolver.lookup("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()).unwrap_err();
        assert!(matches!(err, IdentityError::NetTable { .. }), "{err}");
        assert_eq!(resolver.proc.root(), dir.path());
    }

    /// A fake procfs: init 10 with children 11 and 12, all in one pid
    /// namespace; `exes` are the executables of 11 and 12, both of which hold
    /// the agent socket (inode 424242) of 127.0.0.1:54321 -> 127.0.0.1:3128.
    fn shared_socket_tree(dir: &std::path::Path, exes: [&str; 2]) {
        use std::os::unix::fs::symlink;
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (pid, children, exe) in [(10, "11 12", "init"), (11, "", exes[0]), (12, "", exes[1])] {
            let p = dir.join(pid.to_string());
            std::fs::create_dir_all(p.join(format!("task/{pid}"))).unwrap();
            std::fs::create_dir_all(p.join("fd")).unwrap();
            std::fs::create_dir_all(p.join("ns")).unwrap();
            std::fs::write(p.join(format!("task/{pid}/children")), children).unwrap();
            std::fs::write(p.join("stat"), format!("{pid} (x) S 10 1 1\n")).unwrap();
            symlink("pid:[4026531836]", p.join("ns/pid")).unwrap();
            let file = bin.join(exe);
            std::fs::write(&file, format!("#!{exe}\n")).unwrap();
            symlink(&file, p.join("exe")).unwrap();
            if pid != 10 {
                symlink("socket:[424242]", p.join("fd/3")).unwrap();
            }
        }
        std::fs::create_dir_all(dir.join("10/net")).unwrap();
        std::fs::write(
            dir.join("10/net/tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             1: 0100007F:D431 0100007F:0C38 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 \
             0000000000000000 20 4 30 10 -1\n",
        )
        .unwrap();
    }

    #[test]
    fn shared_socket_with_different_executables_is_ambiguous() {
        if cfg!(target_endian = "big") {
            return; // the fixture table is in little-endian notation
        }
        let (agent, ours) = ("127.0.0.1:54321".parse().unwrap(), "127.0.0.1:3128".parse().unwrap());
        let dir = tempfile::tempdir().unwrap();
        shared_socket_tree(dir.path(), ["curl", "python3"]);
        let r = IdentityResolver::with_proc_root(IdentitySource::SandboxInit { init_pid: 10 }, dir.path());
        let err = r.lookup(agent, ours).unwrap_err();
        assert_eq!(err.code(), "ambiguous_owner", "{err}");
        let IdentityError::AmbiguousOwner { inode, binaries } = &err else { panic!("{err}") };
        assert_eq!(*inode, 424_242);
        assert_eq!(binaries.len(), 2, "{binaries:?}");
        assert!(binaries.iter().any(|b| b.ends_with("/curl")), "{binaries:?}");
        assert!(binaries.iter().any(|b| b.ends_with("/python3")), "{binaries:?}");
        assert!(err.hint().contains("different"));

        // The same executable in both holders (a forked worker): attributed.
        let dir = tempfile::tempdir().unwrap();
        shared_socket_tree(dir.path(), ["curl", "curl"]);
        let r = IdentityResolver::with_proc_root(IdentitySource::SandboxInit { init_pid: 10 }, dir.path());
        let id = r.lookup(agent, ours).unwrap();
        assert!(id.path.ends_with("/bin/curl"), "{id:?}");
        assert_eq!(id.pid, 11);
    }

    #[test]
    fn fixed_source_is_returned_verbatim() {
        let id =
            BinaryIdentity { path: "/usr/bin/curl".into(), sha256: "00".into(), pid: 7, ancestors: vec![] };
        let resolver = IdentityResolver::new(IdentitySource::Fixed(id.clone()), None);
        assert_eq!(
            resolver.lookup("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()).unwrap(),
            id
        );
    }

    #[test]
    fn error_codes() {
        let e = IdentityError::BinaryChanged { path: "/x".into(), pinned: "a".into(), now: "b".into() };
        assert_eq!(e.code(), "binary_changed");
        assert_eq!(IdentityError::Deleted { pid: 1, path: "/x".into() }.code(), "binary_changed");
        assert_eq!(IdentityError::NoOwner { inode: 1 }.code(), "unknown_process");
        let e = IdentityError::AmbiguousOwner { inode: 1, binaries: vec!["1:/a".into(), "2:/b".into()] };
        assert_eq!(e.code(), "ambiguous_owner");
        assert!(e.to_string().contains("1:/a, 2:/b"));
    }
}
