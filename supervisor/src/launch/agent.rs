//! The agent process between `fork` and `execve`: Landlock descriptors opened while privileged, privilege
//! drop, Landlock, seccomp (last: it forbids calls the earlier steps make), report, `execve`.
//!
//! The outcome travels to sandbox init over a close-on-exec pipe: one `R` line with the enforcement report
//! just before `execve`, then either end-of-file (the exec succeeded and closed the pipe) or one `E` line
//! saying which step failed. Any failure ends the agent process before the command runs.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;

use openshell_supervisor_sys::landlock;
use openshell_supervisor_sys::nix::unistd::{AccessFlags, access};
use openshell_supervisor_sys::privs;
use openshell_supervisor_sys::process;
use openshell_supervisor_sys::seccomp::BpfProgram;
use serde::{Deserialize, Serialize};

use super::stage::error_chain;
use super::{EnforcementReport, SandboxSpec};

/// Used when the environment has no `PATH` (what `execvp` assumes).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_NOT_EXECUTABLE: i32 = 126;
const EXIT_SETUP_FAILED: i32 = 125;

#[derive(Serialize, Deserialize)]
struct Failure {
    stage: String,
    message: String,
}

/// What init learns from the pipe.
pub(super) enum Outcome {
    Ready(Box<EnforcementReport>),
    Failed { stage: String, message: String },
}

/// Reads the pipe to its end.
pub(super) fn read_outcome(report_r: OwnedFd) -> Outcome {
    let mut report = None;
    let mut failure = None;
    for line in BufReader::new(std::fs::File::from(report_r)).lines() {
        let Ok(line) = line else { break };
        if let Some(json) = line.strip_prefix('R') {
            report = serde_json::from_str::<EnforcementReport>(json).ok();
        } else if let Some(json) = line.strip_prefix('E') {
            failure = serde_json::from_str::<Failure>(json).ok();
        }
    }
    match (failure, report) {
        (Some(f), _) => Outcome::Failed { stage: f.stage, message: f.message },
        (None, Some(r)) => Outcome::Ready(Box::new(r)),
        (None, None) => Outcome::Failed {
            stage: "agent setup".into(),
            message: "the agent process ended before reporting (crashed or killed)".into(),
        },
    }
}

fn write_line(w: &mut std::fs::File, tag: char, json: &str) {
    // Nothing useful can be done if init stopped reading; the exit status still tells.
    let _ = w.write_all(format!("{tag}{json}\n").as_bytes());
}

fn abort(w: &mut std::fs::File, stage: &str, message: String, code: i32) -> ! {
    let f = Failure { stage: stage.to_string(), message };
    write_line(w, 'E', &serde_json::to_string(&f).unwrap_or_default());
    process::exit_now(code)
}

/// Runs in the forked agent process; never returns.
/// The control channel and every other descriptor of init are close-on-exec (and marked so again here):
/// the command never sees them.
pub(super) fn run(
    spec: &SandboxSpec,
    mut report: EnforcementReport,
    programs: &[BpfProgram],
    report_w: OwnedFd,
) -> ! {
    let mut w = std::fs::File::from(report_w);
    let step = |w: &mut std::fs::File, stage: &str, r: Result<(), String>| {
        if let Err(m) = r {
            abort(w, stage, m, EXIT_SETUP_FAILED)
        }
    };
    step(&mut w, "signals", process::reset_signals_for_exec().map_err(|e| error_chain(&e)));
    let prepared = match landlock::prepare(&spec.landlock) {
        Ok(p) => p,
        Err(e) => abort(&mut w, "landlock (opening paths)", error_chain(&e), EXIT_SETUP_FAILED),
    };
    let dropped = match privs::drop_to(spec.uid, spec.gid) {
        Ok(d) => d,
        Err(e) => abort(&mut w, "privilege drop", error_chain(&e), EXIT_SETUP_FAILED),
    };
    report.groups_cleared = dropped.groups_cleared;
    report.no_new_privs = true;
    report.capabilities = Vec::new();
    report.landlock = match landlock::enforce(prepared) {
        Ok(r) => r,
        Err(e) => abort(&mut w, "landlock", error_chain(&e), EXIT_SETUP_FAILED),
    };
    let program = match resolve_program(&spec.argv[0], &spec.env) {
        Ok(p) => p,
        Err((code, message)) => abort(&mut w, "exec", message, code),
    };
    step(&mut w, "descriptors", process::mark_fds_cloexec(3).map_err(|e| error_chain(&e)));
    step(
        &mut w,
        "seccomp",
        openshell_supervisor_sys::seccomp::install(programs).map_err(|e| error_chain(&e)),
    );
    write_line(&mut w, 'R', &serde_json::to_string(&report).unwrap_or_default());
    let err = process::exec(&program, &spec.argv, &spec.env);
    let code = match &err {
        process::ProcessError::Exec { source, .. }
            if *source == openshell_supervisor_sys::nix::Error::ENOENT =>
        {
            EXIT_NOT_FOUND
        }
        process::ProcessError::Exec { .. } => EXIT_NOT_EXECUTABLE,
        _ => EXIT_SETUP_FAILED,
    };
    abort(&mut w, "exec", format!("cannot execute `{}`: {}", spec.argv[0], error_chain(&err)), code)
}

/// `execvp`'s lookup: a name with `/` is used as is; otherwise the first executable regular file named so
/// in the `PATH` of the agent's environment.
pub(super) fn resolve_program(name: &str, env: &[(String, String)]) -> Result<String, (i32, String)> {
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{dir}/{name}");
        let Ok(meta) = std::fs::metadata(&candidate) else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 != 0 && access(candidate.as_str(), AccessFlags::X_OK).is_ok() {
            return Ok(candidate);
        }
        denied.get_or_insert(candidate);
    }
    match denied {
        Some(c) => Err((
            EXIT_NOT_EXECUTABLE,
            format!("cannot execute `{name}`: {c} is not executable for the agent"),
        )),
        None => Err((EXIT_NOT_FOUND, format!("cannot execute `{name}`: command not found in PATH={path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_like_execvp() {
        let env = vec![("PATH".to_string(), "/nonexistent:/bin:/usr/bin".to_string())];
        let found = resolve_program("sh", &env).unwrap();
        assert!(found == "/bin/sh" || found == "/usr/bin/sh", "{found}");
        assert_eq!(resolve_program("./x", &env).unwrap(), "./x");
        let (code, msg) = resolve_program("no-such-command-openshell", &env).unwrap_err();
        assert_eq!(code, 127);
        assert!(msg.contains("no-such-command-openshell") && msg.contains("not found"), "{msg}");
        let (code, _) = resolve_program("passwd", &[("PATH".into(), "/etc".into())]).unwrap_err();
        assert_eq!(code, 126, "/etc/passwd exists but is not executable");
    }
}
