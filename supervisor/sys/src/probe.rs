//! What the host kernel offers, for `openshell-supervisor check` and for loud reports of degraded
//! enforcement. Probing never changes the calling process: namespace tests run in a throw-away child.

use serde::{Deserialize, Serialize};

/// Host capabilities relevant to sandboxing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSupport {
    /// `uname -r`.
    pub kernel: String,
    /// Landlock ABI the kernel offers (`None`: not built in or disabled at boot).
    pub landlock_abi: Option<u32>,
    /// Seccomp filter mode is available.
    pub seccomp_filter: bool,
    /// The caller can create a user namespace (tested in a forked child).
    pub user_namespaces: bool,
    /// The caller can create mount, net, ipc, uts and pid namespaces (directly when privileged, else
    /// inside a new user namespace; tested in a forked child).
    pub sandbox_namespaces: bool,
    /// The caller is root in the initial user namespace with `CAP_SYS_ADMIN`.
    pub privileged: bool,
}

impl HostSupport {
    /// Probes the running kernel (see [`probe`]).
    pub fn detect() -> Self {
        probe()
    }

    /// Namespaces can be created (directly or in a user namespace) and seccomp filters installed: the
    /// minimum for a sandbox. Landlock is reported but not required here (`hard_requirement` policies
    /// fail at launch without it).
    pub fn can_sandbox(&self) -> bool {
        self.sandbox_namespaces && self.seccomp_filter
    }

    /// Human-readable table, one line per feature.
    pub fn render_table(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "NO" };
        let landlock = match self.landlock_abi {
            Some(abi) => format!("yes (ABI {abi})"),
            None => "NO (filesystem rules cannot be enforced)".to_string(),
        };
        let mode = if self.privileged { "privileged (root)" } else { "rootless (user namespace)" };
        let rows = [
            ("kernel", self.kernel.clone()),
            ("mode", mode.to_string()),
            ("landlock", landlock),
            ("seccomp filters", yes_no(self.seccomp_filter).to_string()),
            ("user namespaces", yes_no(self.user_namespaces).to_string()),
            ("sandbox namespaces", yes_no(self.sandbox_namespaces).to_string()),
            ("can sandbox", yes_no(self.can_sandbox()).to_string()),
        ];
        rows.iter().map(|(k, v)| format!("{k:<20} {v}\n")).collect()
    }
}

/// Probes the running kernel. Safe to call from a multi-threaded process: the forked children only make
/// raw system calls.
pub fn probe() -> HostSupport {
    let landlock_abi = match crate::landlock::current_abi() as u32 {
        0 => None,
        n => Some(n),
    };
    let privileged = nix::unistd::geteuid().is_root()
        && caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false);
    let user_namespaces = try_in_child(libc::CLONE_NEWUSER, 0);
    let ns =
        libc::CLONE_NEWNS | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWPID;
    let sandbox_namespaces =
        if privileged { try_in_child(ns, 0) } else { try_in_child(libc::CLONE_NEWUSER, ns) };
    HostSupport {
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        landlock_abi,
        seccomp_filter: seccomp_filter_available(),
        user_namespaces,
        sandbox_namespaces,
        privileged,
    }
}

fn seccomp_filter_available() -> bool {
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32 through the pointer, which points to a live local.
    let rc =
        unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0, &action as *const u32) };
    rc == 0
}

/// Forks a child that calls `unshare(first)` then `unshare(second)` (when non-zero) and exits 0 on
/// success. True when the child exited 0.
fn try_in_child(first: libc::c_int, second: libc::c_int) -> bool {
    // SAFETY: the child only calls async-signal-safe functions (`unshare`, `_exit`) and touches no memory
    // shared with other threads, so forking is sound even if this process is multi-threaded.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls with integer arguments, then `_exit`, which never returns.
        unsafe {
            let ok = libc::unshare(first) == 0 && (second == 0 || libc::unshare(second) == 0);
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    if pid < 0 {
        return false;
    }
    matches!(
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None),
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_reports_this_machine() {
        let h = super::probe();
        assert!(!h.kernel.is_empty());
        assert!(h.seccomp_filter);
        assert!(h.landlock_abi.is_some_and(|a| a >= 1));
        assert!(h.user_namespaces || h.privileged);
        assert!(h.can_sandbox());
        assert!(h.render_table().contains("landlock"));
    }
}
