//! `filesystem` events (and `process` events for signal scoping and ptrace, `network` events for TCP bind
//! and abstract unix sockets) from Landlock's audit records (ABI 7).
//!
//! Landlock reports a denial as an `AUDIT_LANDLOCK_ACCESS` record (`domain=ID blockers=fs.read_file
//! path=... dev=... ino=...`), and the first time a domain shows up, an `AUDIT_LANDLOCK_DOMAIN` record
//! naming the process that created it (`status=allocated ... pid=P`). The agent creates this sandbox's
//! domain, so a domain is ours when that pid is the agent's (or, for a domain nested inside the sandbox, a
//! process in the sandbox's pid namespace). Records of other domains are ignored. The records name no
//! subject: the denying process (`pid`, `exe`) is only known when the host's audit rules also produce the
//! `AUDIT_SYSCALL` record of the same event (same serial); otherwise the event has no `binary`/`pid`.
//!
//! Availability ([`prepare`]): Landlock ABI 7, `CAP_AUDIT_READ` (the supervisor runs as root in the host's
//! namespaces), the kernel's audit enabled, and not in panic-on-loss mode (a sandboxed agent can produce
//! records at will). Nothing here changes the host's audit configuration.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openshell_egress::events::{Event, EventDecision, EventKind};
use openshell_supervisor_sys::audit::{self, AuditError, AuditLog, Received, Record, types};
use openshell_supervisor_sys::landlock;

use super::super::stage::error_chain;
use super::dedupe::{Dedupe, Out};
use super::{DenialCtx, Done};

/// `EnforcementReport::filesystem_events` when this works.
pub const FILESYSTEM_EVENTS_AUDIT: &str = "landlock-audit";
/// How long a record waits for the rest of its event (`AUDIT_SYSCALL`, `AUDIT_EOE`, the domain record).
const SETTLE: Duration = Duration::from_millis(100);
/// How long denials of a domain not (yet) known to be ours are kept.
const UNKNOWN_DOMAIN_TTL: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(1);
const KEYS: usize = 1024;
const MAX_PENDING: usize = 4096;
const MAX_FOREIGN: usize = 4096;
/// Poll interval when nothing is pending (bounds how long [`super::Watchers::stop`] waits).
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// The audit log, opened before the launch so that no record of the sandbox is missed.
#[derive(Debug)]
pub struct AuditSource {
    log: AuditLog,
}

/// Decides whether Landlock denials can be reported; `Err` says why not (for the enforcement report).
pub fn prepare() -> Result<AuditSource, String> {
    let abi = landlock::kernel_abi_version();
    if abi < 7 {
        return Err(format!("Landlock ABI {abi} has no audit records (needs ABI 7, Linux 6.15)"));
    }
    let log = AuditLog::open().map_err(|e| match e {
        AuditError::JoinLog(errno) => format!(
            "the kernel's audit log is readable only with CAP_AUDIT_READ in the host's user namespace, which \
             this supervisor does not have (rootless?): {errno}"
        ),
        e => error_chain(&e),
    })?;
    let status =
        audit::status().map_err(|e| format!("cannot read the kernel's audit status: {}", error_chain(&e)))?;
    if status.enabled == 0 {
        return Err("the kernel's audit is disabled (audit_enabled=0): Landlock logs nothing; enable it \
                    with `auditctl -e 1` (or boot with audit=1) to report filesystem denials"
            .into());
    }
    if status.failure == 2 {
        return Err("the kernel's audit panics when records are lost (failure=2) and a sandboxed agent \
                    could make it lose some; Landlock denial logging stays off"
            .into());
    }
    Ok(AuditSource { log })
}

/// One Landlock denial of this sandbox.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Denial {
    pub blockers: String,
    /// The object: `path`, `name`, `dev`, `ino`, `opid`, `ocomm`, `lport`, ... as the kernel wrote them.
    pub object: Vec<(String, String)>,
    pub domain: String,
    pub pid: Option<i32>,
    pub exe: Option<String>,
    pub syscall_nr: Option<i64>,
}

impl Denial {
    fn get(&self, key: &str) -> Option<&str> {
        self.object.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn kind(&self) -> EventKind {
        let b = self.blockers.as_str();
        if b.starts_with("fs.") {
            EventKind::Filesystem
        } else if b.starts_with("net.") || b == "scope.abstract_unix_socket" {
            EventKind::Network
        } else {
            EventKind::Process
        }
    }

    fn target(&self) -> String {
        ["path", "name", "opid", "lport", "laddr"].iter().find_map(|k| self.get(k)).unwrap_or("").to_string()
    }
}

#[derive(Default)]
struct Group {
    first: Option<Instant>,
    accesses: Vec<(Instant, Record)>,
    syscall: Option<Record>,
    ended: bool,
}

/// Pairs records into denials of this sandbox (pure: fed records and time, returns denials).
pub(super) struct Correlator {
    is_ours: Box<dyn Fn(i32) -> bool + Send>,
    ours: HashSet<String>,
    foreign: HashSet<String>,
    groups: BTreeMap<u64, Group>,
}

impl Correlator {
    pub(super) fn new(is_ours: Box<dyn Fn(i32) -> bool + Send>) -> Self {
        Self { is_ours, ours: HashSet::new(), foreign: HashSet::new(), groups: BTreeMap::new() }
    }

    pub(super) fn push(&mut self, r: Record, now: Instant) {
        match r.kind {
            types::LANDLOCK_DOMAIN => {
                let (Some(domain), Some("allocated")) = (r.get("domain"), r.get("status")) else { return };
                let pid = r.get("pid").and_then(|p| p.parse().ok()).unwrap_or(0);
                if (self.is_ours)(pid) {
                    self.ours.insert(domain.to_string());
                } else if self.foreign.len() < MAX_FOREIGN {
                    self.foreign.insert(domain.to_string());
                }
            }
            types::LANDLOCK_ACCESS => {
                if r.get("domain").is_some_and(|d| self.foreign.contains(d)) {
                    return;
                }
                let pending: usize = self.groups.values().map(|g| g.accesses.len()).sum();
                if pending >= MAX_PENDING {
                    return;
                }
                let g = self.groups.entry(r.serial).or_default();
                g.first.get_or_insert(now);
                g.accesses.push((now, r));
            }
            types::SYSCALL => {
                if let Some(g) = self.groups.get_mut(&r.serial) {
                    g.syscall = Some(r);
                }
            }
            types::EOE => {
                if let Some(g) = self.groups.get_mut(&r.serial) {
                    g.ended = true;
                }
            }
            _ => {}
        }
    }

    /// No record is waiting.
    pub(super) fn is_idle(&self) -> bool {
        self.groups.is_empty()
    }

    /// Denials whose event is complete (or settled); `flush_all` at the end ignores the waiting times.
    pub(super) fn flush(&mut self, now: Instant, flush_all: bool) -> Vec<Denial> {
        let mut out = Vec::new();
        let (ours, foreign) = (&self.ours, &self.foreign);
        self.groups.retain(|_, g| {
            let settled = g.ended || g.first.is_some_and(|t| now.duration_since(t) >= SETTLE);
            if !settled && !flush_all {
                return true;
            }
            let syscall = g.syscall.take();
            g.accesses.retain(|(seen, r)| {
                let domain = r.get("domain").unwrap_or("");
                if ours.contains(domain) {
                    out.push(denial(r, syscall.as_ref()));
                    return false;
                }
                // Unknown domain: its allocation record may still come (it follows the first denial).
                !foreign.contains(domain) && !flush_all && now.duration_since(*seen) < UNKNOWN_DOMAIN_TTL
            });
            g.syscall = syscall;
            g.first = g.accesses.first().map(|(t, _)| *t);
            !g.accesses.is_empty()
        });
        out
    }
}

fn denial(r: &Record, syscall: Option<&Record>) -> Denial {
    let object = r.fields.iter().filter(|(k, _)| k != "domain" && k != "blockers").cloned().collect();
    Denial {
        blockers: r.get("blockers").unwrap_or("").to_string(),
        object,
        domain: r.get("domain").unwrap_or("").to_string(),
        pid: syscall.and_then(|s| s.get("pid")).and_then(|p| p.parse().ok()),
        exe: syscall.and_then(|s| s.get("exe")).map(str::to_string),
        syscall_nr: syscall.and_then(|s| s.get("syscall")).and_then(|n| n.parse().ok()),
    }
}

/// The sandbox's pid namespace, to recognise domains created inside it.
fn pid_ns(pid: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Starts the reading thread; it runs until `stop` is set, then reports what is still pending.
pub(super) fn spawn(
    source: AuditSource,
    ctx: Arc<DenialCtx>,
    stop: Arc<AtomicBool>,
    done: Done,
) -> std::io::Result<()> {
    let (agent, sandbox_ns) = (ctx.agent_pid, pid_ns(ctx.init_pid));
    let is_ours = Box::new(move |pid: i32| {
        pid > 0 && (pid == agent || (sandbox_ns.is_some() && pid_ns(pid) == sandbox_ns))
    });
    std::thread::Builder::new().name("landlock-audit".into()).stack_size(256 * 1024).spawn(move || {
        serve(&source.log, Correlator::new(is_ours), &ctx, &stop);
        drop(done);
    })?;
    Ok(())
}

fn serve(log: &AuditLog, mut correlator: Correlator, ctx: &DenialCtx, stop: &AtomicBool) {
    let mut dedupe: Dedupe<(String, String), Denial> = Dedupe::new(WINDOW, KEYS, Instant::now());
    let mut lost = 0u64;
    // After the stop, records of the last denials may still be in the kernel's queue: read for one more
    // SETTLE before reporting everything.
    let mut last_call: Option<Instant> = None;
    loop {
        if last_call.is_none() && stop.load(Ordering::Relaxed) {
            last_call = Some(Instant::now() + SETTLE);
        }
        let now = Instant::now();
        if last_call.is_some_and(|end| now >= end) {
            break;
        }
        // Short waits only while records wait for the rest of their event; the stop flag is seen within
        // IDLE_WAIT otherwise.
        let wait = if last_call.is_some() || !correlator.is_idle() || !dedupe.is_quiet() {
            SETTLE / 2
        } else {
            IDLE_WAIT
        };
        match log.recv(wait) {
            Ok(Received::Records(records)) => {
                let now = Instant::now();
                for raw in records {
                    if matches!(
                        raw.kind,
                        types::LANDLOCK_ACCESS | types::LANDLOCK_DOMAIN | types::SYSCALL | types::EOE
                    ) && let Some(r) = audit::parse(&raw)
                    {
                        correlator.push(r, now);
                    }
                }
            }
            Ok(Received::Idle) => {}
            Ok(Received::Overrun) => {
                lost += 1;
                if lost.is_power_of_two() {
                    let mut e = Event::new(&ctx.sandbox_id, EventKind::Lifecycle, EventDecision::Audit)
                        .with_detail(
                            "message",
                            "the kernel's audit log overflowed; Landlock denials were lost",
                        )
                        .with_detail("overruns", lost);
                    e.reason = Some("denial_events_lost".into());
                    ctx.events.emit(e);
                }
            }
            Err(e) => {
                tracing::error!("landlock audit: {e}; filesystem denials are no longer reported");
                break;
            }
        }
        let now = Instant::now();
        let mut outs = dedupe.sweep(now);
        for d in correlator.flush(now, false) {
            outs.extend(dedupe.admit((d.blockers.clone(), d.target()), d, now));
        }
        report(ctx, outs);
    }
    let now = Instant::now();
    let mut outs = Vec::new();
    for d in correlator.flush(now, true) {
        outs.extend(dedupe.admit((d.blockers.clone(), d.target()), d, now));
    }
    outs.extend(dedupe.drain());
    report(ctx, outs);
}

fn report(ctx: &DenialCtx, outs: Vec<Out<Denial>>) {
    for out in outs {
        let event = match out {
            Out::First(d) => event(ctx, &d),
            Out::Repeated(d, count) => event(ctx, &d).with_detail("repeated", count).with_detail(
                "message",
                format!("{count} more identical Landlock denials were not reported one by one"),
            ),
            Out::Overflow(count) => {
                let mut e = Event::new(&ctx.sandbox_id, EventKind::Filesystem, EventDecision::Deny)
                    .with_detail("repeated", count)
                    .with_detail("message", format!("{count} Landlock denials on too many objects to list"));
                e.reason = Some("landlock_denied".into());
                e
            }
        };
        ctx.events.emit(event);
    }
}

fn event(ctx: &DenialCtx, d: &Denial) -> Event {
    let kind = d.kind();
    let mut e = Event::new(&ctx.sandbox_id, kind, EventDecision::Deny)
        .with_detail("access", d.blockers.as_str())
        .with_detail("domain", d.domain.as_str());
    for (k, v) in &d.object {
        e = e.with_detail(k, v.as_str());
    }
    if let Some(nr) = d.syscall_nr {
        e = e.with_detail("syscall_nr", nr);
    }
    let hint = match d.blockers.as_str() {
        b if b.starts_with("fs.") => {
            "not granted by filesystem_policy (read_only / read_write); add the path if the agent needs it"
        }
        "scope.signal" => {
            let target = match d.get("opid").and_then(|p| p.parse::<i32>().ok()) {
                Some(p) if p == ctx.init_pid => "sandbox init",
                _ => "a process outside the sandbox's Landlock domain",
            };
            e = e.with_detail(
                "message",
                format!(
                    "signal (kill, tgkill, pidfd_send_signal, ...) to {target} refused by Landlock scoping"
                ),
            );
            "signals may only reach processes of the agent's own Landlock domain"
        }
        "ptrace" => "processes of the sandbox cannot inspect processes outside their Landlock domain",
        "net.bind_tcp" => "TCP bind refused by Landlock: only ephemeral ports (0) may be bound",
        _ => "refused by the sandbox's Landlock domain",
    };
    if kind == EventKind::Network {
        e.port = d.get("lport").and_then(|p| p.parse().ok());
    }
    e.binary = d.exe.clone();
    e.pid = d.pid;
    e.reason = Some("landlock_denied".into());
    e.hint = Some(hint.into());
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use openshell_supervisor_sys::audit::RawRecord;

    fn rec(kind: u16, text: &str) -> Record {
        audit::parse(&RawRecord { kind, text: text.into() }).unwrap()
    }

    fn correlator() -> Correlator {
        Correlator::new(Box::new(|pid| pid == 4242))
    }

    #[test]
    fn denials_of_our_domain_are_reported_once_it_is_known() {
        let mut c = correlator();
        let t0 = Instant::now();
        // The first denial comes before the domain record (same serial when the task has an audit context).
        c.push(
            rec(
                types::LANDLOCK_ACCESS,
                r#"audit(1.0:10): domain=abc blockers=fs.read_file path="/etc/shadow" dev="vda" ino=3"#,
            ),
            t0,
        );
        c.push(rec(types::LANDLOCK_DOMAIN, r#"audit(1.0:10): domain=abc status=allocated mode=enforcing pid=4242 uid=0 exe="/x" comm="x""#), t0);
        assert!(c.flush(t0, false).is_empty(), "waits for a possible syscall record");
        let out = c.flush(t0 + SETTLE, false);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].blockers.as_str(), out[0].get("path"), out[0].pid),
            ("fs.read_file", Some("/etc/shadow"), None)
        );
        assert_eq!(out[0].kind(), EventKind::Filesystem);
        // Later denials of the domain, paired with the syscall record by serial.
        c.push(rec(types::LANDLOCK_ACCESS, r#"audit(2.0:11): domain=abc blockers=fs.write_file,fs.truncate path="/usr/x" dev="vda" ino=4"#), t0);
        c.push(rec(types::SYSCALL, r#"audit(2.0:11): arch=c000003e syscall=257 success=no exit=-13 pid=4300 comm="sh" exe="/usr/bin/dash""#), t0);
        c.push(rec(types::EOE, "audit(2.0:11): "), t0);
        let out = c.flush(t0, false);
        assert_eq!(out.len(), 1, "EOE completes the event at once");
        assert_eq!(
            (out[0].pid, out[0].exe.as_deref(), out[0].syscall_nr),
            (Some(4300), Some("/usr/bin/dash"), Some(257))
        );
    }

    #[test]
    fn other_domains_are_ignored() {
        let mut c = correlator();
        let t0 = Instant::now();
        c.push(
            rec(
                types::LANDLOCK_DOMAIN,
                "audit(1.0:1): domain=f00 status=allocated mode=enforcing pid=7 uid=0 exe=\"/y\" comm=\"y\"",
            ),
            t0,
        );
        c.push(
            rec(
                types::LANDLOCK_ACCESS,
                "audit(1.0:2): domain=f00 blockers=fs.read_dir path=\"/\" dev=\"vda\" ino=2",
            ),
            t0,
        );
        assert!(c.flush(t0 + SETTLE, true).is_empty());
        // Never claimed: dropped after a while.
        c.push(
            rec(
                types::LANDLOCK_ACCESS,
                "audit(1.0:3): domain=bad blockers=fs.read_dir path=\"/\" dev=\"vda\" ino=2",
            ),
            t0,
        );
        assert!(c.flush(t0 + SETTLE, false).is_empty());
        assert_eq!(c.groups.len(), 1, "kept while its domain may still be claimed");
        assert!(c.flush(t0 + UNKNOWN_DOMAIN_TTL, false).is_empty());
        assert!(c.groups.is_empty());
    }

    #[test]
    fn signal_scope_is_a_process_event_naming_init() {
        let mut c = correlator();
        let t0 = Instant::now();
        c.push(rec(types::LANDLOCK_DOMAIN, "audit(1.0:5): domain=abc status=allocated mode=enforcing pid=4242 uid=0 exe=\"/x\" comm=\"x\""), t0);
        c.push(
            rec(
                types::LANDLOCK_ACCESS,
                "audit(1.0:6): domain=abc blockers=scope.signal opid=4000 ocomm=\"openshell-super\"",
            ),
            t0,
        );
        let d = c.flush(t0 + SETTLE, false).remove(0);
        assert_eq!(d.kind(), EventKind::Process);
        let (events, log) = openshell_egress::events::EventSink::memory();
        let ctx = DenialCtx { sandbox_id: "sb".into(), events, init_pid: 4000, agent_pid: 4242 };
        let e = event(&ctx, &d);
        assert_eq!(e.reason.as_deref(), Some("landlock_denied"));
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            text.contains("sandbox init") && text.contains("kill") && text.contains("\"opid\":\"4000\""),
            "{text}"
        );
        drop(log);
    }
}
