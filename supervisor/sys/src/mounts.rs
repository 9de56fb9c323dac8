//! The sandbox's root view, built by sandbox init (pid 1 of fresh mount and pid namespaces): an EMPTY
//! tmpfs skeleton into which only what the policy lists is bind-mounted (read-only paths read-only,
//! read-write paths read-write), plus a fresh `/proc`, a minimal `/dev`, a private `/tmp`, the workdir
//! read-write, a generated `/etc/resolv.conf`; the skeleton is then made read-only, `pivot_root` into it
//! and the old root detached.
//!
//! Every path of the root (host `/` or a `--rootfs` directory) and of the workdir is resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` on an `O_PATH` descriptor of that directory
//! ([`crate::inroot`]) and bound through `/proc/self/fd/N` of the resolved descriptor; mount points are
//! created only in tmpfs instances this module mounted (the skeleton, the private `/tmp`, `/dev`),
//! resolved the same way below the skeleton. Nothing is ever written into the root or the workdir, and
//! no symlink of either can lead a lookup to the host.
//!
//! Symlinks: a listed path that is itself a symlink (Debian: `/lib -> usr/lib`) is recreated as the same
//! symlink in the skeleton; its target is reachable only if the target is listed too (list `/usr`).
//! Symlinks on the way to a listed path are followed inside the root and recreated as well, so the
//! listed name keeps working. Missing paths are skipped and reported.
//!
//! When the policy restricts execution (`executable`), writable places not covered by an executable
//! path (workdir, `/tmp`, `read_write` paths; `/dev/shm` always) are mounted `noexec`, so the dynamic
//! loader cannot map code from them either. When the workdir holds a `.git` directory, `.git` is pinned
//! (bound over itself: it can be neither renamed nor removed) and `.git/hooks` and `.git/config` are
//! bound read-only over themselves: they run on the host when the user runs git.
//!
//! Hidden paths (the gateway's state directory) are masked where the view would show them: an empty,
//! read-only tmpfs (or empty file) is mounted over them after the policy's binds and before the workdir,
//! which stays visible inside ([`hidden`]). [`chown_dir`] gives a freshly made workdir to the agent.
//!
//! Every step goes through [`MountOps`] so that the sequence is unit-tested with a recording fake
//! ([`setup_root`] is the only place that decides what is mounted where).
//!
//! Threat handled: the agent seeing, reaching (`connect()` to pathname unix sockets, which Landlock below
//! ABI 9 cannot restrict), `stat`ing or writing anything the policy does not list; setuid binaries and
//! device nodes of the host; the host's `/tmp`; processes of the host in `/proc`; a hostile rootfs whose
//! symlinks point at the host. Residual risk: what is listed is visible with the host's content
//! (Landlock is the second layer over the same paths); `/proc/self/mountinfo` shows the listed paths;
//! a listed directory shows every host mount below it.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

pub use crate::inroot::{Kind, Make};

mod git;
mod hidden;
mod linux;
mod memfd;
mod owner;

pub use hidden::{Masked, is_hidden};
pub use linux::LinuxMountOps;
pub use memfd::{MemfdExec, forbid_memfd_exec, memfd_exec_policy};
pub use owner::{Chowned, chown_dir};

pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Device nodes bound from the host into the sandbox's `/dev`.
pub const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
/// Paths the sandbox provides itself; policy paths at or below them are not bound from the root.
pub const SANDBOX_PROVIDED: &[&str] = &["/proc", "/dev", "/tmp"];
/// `ViewReport::mechanism`.
pub const VIEW_MECHANISM: &str =
    "tmpfs skeleton with only the policy's paths bound (openat2 RESOLVE_IN_ROOT)";
/// Symlinks followed per path before giving up (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

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
    #[error("cannot create {path} in the sandbox skeleton")]
    Make {
        path: PathBuf,
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
    #[error("mount point {path} does not exist and may not be created in the root filesystem ({why})")]
    MissingMountPoint { path: PathBuf, why: String },
    #[error("invalid path {path}: must be absolute, without '..'")]
    InvalidPath { path: PathBuf },
    #[error("cannot hide {path}: {why}")]
    CannotHide { path: PathBuf, why: String },
    #[error("cannot give {path} to {uid}:{gid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Where a path is looked up: each is an `O_PATH` descriptor that lookups cannot leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// The root filesystem (host `/` or `--rootfs`).
    Root,
    /// The workdir (host directory).
    Workdir,
    /// The new root being built (after `pivot_root`: `/` of the sandbox).
    Skeleton,
}

/// What to build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootSpec {
    /// Host path of the root the listed paths come from: `/` or a rootfs directory.
    pub root: PathBuf,
    /// Host directory bound read-write at `workdir_target`.
    pub workdir: Option<PathBuf>,
    /// Where the workdir appears inside the sandbox (usually the same path as on the host).
    pub workdir_target: PathBuf,
    /// Content of the generated `/etc/resolv.conf` (none: keep the root's, if listed).
    pub resolv_conf: Option<String>,
    /// Host directory that receives the staging tmpfs (hidden from the host by the private mount ns).
    pub staging: PathBuf,
    /// The caller's terminal (e.g. `/proc/self/fd/0` when stdin is a tty), bound at `/dev/console` so that
    /// `ttyname()` finds the inherited terminal inside the sandbox's own `/dev` (its `pts` is a new
    /// instance, in which the caller's `/dev/pts/N` does not exist).
    pub console: Option<PathBuf>,
    /// Paths (inside the sandbox = inside `root`) bound read-only.
    pub read_only: Vec<PathBuf>,
    /// Paths bound read-write.
    pub read_write: Vec<PathBuf>,
    /// `Some`: execution is restricted to these paths (they are bound too): writable places they do not
    /// cover are mounted `noexec`.
    pub executable: Option<Vec<PathBuf>>,
    /// Pin `<workdir>/.git` and bind `.git/hooks` and `.git/config` read-only (when `.git` is a directory).
    pub protect_git: bool,
    /// Host paths the agent must not see even where a listed path covers them: masked by an empty,
    /// read-only directory (or file) where the view shows them; the workdir stays visible inside one.
    /// With a rootfs, only those below the rootfs (same place inside) or the host workdir are in the view.
    pub hidden: Vec<PathBuf>,
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

/// The filesystem view, as built (part of the enforcement report).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReport {
    /// How the root is built ([`VIEW_MECHANISM`]).
    pub mechanism: String,
    /// Bind mounts, parents first: `PATH ro|rw[ noexec]`.
    pub binds: Vec<String>,
    /// Symlinks recreated in the skeleton: `PATH -> TARGET`.
    pub links: Vec<String>,
    /// Listed paths that were not bound, with the reason (missing, or occupied by another listing).
    pub skipped: Vec<String>,
    /// Workdir git files bound read-only (and `.git` pinned).
    pub git_protected: Vec<PathBuf>,
    /// Places mounted `noexec` because `executable` is set (besides `/dev/shm`, always `noexec`).
    pub noexec: Vec<PathBuf>,
    /// Whether memfds can be executed ([`memfd_exec_policy`]).
    #[serde(default)]
    pub memfd_exec: String,
    /// Hidden paths: `PATH: masked (empty directory, read-only)`, or why there was nothing to hide.
    #[serde(default)]
    pub hidden: Vec<String>,
}

/// Result of [`setup_root`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootReport {
    pub resolv_conf: ResolvConf,
    pub view: ViewReport,
    /// Every hidden path, resolved inside the sandbox (masked, or not in the view at all): nothing at or
    /// below them is visible but the workdir's content ([`is_hidden`]).
    pub hidden: Vec<Masked>,
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
    /// Host path; only used below the staging tmpfs.
    fn mkdir_all(&mut self, path: &Path) -> Result<(), MountError>;
    /// Host path; only used below the staging tmpfs.
    fn create_file(&mut self, path: &Path, mode: u32, content: &[u8]) -> Result<(), MountError>;
    /// Opens the directory `host_path` (`O_PATH`) as `base`; lookups in `base` are confined to it.
    fn open_base(&mut self, base: Base, host_path: &Path) -> Result<(), MountError>;
    /// What `inside` names in `base`, the last component not followed; `None` when it does not exist.
    fn lookup(&mut self, base: Base, inside: &Path) -> Result<Option<Kind>, MountError>;
    /// Opens `inside` in `base` (`O_PATH | O_NOFOLLOW`) and returns a path naming it even after other
    /// mounts hide it (`/proc/self/fd/N`), usable as a mount source or target, and what it is.
    fn open_in(&mut self, base: Base, inside: &Path) -> Result<(PathBuf, Kind), MountError>;
    /// Creates `inside` (its parent exists) in `base`, never through a symlink at its last component.
    fn make(&mut self, base: Base, inside: &Path, what: &Make) -> Result<(), MountError>;
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

/// `path` without `.` components or trailing slashes.
fn normal(path: &Path) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in path.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

/// A path resolved inside a base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The path with every symlink on the way (and the last one when asked) followed inside the base.
    pub path: PathBuf,
    /// What it names; `None` when missing (then `path` ends with the missing components, lexically).
    pub kind: Option<Kind>,
    /// Symlinks passed: (where, target text).
    pub links: Vec<(PathBuf, PathBuf)>,
}

/// Resolves `inside` in `base` component by component, as the kernel would with `base` as `/`
/// (absolute targets restart at `base`, `..` stops there), at most 40 symlinks.
pub fn canonicalize(
    ops: &mut dyn MountOps,
    base: Base,
    inside: &Path,
    follow_last: bool,
) -> Result<Resolved, MountError> {
    fn push_rev(todo: &mut Vec<OsString>, p: &Path) {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                _ => {}
            }
        }
    }
    let mut done = PathBuf::from("/");
    let mut todo = Vec::new();
    push_rev(&mut todo, inside);
    let mut links = Vec::new();
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let cand = done.join(&c);
        let last = todo.is_empty();
        match ops.lookup(base, &cand)? {
            None => {
                let mut p = cand;
                while let Some(r) = todo.pop() {
                    if r == ".." {
                        p.pop();
                    } else {
                        p.push(r);
                    }
                }
                return Ok(Resolved { path: p, kind: None, links });
            }
            Some(Kind::Symlink(t)) if !last || follow_last => {
                if links.len() >= MAX_LINKS {
                    return Ok(Resolved { path: cand, kind: None, links });
                }
                links.push((cand, t.clone()));
                if t.is_absolute() {
                    done = PathBuf::from("/");
                }
                push_rev(&mut todo, &t);
            }
            Some(k) => {
                done = cand;
                if last {
                    return Ok(Resolved { path: done, kind: Some(k), links });
                }
            }
        }
    }
    Ok(Resolved { path: done, kind: Some(Kind::Dir), links })
}

/// One bind mount of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bind {
    /// Canonical path inside the sandbox.
    target: PathBuf,
    base: Base,
    /// Path inside `base`.
    source: PathBuf,
    dir: bool,
    writable: bool,
    /// Listed in `executable`.
    exec: bool,
    noexec: bool,
    workdir: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    ReadOnly,
    ReadWrite,
    Execute,
}

/// Policy paths the sandbox provides itself (own `/proc`, `/dev`, private `/tmp`), unless in the workdir.
fn provided(p: &Path, workdir: Option<&Path>) -> bool {
    if workdir.is_some_and(|w| p.starts_with(w)) {
        return false;
    }
    SANDBOX_PROVIDED.iter().any(|s| p.starts_with(s))
}

struct Plan {
    binds: Vec<Bind>,
    links: Vec<(PathBuf, PathBuf)>,
}

/// Resolves every listed path; merges, orders (parents first) and prunes the binds.
fn plan(
    ops: &mut dyn MountOps,
    spec: &RootSpec,
    wd: Option<&Path>,
    view: &mut ViewReport,
) -> Result<Plan, MountError> {
    let mut wanted: Vec<(PathBuf, Grant)> = Vec::new();
    wanted.extend(spec.read_only.iter().map(|p| (p.clone(), Grant::ReadOnly)));
    wanted.extend(spec.read_write.iter().map(|p| (p.clone(), Grant::ReadWrite)));
    if let Some(exec) = &spec.executable {
        wanted.extend(exec.iter().map(|p| (p.clone(), Grant::Execute)));
    }
    let mut binds: Vec<Bind> = Vec::new();
    let mut links = Vec::new();
    let wd_lexical = spec.workdir.as_ref().map(|_| normal(&spec.workdir_target));
    for (listed, grant) in wanted {
        if check_abs(&listed).is_err() {
            view.skipped.push(format!("{}: not an absolute path without '..'", listed.display()));
            continue;
        }
        let p = normal(&listed);
        if provided(&p, wd_lexical.as_deref())
            || (spec.resolv_conf.is_some() && p == Path::new("/etc/resolv.conf"))
        {
            continue;
        }
        let (base, inside) = match (&wd_lexical, wd) {
            (Some(wl), Some(_)) if p.starts_with(wl) => {
                (Base::Workdir, normal(p.strip_prefix(wl).unwrap_or(Path::new("/"))))
            }
            _ => (Base::Root, p.clone()),
        };
        let r = canonicalize(ops, base, &inside, false)?;
        let target = match (base, wd) {
            (Base::Workdir, Some(w)) => under(w, &r.path),
            _ => r.path.clone(),
        };
        if base == Base::Root {
            links.extend(r.links.iter().cloned());
        }
        match r.kind {
            None => view.skipped.push(format!("{}: does not exist", p.display())),
            Some(Kind::Symlink(t)) => links.push((target, t)),
            Some(k) => {
                if base == Base::Root && provided(&target, wd) {
                    continue;
                }
                binds.push(Bind {
                    target,
                    base,
                    source: r.path,
                    dir: k == Kind::Dir,
                    writable: grant == Grant::ReadWrite,
                    exec: grant == Grant::Execute,
                    noexec: false,
                    workdir: false,
                });
            }
        }
    }
    if let Some(w) = wd {
        binds.push(Bind {
            target: w.to_path_buf(),
            base: Base::Workdir,
            source: PathBuf::from("/"),
            dir: true,
            writable: true,
            exec: false,
            noexec: false,
            workdir: true,
        });
    }

    // Merge listings of the same place (the union of their rights, like Landlock's).
    binds.sort_by(|a, b| {
        (a.target.components().count(), &a.target).cmp(&(b.target.components().count(), &b.target))
    });
    let mut merged: Vec<Bind> = Vec::new();
    for b in binds {
        match merged.last_mut() {
            Some(m) if m.target == b.target => {
                if b.workdir || (b.base == Base::Workdir && m.base != Base::Workdir) {
                    (m.base, m.source, m.dir) = (b.base, b.source.clone(), b.dir);
                }
                m.writable |= b.writable;
                m.exec |= b.exec;
                m.workdir |= b.workdir;
            }
            _ => merged.push(b),
        }
    }

    // Execution: when restricted, writable places not below an executable path are noexec; an
    // executable path below a noexec place gets its own mount. Listings already covered by an
    // enclosing mount with at least their rights are redundant (Landlock's rights are inherited down
    // the tree too, so a read-only path below a read-write one is read-write there as well).
    let restricted = spec.executable.is_some();
    let exec_roots: Vec<PathBuf> = spec
        .executable
        .iter()
        .flatten()
        .map(|p| normal(p))
        .chain(merged.iter().filter(|b| b.exec).map(|b| b.target.clone()))
        .collect();
    let covered = |p: &Path| exec_roots.iter().any(|e| p.starts_with(e));
    let mut kept: Vec<Bind> = Vec::new();
    for mut b in merged {
        let enclosing = kept.iter().rev().find(|k| b.target.starts_with(&k.target)).cloned();
        if b.exec && !b.writable {
            b.writable = enclosing.as_ref().is_some_and(|e| e.writable);
        }
        b.noexec = restricted && b.writable && !covered(&b.target);
        let redundant = !b.workdir
            && enclosing
                .as_ref()
                .is_some_and(|e| e.base == b.base && (e.writable || !b.writable) && (!e.noexec || b.noexec));
        if !redundant {
            kept.push(b);
        }
    }
    Ok(Plan { binds: kept, links })
}

/// Mounts seen so far: (target inside the sandbox, a tmpfs of ours in which mount points may be made).
type Mounted = Vec<(PathBuf, bool)>;

fn owned(mounted: &Mounted, p: &Path) -> bool {
    mounted
        .iter()
        .filter(|(m, _)| p.starts_with(m))
        .max_by_key(|(m, _)| m.components().count())
        .is_some_and(|(_, own)| *own)
}

/// Outcome of [`place`].
enum Placed {
    /// The mount point, opened.
    Ready(PathBuf),
    /// Cannot be made (why).
    Not(String),
}

/// Makes sure a mount point (`dir` or a file) exists at `target` in the skeleton: created (with its
/// parents) where a tmpfs of ours lies, required to exist elsewhere.
fn place(ops: &mut dyn MountOps, mounted: &Mounted, target: &Path, dir: bool) -> Result<Placed, MountError> {
    let fits = |k: &Kind| if dir { *k == Kind::Dir } else { *k == Kind::File };
    match ops.lookup(Base::Skeleton, target)? {
        Some(k) if fits(&k) => {}
        Some(k) => return Ok(Placed::Not(format!("occupied by {k:?}"))),
        None if !owned(mounted, target) => {
            return Ok(Placed::Not("missing below a bound directory".into()));
        }
        None => {
            if let Some((cur, k)) = make_parents(ops, target)? {
                return Ok(Placed::Not(format!("{} is {k:?}", cur.display())));
            }
            ops.make(Base::Skeleton, target, if dir { &Make::Dir } else { &Make::File })?;
        }
    }
    let (handle, kind) = ops.open_in(Base::Skeleton, target)?;
    if !fits(&kind) {
        return Ok(Placed::Not(format!("changed to {kind:?}")));
    }
    Ok(Placed::Ready(handle))
}

/// Creates the missing parent directories of `at` in the skeleton, outermost first; stops at the first
/// parent that is not a directory and returns it with what it is.
fn make_parents(ops: &mut dyn MountOps, at: &Path) -> Result<Option<(PathBuf, Kind)>, MountError> {
    let mut cur = PathBuf::from("/");
    for c in at.parent().map(|p| p.components().collect::<Vec<_>>()).unwrap_or_default() {
        let Component::Normal(n) = c else { continue };
        cur.push(n);
        match ops.lookup(Base::Skeleton, &cur)? {
            Some(Kind::Dir) => {}
            None => ops.make(Base::Skeleton, &cur, &Make::Dir)?,
            Some(k) => return Ok(Some((cur, k))),
        }
    }
    Ok(None)
}

/// Like [`place`], but a failure is an error.
fn place_required(
    ops: &mut dyn MountOps,
    mounted: &Mounted,
    target: &Path,
    dir: bool,
) -> Result<PathBuf, MountError> {
    match place(ops, mounted, target, dir)? {
        Placed::Ready(h) => Ok(h),
        Placed::Not(why) => Err(MountError::MissingMountPoint { path: target.to_path_buf(), why }),
    }
}

/// Mounts a fresh filesystem at `target` (a directory) and records it.
fn mount_fresh(
    ops: &mut dyn MountOps,
    mounted: &mut Mounted,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    let handle = place_required(ops, mounted, Path::new(target), true)?;
    ops.mount(Some(Path::new(fstype)), &handle, Some(fstype), flags, data)?;
    mounted.push((PathBuf::from(target), fstype == "tmpfs"));
    Ok(())
}

/// Binds `source` (in `base`) at `target` with `attrs` (on the new mount and those below it).
fn bind(
    ops: &mut dyn MountOps,
    base: Base,
    source: &Path,
    handle: &Path,
    target: &Path,
    attrs: u64,
) -> Result<(), MountError> {
    let (src, _) = ops.open_in(base, source)?;
    ops.mount(Some(&src), handle, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    // Reopened: the old handle names the mount point underneath the new mount.
    let (top, _) = ops.open_in(Base::Skeleton, target)?;
    ops.set_attr(&top, true, attrs)
}

fn bind_attrs(writable: bool, noexec: bool) -> u64 {
    let mut a = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if !writable {
        a |= MOUNT_ATTR_RDONLY;
    }
    if noexec {
        a |= MOUNT_ATTR_NOEXEC;
    }
    a
}

/// Recreates the symlink `at -> target` where a tmpfs of ours lies and nothing is yet.
fn recreate_link(
    ops: &mut dyn MountOps,
    mounted: &Mounted,
    at: &Path,
    target: &Path,
) -> Result<bool, MountError> {
    if !owned(mounted, at) || ops.lookup(Base::Skeleton, at)?.is_some() {
        return Ok(false);
    }
    if make_parents(ops, at)?.is_some() {
        return Ok(false);
    }
    ops.make(Base::Skeleton, at, &Make::Symlink(target.to_path_buf()))?;
    Ok(true)
}

/// Builds the sandbox root and pivots into it; the working directory ends up at `workdir_target` (or
/// `/` without a workdir). Must run in a fresh mount namespace, after the pid namespace fork (for `/proc`).
pub fn setup_root(ops: &mut dyn MountOps, spec: &RootSpec) -> Result<RootReport, MountError> {
    check_abs(&spec.root)?;
    check_abs(&spec.workdir_target)?;
    check_abs(&spec.staging)?;
    let private = |flags: MsFlags| flags | MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    ops.mount(None, Path::new("/"), None, private(MsFlags::empty()), None)?;

    // Bases first: the staging tmpfs may hide them (a workdir or rootfs below /tmp).
    ops.open_base(Base::Root, &spec.root)?;
    if let Some(w) = &spec.workdir {
        ops.open_base(Base::Workdir, w)?;
    }
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
    ops.mount(
        Some(Path::new("tmpfs")),
        &new_root,
        Some("tmpfs"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )?;
    ops.open_base(Base::Skeleton, &new_root)?;

    let mut view = ViewReport { mechanism: VIEW_MECHANISM.into(), ..ViewReport::default() };
    let wd = match &spec.workdir {
        Some(_) => {
            let r = canonicalize(ops, Base::Root, &normal(&spec.workdir_target), true)?;
            Some(r)
        }
        None => None,
    };
    let wd_target = wd.as_ref().map(|r| r.path.clone());
    let plan = plan(ops, spec, wd_target.as_deref(), &mut view)?;
    let masks = hidden::resolve(ops, spec, wd_target.as_deref(), &mut view)?;
    let mut links = plan.links;
    // Hidden wins: listed paths and the policy's symlinks at or below a hidden path are left out.
    links.retain(|(at, _)| !masks.iter().any(|m| at.starts_with(&m.target)));
    if let Some(r) = &wd {
        links.extend(r.links.iter().cloned());
    }
    let mut binds = plan.binds;
    binds.retain(|b| {
        let hidden = hidden::hides(&masks, b);
        if hidden {
            view.skipped.push(format!("{}: hidden", b.target.display()));
        }
        !hidden
    });

    // `/` listed: the whole root, read-only, replaces the empty skeleton (nothing is owned then).
    let mut mounted: Mounted = vec![(PathBuf::from("/"), true)];
    if binds.first().is_some_and(|b| b.target == Path::new("/")) {
        let b = binds.remove(0);
        let (src, _) = ops.open_in(Base::Root, Path::new("/"))?;
        ops.mount(Some(&src), &new_root, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        ops.set_attr(&new_root, true, bind_attrs(false, false))?;
        ops.open_base(Base::Skeleton, &new_root)?;
        mounted = vec![(PathBuf::from("/"), false)];
        view.binds.push(format!("/ {}", if b.writable { "ro (/ is never writable)" } else { "ro" }));
    }

    let restricted = spec.executable.is_some();
    let tmp_exec = spec.executable.iter().flatten().any(|e| Path::new("/tmp").starts_with(normal(e)));
    let noexec = nosuid_nodev | MsFlags::MS_NOEXEC;
    mount_fresh(ops, &mut mounted, "/proc", "proc", noexec, None)?;
    setup_dev(ops, &mut mounted, spec.console.as_deref())?;
    let tmp_flags = if restricted && !tmp_exec { noexec } else { nosuid_nodev };
    if tmp_flags.contains(MsFlags::MS_NOEXEC) {
        view.noexec.push("/tmp".into());
    }
    mount_fresh(ops, &mut mounted, "/tmp", "tmpfs", tmp_flags, Some("mode=1777"))?;

    // The policy's paths, then the masks of hidden paths around the workdir, then what must stay visible
    // inside them (the workdir and listings in it), the git protection, the masks inside the workdir.
    let (inside, outside): (Vec<&Bind>, Vec<&Bind>) =
        binds.iter().partition(|b| hidden::after_masks(&masks, b));
    mount_binds(ops, &mut mounted, &outside, &mut view)?;
    let mut applied = Vec::new();
    let (in_wd, around): (Vec<&hidden::Mask>, Vec<&hidden::Mask>) = masks.iter().partition(|m| m.in_workdir);
    hidden::apply(ops, &mut mounted, around.into_iter(), &spec.staging, &mut view, &mut applied)?;
    mount_binds(ops, &mut mounted, &inside, &mut view)?;

    if let (true, Some(w)) = (spec.protect_git, binds.iter().find(|b| b.workdir)) {
        git::protect_git(ops, &mounted, w, &mut view)?;
    }
    hidden::apply(ops, &mut mounted, in_wd.into_iter(), &spec.staging, &mut view, &mut applied)?;

    links.sort();
    links.dedup();
    for (at, target) in &links {
        if recreate_link(ops, &mounted, at, target)? {
            view.links.push(format!("{} -> {}", at.display(), target.display()));
        }
    }

    let resolv_conf = match &spec.resolv_conf {
        None => ResolvConf::NotRequested,
        Some(content) => {
            let generated = spec.staging.join("resolv.conf");
            ops.create_file(&generated, 0o644, content.as_bytes())?;
            let r = canonicalize(ops, Base::Root, Path::new("/etc/resolv.conf"), true)?;
            for (at, target) in &r.links {
                if recreate_link(ops, &mounted, at, target)? {
                    view.links.push(format!("{} -> {}", at.display(), target.display()));
                }
            }
            match place(ops, &mounted, &r.path, false)? {
                Placed::Ready(h) => {
                    ops.mount(Some(&generated), &h, None, MsFlags::MS_BIND, None)?;
                    let (top, _) = ops.open_in(Base::Skeleton, &r.path)?;
                    let ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
                    ops.set_attr(&top, false, ro)?;
                    ResolvConf::Mounted { target: r.path }
                }
                Placed::Not(why) => ResolvConf::Skipped {
                    reason: format!("{} (target of /etc/resolv.conf): {why}", r.path.display()),
                },
            }
        }
    };

    // The masks and the skeleton itself: read-only (what is mounted on them keeps its own flags).
    hidden::seal(ops, &applied)?;
    ops.set_attr(&new_root, false, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)?;
    ops.pivot_root(&new_root)?;
    let cwd = if spec.workdir.is_some() { spec.workdir_target.clone() } else { PathBuf::from("/") };
    ops.chdir(&cwd)?;
    Ok(RootReport { resolv_conf, view, hidden: masks.iter().map(hidden::Mask::public).collect() })
}

/// Binds `binds` in order (parents first); a missing mount point skips a listed path (reported) but is
/// an error for the workdir.
fn mount_binds(
    ops: &mut dyn MountOps,
    mounted: &mut Mounted,
    binds: &[&Bind],
    view: &mut ViewReport,
) -> Result<(), MountError> {
    for b in binds {
        let handle = match place(ops, mounted, &b.target, b.dir)? {
            Placed::Ready(h) => h,
            Placed::Not(why) if b.workdir => {
                return Err(MountError::MissingMountPoint { path: b.target.clone(), why });
            }
            Placed::Not(why) => {
                view.skipped.push(format!("{}: {why}", b.target.display()));
                continue;
            }
        };
        bind(ops, b.base, &b.source, &handle, &b.target, bind_attrs(b.writable, b.noexec))?;
        mounted.push((b.target.clone(), false));
        let mode = if b.writable { "rw" } else { "ro" };
        view.binds.push(format!("{} {mode}{}", b.target.display(), if b.noexec { " noexec" } else { "" }));
        if b.noexec {
            view.noexec.push(b.target.clone());
        }
    }
    Ok(())
}

fn setup_dev(
    ops: &mut dyn MountOps,
    mounted: &mut Mounted,
    console: Option<&Path>,
) -> Result<(), MountError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mount_fresh(ops, mounted, "/dev", "tmpfs", flags, Some("mode=0755,size=64k"))?;
    let mut nodes: Vec<(PathBuf, PathBuf)> =
        DEV_NODES.iter().map(|n| (Path::new("/dev").join(n), Path::new("/dev").join(n))).collect();
    if let Some(tty) = console {
        nodes.push((tty.to_path_buf(), PathBuf::from("/dev/console")));
    }
    for (source, target) in nodes {
        ops.make(Base::Skeleton, &target, &Make::File)?;
        let (h, _) = ops.open_in(Base::Skeleton, &target)?;
        ops.mount(Some(&source), &h, None, MsFlags::MS_BIND, None)?;
        let (top, _) = ops.open_in(Base::Skeleton, &target)?;
        ops.set_attr(&top, false, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)?;
    }
    ops.make(Base::Skeleton, Path::new("/dev/pts"), &Make::Dir)?;
    let (pts, _) = ops.open_in(Base::Skeleton, Path::new("/dev/pts"))?;
    ops.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_fresh(ops, mounted, "/dev/shm", "tmpfs", flags, Some("mode=1777"))?;
    for (target, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        ops.make(Base::Skeleton, &Path::new("/dev").join(link), &Make::Symlink(target.into()))?;
    }
    let (dev, _) = ops.open_in(Base::Skeleton, Path::new("/dev"))?;
    ops.set_attr(&dev, false, MOUNT_ATTR_RDONLY)
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
