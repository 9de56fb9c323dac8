//! The per-sandbox state files: `sandboxes/<id>/` (0711), `workdir/` (0700), `instance.json` and
//! `supervisor.log` (0600). Modes are set explicitly so that the umask never decides them, and files are
//! opened with `O_NOFOLLOW` so that a planted symlink cannot redirect a write.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::drivers::{DriverError, Instance};

pub(super) const INSTANCE_FILE: &str = "instance.json";
pub(super) const INSTANCE_TMP_FILE: &str = ".instance.json.tmp";
pub(super) const LOG_FILE: &str = "supervisor.log";
pub(super) const STATE_DIR_MODE: u32 = 0o711;
pub(super) const WORKDIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

pub(super) fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> DriverError {
    DriverError::Io(format!("{what} {}: {e}", path.display()))
}

/// Creates `path` with exactly `mode` unless it is already a real directory (then leaves it alone: the
/// supervisor may have chowned it to the agent).
pub(super) fn make_dir(path: &Path, mode: u32) -> Result<(), DriverError> {
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => set_mode(path, mode),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(io_err("using", path, "exists and is not a directory")),
        },
        Err(e) => Err(io_err("creating", path, e)),
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), DriverError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| io_err("chmod", path, e))
}

fn open_0600(path: &Path, opts: &mut OpenOptions) -> Result<File, DriverError> {
    let f = opts
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err("opening", path, e))?;
    f.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(|e| io_err("chmod", path, e))?;
    Ok(f)
}

/// `supervisor.log` for appending, twice (stdout and stderr).
pub(super) fn open_log(dir: &Path) -> Result<(File, File), DriverError> {
    let path = dir.join(LOG_FILE);
    let log = open_0600(&path, OpenOptions::new().append(true).create(true))?;
    let dup = log.try_clone().map_err(|e| io_err("duplicating", &path, e))?;
    Ok((log, dup))
}

pub(super) fn read_instance(dir: &Path) -> Result<Option<Instance>, DriverError> {
    let path = dir.join(INSTANCE_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| io_err("parsing", &path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", &path, e)),
    }
}

/// Writes instance.json atomically (temp file + fsync + rename), so a crash never leaves a torn record.
pub(super) fn write_instance(dir: &Path, inst: &Instance) -> Result<(), DriverError> {
    let tmp = dir.join(INSTANCE_TMP_FILE);
    let path = dir.join(INSTANCE_FILE);
    let json = serde_json::to_vec_pretty(inst).map_err(|e| io_err("serialising", &path, e))?;
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &tmp, e)),
    }
    let mut f = open_0600(&tmp, OpenOptions::new().write(true).create_new(true))?;
    f.write_all(&json).and_then(|()| f.sync_all()).map_err(|e| io_err("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io_err("renaming into", &path, e))
}

/// Removes a sandbox's state directory; already gone is fine. std's `remove_dir_all` does not follow
/// symlinks. If the agent made directories of its workdir read-only, they are made writable (without
/// following symlinks) and the removal retried.
pub(super) fn remove_state(dir: &Path) -> Result<(), DriverError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            make_dirs_writable(dir);
            fs::remove_dir_all(dir).map_err(|e| io_err("removing", dir, e))
        }
        Err(e) => Err(io_err("removing", dir, e)),
    }
}

fn make_dirs_writable(dir: &Path) {
    let Ok(m) = fs::symlink_metadata(dir) else { return };
    if !m.is_dir() {
        return;
    }
    // Best effort: only directories we own can be changed; the retried removal reports what remains.
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(m.permissions().mode() | 0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_dirs_writable(&entry.path());
        }
    }
}
