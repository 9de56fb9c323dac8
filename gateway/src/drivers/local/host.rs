//! What the host offers the local driver: the supervisor binary and the gateway's privileges.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

pub(super) const SUPERVISOR_BIN_NAME: &str = "openshell-supervisor";
pub(super) const ENV_PATH: &str = "PATH";

pub(super) fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file()) && nix::unistd::access(path, AccessFlags::X_OK).is_ok()
}

/// `openshell-supervisor` next to the running executable, else the first one in `$PATH`. Relative `$PATH`
/// entries are skipped: they would resolve against whatever the current directory happens to be.
pub(super) fn find_supervisor_bin() -> Option<PathBuf> {
    let beside =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(SUPERVISOR_BIN_NAME)));
    let in_path: Vec<PathBuf> = std::env::var_os(ENV_PATH)
        .map(|p| {
            std::env::split_paths(&p)
                .filter(|d| d.is_absolute())
                .map(|d| d.join(SUPERVISOR_BIN_NAME))
                .collect()
        })
        .unwrap_or_default();
    beside.into_iter().chain(in_path).find(|p| is_executable_file(p))
}

/// Ready when the supervisor can be executed; the detail also says how privileged the gateway is, which
/// decides how the supervisor can isolate (root, or rootless through user namespaces).
pub(super) fn status(supervisor_bin: &Path) -> (bool, String) {
    let euid = nix::unistd::geteuid();
    let who =
        if euid.is_root() { "root".to_owned() } else { format!("rootless (uid {euid}; {})", userns_note()) };
    let bin = supervisor_bin.display();
    if is_executable_file(supervisor_bin) {
        return (true, format!("supervisor {bin}; gateway runs as {who}"));
    }
    match fs::metadata(supervisor_bin) {
        Ok(_) => (false, format!("supervisor {bin} is not an executable file; gateway runs as {who}")),
        Err(e) => (false, format!("supervisor {bin} not found ({e}); gateway runs as {who}")),
    }
}

fn read_sysctl(path: &str) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether unprivileged user namespaces are available, from the sysctls that commonly forbid them.
fn userns_note() -> &'static str {
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        "unprivileged user namespaces disabled (kernel.unprivileged_userns_clone=0)"
    } else if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        "unprivileged user namespaces disabled (user.max_user_namespaces=0)"
    } else if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        "unprivileged user namespaces restricted by AppArmor (kernel.apparmor_restrict_unprivileged_userns=1)"
    } else {
        "unprivileged user namespaces allowed"
    }
}
