//! SSRF protection: which resolved addresses an allowed connection may dial.
//!
//! Concern: an allowed name (or a DNS answer an attacker controls) pointing at
//! the sandbox host, the cloud metadata service (169.254.169.254) or an internal
//! network. After resolution, and before connecting, every address goes through
//! [`check_address`]: loopback, link-local, unspecified, broadcast and multicast
//! are never reachable; private (RFC 1918), shared (CGNAT), unique-local and
//! reserved ranges only when the matched endpoint's `allowed_ips` covers them;
//! everything else (public) is allowed. IPv6 forms that carry an IPv4 address
//! (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`) are judged by the IPv4 address they carry. IPv6 outside
//! `2000::/3` that is not otherwise classified counts as reserved.
//!
//! These checks run in Rust on the addresses the proxy is about to dial, not in
//! Rego, so the network decision cache (keyed by binary, host and port) stays
//! valid whatever a name resolves to. Residual risk: the caller must connect to
//! exactly the address it checked (no second resolution), or DNS rebinding
//! reopens the hole.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// What kind of address an IP is, as far as SSRF protection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable: always allowed.
    Public,
    /// 127.0.0.0/8, ::1. Never allowed.
    Loopback,
    /// 169.254.0.0/16 (incl. the metadata service), fe80::/10. Never allowed.
    LinkLocal,
    /// 0.0.0.0, ::. Never allowed.
    Unspecified,
    /// 255.255.255.255. Never allowed.
    Broadcast,
    /// 224.0.0.0/4, ff00::/8. Never allowed.
    Multicast,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and site-local fec0::/10. Needs `allowed_ips`.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT). Needs `allowed_ips`.
    SharedAddressSpace,
    /// fc00::/7. Needs `allowed_ips`.
    UniqueLocal,
    /// 0.0.0.0/8, documentation, benchmarking, IETF-reserved and other
    /// non-global ranges. Needs `allowed_ips`.
    Reserved,
}

impl AddressClass {
    /// Whether no policy can make this class reachable.
    #[must_use]
    pub fn is_never_reachable(self) -> bool {
        matches!(
            self,
            Self::Loopback | Self::LinkLocal | Self::Unspecified | Self::Broadcast | Self::Multicast
        )
    }
}

/// Why a resolved address may not be dialled. Carries the address as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressDenied {
    /// Loopback: the sandbox host itself.
    #[error("{0} is a loopback address; the sandbox can never reach it")]
    Loopback(IpAddr),
    /// Link-local, including the cloud metadata service.
    #[error(
        "{0} is a link-local address (this includes cloud metadata services); the sandbox can never reach it"
    )]
    LinkLocal(IpAddr),
    /// The unspecified address.
    #[error("{0} is the unspecified address; the sandbox can never reach it")]
    Unspecified(IpAddr),
    /// The limited broadcast address.
    #[error("{0} is the broadcast address; the sandbox can never reach it")]
    Broadcast(IpAddr),
    /// A multicast group.
    #[error("{0} is a multicast address; the sandbox can never reach it")]
    Multicast(IpAddr),
    /// RFC 1918 / site-local.
    #[error("{0} is a private address; add it to allowed_ips of the endpoint to allow it")]
    Private(IpAddr),
    /// Carrier-grade NAT space.
    #[error("{0} is a shared (CGNAT) address; add it to allowed_ips of the endpoint to allow it")]
    SharedAddressSpace(IpAddr),
    /// IPv6 unique-local.
    #[error("{0} is a unique-local IPv6 address; add it to allowed_ips of the endpoint to allow it")]
    UniqueLocal(IpAddr),
    /// Reserved, documentation or other non-global space.
    #[error("{0} is a reserved, non-public address; add it to allowed_ips of the endpoint to allow it")]
    Reserved(IpAddr),
}

impl AddressDenied {
    /// The address that was refused.
    #[must_use]
    pub fn ip(&self) -> IpAddr {
        match *self {
            Self::Loopback(ip)
            | Self::LinkLocal(ip)
            | Self::Unspecified(ip)
            | Self::Broadcast(ip)
            | Self::Multicast(ip)
            | Self::Private(ip)
            | Self::SharedAddressSpace(ip)
            | Self::UniqueLocal(ip)
            | Self::Reserved(ip) => ip,
        }
    }

    /// Stable machine-readable code for events and JSON bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Loopback(_) => "loopback",
            Self::LinkLocal(_) => "link_local",
            Self::Unspecified(_) => "unspecified",
            Self::Broadcast(_) => "broadcast",
            Self::Multicast(_) => "multicast",
            Self::Private(_) => "private",
            Self::SharedAddressSpace(_) => "shared_address_space",
            Self::UniqueLocal(_) => "unique_local",
            Self::Reserved(_) => "reserved",
        }
    }

    /// Whether listing the address in `allowed_ips` would allow it.
    #[must_use]
    pub fn is_overridable(&self) -> bool {
        matches!(
            self,
            Self::Private(_) | Self::SharedAddressSpace(_) | Self::UniqueLocal(_) | Self::Reserved(_)
        )
    }
}

/// Decide whether `ip` may be dialled for an endpoint whose `allowed_ips` is given.
///
/// # Errors
/// [`AddressDenied`] naming the class of a refused address.
pub fn check_address(ip: IpAddr, allowed_ips: &[IpNet]) -> Result<(), AddressDenied> {
    let class = classify(ip);
    let denied = match class {
        AddressClass::Public => return Ok(()),
        AddressClass::Loopback => AddressDenied::Loopback(ip),
        AddressClass::LinkLocal => AddressDenied::LinkLocal(ip),
        AddressClass::Unspecified => AddressDenied::Unspecified(ip),
        AddressClass::Broadcast => AddressDenied::Broadcast(ip),
        AddressClass::Multicast => AddressDenied::Multicast(ip),
        AddressClass::Private => AddressDenied::Private(ip),
        AddressClass::SharedAddressSpace => AddressDenied::SharedAddressSpace(ip),
        AddressClass::UniqueLocal => AddressDenied::UniqueLocal(ip),
        AddressClass::Reserved => AddressDenied::Reserved(ip),
    };
    if !class.is_never_reachable() && is_covered(ip, allowed_ips) {
        return Ok(());
    }
    Err(denied)
}

/// Classify an address; IPv6 forms carrying IPv4 are classified by the IPv4 address.
#[must_use]
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn is_covered(ip: IpAddr, allowed: &[IpNet]) -> bool {
    let mut forms = vec![ip, ip.to_canonical()];
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_v4(v6)
    {
        forms.push(IpAddr::V4(v4));
    }
    allowed.iter().any(|net| forms.iter().any(|f| net.contains(f)))
}

/// (network, prefix length) over the 32-bit IPv4 space.
type Prefix4 = (u32, u8);
/// (network, prefix length) over the 128-bit IPv6 space.
type Prefix6 = (u128, u8);

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

fn in4(ip: u32, (net, len): Prefix4) -> bool {
    len == 0 || (ip ^ net) >> (32 - u32::from(len)) == 0
}

fn in6(ip: u128, (net, len): Prefix6) -> bool {
    len == 0 || (ip ^ net) >> (128 - u32::from(len)) == 0
}

const PRIVATE_V4: &[Prefix4] = &[(v4(10, 0, 0, 0), 8), (v4(172, 16, 0, 0), 12), (v4(192, 168, 0, 0), 16)];
const RESERVED_V4: &[Prefix4] = &[
    (v4(0, 0, 0, 0), 8),       // "this network"
    (v4(192, 0, 0, 0), 24),    // IETF protocol assignments
    (v4(192, 0, 2, 0), 24),    // TEST-NET-1
    (v4(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (v4(198, 18, 0, 0), 15),   // benchmarking
    (v4(198, 51, 100, 0), 24), // TEST-NET-2
    (v4(203, 0, 113, 0), 24),  // TEST-NET-3
    (v4(240, 0, 0, 0), 4),     // reserved (future use)
];

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let n = u32::from(ip);
    if n == 0 {
        AddressClass::Unspecified
    } else if n == u32::MAX {
        AddressClass::Broadcast
    } else if in4(n, (v4(127, 0, 0, 0), 8)) {
        AddressClass::Loopback
    } else if in4(n, (v4(169, 254, 0, 0), 16)) {
        AddressClass::LinkLocal
    } else if in4(n, (v4(224, 0, 0, 0), 4)) {
        AddressClass::Multicast
    } else if PRIVATE_V4.iter().any(|p| in4(n, *p)) {
        AddressClass::Private
    } else if in4(n, (v4(100, 64, 0, 0), 10)) {
        AddressClass::SharedAddressSpace
    } else if RESERVED_V4.iter().any(|p| in4(n, *p)) {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

const V6_MAPPED: Prefix6 = (0xffff << 32, 96);
const V6_TRANSLATED: Prefix6 = (0xffff << 48, 96);
const V6_COMPAT: Prefix6 = (0, 96);
const V6_NAT64: Prefix6 = (0x0064_ff9b << 96, 96);
const V6_6TO4: Prefix6 = (0x2002 << 112, 16);
const RESERVED_V6: &[Prefix6] = &[
    (0x0064_ff9b_0001 << 80, 48), // local-use NAT64 (RFC 8215)
    (0x0100 << 112, 64),          // discard-only
    (0x2001 << 112, 32),          // Teredo
    (0x2001_0002 << 96, 48),      // benchmarking
    (0x2001_0db8 << 96, 32),      // documentation
    (0x3fff << 112, 20),          // documentation (RFC 9637)
    (0x5f00 << 112, 16),          // SRv6 SIDs
];

/// The IPv4 address carried by an IPv6 address, for the forms that carry one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let n = u128::from(ip);
    let low32 = || Ipv4Addr::from((n & 0xffff_ffff) as u32);
    // IPv4-compatible (`::a.b.c.d`) excludes `::` and `::1`, which are IPv6's own.
    let compat = in6(n, V6_COMPAT) && n > 1;
    if in6(n, V6_MAPPED) || in6(n, V6_TRANSLATED) || in6(n, V6_NAT64) || compat {
        Some(low32())
    } else if in6(n, V6_6TO4) {
        Some(Ipv4Addr::from(((n >> 80) & 0xffff_ffff) as u32))
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let n = u128::from(ip);
    if n == 0 {
        return AddressClass::Unspecified;
    }
    if n == 1 {
        return AddressClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    if in6(n, (0xfe80 << 112, 10)) {
        AddressClass::LinkLocal
    } else if in6(n, (0xff00 << 112, 8)) {
        AddressClass::Multicast
    } else if in6(n, (0xfc00 << 112, 7)) {
        AddressClass::UniqueLocal
    } else if in6(n, (0xfec0 << 112, 10)) {
        AddressClass::Private
    } else if RESERVED_V6.iter().any(|p| in6(n, *p)) || !in6(n, (0x2000 << 112, 3)) {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// A never-reachable range that an `allowed_ips` entry overlaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForbiddenOverlap {
    pub(crate) class: &'static str,
    pub(crate) range: String,
}

const NEVER_V4: &[(Prefix4, &str)] = &[
    ((v4(127, 0, 0, 0), 8), "loopback"),
    ((v4(169, 254, 0, 0), 16), "link-local"),
    ((v4(0, 0, 0, 0), 32), "unspecified"),
    ((v4(255, 255, 255, 255), 32), "broadcast"),
    ((v4(224, 0, 0, 0), 4), "multicast"),
];
const NEVER_V6: &[(Prefix6, &str)] = &[
    ((1, 128), "loopback"),
    ((0, 128), "unspecified"),
    ((0xfe80 << 112, 10), "link-local"),
    ((0xff00 << 112, 8), "multicast"),
];

/// The first never-reachable range `net` overlaps (directly or through an IPv6
/// form that carries IPv4), if any. Used to reject `allowed_ips` such as
/// `0.0.0.0/0`, `127.0.0.1` or `::ffff:0:0/96`.
pub(crate) fn forbidden_overlap(net: &IpNet) -> Option<ForbiddenOverlap> {
    match net {
        IpNet::V4(n) => {
            let user = (u32::from(n.network()), n.prefix_len());
            NEVER_V4.iter().find(|(p, _)| overlap4(user, *p)).map(|((a, l), class)| ForbiddenOverlap {
                class,
                range: format!("{}/{l}", Ipv4Addr::from(*a)),
            })
        }
        IpNet::V6(n) => {
            let user = (u128::from(n.network()), n.prefix_len());
            let direct = NEVER_V6.iter().map(|(p, c)| (*p, *c));
            let carried = NEVER_V4.iter().flat_map(|((a, l), c)| {
                let a = u128::from(*a);
                [V6_MAPPED, V6_TRANSLATED, V6_COMPAT, V6_NAT64]
                    .into_iter()
                    .map(move |(base, len)| ((base | a, len + l), *c))
                    .chain(std::iter::once(((V6_6TO4.0 | a << 80, V6_6TO4.1 + l), *c)))
            });
            direct.chain(carried).find(|(p, _)| overlap6(user, *p)).map(|((a, l), class)| ForbiddenOverlap {
                class,
                range: format!("{}/{l}", Ipv6Addr::from(a)),
            })
        }
    }
}

fn overlap4(a: Prefix4, b: Prefix4) -> bool {
    in4(a.0, b) || in4(b.0, a)
}

fn overlap6(a: Prefix6, b: Prefix6) -> bool {
    in6(a.0, b) || in6(b.0, a)
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Multicast => "multicast",
            Self::Private => "private",
            Self::SharedAddressSpace => "shared (CGNAT)",
            Self::UniqueLocal => "unique-local",
            Self::Reserved => "reserved",
        })
    }
}

#[cfg(test)]
mod tests;
