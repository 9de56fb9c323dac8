//! Starting a supervisor process: argv, environment, stdio and the secret pipe.

use std::io::{ErrorKind, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::Signal;
use tokio::process::Child;

use super::files::{io_err, open_log};
use super::host::ENV_PATH;
use crate::drivers::{DriverError, Provision};

pub(super) const DRIVER_NAME: &str = "local";
const ENV_OPENSHELL_LOG: &str = "OPENSHELL_LOG";
const ENV_LANG: &str = "LANG";
/// The only variables the supervisor inherits; everything else in the gateway's environment stays there.
pub(super) const PASSED_ENV: [&str; 3] = [ENV_PATH, ENV_OPENSHELL_LOG, ENV_LANG];
/// The secret is written into the pipe before the supervisor runs, so it must fit in the pipe buffer without
/// blocking; Linux gives a pipe at least one page even when the user's pipe quota is exhausted.
const MAX_SECRET_LEN: usize = 4096;

/// Spawns `<bin> session --gateway <endpoint> --sandbox-id <id> --secret-fd 0` in the sandbox's state
/// directory `dir`, with the secret on stdin and stdout/stderr appended to `supervisor.log`.
pub(super) fn spawn(bin: &Path, p: &Provision, dir: &Path) -> Result<Child, DriverError> {
    let id = &p.sandbox_id;
    if p.secret.len() > MAX_SECRET_LEN {
        return Err(DriverError::InvalidSpec(format!(
            "session secret is {} bytes; at most {MAX_SECRET_LEN} are supported",
            p.secret.len()
        )));
    }
    let (log, log_err) = open_log(dir)?;
    // Both ends are close-on-exec; only the read end is handed over, as fd 0. The secret fits in the pipe
    // buffer, so it is written and the write end closed before the spawn: the supervisor reads the secret,
    // then EOF. Never argv or environment: those are readable in /proc by the same uid.
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| DriverError::Io(format!("creating a pipe: {e}")))?;
    writer
        .write_all(p.secret.as_bytes())
        .map_err(|e| DriverError::Io(format!("writing the secret pipe: {e}")))?;
    drop(writer);

    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["session", "--gateway", &p.gateway_endpoint, "--sandbox-id", id, "--secret-fd", "0"])
        .env_clear()
        .current_dir(dir)
        .stdin(Stdio::from(reader))
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    // No process group change and no kill_on_drop: the supervisor calls setsid() itself and must survive
    // the gateway.
    cmd.spawn().map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::PermissionDenied => DriverError::Unavailable(
            DRIVER_NAME.to_owned(),
            format!("cannot run supervisor {}: {e}", bin.display()),
        ),
        _ => io_err(&format!("sandbox {id}: spawning supervisor"), bin, e),
    })
}

pub(super) fn exit_reason(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("supervisor exited with status {code}");
    }
    if let Some(sig) = status.signal() {
        let name = Signal::try_from(sig).map_or("unknown signal", Signal::as_str);
        return format!("supervisor killed by signal {sig} ({name})");
    }
    format!("supervisor ended: {status}")
}

/// Waits for a child whose start failed, so that it does not stay a zombie; nobody is told.
pub(super) fn reap_quietly(mut child: Child) {
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
}
