//! The identity lookup's fast path, cheap enough to run on an async worker:
//! an exact `sock_diag` query, a recent owner's remembered fd numbers, and an
//! executable whose hash is already cached. About a dozen syscalls and no
//! thread hop; anything else (the `/proc/<init>/net` tables, a process-tree
//! walk, hashing a new binary, every error) is left to [`IdentityResolver::lookup`]
//! on the blocking pool, which decides exactly as before.
//!
//! Threat handled: the same as [`super`]: every fact comes from the kernel
//! (`sock_diag` inode, `/proc/<pid>/fd/N` link, `/proc/<pid>/exe`, pid
//! namespace), the same checks run (pid namespace, ` (deleted)`, exec race,
//! pin). A hint that no longer holds just misses.
//! Residual risk: none beyond [`super`].

use std::net::SocketAddr;
use std::sync::PoisonError;

use super::hash::Pin;
use super::sockdiag::Lookup;
use super::{BinaryIdentity, DELETED_SUFFIX, IdentityError, IdentityResolver, IdentitySource};

/// Recent owners tried on the fast path.
const FAST_PIDS: usize = 2;
/// Largest sandbox process tree scanned on the fast path (for other holders
/// of the socket); larger trees go to the blocking lookup.
const FAST_TREE_MAX: usize = 64;
/// Fd numbers tried per owner: the last one that held a looked-up socket and
/// the next ones (sockets reuse the lowest free number, or take the next).
const FD_SPAN: u32 = 3;

impl IdentityResolver {
    /// `Some` when the identity could be established without blocking work;
    /// `None` means "use [`Self::lookup`]" (never a denial by itself).
    pub(crate) fn lookup_fast(
        &self,
        agent: SocketAddr,
        ours: SocketAddr,
    ) -> Option<Result<BinaryIdentity, IdentityError>> {
        let init = match &self.source {
            IdentitySource::Fixed(id) => return Some(Ok(id.clone())),
            IdentitySource::SandboxInit { init_pid } => *init_pid,
        };
        let Ok(Lookup::Found(inode)) = self.diag.as_ref()?.lookup(agent, ours) else { return None };
        let hints: Vec<(i32, u32)> = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .take(FAST_PIDS)
            .copied()
            .collect();
        let (pid, fd) = hints.into_iter().find_map(|(pid, last)| {
            (last..last.saturating_add(FD_SPAN))
                .find(|&fd| self.proc.fd_is_socket(pid, fd, inode))
                .map(|fd| (pid, fd))
        })?;
        if !self.in_sandbox(pid) {
            return None;
        }
        // Every other holder of the socket must run the same executable (see
        // `sole_executable`); a large tree is left to the blocking pool.
        let tree = self.proc.descendants(init, FAST_TREE_MAX + 1);
        if tree.len() > FAST_TREE_MAX {
            return None;
        }
        let identity = self.identify_cached(init, pid)?;
        if let Err(e) = self.sole_executable(&tree, inode, pid, &identity.path) {
            return Some(Err(e));
        }
        self.remember(pid, fd);
        Some(Ok(identity))
    }

    /// [`Self::identify`] when the executable's hash is cached and nothing is
    /// unusual; `None` otherwise.
    fn identify_cached(&self, init: i32, pid: i32) -> Option<BinaryIdentity> {
        let path = self.exe_string(pid).ok()?;
        if path.ends_with(DELETED_SUFFIX) {
            return None;
        }
        let sha = self.hashes.cached(&self.proc.exe_path(pid)).ok()??;
        if self.exe_string(pid).ok()? != path {
            return None;
        }
        if self.hashes.pin(&path, &sha) != Pin::Trusted {
            return None;
        }
        Some(BinaryIdentity { path, sha256: sha.to_string(), pid, ancestors: self.ancestors(init, pid) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn fast_path_needs_sock_diag_and_a_known_owner() {
        let me = i32::try_from(std::process::id()).unwrap();
        // Without a sock_diag socket the fast path never answers: the blocking
        // lookup (TCP table) does, and decides as before.
        let resolver = IdentityResolver::new(IdentitySource::SandboxInit { init_pid: me }, None);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let ours = accepted.local_addr().unwrap();
        assert!(resolver.lookup_fast(peer, ours).is_none());
        let slow = resolver.lookup(peer, ours).unwrap();
        assert_eq!(slow.pid, me);
        assert!(resolver.lookup_fast(peer, ours).is_none(), "still no sock_diag");
    }

    /// A resolver for this process's own sockets (this process plays sandbox init), with sock_diag.
    pub(super) fn own_resolver() -> (IdentityResolver, i32) {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
        let me = i32::try_from(std::process::id()).unwrap();
        let diag = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .unwrap();
        (IdentityResolver::new(IdentitySource::SandboxInit { init_pid: me }, Some(diag)), me)
    }

    #[test]
    fn fast_path_answers_like_the_slow_one_for_a_recent_owner() {
        let (resolver, _) = own_resolver();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let first = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let ours = accepted.local_addr().unwrap();
        assert!(resolver.lookup_fast(peer, ours).is_none(), "no recent owner, no cached hash yet");
        let slow = resolver.lookup(peer, ours).unwrap();
        // The next connection reuses the fd number of the first one (closed), or takes the next;
        // other test threads may take it first, hence a few tries.
        drop(first);
        let mut hits = 0;
        for _ in 0..5 {
            let _next = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, peer) = listener.accept().unwrap();
            let ours = accepted.local_addr().unwrap();
            match resolver.lookup_fast(peer, ours) {
                Some(fast) => {
                    assert_eq!(fast.unwrap(), slow);
                    hits += 1;
                }
                None => assert_eq!(resolver.lookup(peer, ours).unwrap(), slow),
            }
        }
        assert!(hits > 0, "the fast path never answered");
        // A connection that is not in the table is never answered by the fast path.
        assert!(resolver.lookup_fast("127.0.0.1:1".parse().unwrap(), ours).is_none());
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    /// `cargo test -p openshell-egress --release --lib fast_path_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "measurement"]
    fn fast_path_cost() {
        let (r, me) = super::tests::own_resolver();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (a, peer) = l.accept().unwrap();
        let ours = a.local_addr().unwrap();
        r.lookup(peer, ours).unwrap();
        let n = 20_000;
        let time = |what: &str, f: &dyn Fn()| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            println!("{what:<24} {:>8.2} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        };
        time("lookup_fast", &|| assert!(r.lookup_fast(peer, ours).is_some()));
        time("sock_diag", &|| {
            r.diag.as_ref().unwrap().lookup(peer, ours).unwrap();
        });
        let inode = match r.diag.as_ref().unwrap().lookup(peer, ours).unwrap() {
            Lookup::Found(i) => i,
            Lookup::NotFound => panic!(),
        };
        let (pid, fd) = *r.recent.lock().unwrap().front().unwrap();
        time("fd_is_socket", &|| assert!(r.proc.fd_is_socket(pid, fd, inode)));
        time("in_sandbox", &|| assert!(r.in_sandbox(pid)));
        time("exe_string", &|| {
            r.exe_string(pid).unwrap();
        });
        time("hash cached", &|| {
            r.hashes.cached(&r.proc.exe_path(pid)).unwrap().unwrap();
        });
        time("descendants", &|| {
            r.proc.descendants(me, FAST_TREE_MAX + 1);
        });
        let exe = r.exe_string(pid).unwrap();
        time("tree + sole_executable", &|| {
            let tree = r.proc.descendants(me, FAST_TREE_MAX + 1);
            r.sole_executable(&tree, inode, pid, &exe).unwrap();
        });
        time("ancestors", &|| {
            r.ancestors(me, pid);
        });
        time("ppid", &|| {
            r.proc.ppid(pid);
        });
    }
}
