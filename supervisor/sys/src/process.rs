//! Process primitives the launch stage needs: a fork that refuses to run in a multi-threaded process,
//! `execve`, signal-state reset before `execve`, parent-death signals, descriptor hygiene and `_exit`.
//!
//! Threat handled: state leaking from the (privileged) launch stage into the agent: open descriptors,
//! blocked or ignored signals. Residual risk: a descriptor opened by a library without `O_CLOEXEC` between
//! [`mark_fds_cloexec`] and `execve` (the launch stage is single-threaded and opens nothing there).

use std::ffi::CString;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("refusing to fork: the process has {threads} threads (fork is only sound single-threaded here)")]
    NotSingleThreaded { threads: usize },
    #[error("cannot count the threads of this process in /proc/self/task")]
    CountThreads {
        #[source]
        source: std::io::Error,
    },
    #[error("fork failed")]
    Fork {
        #[source]
        source: nix::Error,
    },
    #[error("execve({path}) failed")]
    Exec {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    #[error("prctl(PR_SET_PDEATHSIG) failed")]
    Pdeathsig {
        #[source]
        source: nix::Error,
    },
    #[error("cannot change the disposition of signal {signal}")]
    Signal {
        signal: i32,
        #[source]
        source: nix::Error,
    },
    #[error("sigprocmask failed")]
    SigMask {
        #[source]
        source: nix::Error,
    },
    #[error("close_range from {first} failed")]
    CloseRange {
        first: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("dup of descriptor {fd} failed")]
    Dup {
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
}

/// Result of [`fork_single_threaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the parent, with the child's pid (in the parent's pid namespace).
    Parent { child: i32 },
    /// In the child.
    Child,
}

/// Number of threads of the calling process, from `/proc/self/task`.
pub fn thread_count() -> Result<usize, ProcessError> {
    let entries = fs::read_dir("/proc/self/task").map_err(|source| ProcessError::CountThreads { source })?;
    Ok(entries.count())
}

/// `fork()`, only when the calling process has exactly one thread.
///
/// In a single-threaded process the child is a full copy with a consistent heap and no lock held by a
/// vanished thread, so it may allocate and run ordinary Rust code. The check cannot race: with a single
/// thread, nothing can start a second one between the check and the fork.
pub fn fork_single_threaded() -> Result<Forked, ProcessError> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(ProcessError::NotSingleThreaded { threads });
    }
    // SAFETY: the process has exactly one thread (checked just above, and no other thread can appear
    // concurrently), which is the condition under which the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent { child: child.as_raw() }),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(source) => Err(ProcessError::Fork { source }),
    }
}

/// Terminates the calling process at once with `code`, without running exit handlers or flushing stdio
/// buffers shared with the parent (the right way to leave a forked child).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointer and never returns; skipping atexit handlers is the intent.
    unsafe { libc::_exit(code) }
}

/// Sends `signal` to the calling process when its parent thread exits.
pub fn set_parent_death_signal(signal: i32) -> Result<(), ProcessError> {
    let sig = Signal::try_from(signal).map_err(|source| ProcessError::Signal { signal, source })?;
    nix::sys::prctl::set_pdeathsig(sig).map_err(|source| ProcessError::Pdeathsig { source })
}

/// Ignores `signal` (e.g. `SIGINT` in a stage that only waits for its child).
pub fn ignore_signal(signal: i32) -> Result<(), ProcessError> {
    let sig = Signal::try_from(signal).map_err(|source| ProcessError::Signal { signal, source })?;
    // SAFETY: installing SIG_IGN registers no Rust handler, so no handler can run with broken invariants.
    unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(|source| ProcessError::Signal { signal, source })
}

/// Restores the signal state a freshly started program expects: every catchable signal at its default
/// disposition (the Rust runtime ignores `SIGPIPE`; ignored signals survive `execve`) and an empty mask.
pub fn reset_signals_for_exec() -> Result<(), ProcessError> {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: SIG_DFL installs no handler; this runs in a single-threaded child just before execve.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }
            .map_err(|source| ProcessError::Signal { signal: sig as i32, source })?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|source| ProcessError::SigMask { source })
}

/// Blocks `signals` for the calling thread (e.g. `SIGCHLD` before reading it from a signalfd).
pub fn block_signals(signals: &[i32]) -> Result<(), ProcessError> {
    let mut set = SigSet::empty();
    for &signal in signals {
        set.add(Signal::try_from(signal).map_err(|source| ProcessError::Signal { signal, source })?);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|source| ProcessError::SigMask { source })
}

/// Marks every descriptor `>= first` close-on-exec, whoever opened it.
pub fn mark_fds_cloexec(first: u32) -> Result<(), ProcessError> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it takes no pointers.
    let rc = unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_uint)
    };
    if rc != 0 {
        return Err(ProcessError::CloseRange { first, source: std::io::Error::last_os_error() });
    }
    Ok(())
}

/// Closes every descriptor `>= 3` except `keep`: what a freshly executed stage inherited by accident from
/// its ancestors (a terminal multiplexer's pipe, a leaked socket).
///
/// Only call this at the very start of a process, before anything else opens a descriptor: it closes
/// descriptors this process never opened, which is only sound while no object owns one of them.
pub fn close_inherited_fds(keep: std::os::fd::BorrowedFd<'_>) -> Result<(), ProcessError> {
    use std::os::fd::AsRawFd;
    let keep = keep.as_raw_fd() as u32;
    let ranges = [(3u32, keep.checked_sub(1)), (keep + 1, Some(u32::MAX))];
    for (first, last) in ranges {
        let Some(last) = last.filter(|l| *l >= first) else { continue };
        // SAFETY: close_range takes no pointers. The caller guarantees (see above) that no object of this
        // process owns a descriptor in these ranges, so no OwnedFd is invalidated.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
        if rc != 0 {
            return Err(ProcessError::CloseRange { first, source: std::io::Error::last_os_error() });
        }
    }
    Ok(())
}

/// Duplicates `fd` to a new descriptor WITHOUT close-on-exec, so that a child spawned right after
/// inherits it. The caller closes the duplicate as soon as the child is spawned.
pub fn dup_inheritable(fd: std::os::fd::BorrowedFd<'_>) -> Result<OwnedFd, ProcessError> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(3))
        .map_err(|source| ProcessError::Dup { fd: raw, source })?;
    // SAFETY: F_DUPFD just returned `new`, a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Converts a descriptor number inherited from the parent (e.g. `--control-fd 3`) into an owned fd and
/// marks it close-on-exec. Fails if the number is not an open descriptor.
pub fn adopt_inherited_fd(fd: RawFd) -> Result<OwnedFd, ProcessError> {
    // SAFETY: F_GETFD on any integer is harmless; it only tells whether the descriptor is open.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    if !open || fd < 3 {
        return Err(ProcessError::Dup { fd, source: nix::Error::EBADF });
    }
    // SAFETY: the descriptor is open (checked above), was handed to this process by its parent for this
    // exact purpose, and nothing else in this process refers to it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
        .map_err(|source| ProcessError::Dup { fd, source })?;
    Ok(owned)
}

/// `execve(path, argv, envp)`; returns only on failure.
pub fn exec(path: &str, argv: &[String], env: &[(String, String)]) -> ProcessError {
    let to_c =
        |what: &str, s: &str| CString::new(s).map_err(|_| ProcessError::Nul { what: what.to_string() });
    let prepared = (|| {
        let p = to_c("program path", path)?;
        let a = argv.iter().map(|s| to_c("argument", s)).collect::<Result<Vec<_>, _>>()?;
        let e = env
            .iter()
            .map(|(k, v)| to_c(&format!("environment variable {k}"), &format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, ProcessError>((p, a, e))
    })();
    match prepared {
        Ok((p, a, e)) => match nix::unistd::execve(&p, &a, &e) {
            Ok(never) => match never {},
            Err(source) => ProcessError::Exec { path: path.to_string(), source },
        },
        Err(e) => e,
    }
}

/// `waitpid` result, simplified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaped {
    /// A child exited with a code.
    Exited { pid: i32, code: i32 },
    /// A child was killed by a signal.
    Signaled { pid: i32, signal: i32 },
    /// No child changed state (non-blocking wait only).
    Nothing,
    /// There are no children left.
    NoChildren,
}

/// Waits for any child (`pid` = -1) or for `pid`; `block = false` returns [`Reaped::Nothing`] instead of
/// waiting. Stopped/continued children are not reported.
pub fn reap(pid: i32, block: bool) -> Result<Reaped, nix::Error> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
    let flags = if block { None } else { Some(WaitPidFlag::WNOHANG) };
    loop {
        return match nix::sys::wait::waitpid(Pid::from_raw(pid), flags) {
            Ok(WaitStatus::Exited(p, code)) => Ok(Reaped::Exited { pid: p.as_raw(), code }),
            Ok(WaitStatus::Signaled(p, sig, _)) => {
                Ok(Reaped::Signaled { pid: p.as_raw(), signal: sig as i32 })
            }
            Ok(WaitStatus::StillAlive) => Ok(Reaped::Nothing),
            Ok(_) if block => continue,
            Ok(_) => Ok(Reaped::Nothing),
            Err(nix::Error::ECHILD) => Ok(Reaped::NoChildren),
            Err(nix::Error::EINTR) => continue,
            Err(e) => Err(e),
        };
    }
}

/// Exit code convention for a reaped child: its code, or 128+N when killed by signal N.
pub fn exit_code_of(reaped: Reaped) -> Option<i32> {
    match reaped {
        Reaped::Exited { code, .. } => Some(code),
        Reaped::Signaled { signal, .. } => Some(128 + signal),
        Reaped::Nothing | Reaped::NoChildren => None,
    }
}

/// `kill(pid, signal)`.
pub fn send_signal(pid: i32, signal: i32) -> Result<(), nix::Error> {
    let sig = Signal::try_from(signal)?;
    nix::sys::signal::kill(Pid::from_raw(pid), sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code_of(Reaped::Exited { pid: 2, code: 3 }), Some(3));
        assert_eq!(exit_code_of(Reaped::Signaled { pid: 2, signal: 9 }), Some(137));
        assert_eq!(exit_code_of(Reaped::Nothing), None);
    }

    #[test]
    fn exec_rejects_nul_bytes_before_calling_the_kernel() {
        let err = exec("/bin/true", &["a\0b".to_string()], &[]);
        assert!(matches!(err, ProcessError::Nul { .. }), "{err}");
    }
}
