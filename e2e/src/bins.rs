//! Locating the built binaries and staging them where every test user can execute them.
//!
//! Tests run as root but also start the supervisor as an unprivileged user, and the agent runs as
//! yet another uid: the binaries must sit on a path everyone can traverse, and outside `/tmp` (the
//! sandbox gets a private `/tmp`). They are staged under `/var/tmp/osh-e2e-<pid>/bin` (hard links
//! when possible, copies otherwise); staging dirs of dead test processes are swept at start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// Override for where the binaries are (default: the directory above the test executable's `deps/`).
pub const ENV_BIN_DIR: &str = "OPENSHELL_E2E_BIN_DIR";
/// Base directory for staging and per-test directories.
pub const STAGING_BASE: &str = "/var/tmp";
const STAGING_PREFIX: &str = "osh-e2e-";

pub const SUPERVISOR: &str = "openshell-supervisor";
pub const PROBE: &str = "probe";
pub const FAKE_INTERNET: &str = "fake-internet";
pub const CLI: &str = "openshell";
pub const GATEWAY: &str = "openshell-gateway";

/// `target/<triple>/debug` as seen from the running test executable.
pub fn build_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(ENV_BIN_DIR) {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let deps = exe.parent().ok_or_else(|| anyhow!("test executable has no parent dir"))?;
    let dir =
        if deps.file_name().is_some_and(|n| n == "deps") { deps.parent().unwrap_or(deps) } else { deps };
    Ok(dir.to_path_buf())
}

/// Staged, world-executable copies of the binaries.
#[derive(Debug)]
pub struct Staging {
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub supervisor: PathBuf,
    pub probe: PathBuf,
    pub fake_internet: PathBuf,
    /// The CLI and the gateway, staged next to the supervisor (the gateway finds it there).
    pub cli: PathBuf,
    pub gateway: PathBuf,
}

static STAGING: OnceLock<Result<Staging, String>> = OnceLock::new();

/// The process-wide staging (created on first use).
pub fn staging() -> Result<&'static Staging> {
    STAGING.get_or_init(|| make_staging().map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow!("{e}"))
}

fn make_staging() -> Result<Staging> {
    sweep_stale();
    let build = build_dir()?;
    let dir = Path::new(STAGING_BASE).join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("create {}", bin_dir.display()))?;
    for d in [&dir, &bin_dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    let stage = |name: &str| -> Result<PathBuf> {
        let src = build.join(name);
        if !src.is_file() {
            bail!(
                "{} is missing: build all binaries first (`cargo build --workspace --bins`)",
                src.display()
            );
        }
        let dst = bin_dir.join(name);
        let _ = std::fs::remove_file(&dst);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
        }
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
        Ok(dst)
    };
    Ok(Staging {
        supervisor: stage(SUPERVISOR)?,
        probe: stage(PROBE)?,
        fake_internet: stage(FAKE_INTERNET)?,
        cli: stage(CLI)?,
        gateway: stage(GATEWAY)?,
        dir,
        bin_dir,
    })
}

/// Removes staging dirs whose test process is gone.
fn sweep_stale() {
    let Ok(rd) = std::fs::read_dir(STAGING_BASE) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(STAGING_PREFIX).and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh per-test directory under the staging dir, mode 0755.
pub fn test_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let s = staging()?;
    let d = tempfile::Builder::new().prefix(prefix).tempdir_in(&s.dir)?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(d)
}

/// Whether the current process is root (tests that need root skip loudly otherwise).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Absolute path of a host tool found on PATH (None if missing).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}
