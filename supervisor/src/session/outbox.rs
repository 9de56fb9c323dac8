//! What the supervisor reports besides control messages: the agent's output lines and the security
//! events, buffered here and sent in batches (at most [`BATCH_ITEMS`] items and [`BATCH_BYTES`] bytes,
//! at latest [`BATCH_DELAY`] after the oldest pending item).
//!
//! Threat handled: a gateway outage (or a flood from the agent) growing the supervisor's memory without
//! bound, or stalling the agent. Both queues are bounded in items and bytes; beyond, new items are
//! dropped and counted, and the count goes out with the next batch (`dropped`). Producers never wait: the
//! agent's pipes are always read, the proxy never blocks on an event. Residual risk: what is dropped is
//! lost (the count says how much); a batch handed to a stream that then fails is lost too.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use openshell_egress::events::{Event, EventSink};
use openshell_proto::supervisor::v1::{
    EventBatch, LogBatch, LogLine, Stream, SupervisorMessage, supervisor_message,
};
use tokio::sync::{Notify, mpsc};

use super::link::now_ms;

pub const BATCH_DELAY: Duration = Duration::from_millis(100);
pub const BATCH_ITEMS: usize = 256;
/// Well below the 4 MiB a gRPC server accepts per message by default.
pub const BATCH_BYTES: usize = 1024 * 1024;
const MAX_LINES: usize = 10_000;
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
const MAX_EVENTS: usize = 10_000;
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// Events waiting between the egress layer and the session loop (drained at once; the outbox bounds).
pub const EVENT_QUEUE: usize = 1024;

struct Queue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    dropped: u64,
    max_items: usize,
    max_bytes: usize,
    /// When the oldest unsent item (or drop count) arrived.
    pending_since: Option<Instant>,
}

impl<T> Queue<T> {
    fn new(max_items: usize, max_bytes: usize) -> Self {
        Queue { items: VecDeque::new(), bytes: 0, dropped: 0, max_items, max_bytes, pending_since: None }
    }

    /// Returns whether the consumer should be woken: the queue just became non-empty or a batch is full.
    fn push(&mut self, item: T, size: usize, now: Instant) -> bool {
        let was_idle = self.pending_since.is_none();
        self.pending_since.get_or_insert(now);
        if self.items.len() >= self.max_items || self.bytes + size > self.max_bytes {
            self.dropped += 1;
            return was_idle;
        }
        self.items.push_back((item, size));
        self.bytes += size;
        was_idle || self.items.len().is_multiple_of(BATCH_ITEMS)
    }

    fn count_dropped(&mut self, n: u64, now: Instant) -> bool {
        let was_idle = self.pending_since.is_none();
        self.pending_since.get_or_insert(now);
        self.dropped += n;
        was_idle
    }

    fn due_at(&self) -> Option<Instant> {
        let since = self.pending_since?;
        let full = self.items.len() >= BATCH_ITEMS || self.bytes >= BATCH_BYTES;
        Some(if full { since } else { since + BATCH_DELAY })
    }

    /// Up to one batch of items and the drop count, oldest first.
    fn take(&mut self) -> (Vec<T>, u64) {
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some((_, size)) = self.items.front() {
            if out.len() >= BATCH_ITEMS || (!out.is_empty() && bytes + size > BATCH_BYTES) {
                break;
            }
            let Some((item, size)) = self.items.pop_front() else { break };
            bytes += size;
            self.bytes -= size;
            out.push(item);
        }
        let dropped = std::mem::take(&mut self.dropped);
        if self.items.is_empty() {
            self.pending_since = None;
        }
        (out, dropped)
    }
}

struct State {
    lines: Queue<LogLine>,
    events: Queue<String>,
}

/// Pending log lines and events. Shared by the pipe readers, the event pump and the session loop.
pub struct Outbox {
    state: Mutex<State>,
    changed: Notify,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            state: Mutex::new(State {
                lines: Queue::new(MAX_LINES, MAX_LINE_BYTES),
                events: Queue::new(MAX_EVENTS, MAX_EVENT_BYTES),
            }),
            changed: Notify::new(),
        }
    }
}

impl Outbox {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn wake_if(&self, wake: bool) {
        if wake {
            self.changed.notify_one();
        }
    }

    pub fn push_line(&self, stream: Stream, text: String) {
        let size = text.len() + 16;
        let line = LogLine { time_ms: now_ms(), stream: stream as i32, text };
        let wake = self.with_state(|s| s.lines.push(line, size, Instant::now()));
        self.wake_if(wake);
    }

    pub fn push_event(&self, json: String) {
        let size = json.len();
        let wake = self.with_state(|s| s.events.push(json, size, Instant::now()));
        self.wake_if(wake);
    }

    pub fn count_dropped_events(&self, n: u64) {
        if n > 0 {
            let wake = self.with_state(|s| s.events.count_dropped(n, Instant::now()));
            self.wake_if(wake);
        }
    }

    /// When the next batch is due (possibly already); `None` when nothing is pending.
    pub fn due_at(&self) -> Option<Instant> {
        self.with_state(|s| match (s.events.due_at(), s.lines.due_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// One batch that is due at `now` (events before lines), or, with `now = None`, any pending batch.
    pub fn take_batch(&self, now: Option<Instant>) -> Option<SupervisorMessage> {
        let due = |q: Option<Instant>| q.is_some_and(|at| now.is_none_or(|now| at <= now));
        self.with_state(|s| {
            if due(s.events.due_at()) {
                let (events_json, dropped) = s.events.take();
                return Some(supervisor_message::Msg::Events(EventBatch { events_json, dropped }));
            }
            if due(s.lines.due_at()) {
                let (lines, dropped) = s.lines.take();
                return Some(supervisor_message::Msg::Logs(LogBatch { lines, dropped }));
            }
            None
        })
        .map(|m| SupervisorMessage { msg: Some(m) })
    }

    /// Resolves when something was added that may change [`Outbox::due_at`]. Cancel-safe.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Moves security events from the egress layer's channel sink into the outbox, with the sink's own drop
/// count.
pub struct EventPump {
    rx: mpsc::Receiver<Event>,
    /// Kept so the channel never closes (a closed receiver would make `pump` return at once, forever)
    /// and to read the sink's drop count.
    sink: EventSink,
    reported_drops: u64,
}

impl EventPump {
    /// The sink to give to the sandbox, and the pump that empties it.
    pub fn new() -> (EventSink, EventPump) {
        let (sink, rx) = EventSink::channel(EVENT_QUEUE);
        (sink.clone(), EventPump { rx, sink, reported_drops: 0 })
    }

    /// Waits for one event and moves it. Cancel-safe.
    pub async fn pump(&mut self, outbox: &Outbox) {
        if let Some(event) = self.rx.recv().await {
            self.push(event, outbox);
        }
    }

    /// Moves everything already emitted (the exit path).
    pub fn drain(&mut self, outbox: &Outbox) {
        while let Ok(event) = self.rx.try_recv() {
            self.push(event, outbox);
        }
        self.sync_drops(outbox);
    }

    fn push(&mut self, event: Event, outbox: &Outbox) {
        match serde_json::to_string(&event) {
            Ok(json) => outbox.push_event(json),
            Err(e) => {
                tracing::warn!("cannot serialise a security event: {e}");
                outbox.count_dropped_events(1);
            }
        }
        self.sync_drops(outbox);
    }

    fn sync_drops(&mut self, outbox: &Outbox) {
        let total = self.sink.dropped();
        outbox.count_dropped_events(total.saturating_sub(self.reported_drops));
        self.reported_drops = total;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(m: Option<SupervisorMessage>) -> LogBatch {
        match m.and_then(|m| m.msg) {
            Some(supervisor_message::Msg::Logs(b)) => b,
            other => panic!("expected a log batch, got {other:?}"),
        }
    }

    #[test]
    fn batches_wait_for_the_delay_or_a_full_batch() {
        let outbox = Outbox::default();
        assert!(outbox.due_at().is_none());
        outbox.push_line(Stream::Stdout, "one".into());
        let due = outbox.due_at().unwrap();
        assert!(due > Instant::now(), "a single line waits up to {BATCH_DELAY:?}");
        assert!(outbox.take_batch(Some(Instant::now())).is_none());
        let batch = logs(outbox.take_batch(Some(due)));
        assert_eq!(batch.lines[0].text, "one");
        assert_eq!(batch.lines[0].stream, Stream::Stdout as i32);
        assert!(outbox.due_at().is_none());

        for i in 0..BATCH_ITEMS + 10 {
            outbox.push_line(Stream::Stderr, format!("l{i}"));
        }
        assert!(outbox.due_at().unwrap() <= Instant::now(), "a full batch is due at once");
        assert_eq!(logs(outbox.take_batch(Some(Instant::now()))).lines.len(), BATCH_ITEMS);
        assert_eq!(logs(outbox.take_batch(None)).lines.len(), 10);
        assert!(outbox.take_batch(None).is_none());
    }

    #[test]
    fn bounded_with_a_drop_count_and_events_first() {
        let outbox = Outbox::default();
        for i in 0..MAX_LINES + 5 {
            outbox.push_line(Stream::Stdout, format!("{i}"));
        }
        outbox.push_event("{}".into());
        let first = outbox.take_batch(None).and_then(|m| m.msg);
        assert!(matches!(first, Some(supervisor_message::Msg::Events(ref b)) if b.events_json == ["{}"]));
        let batch = logs(outbox.take_batch(None));
        assert_eq!(batch.dropped, 5);
        assert_eq!(batch.lines[0].text, "0", "the oldest lines are kept");
        let mut total = batch.lines.len();
        while let Some(m) = outbox.take_batch(None) {
            let b = logs(Some(m));
            assert_eq!(b.dropped, 0, "the count is reported once");
            total += b.lines.len();
        }
        assert_eq!(total, MAX_LINES);
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        let outbox = Outbox::default();
        let long = "x".repeat(16 * 1024);
        for _ in 0..200 {
            outbox.push_line(Stream::Stdout, long.clone());
        }
        let batch = logs(outbox.take_batch(None));
        let bytes: usize = batch.lines.iter().map(|l| l.text.len()).sum();
        assert!(bytes <= BATCH_BYTES && batch.lines.len() < 200, "{bytes} bytes in {}", batch.lines.len());
    }

    #[tokio::test]
    async fn the_pump_serialises_events_and_reports_sink_drops() {
        use openshell_egress::events::{EventDecision, EventKind};
        let outbox = Outbox::default();
        let (sink, mut pump) = EventPump::new();
        for _ in 0..EVENT_QUEUE + 3 {
            sink.emit(Event::new("sb", EventKind::Network, EventDecision::Deny));
        }
        pump.pump(&outbox).await;
        pump.drain(&outbox);
        let Some(supervisor_message::Msg::Events(batch)) = outbox.take_batch(None).and_then(|m| m.msg) else {
            panic!("expected events");
        };
        assert_eq!(batch.dropped, 3);
        let v: serde_json::Value = serde_json::from_str(&batch.events_json[0]).unwrap();
        assert_eq!(v["kind"], "network");
        assert_eq!(v["decision"], "deny");
    }
}
