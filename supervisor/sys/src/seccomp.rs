//! The agent's seccomp filter, as a reviewed table ([`TABLE`]): default allow, each entry denies one
//! syscall (optionally only for some arguments) with an errno and says why.
//!
//! The table compiles with `seccompiler` into one BPF program per errno (stacked; the sets they match are
//! disjoint), plus on x86_64 a guard that refuses the x32 syscall range, which the per-number rules would
//! not see. Foreign architectures (e.g. i386 `int 0x80` on x86_64) kill the process (seccompiler's arch
//! check).
//!
//! Threat handled: the kernel interfaces an agent could use to escape or attack the host or sandbox init
//! (ptrace, new namespaces, mounts, kernel keyrings, module loading, raw/packet sockets, io_uring, eBPF,
//! terminal injection). Residual risk: every syscall not in the table is allowed (kernel bugs there stay
//! reachable); `clone3` flags are behind a pointer, so `clone3` is refused with `ENOSYS` and libc falls
//! back to `clone`, whose flags are checked. Not blocked on purpose (real tools need them): `memfd_create`,
//! `nice`/`setpriority`, `sched_*`, `prctl`, `kcmp`, and `seccomp` itself (a program may restrict itself
//! further), except a filter with its own listener (see [`crate::seccomp_notify`]).
//!
//! Conditional rows ([`MEMFD_NOEXEC`]) are compiled in only when the sandbox asks for them ([`Extras`]):
//! with an `executable` list where `vm.memfd_noexec=2` could not be set (rootless), `memfd_create` without
//! `MFD_NOEXEC_SEAL`, or with `MFD_EXEC`, fails with `EACCES` (the sysctl's semantics), so code written into
//! a memfd cannot be executed past Landlock's Execute restriction.

use std::collections::BTreeMap;

pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
    sock_filter,
};
use serde::{Deserialize, Serialize};

/// How a denied syscall fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Deny {
    /// `EPERM`: operation not permitted.
    Eperm,
    /// `ENOSYS`: pretend the syscall does not exist (callers fall back).
    Enosys,
    /// `EAFNOSUPPORT`: pretend the address family does not exist (callers fall back).
    Eafnosupport,
    /// `EACCES`: permission denied (what the kernel answers under `vm.memfd_noexec=2`).
    Eacces,
}

impl Deny {
    /// The errno value returned.
    pub fn errno(self) -> u32 {
        match self {
            Deny::Eperm => libc::EPERM as u32,
            Deny::Enosys => libc::ENOSYS as u32,
            Deny::Eafnosupport => libc::EAFNOSUPPORT as u32,
            Deny::Eacces => libc::EACCES as u32,
        }
    }

    /// The errno's symbolic name.
    pub fn name(self) -> &'static str {
        match self {
            Deny::Eperm => "EPERM",
            Deny::Enosys => "ENOSYS",
            Deny::Eafnosupport => "EAFNOSUPPORT",
            Deny::Eacces => "EACCES",
        }
    }
}

/// A comparison of the low 32 bits of one argument (every argument filtered here is an `int` or flags
/// that the kernel truncates to 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq {
        arg: u8,
        value: u64,
    },
    Ne {
        arg: u8,
        value: u64,
    },
    /// `(arg & mask) == value`.
    Masked {
        arg: u8,
        mask: u64,
        value: u64,
    },
}

/// When an entry applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Always,
    /// All conditions hold.
    AllOf(&'static [Cond]),
    /// Argument `arg` has at least one of these bits set.
    AnyBit {
        arg: u8,
        bits: &'static [(u64, &'static str)],
    },
}

/// One reviewed row.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub syscall: &'static str,
    pub deny: Deny,
    pub when: When,
    pub why: &'static str,
}

const CLONE_NEW: &[(u64, &str)] = &[
    (0x0000_0080, "CLONE_NEWTIME"),
    (0x0002_0000, "CLONE_NEWNS"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
];
const AF_UNIX: u64 = 1;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;
const AF_NETLINK: u64 = 16;
const SOCK_TYPE_MASK: u64 = 0xf;
const SOCK_RAW: u64 = 3;
const SOCK_PACKET: u64 = 10;
const ADDR_NO_RANDOMIZE: u64 = 0x0004_0000;
const READ_IMPLIES_EXEC: u64 = 0x0040_0000;
const PER_QUERY: u64 = 0xffff_ffff;
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 8;
const MFD_NOEXEC_SEAL: u64 = 0x0008;
const MFD_EXEC: u64 = 0x0010;

const fn always(syscall: &'static str, why: &'static str) -> Entry {
    Entry { syscall, deny: Deny::Eperm, when: When::Always, why }
}

const ADMIN: &str = "host administration; needs capabilities the agent never has (defence in depth)";
const MOUNT: &str = "changes the filesystem view the sandbox was built on";

/// The reviewed table. Order is for reading; compilation groups by errno.
pub static TABLE: &[Entry] = &[
    always("ptrace", "inspect or control other processes (sandbox init)"),
    always("process_vm_readv", "read another process's memory"),
    always("process_vm_writev", "write another process's memory"),
    always("pidfd_getfd", "steal a descriptor from another process"),
    always("bpf", "eBPF: large kernel attack surface"),
    always("perf_event_open", "performance events: kernel attack surface and side channels"),
    always("userfaultfd", "used to widen kernel race windows in exploits"),
    always("io_uring_setup", "io_uring: runs syscalls seccomp never sees; frequent kernel bugs"),
    always("io_uring_enter", "io_uring: runs syscalls seccomp never sees"),
    always("io_uring_register", "io_uring: runs syscalls seccomp never sees"),
    always("mount", MOUNT),
    always("umount2", MOUNT),
    always("mount_setattr", MOUNT),
    always("move_mount", MOUNT),
    always("open_tree", MOUNT),
    always("open_tree_attr", MOUNT),
    always("fsopen", MOUNT),
    always("fsconfig", MOUNT),
    always("fsmount", MOUNT),
    always("fspick", MOUNT),
    always("pivot_root", MOUNT),
    always("chroot", MOUNT),
    always("setns", "join another namespace"),
    Entry {
        syscall: "unshare",
        deny: Deny::Eperm,
        when: When::AnyBit { arg: 0, bits: CLONE_NEW },
        why: "new namespaces (a user namespace exposes kernel code otherwise reserved to root)",
    },
    Entry {
        syscall: "clone",
        deny: Deny::Eperm,
        when: When::AnyBit { arg: 0, bits: CLONE_NEW },
        why: "new namespaces, as for unshare",
    },
    Entry {
        syscall: "clone3",
        deny: Deny::Enosys,
        when: When::Always,
        why: "flags are behind a pointer seccomp cannot read; ENOSYS makes libc fall back to clone",
    },
    always("keyctl", "kernel keyrings are not namespaced"),
    always("add_key", "kernel keyrings are not namespaced"),
    always("request_key", "kernel keyrings are not namespaced"),
    always("kexec_load", ADMIN),
    always("kexec_file_load", ADMIN),
    always("init_module", ADMIN),
    always("finit_module", ADMIN),
    always("delete_module", ADMIN),
    always("reboot", ADMIN),
    always("swapon", ADMIN),
    always("swapoff", ADMIN),
    always("acct", ADMIN),
    always("quotactl", ADMIN),
    always("quotactl_fd", ADMIN),
    always("syslog", "kernel log: leaks kernel addresses"),
    always("iopl", ADMIN),
    always("ioperm", ADMIN),
    always("lookup_dcookie", ADMIN),
    always("uselib", "obsolete loader interface"),
    Entry {
        syscall: "seccomp",
        deny: Deny::Eperm,
        when: When::AllOf(&[
            Cond::Eq { arg: 0, value: SECCOMP_SET_MODE_FILTER },
            Cond::Masked {
                arg: 1,
                mask: SECCOMP_FILTER_FLAG_NEW_LISTENER,
                value: SECCOMP_FILTER_FLAG_NEW_LISTENER,
            },
        ]),
        why: "a filter with its own listener would receive (and could let run) calls the sandbox's filter \
              refuses: the kernel notifies the newest filter",
    },
    always("open_by_handle_at", "opens files by handle, bypassing path checks (the 'shocker' escape)"),
    always("name_to_handle_at", "pairs with open_by_handle_at; leaks inode handles"),
    Entry {
        syscall: "personality",
        deny: Deny::Eperm,
        when: When::AllOf(&[
            Cond::Ne { arg: 0, value: PER_QUERY },
            Cond::Masked { arg: 0, mask: ADDR_NO_RANDOMIZE, value: ADDR_NO_RANDOMIZE },
        ]),
        why: "ADDR_NO_RANDOMIZE turns off ASLR for executed programs",
    },
    Entry {
        syscall: "personality",
        deny: Deny::Eperm,
        when: When::AllOf(&[
            Cond::Ne { arg: 0, value: PER_QUERY },
            Cond::Masked { arg: 0, mask: READ_IMPLIES_EXEC, value: READ_IMPLIES_EXEC },
        ]),
        why: "READ_IMPLIES_EXEC makes every readable mapping executable",
    },
    Entry {
        syscall: "ioctl",
        deny: Deny::Eperm,
        when: When::AllOf(&[Cond::Eq { arg: 1, value: TIOCSTI }]),
        why: "TIOCSTI injects input into the user's terminal",
    },
    Entry {
        syscall: "ioctl",
        deny: Deny::Eperm,
        when: When::AllOf(&[Cond::Eq { arg: 1, value: TIOCLINUX }]),
        why: "TIOCLINUX can inject console input (selection paste)",
    },
    Entry {
        syscall: "socket",
        deny: Deny::Eafnosupport,
        when: When::AllOf(&[
            Cond::Ne { arg: 0, value: AF_UNIX },
            Cond::Ne { arg: 0, value: AF_INET },
            Cond::Ne { arg: 0, value: AF_INET6 },
            Cond::Ne { arg: 0, value: AF_NETLINK },
        ]),
        why: "only unix, IPv4, IPv6 and route netlink exist here (no packet, vsock, bluetooth, ... sockets)",
    },
    Entry {
        syscall: "socket",
        deny: Deny::Eperm,
        when: When::AllOf(&[Cond::Eq { arg: 0, value: AF_NETLINK }, Cond::Ne { arg: 2, value: 0 }]),
        why: "netlink other than NETLINK_ROUTE (audit, uevents, netfilter, diag, generic)",
    },
    Entry {
        syscall: "socket",
        deny: Deny::Eperm,
        when: When::AllOf(&[
            Cond::Eq { arg: 0, value: AF_INET },
            Cond::Masked { arg: 1, mask: SOCK_TYPE_MASK, value: SOCK_RAW },
        ]),
        why: "raw IPv4 sockets (forged packets)",
    },
    Entry {
        syscall: "socket",
        deny: Deny::Eperm,
        when: When::AllOf(&[
            Cond::Eq { arg: 0, value: AF_INET6 },
            Cond::Masked { arg: 1, mask: SOCK_TYPE_MASK, value: SOCK_RAW },
        ]),
        why: "raw IPv6 sockets (forged packets)",
    },
    Entry {
        syscall: "socket",
        deny: Deny::Eperm,
        when: When::AllOf(&[
            Cond::Eq { arg: 0, value: AF_INET },
            Cond::Masked { arg: 1, mask: SOCK_TYPE_MASK, value: SOCK_PACKET },
        ]),
        why: "obsolete SOCK_PACKET (link-layer access)",
    },
];

/// Conditional rows: `vm.memfd_noexec=2` as seccomp, compiled in when [`Extras::memfd_noexec`] is set.
pub static MEMFD_NOEXEC: &[Entry] = &[
    Entry {
        syscall: "memfd_create",
        deny: Deny::Eacces,
        when: When::AllOf(&[Cond::Masked { arg: 1, mask: MFD_NOEXEC_SEAL, value: 0 }]),
        why: "only with an executable list (vm.memfd_noexec=2 not settable): an executable memfd would run \
              code past Landlock's Execute restriction; MFD_NOEXEC_SEAL is required",
    },
    Entry {
        syscall: "memfd_create",
        deny: Deny::Eacces,
        when: When::AllOf(&[Cond::Masked { arg: 1, mask: MFD_EXEC, value: MFD_EXEC }]),
        why: "only with an executable list (vm.memfd_noexec=2 not settable): MFD_EXEC asks for an \
              executable memfd",
    },
];

/// Conditional rows the sandbox asks for (see [`MEMFD_NOEXEC`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// Refuse executable memfds ([`MEMFD_NOEXEC`]).
    pub memfd_noexec: bool,
}

/// The rows in force with `extras`: [`TABLE`], then the conditional rows asked for.
pub fn rows(extras: Extras) -> impl Iterator<Item = &'static Entry> {
    let memfd: &'static [Entry] = if extras.memfd_noexec { MEMFD_NOEXEC } else { &[] };
    TABLE.iter().chain(memfd)
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp table: cannot build the rule for {syscall}")]
    Rule {
        syscall: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("seccomp table: cannot compile the {errno} filter")]
    Compile {
        errno: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot install seccomp filter {index}")]
    Install {
        index: usize,
        #[source]
        source: seccompiler::Error,
    },
}

/// Summary for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompSummary {
    pub arch: String,
    pub default_action: String,
    /// One line per entry: `syscall: ERRNO [when ...]`.
    pub denied: Vec<String>,
    /// Table entries whose syscall does not exist on this architecture (nothing to deny).
    pub absent: Vec<String>,
    /// BPF programs installed (stacked).
    pub programs: usize,
}

macro_rules! lookup {
    ($name:expr, [$($id:ident),* $(,)?]) => {{
        let name: &str = $name;
        $( if name == &stringify!($id)[4..] { return Some(libc::$id as i64); } )*
    }};
}

/// Syscall number of `name` on the architecture this crate is built for.
pub fn syscall_number(name: &str) -> Option<i64> {
    lookup!(
        name,
        [
            SYS_ptrace,
            SYS_process_vm_readv,
            SYS_process_vm_writev,
            SYS_pidfd_getfd,
            SYS_bpf,
            SYS_perf_event_open,
            SYS_userfaultfd,
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            SYS_umount2,
            SYS_mount,
            SYS_mount_setattr,
            SYS_move_mount,
            SYS_open_tree,
            SYS_fsopen,
            SYS_fsconfig,
            SYS_fsmount,
            SYS_fspick,
            SYS_pivot_root,
            SYS_chroot,
            SYS_setns,
            SYS_unshare,
            SYS_clone,
            SYS_clone3,
            SYS_keyctl,
            SYS_add_key,
            SYS_request_key,
            SYS_kexec_load,
            SYS_kexec_file_load,
            SYS_init_module,
            SYS_finit_module,
            SYS_delete_module,
            SYS_reboot,
            SYS_swapon,
            SYS_swapoff,
            SYS_acct,
            SYS_quotactl,
            SYS_quotactl_fd,
            SYS_syslog,
            SYS_lookup_dcookie,
            SYS_open_by_handle_at,
            SYS_name_to_handle_at,
            SYS_personality,
            SYS_ioctl,
            SYS_socket,
            SYS_seccomp,
            SYS_memfd_create,
        ]
    );
    #[cfg(target_arch = "x86_64")]
    lookup!(name, [SYS_iopl, SYS_ioperm, SYS_uselib]);
    // Linux 6.15, same number on every architecture (unified table); not yet in libc.
    if name == "open_tree_attr" {
        return Some(467);
    }
    None
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

fn condition(c: Cond) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (arg, op, value) = match c {
        Cond::Eq { arg, value } => (arg, SeccompCmpOp::Eq, value),
        Cond::Ne { arg, value } => (arg, SeccompCmpOp::Ne, value),
        Cond::Masked { arg, mask, value } => (arg, SeccompCmpOp::MaskedEq(mask), value),
    };
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// The rules of one entry (empty = unconditional).
fn rules(entry: &Entry) -> Result<Vec<SeccompRule>, SeccompError> {
    let err = |source| SeccompError::Rule { syscall: entry.syscall, source };
    match entry.when {
        When::Always => Ok(Vec::new()),
        When::AllOf(conds) => {
            let c = conds.iter().map(|c| condition(*c)).collect::<Result<Vec<_>, _>>().map_err(err)?;
            Ok(vec![SeccompRule::new(c).map_err(err)?])
        }
        When::AnyBit { arg, bits } => bits
            .iter()
            .map(|(bit, _)| {
                let c = condition(Cond::Masked { arg, mask: *bit, value: *bit }).map_err(err)?;
                SeccompRule::new(vec![c]).map_err(err)
            })
            .collect(),
    }
}

/// Compiles [`TABLE`] for this architecture: one program per errno, then (x86_64) the x32 guard.
pub fn compile() -> Result<Vec<BpfProgram>, SeccompError> {
    compile_with(Extras::default())
}

/// [`compile`] with the conditional rows of `extras`.
pub fn compile_with(extras: Extras) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut programs: Vec<BpfProgram> =
        compile_by(extras, |d| d, |d| d)?.into_iter().map(|(_, p)| p).collect();
    #[cfg(target_arch = "x86_64")]
    programs.push(x32_guard());
    Ok(programs)
}

/// Compiles the rows of [`TABLE`] into one program per group: `group` maps each row's errno to its group,
/// `action` names the errno a group's program returns when it matches. Rows of one group that name the
/// same syscall are OR-ed (an unconditional row wins over any condition). Programs come in group order;
/// the x32 guard is not included.
pub(crate) fn compile_by<K: Ord + Copy>(
    extras: Extras,
    group: impl Fn(Deny) -> K,
    action: impl Fn(K) -> Deny,
) -> Result<Vec<(K, BpfProgram)>, SeccompError> {
    // group -> syscall number -> rules (None = unconditional, which wins over any condition).
    let mut groups: BTreeMap<K, BTreeMap<i64, Option<Vec<SeccompRule>>>> = BTreeMap::new();
    for entry in rows(extras) {
        let Some(nr) = syscall_number(entry.syscall) else { continue };
        let slot = groups.entry(group(entry.deny)).or_default().entry(nr).or_insert_with(|| Some(Vec::new()));
        let r = rules(entry)?;
        match (slot.as_mut(), r.is_empty()) {
            (_, true) => *slot = None,
            (Some(existing), false) => existing.extend(r),
            (None, false) => {}
        }
    }
    let mut programs = Vec::new();
    for (key, by_nr) in groups {
        let deny = action(key);
        let map = by_nr.into_iter().map(|(nr, r)| (nr, r.unwrap_or_default())).collect();
        let filter = SeccompFilter::new(map, SeccompAction::Allow, SeccompAction::Errno(deny.errno()), ARCH)
            .map_err(|source| SeccompError::Compile { errno: deny.name(), source })?;
        let program = BpfProgram::try_from(filter)
            .map_err(|source| SeccompError::Compile { errno: deny.name(), source })?;
        programs.push((key, program));
    }
    Ok(programs)
}

/// x86_64: refuse every syscall number with the x32 bit (`__X32_SYSCALL_BIT`) set. Kernels built with
/// `CONFIG_X86_X32_ABI` would otherwise run them under numbers no rule above names.
#[cfg(target_arch = "x86_64")]
pub(crate) fn x32_guard() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
    const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_BIT: u32 = 0x4000_0000;
    let ins = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        ins(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(JGE_K, 0, 1, X32_BIT),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// Installs the compiled programs on the calling thread (inherited by children and kept across
/// `execve`). Requires `no_new_privs` (or `CAP_SYS_ADMIN`).
pub fn install(programs: &[BpfProgram]) -> Result<(), SeccompError> {
    for (index, p) in programs.iter().enumerate() {
        seccompiler::apply_filter(p).map_err(|source| SeccompError::Install { index, source })?;
    }
    Ok(())
}

fn describe(entry: &Entry) -> String {
    let cond = |c: &Cond| match *c {
        Cond::Eq { arg, value } => format!("arg{arg} == {value:#x}"),
        Cond::Ne { arg, value } => format!("arg{arg} != {value:#x}"),
        Cond::Masked { arg, mask, value } => format!("arg{arg} & {mask:#x} == {value:#x}"),
    };
    let when = match entry.when {
        When::Always => String::new(),
        When::AllOf(c) => format!(" when {}", c.iter().map(cond).collect::<Vec<_>>().join(" && ")),
        When::AnyBit { arg, bits } => {
            format!(
                " when arg{arg} has any of {}",
                bits.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
            )
        }
    };
    format!("{}: {}{when}", entry.syscall, entry.deny.name())
}

/// What the table denies on this architecture, for `openshell-supervisor check` and the docs.
pub fn report() -> SeccompSummary {
    report_with(Extras::default())
}

/// [`report`] with the conditional rows of `extras`.
pub fn report_with(extras: Extras) -> SeccompSummary {
    let (present, absent): (Vec<&Entry>, Vec<&Entry>) =
        rows(extras).partition(|e| syscall_number(e.syscall).is_some());
    let mut denied: Vec<String> = present.into_iter().map(describe).collect();
    if cfg!(target_arch = "x86_64") {
        denied.push("x32 syscalls (nr >= 0x40000000): ENOSYS".to_string());
    }
    let errnos: std::collections::BTreeSet<Deny> = rows(extras).map(|e| e.deny).collect();
    SeccompSummary {
        arch: std::env::consts::ARCH.to_string(),
        default_action: "allow".to_string(),
        denied,
        absent: absent.into_iter().map(|e| e.syscall.to_string()).collect(),
        programs: errnos.len() + usize::from(cfg!(target_arch = "x86_64")),
    }
}

/// Markdown table of [`TABLE`] and the conditional rows (syscall, errno, condition, why) for the
/// architecture docs.
pub fn table_markdown() -> String {
    let mut s = String::from("| syscall | errno | when | why |\n|---|---|---|---|\n");
    for e in rows(Extras { memfd_noexec: true }) {
        let d = describe(e);
        let when = d.split_once(" when ").map(|(_, w)| w.to_string()).unwrap_or_else(|| "always".into());
        s.push_str(&format!("| `{}` | {} | {} | {} |\n", e.syscall, e.deny.name(), when, e.why));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_compiles_and_every_name_resolves_on_x86_64() {
        let programs = compile().unwrap();
        assert_eq!(programs.len(), report().programs);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
        if cfg!(target_arch = "x86_64") {
            assert!(report().absent.is_empty(), "{:?}", report().absent);
        }
    }

    #[test]
    fn clone_flag_masks_are_the_namespace_bits() {
        let all = CLONE_NEW.iter().fold(0u64, |a, (b, _)| a | b);
        let expected = libc::CLONE_NEWNS
            | libc::CLONE_NEWCGROUP
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | 0x80;
        assert_eq!(all, expected as u64);
        assert!(CLONE_NEW.iter().all(|(b, _)| b.count_ones() == 1 && *b < (1 << 32)));
    }

    #[test]
    fn socket_constants_match_libc() {
        assert_eq!(AF_UNIX, libc::AF_UNIX as u64);
        assert_eq!(AF_INET6, libc::AF_INET6 as u64);
        assert_eq!(AF_NETLINK, libc::AF_NETLINK as u64);
        assert_eq!(SOCK_RAW, libc::SOCK_RAW as u64);
        assert_eq!(SOCK_PACKET, 10); // libc::SOCK_PACKET, deprecated there
        // The type mask must strip SOCK_NONBLOCK and SOCK_CLOEXEC.
        let t = (libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) as u64;
        assert_eq!(t & SOCK_TYPE_MASK, SOCK_RAW);
        assert_eq!(TIOCSTI, libc::TIOCSTI);
        assert_eq!(TIOCLINUX, libc::TIOCLINUX);
    }

    #[test]
    fn tolerated_syscalls_are_not_in_the_table() {
        for name in ["setpriority", "nice", "sched_setaffinity", "prctl", "landlock_restrict_self"] {
            assert!(TABLE.iter().all(|e| e.syscall != name), "{name} must stay allowed");
        }
        // A program may still restrict itself; only a filter with its own listener is refused.
        assert!(TABLE.iter().filter(|e| e.syscall == "seccomp").all(|e| e.when != When::Always));
        // memfd_create only without MFD_NOEXEC_SEAL or with MFD_EXEC, and only when asked for.
        assert!(TABLE.iter().all(|e| e.syscall != "memfd_create"));
        assert!(MEMFD_NOEXEC.iter().all(|e| e.syscall == "memfd_create" && e.when != When::Always));
    }

    #[test]
    fn memfd_rows_only_with_extras() {
        assert_eq!(MFD_NOEXEC_SEAL, u64::from(libc::MFD_NOEXEC_SEAL));
        assert_eq!(MFD_EXEC, u64::from(libc::MFD_EXEC));
        assert!(!report().denied.iter().any(|l| l.starts_with("memfd_create")));
        let r = report_with(Extras { memfd_noexec: true });
        assert!(
            r.denied.iter().any(|l| l == "memfd_create: EACCES when arg1 & 0x8 == 0x0"),
            "{:?}",
            r.denied
        );
        assert!(r.denied.iter().any(|l| l == "memfd_create: EACCES when arg1 & 0x10 == 0x10"));
        let programs = compile_with(Extras { memfd_noexec: true }).unwrap();
        assert_eq!(programs.len(), r.programs);
        assert_eq!(r.programs, report().programs + 1, "one more errno");
    }

    /// architecture/seccomp.md embeds [`table_markdown`]; regenerate with `OPENSHELL_UPDATE_DOCS=1`.
    #[test]
    fn architecture_doc_shows_the_current_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../architecture/seccomp.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let (begin, end) = ("<!-- table:begin -->\n", "<!-- table:end -->");
        let table = table_markdown();
        let current = doc.split_once(begin).and_then(|(_, rest)| rest.split_once(end)).map(|(t, _)| t);
        if current == Some(table.as_str()) {
            return;
        }
        if std::env::var_os("OPENSHELL_UPDATE_DOCS").is_some() {
            let (head, tail) = match doc.split_once(begin) {
                Some((h, rest)) => {
                    (h.to_string(), rest.split_once(end).map(|(_, t)| t.to_string()).unwrap_or_default())
                }
                None => (doc.clone(), "\n".to_string()),
            };
            std::fs::write(&path, format!("{head}{begin}{table}{end}{tail}")).unwrap();
            return;
        }
        panic!("{} is out of date; run with OPENSHELL_UPDATE_DOCS=1", path.display());
    }

    #[test]
    fn report_lists_conditions() {
        let r = report();
        assert!(
            r.denied
                .iter()
                .any(|l| l.starts_with("clone: EPERM when arg0 has any of CLONE_NEWTIME, CLONE_NEWNS,"))
        );
        assert!(r.denied.iter().any(|l| l == "clone3: ENOSYS"));
        assert!(table_markdown().contains("| `ptrace` | EPERM | always |"));
    }
}
