//! Giving a workdir made for one sandbox to its agent (`chown_workdir`): the gateway creates it as root,
//! `0700`, and the agent runs as another uid.
//!
//! Threat handled: a privileged chown led elsewhere by a symlink (the last component is opened with
//! `O_NOFOLLOW`, and the ownership of the opened descriptor is changed, so the object checked is the one
//! changed). Residual risk: symlinks in the parent components are followed (the caller owns them: the
//! gateway's state directory is root's).

use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::MountError;

/// What [`chown_dir`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chowned {
    /// It was already owned so.
    Unchanged,
    /// Owned by `(uid, gid)` before.
    Changed { uid: u32, gid: u32 },
}

/// Makes the directory `path` (itself, not its content) owned by `uid`:`gid`, as seen from the caller's
/// user namespace. A symlink at `path` is an error (not followed); nothing is done when the owner is
/// already right. In a user namespace mapping `uid`/`gid` to the caller's ids (rootless mode) a
/// directory the caller owns already is; another cannot be given away and fails.
pub fn chown_dir(path: &Path, uid: u32, gid: u32) -> Result<Chowned, MountError> {
    let err = |source| MountError::Chown { path: path.to_path_buf(), uid, gid, source };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| err(std::io::Error::from(e)))?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| err(std::io::Error::from(e)))?;
    if (st.st_uid, st.st_gid) == (uid, gid) {
        return Ok(Chowned::Unchanged);
    }
    nix::unistd::fchown(fd.as_fd(), Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| err(std::io::Error::from(e)))?;
    Ok(Chowned::Changed { uid: st.st_uid, gid: st.st_gid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("osh-chown-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn gives_the_directory_itself_and_never_follows_a_symlink() {
        let d = scratch("give");
        let wd = d.join("workdir");
        std::fs::create_dir(&wd).unwrap();
        std::fs::write(wd.join("inside"), b"x").unwrap();
        let victim = d.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("link")).unwrap();
        let me = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());

        // Already the caller's: nothing to do (rootless mode, where the agent's ids are the caller's).
        assert_eq!(chown_dir(&wd, me.0, me.1).unwrap(), Chowned::Unchanged);
        let link = chown_dir(&d.join("link"), 4242, 4343).unwrap_err();
        assert!(matches!(link, MountError::Chown { .. }), "{link}");
        assert!(link.to_string().contains("link"), "{link}");
        assert_eq!(std::fs::metadata(&victim).unwrap().uid(), me.0, "the symlink's target is untouched");
        assert!(chown_dir(&d.join("missing"), me.0, me.1).is_err());
        assert!(chown_dir(&wd.join("inside"), me.0, me.1).is_err(), "not a directory");

        if me.0 == 0 {
            assert_eq!(chown_dir(&wd, 4242, 4343).unwrap(), Chowned::Changed { uid: 0, gid: me.1 });
            let m = std::fs::metadata(&wd).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343));
            assert_eq!(std::fs::metadata(wd.join("inside")).unwrap().uid(), 0, "not recursive");
            assert_eq!(chown_dir(&wd, 4242, 4343).unwrap(), Chowned::Unchanged);
        } else {
            // Unprivileged: another owner cannot be given; the error says so.
            assert!(matches!(chown_dir(&wd, me.0 + 1, me.1), Err(MountError::Chown { .. })));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
