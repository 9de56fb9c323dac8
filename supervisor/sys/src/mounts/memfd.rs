//! Refusing execution from memfds when the policy restricts execution.

use std::fs;

/// Sets `vm.memfd_noexec = 2` for the caller's pid namespace (Linux 6.3+): `memfd_create` then makes
/// only non-executable memfds (and refuses `MFD_EXEC`), so code cannot be executed from memory-only files.
/// Must be called from inside the sandbox's pid namespace (sandbox init), with `CAP_SYS_ADMIN` over it.
pub fn forbid_memfd_exec() -> std::io::Result<()> {
    fs::write("/proc/sys/vm/memfd_noexec", b"2")?;
    let now = fs::read_to_string("/proc/sys/vm/memfd_noexec")?;
    if now.trim() != "2" {
        return Err(std::io::Error::other(format!("vm.memfd_noexec is {} after writing 2", now.trim())));
    }
    Ok(())
}

/// How memfd execution is refused ([`memfd_exec_policy`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemfdExec {
    /// For the report (`filesystem_view.memfd_exec`).
    pub report: String,
    /// The sysctl could not be set: the agent's seccomp filter must carry the
    /// [`MEMFD_NOEXEC`](crate::seccomp::MEMFD_NOEXEC) rows instead.
    pub needs_seccomp: bool,
}

/// With `restrict` (the policy has `executable`): [`forbid_memfd_exec`]; where that fails (rootless: the
/// sysctl belongs to host root) the same semantics are asked of seccomp. Says what holds.
pub fn memfd_exec_policy(restrict: bool) -> MemfdExec {
    if !restrict {
        return MemfdExec { report: "allowed (no executable list)".into(), needs_seccomp: false };
    }
    match forbid_memfd_exec() {
        Ok(()) => MemfdExec {
            report: "refused (vm.memfd_noexec=2 in the sandbox's pid namespace)".into(),
            needs_seccomp: false,
        },
        Err(e) => MemfdExec {
            report: format!(
                "refused by seccomp (memfd_create without MFD_NOEXEC_SEAL, or with MFD_EXEC: EACCES); \
                 vm.memfd_noexec could not be set ({e})"
            ),
            needs_seccomp: true,
        },
    }
}
