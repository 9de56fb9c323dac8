//! Structured security events: one JSON object per line.
//!
//! Threat handled: silent enforcement. Every denial the egress layer makes is
//! recorded here (and mirrored to `tracing` at WARN), so an operator can see what
//! was refused and why without raising log levels. Allows go to the sink too and
//! to `tracing` at DEBUG.
//!
//! The file sink never blocks the async data path: events go over a bounded
//! channel to a writer thread that appends and flushes one line per event.
//! Residual risk: if the writer cannot keep up (a flood of denials faster than
//! the disk), events beyond the queue bound are dropped and counted; the count
//! is reported in a `lifecycle` event by the writer as soon as it catches up and
//! via [`EventSink::dropped`].
//!
//! The channel sink ([`EventSink::channel`]) hands events to an async consumer
//! (the supervisor's gateway session) the same way: `try_send`, never waiting;
//! a full queue drops the event and counts it in [`EventSink::dropped`].

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many events may wait for the file writer before new ones are dropped.
const FILE_QUEUE: usize = 8192;

/// What part of the sandbox an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A TCP connection or HTTP request leaving the sandbox.
    Network,
    /// A DNS query from the sandbox.
    Dns,
    /// A filesystem access (reported by other components).
    Filesystem,
    /// A process-level event (reported by other components).
    Process,
    /// Policy loading and reloading.
    Config,
    /// Start, stop, enforcement summary.
    Lifecycle,
}

/// The outcome an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventDecision {
    /// Permitted by the policy.
    Allow,
    /// Refused.
    Deny,
    /// Permitted only because the matching endpoint is in `audit` enforcement.
    Audit,
    /// Informational (configuration, lifecycle).
    Info,
}

/// One security event. Absent fields are omitted from the JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// RFC 3339 UTC timestamp with milliseconds, e.g. `2025-01-31T12:00:00.123Z`.
    pub time: String,
    /// The sandbox this supervisor serves.
    pub sandbox_id: String,
    /// Subject area.
    pub kind: EventKind,
    /// Outcome.
    pub decision: EventDecision,
    /// Real executable path (`/proc/<pid>/exe`) of the process concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// SHA-256 (hex) of that executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_sha256: Option<String>,
    /// Host pid of the process concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Destination host name (or IP literal) as the agent named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Destination address actually connected to (or refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Destination port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Network policy that allowed the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Machine-readable reason code (`no_endpoint`, `address_not_allowed`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What to change in the policy to allow this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Policy generation the decision was made under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Kind-specific fields.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, serde_json::Value>,
}

impl Event {
    /// A new event stamped with the current time; every optional field empty.
    #[must_use]
    pub fn new(sandbox_id: &str, kind: EventKind, decision: EventDecision) -> Self {
        Self {
            time: rfc3339_utc(SystemTime::now()),
            sandbox_id: sandbox_id.to_owned(),
            kind,
            decision,
            binary: None,
            binary_sha256: None,
            pid: None,
            host: None,
            ip: None,
            port: None,
            policy: None,
            reason: None,
            hint: None,
            generation: None,
            detail: BTreeMap::new(),
        }
    }

    /// Adds one kind-specific field.
    #[must_use]
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }
}

/// Where events go. Cheap to clone; all clones feed the same destination.
#[derive(Clone)]
pub struct EventSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    target: Target,
    dropped: AtomicU64,
}

enum Target {
    Null,
    Memory(Arc<MemoryLog>),
    File(SyncSender<FileMsg>),
    Channel(tokio::sync::mpsc::Sender<Event>),
}

/// What the file writer thread receives: events, and flush requests answered once everything queued
/// before them is on disk.
enum FileMsg {
    Event(Box<Event>),
    Flush(std::sync::mpsc::Sender<()>),
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.target {
            Target::Null => "null",
            Target::Memory(_) => "memory",
            Target::File(_) => "file",
            Target::Channel(_) => "channel",
        };
        f.debug_struct("EventSink").field("target", &kind).finish()
    }
}

impl EventSink {
    /// Discards events (they still go to `tracing`).
    #[must_use]
    pub fn null() -> Self {
        Self::with(Target::Null)
    }

    /// Keeps events in memory; the returned [`EventLog`] reads them (for tests).
    #[must_use]
    pub fn memory() -> (Self, EventLog) {
        let log = Arc::new(MemoryLog { events: Mutex::new(Vec::new()), changed: tokio::sync::Notify::new() });
        (Self::with(Target::Memory(Arc::clone(&log))), EventLog { log })
    }

    /// Appends JSON lines to `path` (created with mode 0600 if missing) from a
    /// dedicated writer thread that flushes after every line.
    ///
    /// # Errors
    /// The file cannot be opened for appending, or the thread cannot be spawned.
    pub fn file(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<FileMsg>(FILE_QUEUE);
        let sink = Self::with(Target::File(tx));
        let inner = Arc::downgrade(&sink.inner);
        std::thread::Builder::new().name("egress-events".into()).spawn(move || {
            let mut out = BufWriter::new(file);
            let mut reported = 0u64;
            while let Ok(msg) = rx.recv() {
                let event = match msg {
                    FileMsg::Event(event) => event,
                    FileMsg::Flush(done) => {
                        let _ = done.send(());
                        continue;
                    }
                };
                let dropped = inner.upgrade().map_or(0, |i| i.dropped.load(Ordering::Relaxed));
                if dropped > reported {
                    let note = Event::new(&event.sandbox_id, EventKind::Lifecycle, EventDecision::Info)
                        .with_detail("events_dropped", dropped - reported);
                    write_line(&mut out, &note);
                    reported = dropped;
                }
                write_line(&mut out, &event);
            }
        })?;
        Ok(sink)
    }

    /// Sends events to the returned receiver, which holds at most `capacity`
    /// of them (at least 1). Emitting never waits: when the receiver is full
    /// or gone the event is dropped and counted in [`EventSink::dropped`], so a
    /// slow consumer can never stall the proxy.
    #[must_use]
    pub fn channel(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (Self::with(Target::Channel(tx)), rx)
    }

    fn with(target: Target) -> Self {
        Self { inner: Arc::new(SinkInner { target, dropped: AtomicU64::new(0) }) }
    }

    /// Records an event: to `tracing` (denials WARN, audits INFO, the rest DEBUG)
    /// and to the sink. Never blocks on I/O.
    pub fn emit(&self, event: Event) {
        trace_event(&event);
        match &self.inner.target {
            Target::Null => {}
            Target::Memory(log) => log.push(event),
            Target::File(tx) => {
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    tx.try_send(FileMsg::Event(Box::new(event)))
                {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Target::Channel(tx) => {
                if tx.try_send(event).is_err() {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Waits (at most `timeout`) until every event emitted before this call is written. Blocking: call it
    /// from a blocking context, e.g. just before the process exits.
    pub fn flush(&self, timeout: Duration) {
        if let Target::File(tx) = &self.inner.target {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            if tx.send(FileMsg::Flush(done_tx)).is_ok() {
                let _ = done_rx.recv_timeout(timeout);
            }
        }
    }

    /// Events dropped because the file writer (or the channel's receiver) could not keep up.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

fn write_line(out: &mut BufWriter<std::fs::File>, event: &Event) {
    let written = serde_json::to_writer(&mut *out, event)
        .map_err(io::Error::other)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::error!(error = %e, "cannot write security event");
    }
}

fn trace_event(e: &Event) {
    let host = e.host.as_deref().unwrap_or("");
    let binary = e.binary.as_deref().unwrap_or("");
    let reason = e.reason.as_deref().unwrap_or("");
    let port = e.port.unwrap_or(0);
    match e.decision {
        EventDecision::Deny => {
            tracing::warn!(kind = ?e.kind, host, port, binary, reason, hint = e.hint.as_deref().unwrap_or(""), "denied");
        }
        EventDecision::Audit => tracing::info!(kind = ?e.kind, host, port, binary, reason, "audit"),
        EventDecision::Allow => tracing::debug!(kind = ?e.kind, host, port, binary, "allowed"),
        EventDecision::Info => tracing::debug!(kind = ?e.kind, reason, detail = ?e.detail, "event"),
    }
}

struct MemoryLog {
    events: Mutex<Vec<Event>>,
    changed: tokio::sync::Notify,
}

impl MemoryLog {
    fn push(&self, event: Event) {
        self.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event);
        self.changed.notify_waiters();
    }

    fn find(&self, pred: &impl Fn(&Event) -> bool) -> Option<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|e| pred(e))
            .cloned()
    }
}

/// Read side of [`EventSink::memory`].
#[derive(Clone)]
pub struct EventLog {
    log: Arc<MemoryLog>,
}

impl EventLog {
    /// A copy of every event recorded so far, in order.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.log.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Waits until an event satisfies `pred`, for at most `timeout`; returns it.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.log.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(e) = self.log.find(&pred) {
                return Some(e);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.log.find(&pred);
            }
        }
    }
}

/// RFC 3339 UTC with millisecond precision (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
#[must_use]
pub fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y, u32::try_from(m).unwrap_or(1), u32::try_from(d).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // 2024-02-29 leap day
        assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_utc(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn serializes_without_empty_fields() {
        let mut e = Event::new("sb1", EventKind::Network, EventDecision::Deny).with_detail("door", "connect");
        e.host = Some("example.com".into());
        e.port = Some(443);
        e.ip = Some("1.2.3.4".parse().unwrap());
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "network");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["ip"], "1.2.3.4");
        assert_eq!(v["detail"]["door"], "connect");
        assert!(v.get("binary").is_none());
    }

    #[tokio::test]
    async fn memory_sink_records_and_waits() {
        let (sink, log) = EventSink::memory();
        let s2 = sink.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            s2.emit(Event::new("sb", EventKind::Dns, EventDecision::Deny));
        });
        let got = log.wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Dns).await;
        assert!(got.is_some());
        assert!(log.wait_for(Duration::from_millis(10), |e| e.kind == EventKind::Process).await.is_none());
        assert_eq!(log.events().len(), 1);
    }

    #[tokio::test]
    async fn channel_sink_forwards_and_counts_drops() {
        let (sink, mut rx) = EventSink::channel(2);
        for host in ["a", "b", "c"] {
            let mut e = Event::new("sb", EventKind::Network, EventDecision::Deny);
            e.host = Some(host.into());
            sink.emit(e);
        }
        assert_eq!(sink.dropped(), 1, "the third event does not fit");
        assert_eq!(rx.recv().await.and_then(|e| e.host).as_deref(), Some("a"));
        assert_eq!(rx.recv().await.and_then(|e| e.host).as_deref(), Some("b"));
        sink.emit(Event::new("sb", EventKind::Dns, EventDecision::Allow));
        assert_eq!(rx.recv().await.map(|e| e.kind), Some(EventKind::Dns), "room again after draining");
        drop(rx);
        sink.emit(Event::new("sb", EventKind::Dns, EventDecision::Allow));
        assert_eq!(sink.dropped(), 2, "a closed receiver drops too, without blocking");
        assert_eq!(format!("{sink:?}"), "EventSink { target: \"channel\" }");
    }

    #[test]
    fn file_sink_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = EventSink::file(&path).unwrap();
        sink.emit(Event::new("sb", EventKind::Config, EventDecision::Info));
        sink.emit(Event::new("sb", EventKind::Network, EventDecision::Allow));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 2 {
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    assert_eq!(v["sandbox_id"], "sb");
                }
                break;
            }
            assert!(std::time::Instant::now() < deadline, "events not written: {text:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
