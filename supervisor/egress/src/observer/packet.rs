//! Parsing what the refusal observer queues: IPv4/IPv6 packets (network header first, at most 256 bytes)
//! that the sandbox kernel sent on `lo` in answer to something it refused.
//!
//! Threat handled: hostile bytes. The agent cannot forge these packets (raw and packet sockets are denied
//! to it), but the parser does not rely on that nor on the kernel-side filter: every field is
//! bounds-checked, every check of the filter is repeated, and anything else is `None`. Never panics.
//! Residual risk: IPv6 extension headers are not walked (the kernel's answers carry none).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const TCP: u8 = 6;
const UDP: u8 = 17;
const UDPLITE: u8 = 136;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// What the sandbox kernel refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A TCP connection attempt to a port nothing listens on (the kernel's `RST|ACK`, `seq 0`).
    Tcp {
        /// The connecting socket's address.
        agent: SocketAddr,
        /// The destination.
        dst: SocketAddr,
    },
    /// A UDP datagram to a port without a socket (the kernel's ICMP port unreachable quoting it).
    Udp {
        /// The sending socket's address.
        agent: SocketAddr,
        /// The destination.
        dst: SocketAddr,
    },
    /// An ICMP or ICMPv6 echo request.
    Echo {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn v4(b: &[u8], at: usize) -> Option<IpAddr> {
    let o: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(o)))
}

fn v6(b: &[u8], at: usize) -> Option<IpAddr> {
    let o: [u8; 16] = b.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(o)))
}

/// An IP header: protocol, source, destination and what follows it.
struct Ip<'a> {
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    payload: &'a [u8],
}

/// IPv4 header at the start of `b`, not a later fragment. `quoted`: `b` is the copy of a header inside an
/// ICMP error, whose total length describes the original datagram, not the (shorter) copy.
fn ipv4(b: &[u8], quoted: bool) -> Option<Ip<'_>> {
    let first = *b.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || b.len() < ihl {
        return None;
    }
    if be16(b, 6)? & 0x1fff != 0 {
        return None;
    }
    let end = if quoted { b.len() } else { usize::from(be16(b, 2)?).min(b.len()) };
    Some(Ip { proto: *b.get(9)?, src: v4(b, 12)?, dst: v4(b, 16)?, payload: b.get(ihl..end)? })
}

/// IPv6 fixed header at the start of `b` (no extension headers).
fn ipv6(b: &[u8], quoted: bool) -> Option<Ip<'_>> {
    if *b.first()? >> 4 != 6 {
        return None;
    }
    let end = if quoted { b.len() } else { (40 + usize::from(be16(b, 4)?)).min(b.len()) };
    Some(Ip { proto: *b.get(6)?, src: v6(b, 8)?, dst: v6(b, 24)?, payload: b.get(40..end)? })
}

/// The kernel's reset of a connection attempt: `RST|ACK` without `SYN`/`FIN`, `seq 0`. The reset goes
/// from the destination back to the connecting socket.
fn tcp_reset(ip: &Ip<'_>) -> Option<Refused> {
    let t = ip.payload;
    let flags = *t.get(13)?;
    if flags & 0x17 != 0x14 || be32(t, 4)? != 0 {
        return None;
    }
    Some(Refused::Tcp {
        dst: SocketAddr::new(ip.src, be16(t, 0)?),
        agent: SocketAddr::new(ip.dst, be16(t, 2)?),
    })
}

/// The datagram quoted by a port-unreachable error.
fn quoted_udp(inner: Option<Ip<'_>>) -> Option<Refused> {
    let inner = inner?;
    if inner.proto != UDP && inner.proto != UDPLITE {
        return None;
    }
    let u = inner.payload;
    Some(Refused::Udp {
        agent: SocketAddr::new(inner.src, be16(u, 0)?),
        dst: SocketAddr::new(inner.dst, be16(u, 2)?),
    })
}

/// Parses one observed packet; `None` for anything that is not one of the refusals above.
pub(crate) fn parse(b: &[u8]) -> Option<Refused> {
    let version = *b.first()? >> 4;
    let ip = match version {
        4 => ipv4(b, false)?,
        6 => ipv6(b, false)?,
        _ => return None,
    };
    let (ty, code) = (ip.payload.first().copied(), ip.payload.get(1).copied());
    match (version, ip.proto) {
        (_, TCP) => tcp_reset(&ip),
        (4, ICMP) => match (ty?, code?) {
            (8, _) => Some(Refused::Echo { src: ip.src, dst: ip.dst }),
            (3, 3) => quoted_udp(ipv4(ip.payload.get(8..)?, true)),
            _ => None,
        },
        (6, ICMPV6) => match (ty?, code?) {
            (128, _) => Some(Refused::Echo { src: ip.src, dst: ip.dst }),
            (1, 4) => quoted_udp(ipv6(ip.payload.get(8..)?, true)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Packets as the sandbox kernel sends them (layouts checked against real captures in
    //! `supervisor/sys/tests/suite/capture.rs`).

    use std::net::{IpAddr, SocketAddr};

    fn ip(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(20 + payload.len()).unwrap_or(u16::MAX);
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&total.to_be_bytes());
                p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            (s, d) => {
                let to6 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a,
                    IpAddr::V4(a) => a.to_ipv6_mapped(),
                };
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(u16::MAX).to_be_bytes());
                p.extend_from_slice(&[if proto == super::ICMP { super::ICMPV6 } else { proto }, 64]);
                p.extend_from_slice(&to6(s).octets());
                p.extend_from_slice(&to6(d).octets());
            }
        }
        p.extend_from_slice(payload);
        p
    }

    /// The kernel's reset of `agent`'s connection attempt to `dst`.
    pub(crate) fn reset(agent: SocketAddr, dst: SocketAddr, seq: u32, flags: u8) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&dst.port().to_be_bytes());
        t.extend_from_slice(&agent.port().to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&1u32.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
        ip(dst.ip(), agent.ip(), super::TCP, &t)
    }

    /// The kernel's port unreachable for `agent`'s datagram to `dst`.
    pub(crate) fn unreachable(agent: SocketAddr, dst: SocketAddr) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&agent.port().to_be_bytes());
        u.extend_from_slice(&dst.port().to_be_bytes());
        u.extend_from_slice(&[0, 12, 0, 0, b'p', b'i', b'n', b'g']);
        let quoted = ip(agent.ip(), dst.ip(), super::UDP, &u);
        let (ty, code) = if agent.is_ipv4() { (3, 3) } else { (1, 4) };
        let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&quoted);
        ip(dst.ip(), agent.ip(), super::ICMP, &m)
    }

    /// An echo request.
    pub(crate) fn echo(src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let ty = if src.is_ipv4() { 8 } else { 128 };
        ip(src, dst, super::ICMP, &[ty, 0, 0, 0, 0, 1, 0, 1, b'x'])
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{echo, reset, unreachable};
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resets_unreachables_and_echoes() {
        let (agent, dst) = (sa("10.200.0.4:40000"), sa("10.200.0.4:9"));
        assert_eq!(parse(&reset(agent, dst, 0, 0x14)), Some(Refused::Tcp { agent, dst }));
        let (agent6, dst6) = (sa("[::1]:40000"), sa("[2001:db8::4]:9"));
        assert_eq!(parse(&reset(agent6, dst6, 0, 0x14)), Some(Refused::Tcp { agent: agent6, dst: dst6 }));
        assert_eq!(
            parse(&unreachable(agent, sa("10.0.0.1:9000"))),
            Some(Refused::Udp { agent, dst: sa("10.0.0.1:9000") })
        );
        assert_eq!(parse(&unreachable(agent6, dst6)), Some(Refused::Udp { agent: agent6, dst: dst6 }));
        let (a, b) = (agent.ip(), dst6.ip());
        assert_eq!(parse(&echo(a, a)), Some(Refused::Echo { src: a, dst: a }));
        assert_eq!(parse(&echo(agent6.ip(), b)), Some(Refused::Echo { src: agent6.ip(), dst: b }));
    }

    #[test]
    fn everything_else_is_ignored() {
        let (agent, dst) = (sa("10.200.0.4:40000"), sa("10.200.0.4:9"));
        for (seq, flags) in [(7, 0x14), (0, 0x02), (0, 0x12), (0, 0x10), (0, 0x04), (0, 0x15), (0, 0x16)] {
            assert_eq!(parse(&reset(agent, dst, seq, flags)), None, "seq {seq} flags {flags:#x}");
        }
        let mut host_unreachable = unreachable(agent, dst);
        host_unreachable[21] = 1;
        assert_eq!(parse(&host_unreachable), None);
        let mut echo_reply = echo(agent.ip(), dst.ip());
        echo_reply[20] = 0;
        assert_eq!(parse(&echo_reply), None);
        let mut fragment = reset(agent, dst, 0, 0x14);
        fragment[7] = 1;
        assert_eq!(parse(&fragment), None);
        let mut quoted_tcp = unreachable(agent, dst);
        quoted_tcp[28 + 9] = TCP;
        assert_eq!(parse(&quoted_tcp), None);
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x45]), None);
        assert_eq!(parse(&[0x41; 40]), None, "IHL below 5");
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let (agent, dst) = (sa("10.200.0.4:40000"), sa("[2001:db8::4]:9"));
        for p in [
            reset(agent, sa("1.2.3.4:9"), 0, 0x14),
            reset(sa("[::1]:1"), dst, 0, 0x14),
            unreachable(agent, sa("1.2.3.4:9")),
            unreachable(sa("[::1]:1"), dst),
            echo(agent.ip(), agent.ip()),
        ] {
            assert!(parse(&p).is_some());
            for cut in 0..p.len() {
                let _ = parse(&p[..cut]);
            }
            for i in 0..p.len() {
                for bit in 0..8 {
                    let mut q = p.clone();
                    q[i] ^= 1 << bit;
                    let _ = parse(&q);
                }
            }
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50_000 {
            let len = usize::try_from(next() % 300).unwrap_or(0);
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(f) = p.first_mut() {
                *f = if next() % 2 == 0 { 0x45 } else { 0x60 };
            }
            let _ = parse(&p);
        }
    }
}
