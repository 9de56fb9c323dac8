//! Namespaces: `unshare`, the single-id user-namespace maps of the rootless case, the hostname.
//!
//! Threat handled: the agent seeing or reaching host processes, mounts, network interfaces, IPC objects or
//! the host name. Residual risk: namespaces are only as strong as the kernel code that implements them; a
//! user namespace exposes more kernel code to the sandbox's init (the agent itself cannot create one: the
//! seccomp table denies `CLONE_NEW*`).

use std::fs;
use std::path::PathBuf;

use nix::sched::CloneFlags;

/// Errors of this module; each names the file or the flags involved.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("unshare({flags}) failed")]
    Unshare {
        flags: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot write {path}")]
    WriteMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sethostname({hostname:?}) failed")]
    SetHostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
}

/// The namespaces a sandbox gets besides the user namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Namespaces {
    pub mount: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
    pub cgroup: bool,
}

impl Namespaces {
    /// Everything: what a sandbox uses.
    pub const ALL: Namespaces =
        Namespaces { mount: true, net: true, ipc: true, uts: true, pid: true, cgroup: true };

    fn flags(self) -> CloneFlags {
        let mut f = CloneFlags::empty();
        for (on, flag) in [
            (self.mount, CloneFlags::CLONE_NEWNS),
            (self.net, CloneFlags::CLONE_NEWNET),
            (self.ipc, CloneFlags::CLONE_NEWIPC),
            (self.uts, CloneFlags::CLONE_NEWUTS),
            (self.pid, CloneFlags::CLONE_NEWPID),
            (self.cgroup, CloneFlags::CLONE_NEWCGROUP),
        ] {
            if on {
                f |= flag;
            }
        }
        f
    }

    /// Names as used in reports (`mnt`, `net`, ...), in a stable order.
    pub fn names(self) -> Vec<String> {
        [
            (self.mount, "mnt"),
            (self.net, "net"),
            (self.ipc, "ipc"),
            (self.uts, "uts"),
            (self.pid, "pid"),
            (self.cgroup, "cgroup"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_string())
        .collect()
    }
}

/// `unshare(CLONE_NEWUSER)`: the caller gets a full capability set inside the new user namespace, and no
/// id is mapped until [`write_id_maps`] is called. Fails in a multi-threaded process (kernel rule).
pub fn unshare_user() -> Result<(), NsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
        .map_err(|source| NsError::Unshare { flags: "CLONE_NEWUSER".into(), source })
}

/// `unshare` of the given namespaces. With `pid`, only children forked afterwards enter the new pid
/// namespace; the first one becomes its pid 1.
pub fn unshare(ns: Namespaces) -> Result<(), NsError> {
    let flags = ns.flags();
    nix::sched::unshare(flags).map_err(|source| NsError::Unshare { flags: format!("{flags:?}"), source })
}

/// The one line of a `uid_map`/`gid_map` that maps a single id.
pub fn id_map_line(inside: u32, outside: u32) -> String {
    format!("{inside} {outside} 1\n")
}

/// Maps `inside_uid`/`inside_gid` of the current (fresh) user namespace to the caller's ids outside.
/// Writes `setgroups` = `deny` first: an unprivileged process may only write a `gid_map` after that.
pub fn write_id_maps(
    inside_uid: u32,
    outside_uid: u32,
    inside_gid: u32,
    outside_gid: u32,
) -> Result<(), NsError> {
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &id_map_line(inside_uid, outside_uid))?;
    write_proc("/proc/self/gid_map", &id_map_line(inside_gid, outside_gid))
}

fn write_proc(path: &str, content: &str) -> Result<(), NsError> {
    fs::write(path, content).map_err(|source| NsError::WriteMap { path: PathBuf::from(path), source })
}

/// True when `setgroups(2)` is denied for this process's user namespace (`/proc/self/setgroups` = `deny`).
pub fn setgroups_denied() -> bool {
    fs::read_to_string("/proc/self/setgroups").map(|s| s.trim() == "deny").unwrap_or(false)
}

/// True when the process is not in the initial user namespace (its `uid_map` is not the identity map).
pub fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(s) => {
            let fields: Vec<&str> = s.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Sets the UTS namespace's host name.
pub fn set_hostname(hostname: &str) -> Result<(), NsError> {
    nix::unistd::sethostname(hostname)
        .map_err(|source| NsError::SetHostname { hostname: hostname.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_line_maps_one_id() {
        assert_eq!(id_map_line(1000, 65534), "1000 65534 1\n");
        assert_eq!(id_map_line(0, 0), "0 0 1\n");
    }

    #[test]
    fn namespace_names_are_stable() {
        assert_eq!(Namespaces::ALL.names(), ["mnt", "net", "ipc", "uts", "pid", "cgroup"]);
        let only_net =
            Namespaces { mount: false, net: true, ipc: false, uts: false, pid: false, cgroup: false };
        assert_eq!(only_net.names(), ["net"]);
        assert_eq!(only_net.flags(), CloneFlags::CLONE_NEWNET);
    }
}
