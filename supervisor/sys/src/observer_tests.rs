//! The refusal filter run by a small classic-BPF interpreter against hand-built packets (the kernel's own
//! verdicts on real packets are in `tests/suite/capture.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const PACKET_HOST: u8 = 0;

/// Interprets the subset of classic BPF the filter uses. Out-of-bounds loads end the program with 0, as
/// in the kernel.
fn run(prog: &[libc::sock_filter], proto: u16, pkttype: u8, pkt: &[u8]) -> u32 {
    let load = |off: u32, size: u16| -> Option<u32> {
        let off = usize::try_from(off).ok()?;
        let n = match size {
            BPF_B => 1,
            BPF_H => 2,
            _ => 4,
        };
        let b = pkt.get(off..off.checked_add(n)?)?;
        Some(b.iter().fold(0u32, |acc, &x| (acc << 8) | u32::from(x)))
    };
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    loop {
        let ins = prog[pc];
        pc += 1;
        let class = ins.code & 0x07;
        match class {
            c if c == BPF_LD => {
                let size = ins.code & 0x18;
                let mode = ins.code & 0xe0;
                a = match mode {
                    m if m == BPF_ABS && ins.k == AD_PROTOCOL => u32::from(proto),
                    m if m == BPF_ABS && ins.k == AD_PKTTYPE => u32::from(pkttype),
                    m if m == BPF_ABS && ins.k >= 0xffff_f000 => {
                        panic!("unexpected ancillary load {}", ins.k)
                    }
                    m if m == BPF_ABS => match load(ins.k, size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    m if m == BPF_IND => match load(x.wrapping_add(ins.k), size) {
                        Some(v) => v,
                        None => return 0,
                    },
                    m => panic!("unexpected load mode {m:#x}"),
                };
            }
            c if c == BPF_LDX => {
                assert_eq!(ins.code, BPF_LDX | BPF_B | BPF_MSH);
                x = match load(ins.k, BPF_B) {
                    Some(v) => 4 * (v & 0xf),
                    None => return 0,
                };
            }
            c if c == BPF_ALU => {
                assert_eq!(ins.code, BPF_ALU | BPF_AND | BPF_K);
                a &= ins.k;
            }
            c if c == BPF_JMP => {
                let taken = match ins.code & 0xf0 {
                    op if op == BPF_JEQ => a == ins.k,
                    op if op == BPF_JSET => a & ins.k != 0,
                    op => panic!("unexpected jump {op:#x}"),
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            c if c == BPF_RET => return ins.k,
            c => panic!("unexpected class {c}"),
        }
    }
}

fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).unwrap();
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&[10, 200, 0, 4]); // source: the refused destination answering
    p.extend_from_slice(&[10, 200, 0, 4]);
    p.extend_from_slice(payload);
    p
}

fn ipv6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]);
    p.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    p.extend_from_slice(payload);
    p
}

fn tcp(seq: u32, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&9000u16.to_be_bytes());
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&77u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
    t
}

fn icmp(ty: u8, code: u8, inner: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(inner);
    m
}

const RST_ACK: u8 = 0x14;
const V4: u16 = 0x0800;
const V6: u16 = 0x86dd;

#[test]
fn program_is_well_formed() {
    let prog = refusal_filter();
    assert!(prog.len() < 64, "{} instructions", prog.len());
    for (i, ins) in prog.iter().enumerate() {
        if ins.code & 0x07 == BPF_JMP {
            assert!(i + 1 + usize::from(ins.jt) < prog.len(), "jt out of range at {i}");
            assert!(i + 1 + usize::from(ins.jf) < prog.len(), "jf out of range at {i}");
        }
    }
    assert_eq!(prog.last().unwrap().code, BPF_RET | BPF_K);
    // Labels are unique and every jump names one of them.
    let lines = program();
    let labels: Vec<_> =
        lines.iter().filter_map(|l| if let Label(n) = l { Some(*n) } else { None }).collect();
    let unique: std::collections::HashSet<_> = labels.iter().collect();
    assert_eq!(unique.len(), labels.len());
    for l in &lines {
        if let Jump(_, _, t, f) = l {
            for name in [t, f].into_iter().flatten() {
                assert!(labels.contains(name), "jump to unknown label {name}");
            }
        }
    }
}

#[test]
fn keeps_exactly_the_kernels_refusals() {
    let prog = refusal_filter();
    let udp = [0x9c, 0x40, 0x23, 0x28, 0, 12, 0, 0, b'p', b'i', b'n', b'g'];
    let refused_datagram = ipv4(17, &udp);
    let refused_datagram6 = ipv6(17, &udp);
    let mut with_options = ipv4(6, &[&[1, 1, 1, 0][..], &tcp(0, RST_ACK)].concat());
    with_options[0] = 0x46;
    let mut later_fragment = ipv4(6, &tcp(0, RST_ACK));
    later_fragment[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
    let cases: Vec<(&str, u16, u8, Vec<u8>, bool)> = vec![
        ("v4 reset to a SYN", V4, PACKET_HOST, ipv4(6, &tcp(0, RST_ACK)), true),
        ("v4 reset, IP options", V4, PACKET_HOST, with_options, true),
        ("v4 reset, later fragment", V4, PACKET_HOST, later_fragment, false),
        ("v4 reset, outgoing copy", V4, PACKET_OUTGOING as u8, ipv4(6, &tcp(0, RST_ACK)), false),
        ("v4 abortive close (seq = snd_nxt)", V4, PACKET_HOST, ipv4(6, &tcp(0x1234_5678, RST_ACK)), false),
        ("v4 reset to an ACK (no ACK flag)", V4, PACKET_HOST, ipv4(6, &tcp(0, 0x04)), false),
        ("v4 SYN", V4, PACKET_HOST, ipv4(6, &tcp(0, 0x02)), false),
        ("v4 SYN-ACK", V4, PACKET_HOST, ipv4(6, &tcp(0, 0x12)), false),
        ("v4 data", V4, PACKET_HOST, ipv4(6, &tcp(0, 0x18)), false),
        ("v4 FIN|RST|ACK", V4, PACKET_HOST, ipv4(6, &tcp(0, 0x15)), false),
        ("v4 UDP", V4, PACKET_HOST, ipv4(17, &udp), false),
        ("v4 port unreachable", V4, PACKET_HOST, ipv4(1, &icmp(3, 3, &refused_datagram)), true),
        ("v4 host unreachable", V4, PACKET_HOST, ipv4(1, &icmp(3, 1, &refused_datagram)), false),
        ("v4 echo request", V4, PACKET_HOST, ipv4(1, &icmp(8, 0, b"abcd")), true),
        ("v4 echo reply", V4, PACKET_HOST, ipv4(1, &icmp(0, 0, b"abcd")), false),
        ("v6 reset to a SYN", V6, PACKET_HOST, ipv6(6, &tcp(0, RST_ACK)), true),
        ("v6 reset, outgoing copy", V6, PACKET_OUTGOING as u8, ipv6(6, &tcp(0, RST_ACK)), false),
        ("v6 SYN", V6, PACKET_HOST, ipv6(6, &tcp(0, 0x02)), false),
        ("v6 data", V6, PACKET_HOST, ipv6(6, &tcp(99, 0x10)), false),
        ("v6 UDP", V6, PACKET_HOST, ipv6(17, &udp), false),
        ("v6 port unreachable", V6, PACKET_HOST, ipv6(58, &icmp(1, 4, &refused_datagram6)), true),
        ("v6 address unreachable", V6, PACKET_HOST, ipv6(58, &icmp(1, 3, &refused_datagram6)), false),
        ("v6 echo request", V6, PACKET_HOST, ipv6(58, &icmp(128, 0, b"abcd")), true),
        ("v6 echo reply", V6, PACKET_HOST, ipv6(58, &icmp(129, 0, b"abcd")), false),
        ("v6 neighbour solicitation", V6, PACKET_HOST, ipv6(58, &icmp(135, 0, &[0; 20])), false),
        ("v6 in a v4 frame", V4, PACKET_HOST, ipv6(6, &tcp(0, RST_ACK)), false),
        ("v4 in a v6 frame", V6, PACKET_HOST, ipv4(6, &tcp(0, RST_ACK)), false),
        ("ARP", 0x0806, PACKET_HOST, vec![0; 28], false),
        ("empty", V4, PACKET_HOST, vec![], false),
    ];
    for (name, proto, pkttype, pkt, keep) in cases {
        let verdict = run(&prog, proto, pkttype, &pkt);
        assert_eq!(verdict, if keep { SNAP_LEN } else { 0 }, "{name}");
        // Any truncation is answered too (an out-of-bounds load drops).
        for cut in 0..pkt.len() {
            let v = run(&prog, proto, pkttype, &pkt[..cut]);
            assert!(v == 0 || v == SNAP_LEN, "{name} cut at {cut}");
        }
    }
}

#[test]
fn garbage_is_answered() {
    let prog = refusal_filter();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..20_000 {
        let len = (i % 97) as usize;
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        for proto in [V4, V6, 0] {
            let v = run(&prog, proto, PACKET_HOST, &pkt);
            assert!(v == 0 || v == SNAP_LEN);
        }
    }
}
