//! `process` events for refused syscalls: answers every notification of the agent's seccomp filter with
//! the table's errno (never lets the call run) and reports who tried what.
//!
//! The caller is blocked in the syscall while its notification is pending, so `/proc/<tid>/exe` and its
//! `Tgid` are read before answering; `SECCOMP_IOCTL_NOTIF_ID_VALID` afterwards proves the tid was not
//! reused meanwhile (otherwise the identity is dropped, the answer is sent anyway). One event per
//! (binary, syscall) and second; the rest are counted ([`super::dedupe`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openshell_egress::events::{Event, EventDecision, EventKind};
use openshell_supervisor_sys::seccomp_notify::{self, Listener, Notification, Readiness};

use super::dedupe::{Dedupe, Out};
use super::{DenialCtx, Done};

/// Dedupe window and tracked keys.
const WINDOW: Duration = Duration::from_secs(1);
const KEYS: usize = 1024;
const HINT: &str = "refused by the sandbox's seccomp table (architecture/seccomp.md); no policy setting \
                    allows it";

/// One refused call, as reported.
#[derive(Clone, Debug)]
struct Refused {
    syscall: &'static str,
    nr: i32,
    errno: &'static str,
    why: &'static str,
    binary: Option<String>,
    pid: Option<i32>,
    tid: u32,
}

/// Starts the answering thread. It owns the listener and ends when no process uses the filter any more.
pub(super) fn spawn(fd: OwnedFd, ctx: Arc<DenialCtx>, done: Done) -> std::io::Result<()> {
    let listener = Listener::new(fd);
    std::thread::Builder::new().name("seccomp-notify".into()).stack_size(256 * 1024).spawn(move || {
        serve(&listener, &ctx);
        drop(done);
    })?;
    Ok(())
}

fn serve(listener: &Listener, ctx: &DenialCtx) {
    let mut dedupe: Dedupe<(Option<String>, &'static str), Refused> =
        Dedupe::new(WINDOW, KEYS, Instant::now());
    loop {
        // Sleep until the next call unless counted repeats are waiting for the end of their window.
        let timeout = if dedupe.is_quiet() { None } else { Some(WINDOW) };
        match listener.wait(timeout) {
            Ok(Readiness::Ready) => {}
            Ok(Readiness::Idle) => {
                report(ctx, dedupe.sweep(Instant::now()));
                continue;
            }
            Ok(Readiness::Hangup) => break,
            Err(e) => {
                tracing::error!("seccomp listener: {e}; refused syscalls now fail with ENOSYS");
                break;
            }
        }
        let n = match listener.recv() {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("seccomp listener: {e}; refused syscalls now fail with ENOSYS");
                break;
            }
        };
        let refused = answer(listener, &n);
        let key = (refused.binary.clone(), refused.syscall);
        report(ctx, dedupe.admit(key, refused, Instant::now()));
    }
    report(ctx, dedupe.drain());
}

/// Identifies the caller, then refuses the call with the errno of its table row.
fn answer(listener: &Listener, n: &Notification) -> Refused {
    // Every conditional row: only the ones compiled in ever notify.
    let all = openshell_supervisor_sys::seccomp::Extras { memfd_noexec: true };
    let entry = seccomp_notify::matching_entry_with(all, i64::from(n.nr), &n.args);
    let (errno, errno_name) =
        entry.map_or((libc::EPERM as u32, "EPERM"), |e| (e.deny.errno(), e.deny.name()));
    let (binary, pid) = identify(n.pid);
    let valid = listener.id_valid(n.id);
    if let Err(e) = listener.deny(n.id, errno) {
        tracing::warn!("seccomp listener: answering a refused call: {e}");
    }
    Refused {
        syscall: entry
            .map(|e| e.syscall)
            .or_else(|| seccomp_notify::syscall_name(i64::from(n.nr)))
            .unwrap_or("unknown"),
        nr: n.nr,
        errno: errno_name,
        why: entry.map_or("", |e| e.why),
        binary: binary.filter(|_| valid),
        pid: pid.filter(|_| valid),
        tid: n.pid,
    }
}

/// `/proc/<tid>/exe` and the thread's process id (`Tgid`).
fn identify(tid: u32) -> (Option<String>, Option<i32>) {
    if tid == 0 {
        return (None, None);
    }
    let exe = std::fs::read_link(format!("/proc/{tid}/exe")).ok().map(|p| p.display().to_string());
    let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok()));
    (exe, tgid)
}

fn report(ctx: &DenialCtx, outs: Vec<Out<Refused>>) {
    for out in outs {
        let event = match out {
            Out::First(r) => event(ctx, &r),
            Out::Repeated(r, count) => event(ctx, &r).with_detail("repeated", count).with_detail(
                "message",
                format!(
                    "{count} more refused {} calls by this binary were not reported one by one",
                    r.syscall
                ),
            ),
            Out::Overflow(count) => {
                let mut e = Event::new(&ctx.sandbox_id, EventKind::Process, EventDecision::Deny)
                    .with_detail("repeated", count)
                    .with_detail("message", format!("{count} refused syscalls of too many binaries to list"));
                e.reason = Some("syscall_denied".into());
                e
            }
        };
        ctx.events.emit(event);
    }
}

fn event(ctx: &DenialCtx, r: &Refused) -> Event {
    let mut e = Event::new(&ctx.sandbox_id, EventKind::Process, EventDecision::Deny)
        .with_detail("syscall", r.syscall)
        .with_detail("nr", r.nr)
        .with_detail("errno", r.errno)
        .with_detail("rule", r.why);
    if r.pid.is_some_and(|p| u32::try_from(p).ok() != Some(r.tid)) {
        e = e.with_detail("thread", r.tid);
    }
    e.binary = r.binary.clone();
    e.pid = r.pid;
    e.reason = Some("syscall_denied".into());
    e.hint = Some(HINT.into());
    e
}
