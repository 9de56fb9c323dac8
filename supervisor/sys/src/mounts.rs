//! The sandbox's root view, built by sandbox init (pid 1 of fresh mount and pid namespaces):
//! a read-only, nosuid, nodev recursive copy of the host root (or a rootfs directory), a fresh `/proc`, a
//! minimal `/dev`, a private `/tmp`, the workdir bound read-write, a generated `/etc/resolv.conf`, then
//! `pivot_root` and detach of the old root.
//!
//! Every step goes through [`MountOps`] so that the sequence is unit-tested with a recording fake
//! ([`setup_root`] is the only place that decides what is mounted where).
//!
//! Threat handled: the agent writing outside its workdir and `/tmp`, using setuid binaries or device nodes
//! of the host, reading the host's `/tmp`, or seeing processes of the host in `/proc`. Residual risk: the
//! read-only host view still reveals what the host has (Landlock decides what the agent may read); `/sys`
//! is the host's (read-only).

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Device nodes bound from the host into the sandbox's `/dev`.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Errors of this module; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {source_desc} on {target} failed")]
    Mount {
        source_desc: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount_setattr on {target} failed")]
    SetAttr {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create file {path}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create symlink {link}")]
    Symlink {
        link: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pivot_root into {path} failed ({step})")]
    PivotRoot {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot change directory to {path}")]
    Chdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount point {path} does not exist and may not be created on the host root")]
    MissingMountPoint { path: PathBuf },
    #[error("invalid path {path}: must be absolute, without '..'")]
    InvalidPath { path: PathBuf },
}

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSpec {
    /// Host path of the root to copy: `/` or a rootfs directory.
    pub root: PathBuf,
    /// Host directory bound read-write at `workdir_target`.
    pub workdir: Option<PathBuf>,
    /// Where the workdir appears inside the sandbox (usually the same path as on the host).
    pub workdir_target: PathBuf,
    /// Content of the generated `/etc/resolv.conf` (none: keep the root's).
    pub resolv_conf: Option<String>,
    /// Host directory that receives the staging tmpfs (hidden from the host by the private mount ns).
    pub staging: PathBuf,
    /// The caller's terminal (e.g. `/proc/self/fd/0` when stdin is a tty), bound at `/dev/console` so that
    /// `ttyname()` finds the inherited terminal inside the sandbox's own `/dev` (its `pts` is a new
    /// instance, in which the caller's `/dev/pts/N` does not exist).
    pub console: Option<PathBuf>,
}

/// What happened to `/etc/resolv.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolvConf {
    NotRequested,
    /// Bound over this path (inside the sandbox): `/etc/resolv.conf` or the target of its symlink.
    Mounted {
        target: PathBuf,
    },
    /// Left as it is, with the reason.
    Skipped {
        reason: String,
    },
}

/// Result of [`setup_root`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootReport {
    pub resolv_conf: ResolvConf,
}

/// The system calls [`setup_root`] makes. `LinuxMountOps` performs them; tests record them.
pub trait MountOps {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), MountError>;
    /// `mount_setattr(target, recursive ? AT_RECURSIVE : 0, attr_set = set)`.
    fn set_attr(&mut self, target: &Path, recursive: bool, set: u64) -> Result<(), MountError>;
    fn mkdir_all(&mut self, path: &Path) -> Result<(), MountError>;
    fn create_file(&mut self, path: &Path, mode: u32, content: &[u8]) -> Result<(), MountError>;
    fn symlink(&mut self, target: &str, link: &Path) -> Result<(), MountError>;
    /// `lstat` succeeds.
    fn exists(&mut self, path: &Path) -> bool;
    /// `readlink`, `None` if not a symlink.
    fn read_link(&mut self, path: &Path) -> Option<PathBuf>;
    /// Opens `path` (`O_PATH`) and returns a path that names it even after other mounts hide it.
    fn open_path(&mut self, path: &Path) -> Result<PathBuf, MountError>;
    /// `chdir(new_root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`.
    fn pivot_root(&mut self, new_root: &Path) -> Result<(), MountError>;
    fn chdir(&mut self, path: &Path) -> Result<(), MountError>;
}

/// Joins an absolute in-sandbox path below `root`.
pub fn under(root: &Path, inside: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in inside.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

fn check_abs(path: &Path) -> Result<(), MountError> {
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(MountError::InvalidPath { path: path.to_path_buf() });
    }
    Ok(())
}

/// Follows symlinks of `inside` (an absolute path in the sandbox) with `root` as `/`, lexically, at most
/// 16 hops. Returns the in-sandbox path of the final target.
pub fn resolve_in_root(ops: &mut dyn MountOps, root: &Path, inside: &Path) -> PathBuf {
    let mut cur = inside.to_path_buf();
    for _ in 0..16 {
        let Some(link) = ops.read_link(&under(root, &cur)) else { return cur };
        let joined =
            if link.is_absolute() { link } else { cur.parent().unwrap_or(Path::new("/")).join(link) };
        let mut norm = PathBuf::from("/");
        for c in joined.components() {
            match c {
                Component::Normal(n) => norm.push(n),
                Component::ParentDir => {
                    norm.pop();
                }
                _ => {}
            }
        }
        cur = norm;
    }
    cur
}

/// Builds the sandbox root and pivots into it; the working directory ends up at `workdir_target` (or
/// `/` without a workdir). Must run in a fresh mount namespace, after the pid namespace fork (for `/proc`).
pub fn setup_root(ops: &mut dyn MountOps, spec: &RootSpec) -> Result<RootReport, MountError> {
    check_abs(&spec.root)?;
    check_abs(&spec.workdir_target)?;
    check_abs(&spec.staging)?;
    let host_root = spec.root == Path::new("/");
    let private = |flags: MsFlags| flags | MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    ops.mount(None, Path::new("/"), None, private(MsFlags::empty()), None)?;

    // Sources first: the staging tmpfs may hide them (a workdir below /tmp).
    let root_src = ops.open_path(&spec.root)?;
    let wd_src = match &spec.workdir {
        Some(w) => Some(ops.open_path(w)?),
        None => None,
    };

    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    ops.mount(
        Some(Path::new("tmpfs")),
        &spec.staging,
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=0700,size=1m"),
    )?;
    let new_root = spec.staging.join("root");
    ops.mkdir_all(&new_root)?;
    ops.mount(Some(&root_src), &new_root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;

    // A rootfs directory may lack mount points; the host root is never written to.
    if !host_root {
        for d in ["proc", "dev", "tmp", "etc"] {
            let p = new_root.join(d);
            if !ops.exists(&p) {
                ops.mkdir_all(&p)?;
            }
        }
        let resolv = new_root.join("etc/resolv.conf");
        if spec.resolv_conf.is_some() && !ops.exists(&resolv) {
            ops.create_file(&resolv, 0o644, b"")?;
        }
        if spec.workdir.is_some() && !spec.workdir_target.starts_with("/tmp") {
            let p = under(&new_root, &spec.workdir_target);
            if !ops.exists(&p) {
                ops.mkdir_all(&p)?;
            }
        }
    }
    ops.set_attr(&new_root, true, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;

    let noexec = nosuid_nodev | MsFlags::MS_NOEXEC;
    ops.mount(Some(Path::new("proc")), &new_root.join("proc"), Some("proc"), noexec, None)?;
    setup_dev(ops, &new_root.join("dev"), spec.console.as_deref())?;
    ops.mount(
        Some(Path::new("tmpfs")),
        &new_root.join("tmp"),
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=1777"),
    )?;

    if let Some(src) = wd_src {
        let target = under(&new_root, &spec.workdir_target);
        if !ops.exists(&target) {
            if host_root && !spec.workdir_target.starts_with("/tmp") {
                return Err(MountError::MissingMountPoint { path: spec.workdir_target.clone() });
            }
            ops.mkdir_all(&target)?;
        }
        ops.mount(Some(&src), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        ops.set_attr(&target, true, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
    }

    let resolv_conf = match &spec.resolv_conf {
        None => ResolvConf::NotRequested,
        Some(content) => {
            let generated = spec.staging.join("resolv.conf");
            ops.create_file(&generated, 0o644, content.as_bytes())?;
            let target = resolve_in_root(ops, &new_root, Path::new("/etc/resolv.conf"));
            let on_disk = under(&new_root, &target);
            if ops.exists(&on_disk) {
                ops.mount(Some(&generated), &on_disk, None, MsFlags::MS_BIND, None)?;
                let ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
                ops.set_attr(&on_disk, false, ro)?;
                ResolvConf::Mounted { target }
            } else {
                ResolvConf::Skipped {
                    reason: format!("{} (target of /etc/resolv.conf) does not exist", target.display()),
                }
            }
        }
    };

    ops.pivot_root(&new_root)?;
    let cwd = if spec.workdir.is_some() { spec.workdir_target.clone() } else { PathBuf::from("/") };
    ops.chdir(&cwd)?;
    Ok(RootReport { resolv_conf })
}

fn setup_dev(ops: &mut dyn MountOps, dev: &Path, console: Option<&Path>) -> Result<(), MountError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    ops.mount(Some(Path::new("tmpfs")), dev, Some("tmpfs"), flags, Some("mode=0755,size=64k"))?;
    for node in DEV_NODES {
        let target = dev.join(node);
        ops.create_file(&target, 0o666, b"")?;
        ops.mount(Some(&Path::new("/dev").join(node)), &target, None, MsFlags::MS_BIND, None)?;
        ops.set_attr(&target, false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    }
    if let Some(tty) = console {
        let target = dev.join("console");
        ops.create_file(&target, 0o600, b"")?;
        ops.mount(Some(tty), &target, None, MsFlags::MS_BIND, None)?;
        ops.set_attr(&target, false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    }
    for d in ["pts", "shm"] {
        ops.mkdir_all(&dev.join(d))?;
    }
    ops.mount(
        Some(Path::new("devpts")),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    ops.mount(Some(Path::new("tmpfs")), &dev.join("shm"), Some("tmpfs"), flags, Some("mode=1777"))?;
    for (target, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        ops.symlink(target, &dev.join(link))?;
    }
    ops.set_attr(dev, false, MOUNT_ATTR_RDONLY)
}

/// The real system calls.
#[derive(Default)]
pub struct LinuxMountOps {
    /// Descriptors returned by `open_path`, kept open until this value is dropped.
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
            .open(path)
            .map_err(err)?;
        f.write_all(content).map_err(err)
    }

    fn symlink(&mut self, target: &str, link: &Path) -> Result<(), MountError> {
        symlink(target, link).map_err(|source| MountError::Symlink { link: link.to_path_buf(), source })
    }

    fn exists(&mut self, path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok()
    }

    fn read_link(&mut self, path: &Path) -> Option<PathBuf> {
        fs::read_link(path).ok()
    }

    fn open_path(&mut self, path: &Path) -> Result<PathBuf, MountError> {
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| MountError::Open { path: path.to_path_buf(), source: io(e) })?;
        let p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        self.held.push(fd);
        Ok(p)
    }

    fn pivot_root(&mut self, new_root: &Path) -> Result<(), MountError> {
        let err = |step| move |e| MountError::PivotRoot { path: new_root.to_path_buf(), step, source: io(e) };
        nix::unistd::chdir(new_root).map_err(err("chdir"))?;
        nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(err("umount2 old root"))?;
        nix::unistd::chdir("/").map_err(err("chdir /"))?;
        self.held.clear();
        Ok(())
    }

    fn chdir(&mut self, path: &Path) -> Result<(), MountError> {
        nix::unistd::chdir(path).map_err(|e| MountError::Chdir { path: path.to_path_buf(), source: io(e) })
    }
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
