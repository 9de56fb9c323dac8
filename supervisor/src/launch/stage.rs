//! The launch stage: a fresh, single-threaded process (`openshell-supervisor __launch --control-fd N`).
//! It reads the spec, enters the user namespace when not privileged, unshares the sandbox namespaces,
//! forks sandbox init (pid 1 of the new pid namespace), reports init's host pid, and then only waits for
//! init and exits with its status.
//!
//! It dies with the supervisor (`PR_SET_PDEATHSIG(SIGKILL)`); sandbox init dies with it in turn, and with
//! init every process of the sandbox's pid namespace.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use openshell_supervisor_sys::caps;
use openshell_supervisor_sys::ns::{self, Namespaces};
use openshell_supervisor_sys::process::{self, Forked, Reaped};

use super::protocol::{self, FromSandbox, ToSandbox};
use super::{LaunchOptions, SandboxSpec};

/// Exit status of the stage when it fails before sandbox init exists.
const EXIT_SETUP_FAILED: i32 = 125;

/// How the sandbox's ids relate to the host's.
#[derive(Clone, Copy, Debug)]
pub(super) struct Identity {
    /// A user namespace maps the agent's ids to the caller's.
    pub userns: bool,
}

/// Entry point of the hidden `__launch` subcommand. Must be called before any thread is started (no async
/// runtime, no logging thread): the stage forks.
pub fn stage_main(control_fd: i32) -> ! {
    let ctrl = match process::adopt_inherited_fd(control_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("openshell-supervisor __launch: {e} (this subcommand is internal)");
            process::exit_now(EXIT_SETUP_FAILED);
        }
    };
    let prepared = prepare(&ctrl).and_then(|(spec, options, identity)| {
        process::fork_single_threaded()
            .map(|f| (spec, options, identity, f))
            .map_err(fail("forking sandbox init"))
    });
    match prepared {
        Err((stage, message)) => {
            let _ = protocol::send(ctrl.as_fd(), &FromSandbox::Failed { stage: stage.into(), message }, &[]);
            process::exit_now(EXIT_SETUP_FAILED)
        }
        Ok((spec, options, identity, Forked::Child)) => super::init::run(&ctrl, &spec, options, identity),
        Ok((_, _, _, Forked::Parent { child })) => {
            // If the supervisor is already gone, init notices the closed channel by itself.
            let _ = protocol::send(ctrl.as_fd(), &FromSandbox::InitPid { pid: child }, &[]);
            drop(ctrl);
            process::exit_now(wait_for(child))
        }
    }
}

type StageResult<T> = Result<T, (&'static str, String)>;

fn fail<E: std::error::Error>(stage: &'static str) -> impl FnOnce(E) -> (&'static str, String) {
    move |e| (stage, error_chain(&e))
}

/// `e: cause: cause...` in one line.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Process hygiene, the spec, the namespaces: everything before sandbox init is forked.
fn prepare(ctrl: &OwnedFd) -> StageResult<(Box<SandboxSpec>, LaunchOptions, Identity)> {
    process::set_parent_death_signal(libc::SIGKILL).map_err(fail("launch stage"))?;
    // Terminal signals reach the agent directly (same foreground process group); this process only waits
    // and must not die of them before the agent does.
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
        process::ignore_signal(sig).map_err(fail("launch stage"))?;
    }
    // Nothing but the control channel is ours; anything else came from the supervisor's ancestors.
    process::close_inherited_fds(ctrl.as_fd()).map_err(fail("launch stage"))?;

    let (msg, _) = protocol::recv::<ToSandbox>(ctrl.as_fd(), Some(Duration::from_secs(30)))
        .map_err(fail("reading the sandbox spec"))?;
    let ToSandbox::Start { spec, options } = msg else {
        return Err(("reading the sandbox spec", format!("expected start, got {msg:?}")));
    };
    let identity = enter_namespaces(&spec)?;
    Ok((spec, options, identity))
}

/// Privileged: unshare directly. Otherwise: a user namespace first, mapping the agent's ids to ours.
fn enter_namespaces(spec: &SandboxSpec) -> StageResult<Identity> {
    let privileged = nix_is_root()
        && caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false);
    if !privileged {
        let (uid, gid) = (nix_getuid(), nix_getgid());
        ns::unshare_user().map_err(fail("creating the user namespace"))?;
        ns::write_id_maps(spec.uid, uid, spec.gid, gid).map_err(fail("mapping the sandbox user"))?;
    }
    ns::unshare(Namespaces::ALL).map_err(fail("creating the sandbox namespaces"))?;
    Ok(Identity { userns: !privileged })
}

fn nix_is_root() -> bool {
    openshell_supervisor_sys::nix::unistd::geteuid().is_root()
}

fn nix_getuid() -> u32 {
    openshell_supervisor_sys::nix::unistd::getuid().as_raw()
}

fn nix_getgid() -> u32 {
    openshell_supervisor_sys::nix::unistd::getgid().as_raw()
}

/// Waits for sandbox init and returns the status to exit with (128+N when it was killed by signal N).
fn wait_for(init: i32) -> i32 {
    loop {
        match process::reap(init, true) {
            Ok(r @ (Reaped::Exited { .. } | Reaped::Signaled { .. })) => {
                return process::exit_code_of(r).unwrap_or(EXIT_SETUP_FAILED);
            }
            Ok(Reaped::Nothing) => continue,
            Ok(Reaped::NoChildren) | Err(_) => return EXIT_SETUP_FAILED,
        }
    }
}
