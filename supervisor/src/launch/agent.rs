//! The agent process between `fork` and `execve`: Landlock descriptors opened while privileged, privilege
//! drop, Landlock, seccomp (last: it forbids calls the earlier steps make), report, `execve`.
//!
//! The outcome travels to sandbox init over a close-on-exec `SOCK_SEQPACKET` socket: one `R` message with
//! the enforcement report (and, in notify mode, the seccomp listener attached) just before `execve`, then
//! either end-of-file (the exec succeeded and closed the socket) or one `E` message saying which step
//! failed. Any failure ends the agent process before the command runs. The agent keeps no copy of the
//! listener: whoever holds it answers the agent's refused calls.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;

use openshell_supervisor_sys::fdpass;
use openshell_supervisor_sys::landlock;
use openshell_supervisor_sys::nix::unistd::{AccessFlags, access};
use openshell_supervisor_sys::privs;
use openshell_supervisor_sys::process;
use openshell_supervisor_sys::pty;
use openshell_supervisor_sys::seccomp::{self, BpfProgram};
use openshell_supervisor_sys::seccomp_notify::{self, NotifyError, NotifyPrograms};
use serde::{Deserialize, Serialize};

use super::protocol::MAX_MESSAGE;
use super::stage::error_chain;
use super::{EnforcementReport, LaunchOptions, SandboxSpec};

/// Used when the environment has no `PATH` (what `execvp` assumes).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_NOT_EXECUTABLE: i32 = 126;
const EXIT_SETUP_FAILED: i32 = 125;
/// `EnforcementReport::process_events` when the supervisor answers the refused calls.
pub(super) const PROCESS_EVENTS_NOTIFY: &str = "seccomp-notify";

#[derive(Serialize, Deserialize)]
struct Failure {
    stage: String,
    message: String,
}

/// The seccomp filters compiled by sandbox init before the fork: the notify set (or why there is none)
/// and the plain set to fall back to.
pub(super) struct Filters {
    pub plain: Vec<BpfProgram>,
    pub notify: Result<NotifyPrograms, String>,
}

/// What init learns from the channel.
pub(super) enum Outcome {
    Ready { report: Box<EnforcementReport>, listener: Option<OwnedFd> },
    Failed { stage: String, message: String },
}

/// Reads the channel to its end.
pub(super) fn read_outcome(chan: OwnedFd) -> Outcome {
    let mut ready = None;
    let mut failure = None;
    while let Ok(Some(msg)) = fdpass::recv(chan.as_fd(), MAX_MESSAGE) {
        match msg.payload.split_first() {
            Some((b'R', json)) => {
                if let Ok(r) = serde_json::from_slice::<EnforcementReport>(json) {
                    ready = Some((r, msg.fds.into_iter().next()));
                }
            }
            Some((b'E', json)) => failure = serde_json::from_slice::<Failure>(json).ok(),
            _ => {}
        }
    }
    match (failure, ready) {
        (Some(f), _) => Outcome::Failed { stage: f.stage, message: f.message },
        (None, Some((r, listener))) => Outcome::Ready { report: Box::new(r), listener },
        (None, None) => Outcome::Failed {
            stage: "agent setup".into(),
            message: "the agent process ended before reporting (crashed or killed)".into(),
        },
    }
}

fn send(chan: &OwnedFd, tag: u8, json: &str, fds: &[BorrowedFd<'_>]) {
    let mut msg = Vec::with_capacity(json.len() + 1);
    msg.push(tag);
    msg.extend_from_slice(json.as_bytes());
    // Nothing useful can be done if init stopped reading; the exit status still tells.
    let _ = fdpass::send(chan.as_fd(), &msg, fds);
}

fn abort(chan: &OwnedFd, stage: &str, message: String, code: i32) -> ! {
    let f = Failure { stage: stage.to_string(), message };
    send(chan, b'E', &serde_json::to_string(&f).unwrap_or_default(), &[]);
    process::exit_now(code)
}

/// Installs the notify set when there is one (and returns its listener), else, or when the kernel refuses
/// a listener before anything was installed, the plain set; says which in `report.process_events`.
fn install_seccomp(filters: &Filters, report: &mut EnforcementReport) -> Result<Option<OwnedFd>, String> {
    let why_plain = match &filters.notify {
        Ok(programs) => match seccomp_notify::install(programs) {
            Ok(listener) => {
                report.process_events = PROCESS_EVENTS_NOTIFY.into();
                report.seccomp.programs = programs.len();
                return Ok(Some(listener));
            }
            Err(e @ (NotifyError::Listener(_) | NotifyError::TooLong { .. })) => error_chain(&e),
            // Partly installed: refused calls would fail with ENOSYS and nobody could report them.
            Err(e) => return Err(error_chain(&e)),
        },
        Err(why) => why.clone(),
    };
    seccomp::install(&filters.plain).map_err(|e| error_chain(&e))?;
    report.process_events = format!(
        "unavailable: {why_plain}; refused syscalls fail with their errno (plain filter) and are not reported"
    );
    Ok(None)
}

/// Runs in the forked agent process; never returns. `landlock_spec` is the policy's, without the rules
/// for hidden paths (sandbox init's `without_hidden`).
/// The control channel and every other descriptor of init are close-on-exec (and marked so again here):
/// the command never sees them.
pub(super) fn run(
    spec: &SandboxSpec,
    landlock_spec: &landlock::LandlockSpec,
    options: LaunchOptions,
    mut report: EnforcementReport,
    filters: &Filters,
    chan: OwnedFd,
) -> ! {
    let step = |stage: &str, r: Result<(), String>| {
        if let Err(m) = r {
            abort(&chan, stage, m, EXIT_SETUP_FAILED)
        }
    };
    step("signals", process::reset_signals_for_exec().map_err(|e| error_chain(&e)));
    if spec.controlling_tty {
        step("controlling terminal", pty::make_controlling(std::io::stdin()).map_err(|e| error_chain(&e)));
    }
    let mut prepared = match landlock::prepare(landlock_spec) {
        Ok(p) => p,
        Err(e) => abort(&chan, "landlock (opening paths)", error_chain(&e), EXIT_SETUP_FAILED),
    };
    prepared.log_denials_after_exec(options.landlock_audit);
    let dropped = match privs::drop_to(spec.uid, spec.gid) {
        Ok(d) => d,
        Err(e) => abort(&chan, "privilege drop", error_chain(&e), EXIT_SETUP_FAILED),
    };
    report.groups_cleared = dropped.groups_cleared;
    report.no_new_privs = true;
    report.capabilities = Vec::new();
    report.landlock = match landlock::enforce(prepared) {
        Ok(r) => r,
        Err(e) => abort(&chan, "landlock", error_chain(&e), EXIT_SETUP_FAILED),
    };
    let program = match resolve_program(&spec.argv[0], &spec.env) {
        Ok(p) => p,
        Err((code, message)) => abort(&chan, "exec", message, code),
    };
    step("descriptors", process::mark_fds_cloexec(3).map_err(|e| error_chain(&e)));
    let listener = match install_seccomp(filters, &mut report) {
        Ok(l) => l,
        Err(m) => abort(&chan, "seccomp", m, EXIT_SETUP_FAILED),
    };
    let fds: Vec<BorrowedFd<'_>> = listener.iter().map(|l| l.as_fd()).collect();
    send(&chan, b'R', &serde_json::to_string(&report).unwrap_or_default(), &fds);
    // The listener is close-on-exec; closing it now makes sure the command never holds it.
    drop(fds);
    drop(listener);
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
    abort(&chan, "exec", format!("cannot execute `{}`: {}", spec.argv[0], error_chain(&err)), code)
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

    /// On a dedicated thread (a filter binds the calling thread): when the notify set cannot be installed
    /// before anything else is, the plain set is, and the report says why.
    #[test]
    fn falls_back_to_the_plain_filter_and_says_so() {
        let outcome = std::thread::spawn(|| {
            let mut program = seccomp_notify::compile_notify().unwrap();
            program.notify = program.notify.iter().cycle().take(70_000).cloned().collect(); // too long
            let filters = Filters { plain: seccomp::compile().unwrap(), notify: Ok(program) };
            let mut report = EnforcementReport::default();
            let listener = install_seccomp(&filters, &mut report).unwrap();
            let refused = openshell_supervisor_sys::nix::sched::unshare(
                openshell_supervisor_sys::nix::sched::CloneFlags::CLONE_NEWUSER,
            );
            (listener.is_none(), report.process_events, refused)
        })
        .join()
        .unwrap();
        assert!(outcome.0);
        assert!(outcome.1.starts_with("unavailable: ") && outcome.1.contains("too long"), "{}", outcome.1);
        assert_eq!(outcome.2, Err(openshell_supervisor_sys::nix::Error::EPERM), "plain filter in force");
    }

    #[test]
    fn notify_mode_hands_out_the_listener() {
        let (listener, events, programs) = std::thread::spawn(|| {
            let filters = Filters {
                plain: seccomp::compile().unwrap(),
                notify: seccomp_notify::compile_notify().map_err(|e| e.to_string()),
            };
            let mut report = EnforcementReport::default();
            let listener = install_seccomp(&filters, &mut report).unwrap();
            (listener, report.process_events, report.seccomp.programs)
        })
        .join()
        .unwrap();
        assert!(listener.is_some());
        assert_eq!((events.as_str(), programs), (PROCESS_EVENTS_NOTIFY, 3));
    }

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
