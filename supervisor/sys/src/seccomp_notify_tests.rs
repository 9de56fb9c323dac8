//! The notify mode against the plain filter, proven with a small classic-BPF interpreter: for every row of
//! the table (and calls that must stay allowed), the stacked notify programs return USER_NOTIF exactly
//! where the plain programs return a refusing errno, the same action everywhere else, and the answer the
//! supervisor gives is that errno.

use super::*;
use crate::seccomp::{self, Extras, When, syscall_number};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// `struct seccomp_data` as the kernel lays it out for filters.
#[derive(Clone, Copy, Debug)]
struct Data {
    nr: i32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn call(nr: i64, args: [u64; 6]) -> Self {
        Data { nr: nr as i32, arch: AUDIT_ARCH_X86_64, args }
    }

    fn word(&self, offset: u32) -> u32 {
        match offset {
            0 => self.nr as u32,
            4 => self.arch,
            8 | 12 => 0, // instruction pointer: unused by the table
            o if (16..64).contains(&o) && o % 4 == 0 => {
                let arg = self.args[((o - 16) / 8) as usize];
                if (o - 16) % 8 == 0 { arg as u32 } else { (arg >> 32) as u32 }
            }
            o => panic!("load outside seccomp_data at {o}"),
        }
    }
}

/// Runs one classic-BPF seccomp program (the instructions seccompiler and the x32 guard emit).
fn run(program: &BpfProgram, d: &Data) -> u32 {
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let ins = &program[pc];
        let k = ins.k;
        let cond = |taken: bool| if taken { usize::from(ins.jt) } else { usize::from(ins.jf) };
        pc += 1;
        match ins.code {
            0x20 => acc = d.word(k),          // BPF_LD | BPF_W | BPF_ABS
            0x54 => acc &= k,                 // BPF_ALU | BPF_AND | BPF_K
            0x05 => pc += k as usize,         // BPF_JMP | BPF_JA
            0x15 => pc += cond(acc == k),     // BPF_JMP | BPF_JEQ | BPF_K
            0x25 => pc += cond(acc > k),      // BPF_JMP | BPF_JGT | BPF_K
            0x35 => pc += cond(acc >= k),     // BPF_JMP | BPF_JGE | BPF_K
            0x45 => pc += cond(acc & k != 0), // BPF_JMP | BPF_JSET | BPF_K
            0x06 => return k,                 // BPF_RET | BPF_K
            other => panic!("opcode {other:#x} not interpreted"),
        }
    }
}

/// The kernel's choice among stacked filters: the action with the highest precedence (lowest signed
/// value of the action bits) wins.
fn stacked(programs: &[BpfProgram], d: &Data) -> u32 {
    let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
    programs.iter().map(|p| run(p, d)).min_by_key(|r| action(*r)).unwrap_or(libc::SECCOMP_RET_ALLOW)
}

/// Argument vectors worth trying for `entry`: zeros, all ones, and the values its conditions name.
fn interesting_args(entry: &seccomp::Entry) -> Vec<[u64; 6]> {
    let mut out = vec![[0; 6], [0xffff_ffff; 6], [u64::MAX; 6]];
    let mut with = |arg: u8, v: u64| {
        let mut a = [0u64; 6];
        a[usize::from(arg)] = v;
        out.push(a);
        let mut hi = a;
        hi[usize::from(arg)] |= 0xdead_beef_0000_0000; // upper bits are ignored by the table
        out.push(hi);
    };
    match entry.when {
        When::Always => {}
        When::AnyBit { arg, bits } => bits.iter().for_each(|(b, _)| with(arg, *b)),
        When::AllOf(conds) => {
            for c in conds {
                match *c {
                    Cond::Eq { arg, value } | Cond::Ne { arg, value } => {
                        with(arg, value);
                        with(arg, value ^ 1);
                    }
                    Cond::Masked { arg, mask, value } => {
                        with(arg, value);
                        with(arg, mask);
                        with(arg, value | !mask & 0xffff_fff0);
                    }
                }
            }
        }
    }
    // Cross products for two-condition rows (e.g. socket family and type).
    if let When::AllOf(conds) = entry.when
        && conds.len() == 2
    {
        let pick = |c: &Cond| match *c {
            Cond::Eq { arg, value } | Cond::Ne { arg, value } | Cond::Masked { arg, value, .. } => {
                (arg, value)
            }
        };
        let ((a0, v0), (a1, v1)) = (pick(&conds[0]), pick(&conds[1]));
        let mut a = [0u64; 6];
        a[usize::from(a0)] = v0;
        a[usize::from(a1)] |= v1;
        out.push(a);
    }
    out
}

fn samples() -> Vec<Data> {
    let mut out = Vec::new();
    for entry in seccomp::rows(Extras { memfd_noexec: true }) {
        let Some(nr) = syscall_number(entry.syscall) else { continue };
        out.extend(interesting_args(entry).into_iter().map(|a| Data::call(nr, a)));
    }
    let s = |n: i64, a: [u64; 6]| Data::call(n, a);
    out.extend([
        s(libc::SYS_read, [0; 6]),
        s(libc::SYS_getpid, [0; 6]),
        s(libc::SYS_memfd_create, [0; 6]),
        s(libc::SYS_memfd_create, [0, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0]),
        s(libc::SYS_memfd_create, [0, (libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) as u64, 0, 0, 0, 0]),
        s(libc::SYS_memfd_create, [0, (libc::MFD_NOEXEC_SEAL | libc::MFD_EXEC) as u64, 0, 0, 0, 0]),
        s(libc::SYS_memfd_create, [0, libc::MFD_EXEC as u64, 0, 0, 0, 0]),
        s(libc::SYS_clone, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
        s(libc::SYS_clone, [libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
        s(libc::SYS_socket, [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0]),
        s(libc::SYS_socket, [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0]),
        s(libc::SYS_socket, [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0]),
        s(libc::SYS_socket, [libc::AF_NETLINK as u64, libc::SOCK_RAW as u64, 9, 0, 0, 0]),
        s(
            libc::SYS_socket,
            [libc::AF_INET6 as u64, (libc::SOCK_RAW | libc::SOCK_CLOEXEC) as u64, 58, 0, 0, 0],
        ),
        s(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
        s(libc::SYS_personality, [libc::ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0]),
        s(libc::SYS_ioctl, [0, libc::TIOCSTI, 0, 0, 0, 0]),
        s(libc::SYS_ioctl, [0, libc::TCGETS, 0, 0, 0, 0]),
        s(0x4000_0000 + libc::SYS_getpid, [0; 6]), // x32
    ]);
    // A foreign architecture (i386 int 0x80) is killed by both.
    out.push(Data { nr: 1, arch: 0x4000_0003, args: [0; 6] });
    out
}

#[test]
fn notify_mode_refuses_exactly_what_the_plain_filter_refuses() {
    for extras in [Extras::default(), Extras { memfd_noexec: true }] {
        same_refusals(extras);
    }
}

fn same_refusals(extras: Extras) {
    let plain = seccomp::compile_with(extras).unwrap();
    let notify = compile_notify_with(extras).unwrap();
    let mut stack = vec![notify.notify.clone()];
    stack.extend(notify.silent.iter().cloned());
    let (mut notified, mut silent, mut allowed) = (0, 0, 0);
    for d in samples() {
        let before = stacked(&plain, &d);
        let after = stacked(&stack, &d);
        let errno = before & libc::SECCOMP_RET_DATA;
        let refusing =
            before & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ERRNO && errno != libc::ENOSYS as u32;
        if refusing {
            assert_eq!(after, libc::SECCOMP_RET_USER_NOTIF, "{d:?}: plain {before:#x}");
            let entry =
                matching_entry_with(extras, i64::from(d.nr), &d.args).unwrap_or_else(|| panic!("{d:?}"));
            assert_eq!(entry.deny.errno(), errno, "{d:?}: the answer must be the plain filter's errno");
            notified += 1;
        } else {
            assert_eq!(after, before, "{d:?}: same action as the plain filter");
            if d.arch == AUDIT_ARCH_X86_64 && d.nr < 0x4000_0000 {
                assert!(matching_entry_with(extras, i64::from(d.nr), &d.args).is_none(), "{d:?}: no answer");
            }
            if before == libc::SECCOMP_RET_ALLOW { allowed += 1 } else { silent += 1 }
        }
    }
    assert!(notified > 60 && allowed > 10 && silent >= 3, "{notified} {allowed} {silent}");
}

#[test]
fn rewrite_touches_only_the_eperm_returns() {
    let plain = seccomp::compile_by(Extras::default(), |d| d, |d| d).unwrap();
    let (_, eperm) = plain.iter().find(|(d, _)| *d == Deny::Eperm).unwrap();
    let mut rewritten = eperm.clone();
    let n = rewrite_errno_to_notify(&mut rewritten, libc::EPERM as u32);
    assert!(n > 0);
    assert_eq!(rewritten.len(), eperm.len(), "jump offsets stay valid");
    let eperm_ret = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut changed = 0;
    for (a, b) in eperm.iter().zip(&rewritten) {
        if a == b {
            continue;
        }
        assert_eq!(
            (a.code, a.k, b.code, b.k),
            (BPF_RET_K, eperm_ret, BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF)
        );
        assert_eq!((a.jt, a.jf), (b.jt, b.jf));
        changed += 1;
    }
    assert_eq!(changed, n);
    // A comparison against the same constant is not a return and stays.
    let mut tricky = vec![seccompiler::sock_filter { code: 0x15, jt: 0, jf: 0, k: eperm_ret }];
    assert_eq!(rewrite_errno_to_notify(&mut tricky, libc::EPERM as u32), 0);
}

#[test]
fn enosys_rows_never_notify() {
    let notify = compile_notify().unwrap();
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    assert!(notify.notify.iter().all(|i| i.code != BPF_RET_K || i.k != enosys));
    for p in &notify.silent {
        assert!(p.iter().all(|i| i.k != libc::SECCOMP_RET_USER_NOTIF || i.code != BPF_RET_K));
    }
    let clone3 = Data::call(libc::SYS_clone3, [0; 6]);
    assert_eq!(run(&notify.notify, &clone3), libc::SECCOMP_RET_ALLOW);
    assert_eq!(stacked(&notify.silent, &clone3), enosys);
    assert!(matching_entry(libc::SYS_clone3, &[0; 6]).is_none());
    assert_eq!(notify.len(), 3, "notify + ENOSYS + x32 guard");
}

#[test]
fn answers_name_the_row() {
    let e = matching_entry(libc::SYS_ptrace, &[0; 6]).unwrap();
    assert_eq!((e.syscall, e.deny), ("ptrace", Deny::Eperm));
    let packet = [libc::AF_PACKET as u64, libc::SOCK_RAW as u64, 0, 0, 0, 0];
    assert_eq!(matching_entry(libc::SYS_socket, &packet).unwrap().deny, Deny::Eafnosupport);
    let raw = [libc::AF_INET as u64, libc::SOCK_RAW as u64, 1, 0, 0, 0];
    assert!(matching_entry(libc::SYS_socket, &raw).unwrap().why.contains("raw IPv4"));
    let user = [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0];
    assert_eq!(matching_entry(libc::SYS_unshare, &user).unwrap().syscall, "unshare");
    assert!(matching_entry(libc::SYS_unshare, &[libc::CLONE_FS as u64, 0, 0, 0, 0, 0]).is_none());
    assert_eq!(syscall_name(libc::SYS_keyctl), Some("keyctl"));
    let memfd = Extras { memfd_noexec: true };
    assert!(matching_entry(libc::SYS_memfd_create, &[0; 6]).is_none(), "only when asked for");
    let e = matching_entry_with(memfd, libc::SYS_memfd_create, &[0, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0]);
    assert_eq!(e.unwrap().deny, Deny::Eacces);
    let sealed = [0, (libc::MFD_CLOEXEC | libc::MFD_NOEXEC_SEAL) as u64, 0, 0, 0, 0];
    assert!(matching_entry_with(memfd, libc::SYS_memfd_create, &sealed).is_none());
    let exec = [0, (libc::MFD_NOEXEC_SEAL | libc::MFD_EXEC) as u64, 0, 0, 0, 0];
    assert_eq!(matching_entry_with(memfd, libc::SYS_memfd_create, &exec).unwrap().deny, Deny::Eacces);
    assert_eq!(syscall_name(libc::SYS_read), None);
}

#[test]
fn kernel_structures_have_the_expected_layout() {
    assert_eq!(std::mem::size_of::<seccompiler::sock_filter>(), std::mem::size_of::<libc::sock_filter>());
    assert_eq!(std::mem::align_of::<seccompiler::sock_filter>(), std::mem::align_of::<libc::sock_filter>());
    assert_eq!(std::mem::size_of::<libc::seccomp_notif>(), 80);
    assert_eq!(std::mem::size_of::<libc::seccomp_notif_resp>(), 24);
}
