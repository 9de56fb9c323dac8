//! Path resolution confined to a directory: `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on an
//! `O_PATH` descriptor, and the few `*at` calls that create entries below a descriptor.
//!
//! Threat handled: a root filesystem (or workdir) owned by someone else, whose symlinks (absolute, or
//! with `..`) would lead a privileged supervisor that follows host paths to the host's files. With
//! `RESOLVE_IN_ROOT` the kernel resolves every component as if the descriptor were `/` (absolute
//! symlinks start there, `..` stops there), atomically, so renames racing the lookup cannot leave it
//! either (the kernel fails such a lookup with `EXDEV`/`EAGAIN` instead). Residual risk: none known for
//! the lookup itself; what the caller does with the result (e.g. mounting it) is the caller's decision.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// `RESOLVE_NO_MAGICLINKS`: `/proc/<pid>/fd/*`-style links are refused.
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `RESOLVE_IN_ROOT`: resolve as if the directory descriptor were the root.
pub const RESOLVE_IN_ROOT: u64 = 0x10;

/// What a path names (without following a final symlink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// Anything that is not a directory or a symlink (regular file, socket, fifo, device).
    File,
    Symlink(PathBuf),
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn cstring(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// `path` (absolute inside the directory, or relative) as the relative form `openat2` gets; `.` for the
/// directory itself. `..` components are kept: the kernel clamps them at the directory.
pub fn relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            _ => {}
        }
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// `openat2(dir, path, flags | O_CLOEXEC, resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
/// `EAGAIN` (a concurrent rename anywhere on the system) is retried a few times.
pub fn open_in_root(dir: BorrowedFd<'_>, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let c = cstring(&relative(path))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    let mut tries = 0;
    loop {
        // SAFETY: `c` is a NUL-terminated path and `how` a live, correctly laid out `struct open_how`
        // whose size is passed; the kernel only reads both during the call. `dir` is a valid descriptor
        // for the duration of the call (borrowed).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) && tries < 16 {
                tries += 1;
                continue;
            }
            return Err(e);
        }
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// The kind of the object an `O_PATH | O_NOFOLLOW` descriptor names (reading the link if it is one).
pub fn kind_of(fd: BorrowedFd<'_>) -> std::io::Result<Kind> {
    let st = nix::sys::stat::fstat(fd).map_err(std::io::Error::from)?;
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink(read_link_fd(fd)?),
        _ => Kind::File,
    })
}

/// `readlinkat(fd, "")` of an `O_PATH | O_NOFOLLOW` descriptor of a symlink.
fn read_link_fd(fd: BorrowedFd<'_>) -> std::io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the empty path is NUL-terminated; `buf` is writable for `buf.len()` bytes and the kernel
    // writes at most that many; `fd` is valid for the call.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

/// What [`make_at`] creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Make {
    /// A directory, mode 0755.
    Dir,
    /// An empty regular file, mode 0644 (a mount point for a file).
    File,
    /// A symlink with this target text.
    Symlink(PathBuf),
}

/// Creates `name` in the directory `parent` (an `O_PATH` descriptor), never following a symlink at
/// `name` (`O_EXCL`/`mkdirat`/`symlinkat` fail with `EEXIST` on any existing entry).
pub fn make_at(parent: BorrowedFd<'_>, name: &std::ffi::OsStr, what: &Make) -> std::io::Result<()> {
    let c =
        CString::new(name.as_bytes()).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let rc = match what {
        // SAFETY: `c` is NUL-terminated and `parent` a valid directory descriptor for the call.
        Make::Dir => unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755) },
        Make::File => {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: as above; the mode argument is passed because O_CREAT is set.
            let fd = unsafe { libc::openat(parent.as_raw_fd(), c.as_ptr(), flags, 0o644 as libc::c_uint) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned to us and is closed exactly once, here.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                0
            } else {
                -1
            }
        }
        Make::Symlink(target) => {
            let t = cstring(target)?;
            // SAFETY: both strings are NUL-terminated; `parent` is valid for the call.
            unsafe { libc::symlinkat(t.as_ptr(), parent.as_raw_fd(), c.as_ptr()) }
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn absolute_symlinks_and_dotdot_stay_inside() {
        let d = std::env::temp_dir().join(format!("osh-inroot-{}", std::process::id()));
        let root = d.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/", root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("etc/up")).unwrap();
        std::fs::write(root.join("marker"), b"inside").unwrap();
        let fd = nix::fcntl::open(
            &root,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        for p in ["/etc/abs/marker", "etc/up/marker", "/../../marker"] {
            let f = open_in_root(fd.as_fd(), Path::new(p), libc::O_RDONLY).unwrap();
            let mut s = String::new();
            use std::io::Read;
            std::fs::File::from(f).read_to_string(&mut s).unwrap();
            assert_eq!(s, "inside", "{p}");
        }
        // The host's /etc/passwd is not reachable through the absolute link.
        assert!(open_in_root(fd.as_fd(), Path::new("/etc/abs/etc/passwd"), libc::O_RDONLY).is_err());
        let l = open_in_root(fd.as_fd(), Path::new("/etc/abs"), libc::O_PATH | libc::O_NOFOLLOW).unwrap();
        assert_eq!(kind_of(l.as_fd()).unwrap(), Kind::Symlink("/".into()));
        let parent = open_in_root(fd.as_fd(), Path::new("/etc"), libc::O_PATH | libc::O_DIRECTORY).unwrap();
        make_at(parent.as_fd(), "new".as_ref(), &Make::Dir).unwrap();
        make_at(parent.as_fd(), "f".as_ref(), &Make::File).unwrap();
        // Never through an existing symlink.
        assert!(make_at(parent.as_fd(), "abs".as_ref(), &Make::File).is_err());
        assert!(root.join("etc/new").is_dir() && root.join("etc/f").is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
