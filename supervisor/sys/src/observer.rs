//! The refusal observer: an `AF_PACKET` socket on the sandbox's `lo` with a hand-assembled classic BPF
//! filter that lets through only the sandbox kernel's own refusals, so the supervisor can report denials
//! that never reach one of its listeners (architecture/egress.md, *Refusals the kernel answers*).
//!
//! With every address local (see [`crate::net`]), a `connect()` to a port without a listener is answered
//! by the sandbox kernel with a TCP RST, and a UDP datagram to a port without a socket with ICMP "port
//! unreachable"; nothing leaves, and the supervisor never sees the attempt. The filter keeps exactly:
//! - TCP segments with `RST|ACK` (and neither `SYN` nor `FIN`) and sequence number 0: the kernel's answer to
//!   a SYN for a closed port (`tcp_v4_send_reset`/`tcp_v6_send_reset` answer a segment without ACK with
//!   `seq 0`); an abortive close (`SO_LINGER 0`, used by capture refusals) sends `seq = snd_nxt`, random;
//! - ICMP destination unreachable / port unreachable (type 3 code 3) and ICMPv6 type 1 code 4, which carry
//!   the refused datagram's headers;
//! - ICMP/ICMPv6 echo requests (type 8 / 128), should a kernel ever let the agent send one (`ping` sockets
//!   are off: `ping_group_range` is empty; raw sockets are denied by seccomp).
//!
//! Observing the refusal rather than the attempt (a SYN, a datagram) means: connections to any listener,
//! the supervisor's or the agent's own (Landlock lets it bind ephemeral ports), never reach userspace, the
//! set of listened ports needs no tracking (the kernel's socket table is the truth, also across reloads),
//! and tunnel data never leaves the kernel. Only incoming copies are kept (`PACKET_IGNORE_OUTGOING`, and the
//! filter drops `PACKET_OUTGOING` for kernels without that option): each packet is seen once. At most
//! [`SNAP_LEN`] bytes of a packet are queued.
//!
//! Threat handled: denials without events (issue 2: "other UDP and ICMP are dropped with an event").
//! Residual risk: the socket observes, it does not enforce; its receive buffer (about 256 queued refusals
//! at the default `rmem`) drops what a burst brings faster than the supervisor reads, uncounted (ICMP errors
//! caused by loopback traffic are exempt from the kernel's ICMP rate limits: measured, 3000 refused
//! datagrams in a burst, IPv4 and IPv6, 3000 errors); the filter is locked (`SO_LOCK_FILTER`) so whoever
//! holds the descriptor cannot widen it.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{AddressFamily, SockFlag, SockType};

/// Description of the mechanism, for reports.
pub const MECHANISM: &str = "af_packet on lo with a locked cBPF filter: kernel resets of connection attempts, ICMP port unreachable, \
     echo requests";

/// Bytes of each accepted packet that are queued: enough for an IPv4 header with options (60), an ICMP
/// header (8) and the embedded original IPv4 header with options plus its first 8 bytes (68).
pub const SNAP_LEN: u32 = 256;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    #[error("socket(AF_PACKET, SOCK_DGRAM) failed (needs CAP_NET_RAW over the network namespace)")]
    Socket {
        #[source]
        source: nix::Error,
    },
    #[error("setsockopt {option} on the packet socket failed")]
    SetOption {
        option: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("cannot bind the packet socket to lo")]
    Bind {
        #[source]
        source: nix::Error,
    },
}

// Classic BPF encoding (linux/bpf_common.h, linux/filter.h).
const BPF_LD: u16 = 0x00;
const BPF_LDX: u16 = 0x01;
const BPF_ALU: u16 = 0x04;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_H: u16 = 0x08;
const BPF_B: u16 = 0x10;
const BPF_ABS: u16 = 0x20;
const BPF_IND: u16 = 0x40;
const BPF_MSH: u16 = 0xa0;
const BPF_AND: u16 = 0x50;
const BPF_JEQ: u16 = 0x10;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;
/// Ancillary data: `SKF_AD_OFF + SKF_AD_PROTOCOL` (`ntohs(skb->protocol)`) and `+ SKF_AD_PKTTYPE`.
const AD_PROTOCOL: u32 = (-0x1000i32) as u32;
const AD_PKTTYPE: u32 = (-0x1000i32 + 4) as u32;

const PACKET_OUTGOING: u32 = 4;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_ICMPV6: u32 = 58;
/// TCP flag bits looked at: FIN, SYN, RST, ACK.
const TCP_FLAGS_MASK: u32 = 0x17;
const TCP_RST_ACK: u32 = 0x14;

/// One line of the program before jump targets are resolved.
#[derive(Clone, Copy)]
enum Line {
    Label(&'static str),
    Stmt(u16, u32),
    /// Conditional jump: to `t` when true, to `f` when false (`None`: the next instruction).
    Jump(u16, u32, Option<&'static str>, Option<&'static str>),
}

use Line::{Jump, Label, Stmt};

/// The program, with symbolic labels (see the module docs). The socket is `SOCK_DGRAM`: offset 0 is the
/// network header.
fn program() -> Vec<Line> {
    let ld_b = BPF_LD | BPF_B | BPF_ABS;
    let ld_h = BPF_LD | BPF_H | BPF_ABS;
    let ld_w = BPF_LD | BPF_W | BPF_ABS;
    let ldx_ihl = BPF_LDX | BPF_B | BPF_MSH;
    let ld_b_x = BPF_LD | BPF_B | BPF_IND;
    let ld_w_x = BPF_LD | BPF_W | BPF_IND;
    let and = BPF_ALU | BPF_AND | BPF_K;
    let jeq = BPF_JMP | BPF_JEQ | BPF_K;
    let jset = BPF_JMP | BPF_JSET | BPF_K;
    let drop = Some("drop");
    let accept = Some("accept");
    vec![
        Stmt(ld_w, AD_PKTTYPE),
        Jump(jeq, PACKET_OUTGOING, drop, None),
        Stmt(ld_w, AD_PROTOCOL),
        Jump(jeq, ETH_P_IP, None, Some("v6")),
        // IPv4: version 4, not a later fragment, X = header length.
        Stmt(ld_b, 0),
        Stmt(and, 0xf0),
        Jump(jeq, 0x40, None, drop),
        Stmt(ld_h, 6),
        Jump(jset, 0x1fff, drop, None),
        Stmt(ldx_ihl, 0),
        Stmt(ld_b, 9),
        Jump(jeq, IPPROTO_TCP, None, Some("icmp4")),
        Stmt(ld_b_x, 13),
        Stmt(and, TCP_FLAGS_MASK),
        Jump(jeq, TCP_RST_ACK, None, drop),
        Stmt(ld_w_x, 4),
        Jump(jeq, 0, accept, drop),
        Label("icmp4"),
        Jump(jeq, IPPROTO_ICMP, None, drop),
        Stmt(ld_b_x, 0),
        Jump(jeq, 8, accept, None),
        Jump(jeq, 3, None, drop),
        Stmt(ld_b_x, 1),
        Jump(jeq, 3, accept, drop),
        // IPv6: version 6; TCP or ICMPv6 right after the fixed header (the kernel's answers carry no
        // extension headers).
        Label("v6"),
        Jump(jeq, ETH_P_IPV6, None, drop),
        Stmt(ld_b, 0),
        Stmt(and, 0xf0),
        Jump(jeq, 0x60, None, drop),
        Stmt(ld_b, 6),
        Jump(jeq, IPPROTO_TCP, None, Some("icmp6")),
        Stmt(ld_b, 40 + 13),
        Stmt(and, TCP_FLAGS_MASK),
        Jump(jeq, TCP_RST_ACK, None, drop),
        Stmt(ld_w, 40 + 4),
        Jump(jeq, 0, accept, drop),
        Label("icmp6"),
        Jump(jeq, IPPROTO_ICMPV6, None, drop),
        Stmt(ld_b, 40),
        Jump(jeq, 128, accept, None),
        Jump(jeq, 1, None, drop),
        Stmt(ld_b, 41),
        Jump(jeq, 4, accept, drop),
        Label("accept"),
        Stmt(BPF_RET | BPF_K, SNAP_LEN),
        Label("drop"),
        Stmt(BPF_RET | BPF_K, 0),
    ]
}

/// Resolves labels into forward jump offsets. A missing label or a jump beyond 255 instructions becomes
/// an out-of-range offset that the kernel refuses (`EINVAL`): fail closed; a test proves the program
/// above resolves completely.
fn assemble(lines: &[Line]) -> Vec<libc::sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for l in lines {
        match l {
            Label(name) => {
                at.insert(*name, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for l in lines {
        match *l {
            Label(_) => {}
            Stmt(code, k) => out.push(libc::sock_filter { code, jt: 0, jf: 0, k }),
            Jump(code, k, t, f) => {
                let here = out.len();
                let off = |target: Option<&'static str>| -> u8 {
                    let Some(name) = target else { return 0 };
                    let dest = at.get(name).copied().unwrap_or(usize::MAX);
                    // cBPF jumps are forward only and at most 255 instructions.
                    u8::try_from(dest.wrapping_sub(here + 1)).unwrap_or(u8::MAX)
                };
                out.push(libc::sock_filter { code, jt: off(t), jf: off(f), k });
            }
        }
    }
    out
}

/// The refusal filter as classic BPF instructions.
pub fn refusal_filter() -> Vec<libc::sock_filter> {
    assemble(&program())
}

fn set_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    option: &'static str,
) -> Result<(), ObserverError> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a live `c_int` whose size
    // is passed alongside; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(ObserverError::SetOption { option, source: nix::Error::last() }) }
}

/// Creates the refusal observer on `lo` of the current network namespace. Needs `CAP_NET_RAW` over the
/// namespace (sandbox init has it, as root or as the root of the sandbox's user namespace); the returned
/// socket needs no privilege to read. Close-on-exec, blocking (read it with `MSG_DONTWAIT`).
///
/// The socket is created with protocol 0 (it receives nothing), gets its filter attached and locked, and
/// only then is bound to `lo` for every protocol: no packet is ever queued unfiltered.
pub fn refusal_observer() -> Result<OwnedFd, ObserverError> {
    let fd =
        nix::sys::socket::socket(AddressFamily::Packet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|source| ObserverError::Socket { source })?;

    let filter = refusal_filter();
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).unwrap_or(u16::MAX),
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies the instructions and
    // validates them (an invalid program is EINVAL, not undefined behaviour); `prog.len` is its length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(ObserverError::SetOption { option: "SO_ATTACH_FILTER", source: nix::Error::last() });
    }
    set_int(&fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, "SO_LOCK_FILTER")?;
    // Linux >= 4.20; older kernels still get one copy per packet because the filter drops outgoing ones.
    match set_int(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, "PACKET_IGNORE_OUTGOING") {
        Ok(())
        | Err(ObserverError::SetOption { source: nix::Error::ENOPROTOOPT | nix::Error::EINVAL, .. }) => {}
        Err(e) => return Err(e),
    }

    // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid (unbound) value that is filled below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = crate::net::LOOPBACK_IFINDEX as libc::c_int;
    // SAFETY: `addr` is a fully initialised `sockaddr_ll` that outlives the call and its exact size is
    // passed; `fd` is an open AF_PACKET socket.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(ObserverError::Bind { source: nix::Error::last() });
    }
    Ok(fd)
}

#[cfg(test)]
#[path = "observer_tests.rs"]
mod tests;
