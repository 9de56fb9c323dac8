//! Hidden paths: host paths the agent must not see even where a listed path covers them (the gateway's
//! state directory, which holds its database, keys and control socket, below a listed `/` or `/root`).
//!
//! Each one is resolved like a listed path (inside the root, or inside the workdir when it lies below
//! the host workdir) and, where the view shows it once the policy's paths are bound, covered by an empty
//! tmpfs (a directory) or an empty file (anything else), both read-only, `nosuid`, `nodev`, `noexec`:
//! listing it shows nothing, nothing below it exists, so a unix socket below it cannot be connected to.
//! Listed paths at or below it are not bound (hidden wins over the policy), and symlinks of the policy
//! are not recreated in it. What must stay visible is mounted on top of the mask afterwards: the workdir
//! (its parent directories are made, empty, `0755`, in the mask; symlinks on the way to it are
//! recreated), listings inside the workdir, and the generated `/etc/resolv.conf` when its target lies
//! inside. A hidden path strictly inside the workdir is masked after the workdir and its git protection.
//!
//! With a `--rootfs`, hidden paths are host paths: one below the rootfs is hidden at the same place
//! inside (`<rootfs>/var/lib/x` is `/var/lib/x` in the view), one below the host workdir inside the
//! workdir; anything else is not in the view anyway and is skipped. Paths the sandbox provides itself
//! (`/proc`, `/dev`, `/tmp` outside the workdir) are skipped too: the host's are not in the view.
//!
//! Residual risk: the same object reachable under another name of the view (a host bind mount of the
//! hidden directory elsewhere, a hard link to a file below it) stays visible there; `mountinfo` names the
//! masked path itself.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use super::{
    Base, Bind, Kind, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MountError,
    MountOps, Mounted, ViewReport, canonicalize, check_abs, normal, provided, under,
};

/// Options of a mask tmpfs: the root directory `0755`; only mount points are ever made in it.
const MASK_TMPFS: &str = "mode=0755,size=16k";
/// Name of the empty file (in the staging tmpfs) bound over hidden non-directories.
const EMPTY_FILE: &str = "hidden-empty";

/// A hidden path, resolved inside the view (part of [`super::RootReport`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masked {
    /// Where it is in the sandbox (the canonical path: symlinks followed inside the root or workdir).
    pub target: PathBuf,
    /// Strictly inside the workdir: masked over the workdir's content too.
    pub in_workdir: bool,
}

/// Whether `path` (a path of the sandbox, e.g. a Landlock rule's) lies at or below a hidden path and is
/// therefore not visible: everything below a mask except, for a mask around the workdir, the workdir's
/// content (`workdir`: the workdir inside the sandbox).
pub fn is_hidden(masked: &[Masked], workdir: &Path, path: &Path) -> bool {
    if check_abs(path).is_err() {
        return false;
    }
    let p = normal(path);
    let wd = normal(workdir);
    masked.iter().any(|m| p.starts_with(&m.target) && (m.in_workdir || !p.starts_with(&wd)))
}

/// A hidden path to mask, resolved.
#[derive(Clone, Debug)]
pub(super) struct Mask {
    /// As given (normalised), for the report.
    listed: PathBuf,
    pub(super) target: PathBuf,
    pub(super) in_workdir: bool,
}

impl Mask {
    pub(super) fn public(&self) -> Masked {
        Masked { target: self.target.clone(), in_workdir: self.in_workdir }
    }
}

/// A mask that was mounted: its root, opened, so that it can be made read-only after what must stay
/// visible was mounted on it (a workdir bound exactly at the hidden path would be found instead by path).
pub(super) struct Applied {
    top: PathBuf,
    /// An empty file bound over a non-directory (the staging tmpfs holds its source).
    file: bool,
}

/// Resolves the hidden paths of `spec` (`wd`: the workdir's canonical place in the sandbox); reports
/// those that cannot be in the view. A hidden path that is the view's root is an error.
pub(super) fn resolve(
    ops: &mut dyn MountOps,
    spec: &super::RootSpec,
    wd: Option<&Path>,
    view: &mut ViewReport,
) -> Result<Vec<Mask>, MountError> {
    let root = normal(&spec.root);
    let host_wd = spec.workdir.as_deref().map(normal);
    let mut out = Vec::new();
    for given in &spec.hidden {
        check_abs(given)?;
        let h = normal(given);
        let cannot = |why: &str| MountError::CannotHide { path: h.clone(), why: why.to_string() };
        if h == Path::new("/") {
            return Err(cannot("it is the root of the view"));
        }
        let own = |p: &Path| {
            format!(
                "{}: the sandbox provides its own {} (the host's is not in the view)",
                h.display(),
                p.display()
            )
        };
        let (base, rel) = match (&host_wd, wd) {
            (Some(w), Some(_)) if h.starts_with(w) => (Base::Workdir, h.strip_prefix(w)),
            _ if h.starts_with(&root) => (Base::Root, h.strip_prefix(&root)),
            _ => {
                view.hidden.push(format!(
                    "{}: not in the view (outside the root filesystem and the workdir)",
                    h.display()
                ));
                continue;
            }
        };
        let rel = normal(rel.unwrap_or(Path::new("/")));
        if base == Base::Root && provided(&rel, wd) {
            view.hidden.push(own(&rel));
            continue;
        }
        let r = canonicalize(ops, base, &rel, true)?;
        let found = match (base, wd) {
            (Base::Workdir, Some(wt)) => r.kind.map(|k| (under(wt, &r.path), k)),
            _ => r.kind.map(|k| (r.path, k)),
        };
        let Some((target, _kind)) = found else {
            view.hidden.push(format!("{}: does not exist", h.display()));
            continue;
        };
        if target == Path::new("/") {
            return Err(cannot("it resolves to the root of the view"));
        }
        if wd.is_some_and(|w| target == w) {
            view.hidden.push(format!("{}: is the workdir, which stays visible", h.display()));
            continue;
        }
        if provided(&target, wd) {
            view.hidden.push(own(&target));
            continue;
        }
        let in_workdir = wd.is_some_and(|w| target.starts_with(w));
        out.push(Mask { listed: h, target, in_workdir });
    }
    out.sort_by(|a, b| {
        (a.target.components().count(), &a.target).cmp(&(b.target.components().count(), &b.target))
    });
    Ok(out)
}

/// A listed path that is hidden and must not be bound: at or below a mask, unless it is the workdir or,
/// for a mask around the workdir, lies inside the workdir.
pub(super) fn hides(masks: &[Mask], b: &Bind) -> bool {
    !b.workdir
        && masks.iter().any(|m| b.target.starts_with(&m.target) && (m.in_workdir || b.base != Base::Workdir))
}

/// A bind that must be mounted after the masks around the workdir (it lies inside one of them).
pub(super) fn after_masks(masks: &[Mask], b: &Bind) -> bool {
    masks.iter().any(|m| !m.in_workdir && b.target.starts_with(&m.target))
}

/// Mounts the masks (parents first) where the view shows their path; records them in `mounted` (a
/// directory mask is a tmpfs of ours: mount points for what must stay visible may be made in it).
pub(super) fn apply<'a>(
    ops: &mut dyn MountOps,
    mounted: &mut Mounted,
    masks: impl Iterator<Item = &'a Mask>,
    staging: &Path,
    view: &mut ViewReport,
    applied: &mut Vec<Applied>,
) -> Result<(), MountError> {
    for m in masks {
        let Some(kind) = ops.lookup(Base::Skeleton, &m.target)? else {
            view.hidden.push(format!("{}: not in the view (no listed path covers it)", m.listed.display()));
            continue;
        };
        let (handle, _) = ops.open_in(Base::Skeleton, &m.target)?;
        let file = kind != Kind::Dir;
        let what = if !file {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            ops.mount(Some(Path::new("tmpfs")), &handle, Some("tmpfs"), flags, Some(MASK_TMPFS))?;
            mounted.push((m.target.clone(), true));
            "empty directory"
        } else {
            let empty = staging.join(EMPTY_FILE);
            if !applied.iter().any(|a| a.file) {
                ops.create_file(&empty, 0o444, b"")?;
            }
            ops.mount(Some(&empty), &handle, None, MsFlags::MS_BIND, None)?;
            mounted.push((m.target.clone(), false));
            "empty file"
        };
        // Reopened: the old handle names the hidden object underneath the mask.
        let (top, _) = ops.open_in(Base::Skeleton, &m.target)?;
        applied.push(Applied { top, file });
        let at = if m.target == m.listed { String::new() } else { format!(" at {}", m.target.display()) };
        view.hidden.push(format!("{}: masked{at} ({what}, read-only)", m.listed.display()));
    }
    Ok(())
}

/// Makes every applied mask read-only (what was mounted on them keeps its own flags).
pub(super) fn seal(ops: &mut dyn MountOps, applied: &[Applied]) -> Result<(), MountError> {
    for a in applied {
        ops.set_attr(
            &a.top,
            false,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
        )?;
    }
    Ok(())
}
