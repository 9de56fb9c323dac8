//! Denials the kernel makes for the agent, reported as events: every refused syscall (seccomp user
//! notification, [`syscalls`]) and, where the host allows it, every Landlock denial (kernel audit records,
//! [`landlock_audit`]). Network and DNS denials are reported by the egress crate.
//!
//! Each source has a dedicated thread on a blocking kernel interface (no async runtime involved). What is
//! reported, or why not, is written into the enforcement report (`process_events`, `filesystem_events`)
//! and, when something is missing, a `lifecycle` event: a denial source that is off is never silent.
//!
//! Threat handled: silent enforcement (an operator cannot see what the agent tried and why it failed).
//! Residual risk: floods are summarised (one event per key and second plus a count); Landlock denials
//! carry no process identity unless the host's audit rules add syscall records; on hosts without kernel
//! audit (or rootless) Landlock denials are not reported at all (said in the report).

mod dedupe;
mod landlock_audit;
mod syscalls;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use openshell_egress::events::EventSink;

pub use landlock_audit::{AuditSource, FILESYSTEM_EVENTS_AUDIT, prepare as prepare_landlock_audit};

use super::EnforcementReport;
use super::agent::PROCESS_EVENTS_NOTIFY;

/// Dropped by a watcher thread when it ends.
type Done = Sender<()>;

/// What the watchers need to know about the sandbox.
#[derive(Debug)]
pub struct DenialCtx {
    pub sandbox_id: String,
    pub events: EventSink,
    /// Host pid of sandbox init.
    pub init_pid: i32,
    /// Host pid of the agent (0 if unknown).
    pub agent_pid: i32,
}

/// The running watchers.
#[derive(Debug)]
pub struct Watchers {
    stop: Arc<AtomicBool>,
    done: Vec<(&'static str, Receiver<()>)>,
}

/// Starts what can be started and records in `report` what is reported. Never fails the sandbox: a
/// listener that cannot be served is closed (refused calls then fail with `ENOSYS`, still refused).
pub fn start(
    ctx: DenialCtx,
    seccomp_listener: Option<OwnedFd>,
    audit: Result<AuditSource, String>,
    report: &mut EnforcementReport,
) -> Watchers {
    let ctx = Arc::new(ctx);
    let stop = Arc::new(AtomicBool::new(false));
    let mut done = Vec::new();
    if let Some(fd) = seccomp_listener {
        let (tx, rx) = channel();
        match syscalls::spawn(fd, ctx.clone(), tx) {
            Ok(()) => done.push(("seccomp-notify", rx)),
            Err(e) => {
                report.process_events = format!(
                    "unavailable: cannot start the seccomp listener thread ({e}); refused syscalls fail with \
                     ENOSYS and are not reported"
                );
            }
        }
    } else if report.process_events == PROCESS_EVENTS_NOTIFY {
        report.process_events = "unavailable: no seccomp listener".into();
    }
    report.filesystem_events = match audit {
        Ok(source) if !report.landlock.log_denials_after_exec => {
            drop(source);
            "unavailable: the agent's Landlock domain does not log denials after exec".into()
        }
        Ok(source) => {
            let (tx, rx) = channel();
            match landlock_audit::spawn(source, ctx.clone(), stop.clone(), tx) {
                Ok(()) => {
                    done.push(("landlock-audit", rx));
                    FILESYSTEM_EVENTS_AUDIT.into()
                }
                Err(e) => format!("unavailable: cannot start the audit reader thread ({e})"),
            }
        }
        Err(why) => format!("unavailable: {why}"),
    };
    Watchers { stop, done }
}

impl Watchers {
    /// Stops the watchers once the sandbox is gone and waits (at most `timeout` in all) for them to
    /// report what they still hold (pending records, counts of suppressed repeats).
    pub fn stop(self, timeout: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        for (name, rx) in self.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err_and(|e| e == std::sync::mpsc::RecvTimeoutError::Timeout) {
                tracing::debug!("{name} watcher still running at exit");
            }
        }
    }
}
