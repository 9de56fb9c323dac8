//! Exact socket lookup through `NETLINK_SOCK_DIAG` (`inet_diag`), the fast path
//! for finding the agent socket's inode.
//!
//! Reading `/proc/<init>/net/tcp` costs time proportional to every socket in
//! the namespace, TIME_WAIT included (thousands for a busy agent: milliseconds
//! per connection). A `SOCK_DIAG_BY_FAMILY` request without `NLM_F_DUMP` asks
//! the kernel for the one socket with the given 4-tuple: constant time.
//! The netlink socket must have been created inside the agent's network
//! namespace (netlink requests are answered for the creator's namespace); the
//! supervisor passes it in [`crate::EgressSockets::sock_diag`].
//!
//! Threat handled: the same as [`super::procnet`] (exact 4-tuple match,
//! kernel-provided inode); replies are length-checked and matched by sequence
//! number, malformed replies are errors.
//! Residual risk: none beyond `/proc`; on any transport error the caller falls
//! back to the TCP table.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const NLMSG_HDR: usize = 16;
/// `inet_diag_req_v2`: family, protocol, ext, pad, states, sockid (48).
const REQ_LEN: usize = 56;
/// Offset of `idiag_inode` in an `inet_diag_msg` (after the netlink header).
const INODE_OFFSET: usize = 4 + 48 + 4 * 4;

/// Outcome of one exact lookup.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The socket's inode.
    Found(u64),
    /// The kernel has no such socket.
    NotFound,
}

/// A `NETLINK_SOCK_DIAG` socket (blocking; one request at a time).
#[derive(Debug)]
pub(crate) struct SockDiag {
    sock: Mutex<UnixDatagram>,
    seq: AtomicU32,
}

impl SockDiag {
    /// Wraps a netlink `NETLINK_SOCK_DIAG` datagram socket.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        // UnixDatagram only issues send/recv/setsockopt, which are
        // family-independent; it never interprets addresses here.
        let sock = UnixDatagram::from(fd);
        sock.set_read_timeout(Some(Duration::from_secs(1)))?;
        sock.set_nonblocking(false)?;
        Ok(Self { sock: Mutex::new(sock), seq: AtomicU32::new(1) })
    }

    /// Inode of the TCP socket whose local end is `local` and remote end `remote`.
    pub(crate) fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> io::Result<Lookup> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let req = request(seq, local, remote);
        let sock = self.sock.lock().unwrap_or_else(PoisonError::into_inner);
        sock.send(&req)?;
        let mut buf = [0u8; 8192];
        // Skip stale replies to earlier, timed-out requests.
        for _ in 0..8 {
            let n = sock.recv(&mut buf)?;
            match parse_reply(&buf[..n], seq)? {
                Some(result) => return Ok(result),
                None => continue,
            }
        }
        Err(io::Error::other("no sock_diag reply for this request"))
    }
}

/// Encodes an exact-match `SOCK_DIAG_BY_FAMILY` request.
pub(crate) fn request(seq: u32, local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let (l, r) = (local.ip().to_canonical(), remote.ip().to_canonical());
    let v4 = l.is_ipv4() && r.is_ipv4();
    let mut m = Vec::with_capacity(NLMSG_HDR + REQ_LEN);
    m.extend_from_slice(&u32::try_from(NLMSG_HDR + REQ_LEN).unwrap_or(0).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: kernel
    m.push(if v4 { AF_INET } else { AF_INET6 });
    m.push(IPPROTO_TCP);
    m.push(0); // idiag_ext
    m.push(0); // pad
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&remote.port().to_be_bytes());
    for ip in [l, r] {
        let bytes: [u8; 16] = match ip {
            IpAddr::V4(a) if v4 => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                b
            }
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        m.extend_from_slice(&bytes);
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // INET_DIAG_NOCOOKIE
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

/// `Some(result)` for the reply to `seq`; `None` for another sequence number.
pub(crate) fn parse_reply(b: &[u8], seq: u32) -> io::Result<Option<Lookup>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed sock_diag reply");
    let len = usize::try_from(u32_at(b, 0).ok_or_else(bad)?).map_err(|_| bad())?;
    let ty = u16_at(b, 4).ok_or_else(bad)?;
    let got_seq = u32_at(b, 8).ok_or_else(bad)?;
    if len < NLMSG_HDR || len > b.len() {
        return Err(bad());
    }
    if got_seq != seq {
        return Ok(None);
    }
    let payload = &b[NLMSG_HDR..len];
    match ty {
        NLMSG_ERROR => {
            let errno = i32::from_ne_bytes(payload.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            // ENOENT: no such socket.
            if errno == -2 {
                Ok(Some(Lookup::NotFound))
            } else {
                Err(io::Error::from_raw_os_error(errno.saturating_neg()))
            }
        }
        SOCK_DIAG_BY_FAMILY => {
            let inode = u32_at(payload, INODE_OFFSET).ok_or_else(bad)?;
            Ok(Some(if inode == 0 { Lookup::NotFound } else { Lookup::Found(u64::from(inode)) }))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = request(7, "127.0.0.1:54321".parse().unwrap(), "127.0.0.1:3128".parse().unwrap());
        assert_eq!(m.len(), 72);
        assert_eq!(u32_at(&m, 0), Some(72));
        assert_eq!(u16_at(&m, 4), Some(SOCK_DIAG_BY_FAMILY));
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!((m[16], m[17]), (AF_INET, IPPROTO_TCP));
        assert_eq!(&m[24..26], &54321u16.to_be_bytes());
        assert_eq!(&m[26..28], &3128u16.to_be_bytes());
        assert_eq!(&m[28..32], &[127, 0, 0, 1]);
        assert_eq!(&m[44..48], &[127, 0, 0, 1]);
        let v6 = request(1, "[::1]:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        assert_eq!(v6[16], AF_INET6);
        assert_eq!(&v6[28..44], &"::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    }

    #[test]
    fn replies() {
        let mut err = vec![0u8; 36];
        err[..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&5u32.to_ne_bytes());
        err[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(parse_reply(&err, 5).unwrap(), Some(Lookup::NotFound));
        assert_eq!(parse_reply(&err, 6).unwrap(), None);
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert!(parse_reply(&err, 5).is_err());
        let mut ok = vec![0u8; NLMSG_HDR + INODE_OFFSET + 4];
        let len = u32::try_from(ok.len()).unwrap();
        ok[..4].copy_from_slice(&len.to_ne_bytes());
        ok[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        ok[8..12].copy_from_slice(&9u32.to_ne_bytes());
        ok[NLMSG_HDR + INODE_OFFSET..].copy_from_slice(&4242u32.to_ne_bytes());
        assert_eq!(parse_reply(&ok, 9).unwrap(), Some(Lookup::Found(4242)));
        for cut in 0..ok.len() {
            let _ = parse_reply(&ok[..cut], 9);
        }
    }

    #[test]
    fn real_lookup_in_this_namespace() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
        let Ok(fd) = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        ) else {
            return; // netlink unavailable in this environment
        };
        let diag = SockDiag::new(fd).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, peer) = l.accept().unwrap();
        let ours = accepted.local_addr().unwrap();
        let Lookup::Found(inode) = diag.lookup(peer, ours).unwrap() else { panic!("socket not found") };
        // The inode is the one /proc shows for the client's fd.
        let text = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
        assert_eq!(super::super::procnet::find_inode(&text, false, peer, ours), Some(inode));
        assert_eq!(diag.lookup("127.0.0.1:1".parse().unwrap(), ours).unwrap(), Lookup::NotFound);
        drop(client);
    }
}
