//! Protection of the workdir's git metadata (`.git` pinned, `hooks` and `config` read-only).

use std::path::Path;

use super::{
    Base, Bind, Kind, MountError, MountOps, Mounted, Placed, ViewReport, bind, bind_attrs, canonicalize,
    place, under,
};

/// `.git` of the workdir: pinned (bound over itself, so it can be neither renamed nor removed), then
/// `hooks` and `config` (or their targets, when symlinks inside the workdir) bound read-only.
pub(super) fn protect_git(
    ops: &mut dyn MountOps,
    mounted: &Mounted,
    workdir: &Bind,
    view: &mut ViewReport,
) -> Result<(), MountError> {
    let git = Path::new("/.git");
    if ops.lookup(Base::Workdir, git)? != Some(Kind::Dir) {
        return Ok(());
    }
    let target = under(&workdir.target, git);
    let Placed::Ready(h) = place(ops, mounted, &target, true)? else { return Ok(()) };
    bind(ops, Base::Workdir, git, &h, &target, bind_attrs(true, workdir.noexec))?;
    let mut mounted = mounted.clone();
    mounted.push((target, false));
    for name in ["/.git/hooks", "/.git/config"] {
        let r = canonicalize(ops, Base::Workdir, Path::new(name), true)?;
        let dir = match r.kind {
            Some(Kind::Dir) => true,
            Some(Kind::File) => false,
            _ => continue,
        };
        let target = under(&workdir.target, &r.path);
        let Placed::Ready(h) = place(ops, &mounted, &target, dir)? else { continue };
        bind(ops, Base::Workdir, &r.path, &h, &target, bind_attrs(false, workdir.noexec))?;
        mounted.push((target.clone(), false));
        view.git_protected.push(target);
    }
    Ok(())
}
