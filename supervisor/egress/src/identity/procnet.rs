//! `/proc/<pid>/net/tcp` and `tcp6`: find the socket inode of the agent's end of
//! an accepted connection.
//!
//! Threat handled: attributing a connection to the wrong process. The table is
//! read from the sandbox init's view (`/proc/<init>/net/...` shows the network
//! namespace of that process), and a row matches only when BOTH its local address
//! (the agent's end) and its remote address (our listener's end) match exactly.
//!
//! Format: each row is `sl local rem st tx:rx tr:when retr uid timeout inode ...`.
//! Addresses are the raw in-memory bytes of the kernel's `__be32` words printed
//! as native-endian `%08X` (so `127.0.0.1` is `0100007F` on little-endian hosts);
//! IPv6 is four such words; ports are host-order `%04X`.
//! Residual risk: parsing is text-based and bounded; a malformed row is skipped,
//! which can only make a lookup fail (deny), never succeed wrongly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP state `LISTEN` in the table; never the agent's connecting end.
const TCP_LISTEN: u8 = 0x0A;

/// One parsed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// Parses one row of `/proc/net/tcp{,6}`; `None` for the header or garbage.
pub(crate) fn parse_row(line: &str) -> Option<TcpRow> {
    let mut f = line.split_ascii_whitespace();
    let sl = f.next()?;
    if !sl.ends_with(':') {
        return None;
    }
    let local = parse_sockaddr(f.next()?)?;
    let remote = parse_sockaddr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    // tx:rx, tr:when, retrnsmt, uid, timeout, then the inode.
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpRow { local, remote, state, inode })
}

/// Parses `HEXADDR:HEXPORT` (8 or 32 hex digits of address).
pub(crate) fn parse_sockaddr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    if port.len() != 4 || !port.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One `%08X` word back to the bytes it was printed from.
fn word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
}

/// The textual form a socket address takes in the v4 table (`None` for IPv6)
/// and in the v6 table (IPv4 appears there v4-mapped).
pub(crate) fn encode(addr: SocketAddr) -> (Option<String>, String) {
    let ip = addr.ip().to_canonical();
    let port = addr.port();
    let hex_word = |b: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(b));
    let v6_text = |v6: Ipv6Addr| {
        let o = v6.octets();
        let mut s = String::with_capacity(37);
        for c in o.chunks_exact(4) {
            s.push_str(&hex_word([c[0], c[1], c[2], c[3]]));
        }
        s.push_str(&format!(":{port:04X}"));
        s
    };
    match ip {
        IpAddr::V4(v4) => {
            (Some(format!("{}:{port:04X}", hex_word(v4.octets()))), v6_text(v4.to_ipv6_mapped()))
        }
        IpAddr::V6(v6) => (None, v6_text(v6)),
    }
}

/// Finds the inode of the socket whose local end is `agent` and remote end is
/// `ours` in one table's text. `table_is_v6` selects the encoding to look for.
pub(crate) fn find_inode(table: &str, table_is_v6: bool, agent: SocketAddr, ours: SocketAddr) -> Option<u64> {
    let (agent4, agent6) = encode(agent);
    let (ours4, ours6) = encode(ours);
    let (want_local, want_remote) = if table_is_v6 { (agent6, ours6) } else { (agent4?, ours4?) };
    table.lines().skip(1).find_map(|line| {
        let mut f = line.split_ascii_whitespace();
        f.next()?;
        let local = f.next()?;
        let remote = f.next()?;
        if !local.eq_ignore_ascii_case(&want_local) || !remote.eq_ignore_ascii_case(&want_remote) {
            return None;
        }
        let row = parse_row(line)?;
        (row.state != TCP_LISTEN && row.inode != 0).then_some(row.inode)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured on a little-endian host; addresses below are what `ss` showed.
    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 0100007F:D431 0100007F:0C38 01 00000000:00000000 00:00000000 00000000  1000        0 424242 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:0C38 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 424243 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D432 0100007F:0C38 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 20 4 30 10 -1
   2: 0000000000000000FFFF00000100007F:9C41 0000000000000000FFFF0000050A0A0A:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 888 1 0000000000000000 20 4 30 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_v4_rows_in_native_order() {
        let rows: Vec<TcpRow> = TCP4.lines().filter_map(parse_row).collect();
        assert_eq!(rows.len(), 4);
        if cfg!(target_endian = "little") {
            assert_eq!(rows[0].local, sa("127.0.0.1:3128"));
            assert_eq!(rows[1].local, sa("127.0.0.1:54321"));
            assert_eq!(rows[1].remote, sa("127.0.0.1:3128"));
        }
        assert_eq!(rows[0].state, 0x0A);
        assert_eq!(rows[1].inode, 424_242);
    }

    #[test]
    fn finds_agent_end_not_ours_nor_listener() {
        if cfg!(target_endian = "big") {
            return;
        }
        let agent = sa("127.0.0.1:54321");
        let ours = sa("127.0.0.1:3128");
        assert_eq!(find_inode(TCP4, false, agent, ours), Some(424_242));
        // Our own accepted end has the addresses swapped.
        assert_eq!(find_inode(TCP4, false, ours, agent), Some(424_243));
        // TIME_WAIT-like rows carry inode 0 and never match.
        assert_eq!(find_inode(TCP4, false, sa("127.0.0.1:54322"), ours), None);
        assert_eq!(find_inode(TCP4, false, sa("127.0.0.1:1"), ours), None);
    }

    #[test]
    fn v6_and_v4_mapped() {
        if cfg!(target_endian = "big") {
            return;
        }
        let rows: Vec<TcpRow> = TCP6.lines().filter_map(parse_row).collect();
        assert_eq!(rows[0].local, sa("[::1]:443"));
        assert_eq!(find_inode(TCP6, true, sa("[::1]:40000"), sa("[::1]:443")), Some(777));
        // An IPv4 connection made from a v6 socket shows up v4-mapped in tcp6; our
        // accepted side may report either form, both must match.
        assert_eq!(find_inode(TCP6, true, sa("127.0.0.1:40001"), sa("10.10.10.5:443")), Some(888));
        assert_eq!(
            find_inode(TCP6, true, sa("[::ffff:127.0.0.1]:40001"), sa("[::ffff:10.10.10.5]:443")),
            Some(888)
        );
        // IPv6 endpoints are never searched for in the v4 table.
        assert_eq!(find_inode(TCP4, false, sa("[::1]:40000"), sa("[::1]:443")), None);
    }

    #[test]
    fn encode_round_trips() {
        for s in ["127.0.0.1:3128", "10.1.2.3:1", "[2001:db8::1]:65535", "[::1]:80"] {
            let a = sa(s);
            let (v4, v6) = encode(a);
            if let Some(v4) = v4 {
                assert_eq!(parse_sockaddr(&v4), Some(a));
            }
            let back = parse_sockaddr(&v6).unwrap();
            assert_eq!(SocketAddr::new(back.ip().to_canonical(), back.port()), a);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for line in [
            "",
            "   0:",
            "   0: 0100007F:0C38",
            "   0: ZZZZZZZZ:0C38 0100007F:0C38 01 a b c d e f",
            "   0: 0100007F:0C3 0100007F:0C38 01 0:0 0:0 0 0 0 1",
            "   0: 0100007F0C38 0100007F:0C38 01 0:0 0:0 0 0 0 1",
            "   0: 01000\u{e9}7F:0C38 0100007F:0C38 01 0:0 0:0 0 0 0 1",
            "   0: 000000000000000000000000010000\u{e9}:01BB 0100007F:0C38 01 0:0 0:0 0 0 0 1",
            "   0: 0100007F:0C38 0100007F:0C38 FFF 0:0 0:0 0 0 0 1",
            "   0: 0100007F:0C38 0100007F:0C38 01 0:0 0:0 0 0 0 -1",
        ] {
            assert!(parse_row(line).is_none(), "{line:?}");
            let _ = find_inode(line, false, sa("127.0.0.1:1"), sa("127.0.0.1:2"));
            let _ = find_inode(line, true, sa("127.0.0.1:1"), sa("127.0.0.1:2"));
        }
    }
}
