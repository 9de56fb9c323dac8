//! Seccomp user notification: the agent's refused syscalls reach the supervisor, which answers each one
//! with the table's errno and reports it as an event.
//!
//! [`compile_notify`] builds the same reviewed [`TABLE`](crate::seccomp::TABLE) as
//! [`seccomp::compile`](crate::seccomp::compile) (with the same conditional rows,
//! [`compile_notify_with`]), but the rows that refuse (`EPERM`, `EAFNOSUPPORT`, `EACCES`) are
//! grouped into one program whose match returns `SECCOMP_RET_USER_NOTIF` instead of an errno: seccompiler
//! has no such action, so the program is compiled with `SECCOMP_RET_ERRNO | EPERM` and exactly those return
//! instructions are rewritten ([`rewrite_errno_to_notify`]). Rows that pretend a call does not exist
//! (`ENOSYS`: `clone3`, which libc calls on every thread creation before falling back to `clone`, and the x32
//! guard) stay plain errno returns and never notify. [`install`] installs the notifying program with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER` (first, so that a refusal leaves nothing installed and the caller can
//! fall back to the plain programs), then the others. [`Listener`] receives notifications and can only
//! answer them with an error: this module has no way to let a notified call run
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE` is never sent).
//!
//! Threat handled: silent syscall denials (an operator cannot see what the agent tried). Blocking
//! semantics are unchanged: the sets of the stacked programs are disjoint, so the kernel's precedence
//! (`ERRNO` > `USER_NOTIF` > `ALLOW`) never lets a notifying program mask another one's errno, and the
//! answer is the errno of the matching row ([`matching_entry`]). Fail closed: when the listener is closed
//! (supervisor gone, thread died) the kernel answers `ENOSYS` to every call the notifying program matches,
//! pending ones included; the call never runs. Residual risk: a flood of refused calls costs the
//! supervisor one round trip each (callers block until answered); a process inside the sandbox can no
//! longer install a filter with its own listener (`EBUSY`: one listener per filter chain).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::seccomp::{self, BpfProgram, Cond, Deny, Entry, Extras, SeccompError, When};

const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// The compiled filter set of the notify mode.
#[derive(Clone, Debug)]
pub struct NotifyPrograms {
    /// Matches every refusing row; returns `SECCOMP_RET_USER_NOTIF`.
    pub notify: BpfProgram,
    /// Rows that stay plain errno returns (`ENOSYS`), then the x32 guard (x86_64).
    pub silent: Vec<BpfProgram>,
}

impl NotifyPrograms {
    /// How many programs [`install`] stacks.
    pub fn len(&self) -> usize {
        1 + self.silent.len()
    }

    /// Never empty (there is always the notifying program).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Compile(#[from] SeccompError),
    #[error("seccomp notify: no SECCOMP_RET_ERRNO|EPERM return to rewrite in the compiled program")]
    NothingToRewrite,
    #[error("seccomp notify: program of {len} instructions is too long")]
    TooLong { len: usize },
    #[error("cannot set no_new_privs before installing the seccomp filter")]
    NoNewPrivs(#[source] nix::Error),
    /// Nothing was installed: the caller may fall back to the plain programs.
    #[error("the kernel refused a seccomp filter with a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER)")]
    Listener(#[source] nix::Error),
    /// The notifying program is installed but a later one is not: the caller must not run the command.
    #[error("cannot install seccomp filter {index} after the notifying one")]
    Install {
        index: usize,
        #[source]
        source: SeccompError,
    },
    #[error("seccomp listener: {op} failed")]
    Ioctl {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Whether refusals with `deny` go through the listener. `ENOSYS` rows pretend the call does not exist so
/// that callers fall back (glibc, Go and Rust call `clone3` on every thread or process creation); they
/// stay silent.
pub fn notifies(deny: Deny) -> bool {
    !matches!(deny, Deny::Enosys)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Notify,
    Silent(Deny),
}

/// Rewrites every `SECCOMP_RET_ERRNO | errno` return of `program` into `SECCOMP_RET_USER_NOTIF`; returns
/// how many instructions changed. Only `BPF_RET | BPF_K` instructions are touched, so jumps and
/// comparisons that happen to use the same constant stay as they are; the program keeps its length and
/// therefore every jump offset.
pub fn rewrite_errno_to_notify(program: &mut BpfProgram, errno: u32) -> usize {
    let from = libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA);
    let mut changed = 0;
    for ins in program.iter_mut().filter(|i| i.code == BPF_RET_K && i.k == from) {
        ins.k = libc::SECCOMP_RET_USER_NOTIF;
        changed += 1;
    }
    changed
}

/// Compiles [`TABLE`](crate::seccomp::TABLE) for the notify mode (see the module docs).
pub fn compile_notify() -> Result<NotifyPrograms, NotifyError> {
    compile_notify_with(Extras::default())
}

/// [`compile_notify`] with the conditional rows of `extras`.
pub fn compile_notify_with(extras: Extras) -> Result<NotifyPrograms, NotifyError> {
    let group = |d: Deny| if notifies(d) { Group::Notify } else { Group::Silent(d) };
    let action = |g: Group| match g {
        Group::Notify => Deny::Eperm,
        Group::Silent(d) => d,
    };
    let mut notify = None;
    let mut silent = Vec::new();
    for (g, mut program) in seccomp::compile_by(extras, group, action)? {
        match g {
            Group::Notify => {
                if rewrite_errno_to_notify(&mut program, Deny::Eperm.errno()) == 0 {
                    return Err(NotifyError::NothingToRewrite);
                }
                notify = Some(program);
            }
            Group::Silent(_) => silent.push(program),
        }
    }
    #[cfg(target_arch = "x86_64")]
    silent.push(seccomp::x32_guard());
    let notify = notify.ok_or(NotifyError::NothingToRewrite)?;
    Ok(NotifyPrograms { notify, silent })
}

/// Installs `programs` on the calling thread (inherited by children, kept across `execve`) and returns
/// the listener of the notifying program (close-on-exec). Sets `no_new_privs`.
///
/// [`NotifyError::Listener`] means nothing was installed. Any later error leaves the notifying program
/// installed: the caller must not run the command.
pub fn install(programs: &NotifyPrograms) -> Result<OwnedFd, NotifyError> {
    nix::sys::prctl::set_no_new_privs().map_err(NotifyError::NoNewPrivs)?;
    let len = programs.notify.len();
    let prog = libc::sock_fprog {
        len: u16::try_from(len).map_err(|_| NotifyError::TooLong { len })?,
        // seccompiler's `sock_filter` is `#[repr(C)]` with the kernel's layout (checked by a test).
        filter: programs.notify.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` describes `programs.notify`, which outlives the call; the kernel copies the program
    // before returning and never writes through the pointer. No other memory is involved.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(NotifyError::Listener(nix::Error::last()));
    }
    let raw = i32::try_from(rc).map_err(|_| NotifyError::Listener(nix::Error::EBADF))?;
    // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a fresh descriptor (close-on-exec)
    // that nothing else in this process refers to; taking ownership closes it exactly once.
    let listener = unsafe { OwnedFd::from_raw_fd(raw) };
    for (index, p) in programs.silent.iter().enumerate() {
        seccomp::install(std::slice::from_ref(p))
            .map_err(|source| NotifyError::Install { index: index + 1, source })?;
    }
    Ok(listener)
}

/// The first row of [`TABLE`](crate::seccomp::TABLE) that refuses syscall `nr` with these arguments
/// through the listener, evaluated like the compiled program (low 32 bits of each argument).
pub fn matching_entry(nr: i64, args: &[u64; 6]) -> Option<&'static Entry> {
    matching_entry_with(Extras::default(), nr, args)
}

/// [`matching_entry`] among the rows in force with `extras`. The supervisor answering notifications uses
/// every conditional row: a notification only arrives for rows that were compiled in, and no conditional
/// row shares its syscall with [`TABLE`](crate::seccomp::TABLE).
pub fn matching_entry_with(extras: Extras, nr: i64, args: &[u64; 6]) -> Option<&'static Entry> {
    let arg = |i: u8| args.get(usize::from(i)).copied().unwrap_or(0) & 0xffff_ffff;
    let holds = |c: &Cond| match *c {
        Cond::Eq { arg: a, value } => arg(a) == value,
        Cond::Ne { arg: a, value } => arg(a) != value,
        Cond::Masked { arg: a, mask, value } => arg(a) & mask == value,
    };
    seccomp::rows(extras).filter(|e| notifies(e.deny) && seccomp::syscall_number(e.syscall) == Some(nr)).find(
        |e| match e.when {
            When::Always => true,
            When::AllOf(conds) => conds.iter().all(holds),
            When::AnyBit { arg: a, bits } => bits.iter().any(|(b, _)| arg(a) & b != 0),
        },
    )
}

/// Name of syscall `nr` if the table (or a conditional row) names it.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    seccomp::rows(Extras { memfd_noexec: true })
        .find(|e| seccomp::syscall_number(e.syscall) == Some(nr))
        .map(|e| e.syscall)
}

/// One refused call waiting for its answer. The calling thread is blocked in the syscall until
/// [`Listener::deny`] answers (or it is killed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Cookie for [`Listener::id_valid`] and [`Listener::deny`].
    pub id: u64,
    /// Thread id of the caller in the listener's pid namespace (0 if it is not visible there).
    pub pid: u32,
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

/// What [`Listener::wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// A notification can be received.
    Ready,
    /// Nothing within the timeout.
    Idle,
    /// No process uses the filter any more: nothing will ever arrive.
    Hangup,
}

/// The supervisor's end of a notifying filter.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Adopts a listener descriptor (from [`install`], possibly passed over `SCM_RIGHTS`).
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Waits until a notification is pending, the filter is orphaned, or `timeout` passes.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Readiness, NotifyError> {
        let ms = timeout.map_or(PollTimeout::NONE, |t| PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX));
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::Error::EINTR) => return Ok(Readiness::Idle),
            Ok(_) => {}
            Err(source) => return Err(NotifyError::Ioctl { op: "poll", source }),
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            Ok(Readiness::Ready)
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
            Ok(Readiness::Hangup)
        } else {
            Ok(Readiness::Idle)
        }
    }

    /// Receives one notification (blocks if none is pending). `Ok(None)`: the caller went away (killed,
    /// or interrupted by a signal: its syscall is restarted and notifies again) before it was received.
    pub fn recv(&self) -> Result<Option<Notification>, NotifyError> {
        loop {
            // SAFETY: `seccomp_notif` is plain integers, for which all-zero is a valid value; the kernel
            // requires the buffer to be zeroed.
            let mut raw: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: `raw` is a live, writable `seccomp_notif` whose size matches the one encoded in the
            // request number; the kernel writes at most that many bytes and keeps no reference.
            let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut raw) };
            if rc == 0 {
                return Ok(Some(Notification {
                    id: raw.id,
                    pid: raw.pid,
                    nr: raw.data.nr,
                    arch: raw.data.arch,
                    args: raw.data.args,
                }));
            }
            match nix::Error::last() {
                nix::Error::EINTR => continue,
                nix::Error::ENOENT => return Ok(None),
                source => return Err(NotifyError::Ioctl { op: "SECCOMP_IOCTL_NOTIF_RECV", source }),
            }
        }
    }

    /// Whether notification `id` is still pending, i.e. its caller is alive and still blocked in the
    /// call. Checked after reading `/proc/<pid>/...`, it proves the pid was not reused meanwhile.
    pub fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: the request reads one u64 through the pointer, which points to a live local.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) };
        rc == 0
    }

    /// Answers notification `id`: the call fails with `errno` (never runs). `Ok(false)` when the caller is
    /// already gone.
    pub fn deny(&self, id: u64, errno: u32) -> Result<bool, NotifyError> {
        let error = i32::try_from(errno).map_or(-libc::EPERM, |e| -e.clamp(1, 4095));
        let mut resp = libc::seccomp_notif_resp { id, val: 0, error, flags: 0 };
        loop {
            // SAFETY: `resp` is a live `seccomp_notif_resp` whose size matches the request number; the
            // kernel only reads it. `flags` is 0: the call is answered with `error`, never continued.
            let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
            if rc == 0 {
                return Ok(true);
            }
            match nix::Error::last() {
                nix::Error::EINTR => continue,
                nix::Error::ENOENT => return Ok(false),
                source => return Err(NotifyError::Ioctl { op: "SECCOMP_IOCTL_NOTIF_SEND", source }),
            }
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
#[path = "seccomp_notify_tests.rs"]
mod tests;
