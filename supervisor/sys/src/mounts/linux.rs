//! [`LinuxMountOps`]: the real system calls behind [`MountOps`].

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::{Base, Kind, Make, MountError, MountOps};

/// The real system calls.
#[derive(Default)]
pub struct LinuxMountOps {
    /// `O_PATH` descriptors of the bases.
    root: Option<OwnedFd>,
    workdir: Option<OwnedFd>,
    skeleton: Option<OwnedFd>,
    /// Descriptors returned by `open_in`, kept open until the pivot.
    held: Vec<OwnedFd>,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn io(e: nix::Error) -> std::io::Error {
    std::io::Error::from(e)
}

impl LinuxMountOps {
    fn base_fd(&self, base: Base, path: &Path) -> Result<std::os::fd::BorrowedFd<'_>, MountError> {
        let fd = match base {
            Base::Root => &self.root,
            Base::Workdir => &self.workdir,
            Base::Skeleton => &self.skeleton,
        };
        fd.as_ref().map(|f| f.as_fd()).ok_or_else(|| MountError::Open {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{base:?} is not open")),
        })
    }

    fn open_nofollow(&self, base: Base, inside: &Path) -> Result<Option<OwnedFd>, MountError> {
        let dir = self.base_fd(base, inside)?;
        match crate::inroot::open_in_root(dir, inside, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(source) => Err(MountError::Open { path: inside.to_path_buf(), source }),
        }
    }
}

impl MountOps for LinuxMountOps {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), MountError> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(|e| MountError::Mount {
            source_desc: source.map(|s| s.display().to_string()).unwrap_or_else(|| "(none)".into()),
            target: target.to_path_buf(),
            source: io(e),
        })
    }

    fn set_attr(&mut self, target: &Path, recursive: bool, set: u64) -> Result<(), MountError> {
        let err = |source| MountError::SetAttr { target: target.to_path_buf(), source };
        let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
        let flags = if recursive { libc::AT_RECURSIVE } else { 0 } as libc::c_uint;
        // SAFETY: `c` is a NUL-terminated path and `attr` a live, correctly laid out `struct mount_attr`
        // whose size is passed; the kernel only reads both during the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                c.as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn mkdir_all(&mut self, path: &Path) -> Result<(), MountError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|source| MountError::Mkdir { path: path.to_path_buf(), source })
    }

    fn create_file(&mut self, path: &Path, mode: u32, content: &[u8]) -> Result<(), MountError> {
        use std::io::Write;
        let err = |source| MountError::CreateFile { path: path.to_path_buf(), source };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(err)?;
        f.write_all(content).map_err(err)
    }

    fn open_base(&mut self, base: Base, host_path: &Path) -> Result<(), MountError> {
        let fd =
            nix::fcntl::open(host_path, OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_DIRECTORY, Mode::empty())
                .map_err(|e| MountError::Open { path: host_path.to_path_buf(), source: io(e) })?;
        let slot = match base {
            Base::Root => &mut self.root,
            Base::Workdir => &mut self.workdir,
            Base::Skeleton => &mut self.skeleton,
        };
        *slot = Some(fd);
        Ok(())
    }

    fn lookup(&mut self, base: Base, inside: &Path) -> Result<Option<Kind>, MountError> {
        let Some(fd) = self.open_nofollow(base, inside)? else { return Ok(None) };
        crate::inroot::kind_of(fd.as_fd())
            .map(Some)
            .map_err(|source| MountError::Open { path: inside.to_path_buf(), source })
    }

    fn open_in(&mut self, base: Base, inside: &Path) -> Result<(PathBuf, Kind), MountError> {
        let missing = || MountError::Open {
            path: inside.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let fd = self.open_nofollow(base, inside)?.ok_or_else(missing)?;
        let kind = crate::inroot::kind_of(fd.as_fd())
            .map_err(|source| MountError::Open { path: inside.to_path_buf(), source })?;
        let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.held.push(fd);
        Ok((p, kind))
    }

    fn make(&mut self, base: Base, inside: &Path, what: &Make) -> Result<(), MountError> {
        let err = |source| MountError::Make { path: inside.to_path_buf(), source };
        let name =
            inside.file_name().ok_or_else(|| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        let parent_path = inside.parent().unwrap_or(Path::new("/"));
        let dir = self.base_fd(base, inside)?;
        let parent =
            crate::inroot::open_in_root(dir, parent_path, libc::O_PATH | libc::O_DIRECTORY).map_err(err)?;
        crate::inroot::make_at(parent.as_fd(), name, what).map_err(err)
    }

    fn pivot_root(&mut self, new_root: &Path) -> Result<(), MountError> {
        let err = |step| move |e| MountError::PivotRoot { path: new_root.to_path_buf(), step, source: io(e) };
        nix::unistd::chdir(new_root).map_err(err("chdir"))?;
        nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(err("umount2 old root"))?;
        nix::unistd::chdir("/").map_err(err("chdir /"))?;
        self.held.clear();
        self.root = None;
        self.workdir = None;
        self.skeleton = None;
        Ok(())
    }

    fn chdir(&mut self, path: &Path) -> Result<(), MountError> {
        nix::unistd::chdir(path).map_err(|e| MountError::Chdir { path: path.to_path_buf(), source: io(e) })
    }
}
