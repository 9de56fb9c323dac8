//! Privilege drop: to an unprivileged uid/gid with no capabilities in any set, `no_new_privs`, no core
//! dumps, then a check that regaining root fails.
//!
//! Threat handled: the agent holding or regaining privileges (capabilities, root uid, setuid binaries).
//! Residual risk: in a user namespace with `setgroups` denied the caller's supplementary groups stay (the
//! kernel forbids dropping them there); file capabilities and setuid bits are inert under `no_new_privs`
//! and an empty bounding set.

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};

/// Errors of this module; each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivsError {
    #[error("refusing to drop to uid 0 / gid 0: the agent never runs as root")]
    RootTarget,
    #[error("capability step {step} failed")]
    Caps {
        step: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("{step} failed")]
    Syscall {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("privilege drop did not hold: {what}")]
    Verify { what: String },
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> PrivsError {
    move |source| PrivsError::Syscall { step, source }
}

fn caps_err(step: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivsError {
    move |source| PrivsError::Caps { step, source }
}

/// Drops every capability from the bounding set (needs `CAP_SETPCAP`, so call it before the uid change).
pub fn clear_bounding_set() -> Result<(), PrivsError> {
    for cap in caps::all() {
        match caps::drop(None, CapSet::Bounding, cap) {
            Ok(()) => {}
            // A capability newer than the running kernel: not in the bounding set to begin with.
            Err(_) if !caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) => {}
            Err(source) => return Err(PrivsError::Caps { step: "drop bounding", source }),
        }
    }
    Ok(())
}

/// Clears the ambient, inheritable, effective and permitted sets, keeping only `keep` in effective and
/// permitted (e.g. `CAP_KILL` for sandbox init). The bounding set is untouched.
pub fn clear_caps_except(keep: &[Capability]) -> Result<(), PrivsError> {
    let keep: CapsHashSet = keep.iter().copied().collect();
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear inheritable"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(caps_err("set effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(caps_err("set permitted"))?;
    Ok(())
}

/// Clears every capability set, the bounding set included.
pub fn clear_all_caps() -> Result<(), PrivsError> {
    clear_bounding_set()?;
    clear_caps_except(&[])
}

/// `PR_SET_DUMPABLE`: with `false`, `/proc/<pid>/*` belongs to root and ptrace attach is refused.
pub fn set_dumpable(dumpable: bool) -> Result<(), PrivsError> {
    nix::sys::prctl::set_dumpable(dumpable).map_err(sys("prctl(PR_SET_DUMPABLE)"))
}

/// `PR_SET_NO_NEW_PRIVS`: `execve` can never grant privileges again (setuid bits, file capabilities).
pub fn set_no_new_privs() -> Result<(), PrivsError> {
    nix::sys::prctl::set_no_new_privs().map_err(sys("prctl(PR_SET_NO_NEW_PRIVS)"))
}

/// What [`drop_to`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups were cleared (false when `setgroups` is denied in this user namespace).
    pub groups_cleared: bool,
}

/// Becomes `uid`/`gid` for good: bounding set cleared, supplementary groups cleared (unless `setgroups`
/// is denied), real/effective/saved ids set, every capability set empty, `no_new_privs`, `RLIMIT_CORE` 0.
/// Then verifies that `setuid(0)` and `setgid(0)` fail and that no capability is left.
pub fn drop_to(uid: u32, gid: u32) -> Result<Dropped, PrivsError> {
    if uid == 0 || gid == 0 {
        return Err(PrivsError::RootTarget);
    }
    clear_bounding_set()?;
    let groups_cleared = if crate::ns::setgroups_denied() {
        false
    } else {
        nix::unistd::setgroups(&[]).map_err(sys("setgroups([])"))?;
        true
    };
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setresgid(g, g, g).map_err(sys("setresgid"))?;
    nix::unistd::setresuid(u, u, u).map_err(sys("setresuid"))?;
    // In a user namespace where `uid` was already ours, setresuid kept the capabilities: clear them.
    clear_caps_except(&[])?;
    set_no_new_privs()?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(sys("setrlimit(RLIMIT_CORE)"))?;
    verify(uid, gid)?;
    Ok(Dropped { uid, gid, groups_cleared })
}

fn verify(uid: u32, gid: u32) -> Result<(), PrivsError> {
    let fail = |what: String| Err(PrivsError::Verify { what });
    // EPERM normally; EINVAL in a user namespace where 0 is not mapped. Success would be fatal.
    match nix::unistd::setuid(Uid::from_raw(0)) {
        Ok(()) => return fail("setuid(0) succeeded".into()),
        Err(nix::Error::EPERM | nix::Error::EINVAL) => {}
        Err(e) => return fail(format!("setuid(0) failed with {e} instead of EPERM")),
    }
    match nix::unistd::setgid(Gid::from_raw(0)) {
        Ok(()) => return fail("setgid(0) succeeded".into()),
        Err(nix::Error::EPERM | nix::Error::EINVAL) => {}
        Err(e) => return fail(format!("setgid(0) failed with {e} instead of EPERM")),
    }
    let ids = nix::unistd::getresuid().map_err(sys("getresuid"))?;
    if [ids.real, ids.effective, ids.saved].iter().any(|u| u.as_raw() != uid) {
        return fail(format!("uids are {ids:?}, expected {uid}"));
    }
    let gids = nix::unistd::getresgid().map_err(sys("getresgid"))?;
    if [gids.real, gids.effective, gids.saved].iter().any(|g| g.as_raw() != gid) {
        return fail(format!("gids are {gids:?}, expected {gid}"));
    }
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable, CapSet::Ambient, CapSet::Bounding]
    {
        let left = caps::read(None, set).map_err(caps_err("read"))?;
        if !left.is_empty() {
            return fail(format!("{set:?} capabilities left: {left:?}"));
        }
    }
    if !nix::sys::prctl::get_no_new_privs().map_err(sys("prctl(PR_GET_NO_NEW_PRIVS)"))? {
        return fail("no_new_privs is not set".into());
    }
    Ok(())
}

/// The process's current capability sets are all empty (effective, permitted, inheritable, ambient).
pub fn has_no_caps() -> bool {
    [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable, CapSet::Ambient]
        .into_iter()
        .all(|s| caps::read(None, s).map(|c| c.is_empty()).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_never_a_target() {
        assert!(matches!(drop_to(0, 1000), Err(PrivsError::RootTarget)));
        assert!(matches!(drop_to(1000, 0), Err(PrivsError::RootTarget)));
    }
}
