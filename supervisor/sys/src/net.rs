//! The sandbox network: `lo` up, every IPv4 and IPv6 address made local (`local 0.0.0.0/0 dev lo` and
//! `local ::/0 dev lo` in table `local`, written as hand-encoded rtnetlink messages), unprivileged low
//! ports, and the listener helpers used to create the supervisor's sockets inside this namespace.
//!
//! Threat handled: any packet leaving the sandbox other than through the supervisor. With every address
//! local, a `connect()` to any destination stays in the namespace: it lands on a capture listener bound to
//! `0.0.0.0:P`/`[::]:P` (whose `getsockname()` is the original destination) or is refused at once. Residual
//! risk: none on the wire (the namespace has no other interface); policy is the supervisor's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6,
    setsockopt, sockopt,
};

/// `lo` is always interface 1 in a network namespace (`LOOPBACK_IFINDEX`).
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Description of the capture mechanism, for reports.
pub const CAPTURE_MECHANISM: &str =
    "local-route: local 0.0.0.0/0 and ::/0 dev lo (table local); no netfilter";

const RTM_NEWLINK: u16 = 16;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RT_TABLE_LOCAL: u8 = 255;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
const RTA_OIF: u16 = 4;
const IFF_UP: u32 = 0x1;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a NETLINK_SOCK_DIAG socket")]
    SockDiagSocket {
        #[source]
        source: nix::Error,
    },
    #[error("cannot open a NETLINK_ROUTE socket")]
    NetlinkSocket {
        #[source]
        source: nix::Error,
    },
    #[error("netlink request {what} could not be sent")]
    NetlinkSend {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("netlink request {what}: no acknowledgement")]
    NetlinkRecv {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("netlink request {what} refused by the kernel")]
    NetlinkRefused {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("netlink request {what}: malformed answer ({len} bytes)")]
    NetlinkMalformed { what: &'static str, len: usize },
    #[error("cannot write {path}")]
    Sysctl {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a listener on {addr} ({step})")]
    Listener {
        addr: SocketAddr,
        step: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// What [`setup_capture_network`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetReport {
    /// False when the kernel has no IPv6 (then only the IPv4 route exists).
    pub ipv6: bool,
}

fn nlmsg(msg_type: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = 16 + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0 = the kernel fills in the port id
    m.extend_from_slice(body);
    m
}

/// `RTM_NEWLINK` setting `IFF_UP` on interface `ifindex` (what `ip link set dev X up` sends).
pub fn encode_link_up(ifindex: u32, seq: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.push(libc::AF_UNSPEC as u8); // ifi_family
    body.push(0); // padding
    body.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    body.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change: only touch IFF_UP
    nlmsg(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, &body)
}

/// `RTM_NEWROUTE` for `local <any>/0 dev <ifindex> table local` in `family` (`AF_INET`/`AF_INET6`).
pub fn encode_local_default_route(family: u8, ifindex: u32, seq: u32) -> Vec<u8> {
    let mut body = Vec::with_capacity(20);
    body.extend_from_slice(&[
        family,         // rtm_family
        0,              // rtm_dst_len: /0
        0,              // rtm_src_len
        0,              // rtm_tos
        RT_TABLE_LOCAL, // rtm_table
        RTPROT_BOOT,    // rtm_protocol (what `ip route add` uses)
        RT_SCOPE_HOST,  // rtm_scope
        RTN_LOCAL,      // rtm_type
    ]);
    body.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    body.extend_from_slice(&8u16.to_ne_bytes()); // rta_len
    body.extend_from_slice(&RTA_OIF.to_ne_bytes());
    body.extend_from_slice(&ifindex.to_ne_bytes());
    nlmsg(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, &body)
}

/// Parses the kernel's answer to a request with `NLM_F_ACK`: `Some(0)` for an ack, `Some(errno)`
/// (positive) for a refusal, `None` if the bytes are not an `NLMSG_ERROR` message.
pub fn parse_ack(buf: &[u8]) -> Option<i32> {
    if buf.len() < 20 {
        return None;
    }
    let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
    if msg_type != NLMSG_ERROR {
        return None;
    }
    let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    Some(-err)
}

struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    fn open() -> Result<Self, NetError> {
        let fd = nix::sys::socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|source| NetError::NetlinkSocket { source })?;
        Ok(Netlink { fd, seq: 1 })
    }

    fn request(&mut self, what: &'static str, build: impl Fn(u32) -> Vec<u8>) -> Result<(), NetError> {
        self.seq += 1;
        let msg = build(self.seq);
        let kernel = NetlinkAddr::new(0, 0);
        nix::sys::socket::sendto(self.fd.as_raw_fd(), &msg, &kernel, MsgFlags::empty())
            .map_err(|source| NetError::NetlinkSend { what, source })?;
        let mut buf = [0u8; 1024];
        let n = nix::sys::socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|source| NetError::NetlinkRecv { what, source })?;
        match parse_ack(&buf[..n]) {
            Some(0) => Ok(()),
            Some(errno) => Err(NetError::NetlinkRefused { what, source: nix::Error::from_raw(errno) }),
            None => Err(NetError::NetlinkMalformed { what, len: n }),
        }
    }
}

/// Brings `lo` up and makes every address local. Run inside the sandbox's (fresh) network namespace with
/// `CAP_NET_ADMIN` over it.
pub fn setup_capture_network() -> Result<NetReport, NetError> {
    let mut nl = Netlink::open()?;
    nl.request("link lo up", |seq| encode_link_up(LOOPBACK_IFINDEX, seq))?;
    nl.request("route local 0.0.0.0/0 dev lo table local", |seq| {
        encode_local_default_route(libc::AF_INET as u8, LOOPBACK_IFINDEX, seq)
    })?;
    let ipv6 = match nl.request("route local ::/0 dev lo table local", |seq| {
        encode_local_default_route(libc::AF_INET6 as u8, LOOPBACK_IFINDEX, seq)
    }) {
        Ok(()) => true,
        // No IPv6 in this kernel (ipv6.disable=1): nothing can be sent over IPv6 either.
        Err(NetError::NetlinkRefused { source: nix::Error::EAFNOSUPPORT, .. }) => false,
        Err(e) => return Err(e),
    };
    Ok(NetReport { ipv6 })
}

/// Lets unprivileged sockets bind any port in this network namespace (the listeners need no capability;
/// Landlock governs the agent's `bind`).
pub fn allow_unprivileged_low_ports() -> Result<(), NetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    std::fs::write(PATH, "0").map_err(|source| NetError::Sysctl { path: PATH, source })
}

fn stream_or_dgram_socket(addr: SocketAddr, ty: SockType) -> Result<OwnedFd, NetError> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = nix::sys::socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|source| NetError::Listener { addr, step: "socket", source })?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|source| NetError::Listener {
        addr,
        step: "SO_REUSEADDR",
        source,
    })?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(|source| NetError::Listener {
            addr,
            step: "IPV6_V6ONLY",
            source,
        })?;
    }
    let res = match addr {
        SocketAddr::V4(a) => nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    res.map_err(|source| NetError::Listener { addr, step: "bind", source })?;
    Ok(fd)
}

/// A blocking TCP listener on `addr` (`SO_REUSEADDR`; `IPV6_V6ONLY` for IPv6), backlog 1024.
pub fn tcp_listener(addr: SocketAddr) -> Result<TcpListener, NetError> {
    let fd = stream_or_dgram_socket(addr, SockType::Stream)?;
    let backlog = Backlog::new(1024).unwrap_or(Backlog::MAXCONN);
    nix::sys::socket::listen(&fd.as_fd(), backlog).map_err(|source| NetError::Listener {
        addr,
        step: "listen",
        source,
    })?;
    Ok(TcpListener::from(fd))
}

/// A `NETLINK_SOCK_DIAG` socket of the current network namespace. Created inside the agent's netns and
/// handed to the supervisor, it answers "which socket is this connection" with one exact kernel query
/// instead of a scan of `/proc/net/tcp`.
pub fn sock_diag_socket() -> Result<OwnedFd, NetError> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Netlink,
        SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        nix::sys::socket::SockProtocol::NetlinkSockDiag,
    )
    .map_err(|source| NetError::SockDiagSocket { source })
}

/// A blocking UDP socket bound to `addr` (`IPV6_V6ONLY` for IPv6).
pub fn udp_socket(addr: SocketAddr) -> Result<UdpSocket, NetError> {
    stream_or_dgram_socket(addr, SockType::Datagram).map(UdpSocket::from)
}

/// The two wildcard addresses for `port`: `0.0.0.0:port` and, if `ipv6`, `[::]:port`.
pub fn wildcard_addrs(port: u16, ipv6: bool) -> Vec<SocketAddr> {
    let mut v = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)];
    if ipv6 {
        v.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
    }
    v
}

/// The two loopback addresses for `port`: `127.0.0.1:port` and, if `ipv6`, `[::1]:port`.
pub fn loopback_addrs(port: u16, ipv6: bool) -> Vec<SocketAddr> {
    let mut v = vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)];
    if ipv6 {
        v.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_message_matches_iproute2_layout() {
        let m = encode_local_default_route(libc::AF_INET as u8, 1, 7);
        assert_eq!(m.len(), 16 + 12 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 36);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWROUTE);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 0x605);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..24], &[2, 0, 0, 0, 255, 3, 254, 2]);
        assert_eq!(&m[28..32], &[8, 0, 4, 0]);
        assert_eq!(u32::from_ne_bytes(m[32..36].try_into().unwrap()), 1);
        let v6 = encode_local_default_route(libc::AF_INET6 as u8, 1, 8);
        assert_eq!(v6[16], 10);
    }

    #[test]
    fn link_message_only_changes_iff_up() {
        let m = encode_link_up(1, 3);
        assert_eq!(m.len(), 32);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWLINK);
        assert_eq!(i32::from_ne_bytes(m[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(m[24..28].try_into().unwrap()), IFF_UP);
        assert_eq!(u32::from_ne_bytes(m[28..32].try_into().unwrap()), IFF_UP);
    }

    #[test]
    fn acks_and_refusals_are_decoded() {
        let mut ack = nlmsg(NLMSG_ERROR, 0, 1, &[0u8; 20]);
        assert_eq!(parse_ack(&ack), Some(0));
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(parse_ack(&ack), Some(libc::EEXIST));
        assert_eq!(parse_ack(&nlmsg(RTM_NEWROUTE, 0, 1, &[0u8; 20])), None);
        assert_eq!(parse_ack(&[0u8; 4]), None);
    }

    #[test]
    fn wildcard_and_loopback_addresses() {
        assert_eq!(wildcard_addrs(443, false).len(), 1);
        assert_eq!(wildcard_addrs(443, true)[1].to_string(), "[::]:443");
        assert_eq!(loopback_addrs(3128, true)[0].to_string(), "127.0.0.1:3128");
    }
}
