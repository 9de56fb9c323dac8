//! Reading the supervisor's `--events` file (one JSON object per line) and matching events.

use std::path::Path;

use serde_json::Value;

/// One event line.
#[derive(Debug, Clone)]
pub struct Event(pub Value);

impl Event {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    pub fn kind(&self) -> &str {
        self.str("kind").unwrap_or("")
    }
    pub fn decision(&self) -> &str {
        self.str("decision").unwrap_or("")
    }
    pub fn host(&self) -> &str {
        self.str("host").unwrap_or("")
    }
    pub fn ip(&self) -> &str {
        self.str("ip").unwrap_or("")
    }
    pub fn port(&self) -> Option<u64> {
        self.0.get("port").and_then(Value::as_u64)
    }
    pub fn generation(&self) -> Option<u64> {
        self.0.get("generation").and_then(Value::as_u64)
    }
    pub fn is_deny(&self, kind: &str) -> bool {
        self.kind() == kind && self.decision() == "deny"
    }
    /// The whole event as text (for "mentions X" checks).
    pub fn text(&self) -> String {
        self.0.to_string()
    }
}

/// Parses an events file; lines that are not JSON objects are returned as errors so a test can
/// fail on a malformed events stream instead of silently ignoring it.
pub fn read(path: &Path) -> (Vec<Event>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.is_object() => ok.push(Event(v)),
            _ => bad.push(line.to_string()),
        }
    }
    (ok, bad)
}

/// The fields the contract says every event carries.
pub const REQUIRED_FIELDS: &[&str] = &["time", "sandbox_id", "kind", "decision"];
pub const KINDS: &[&str] = &["network", "dns", "filesystem", "process", "config", "lifecycle"];
pub const DECISIONS: &[&str] = &["allow", "deny", "audit", "info"];

/// Contract violations of one event (empty = fine).
pub fn violations(e: &Event) -> Vec<String> {
    let mut v = Vec::new();
    for f in REQUIRED_FIELDS {
        if e.0.get(*f).is_none() {
            v.push(format!("missing field {f}"));
        }
    }
    if !KINDS.contains(&e.kind()) {
        v.push(format!("unknown kind {:?}", e.kind()));
    }
    if !DECISIONS.contains(&e.decision()) {
        v.push(format!("unknown decision {:?}", e.decision()));
    }
    v
}

/// A network or dns denial about `host` (or its `ip`), optionally on `port`.
pub fn find_net_deny<'a>(
    events: &'a [Event],
    kinds: &[&str],
    host_or_ip: &str,
    port: Option<u16>,
) -> Option<&'a Event> {
    events.iter().find(|e| {
        kinds.iter().any(|k| e.is_deny(k))
            && (e.host().eq_ignore_ascii_case(host_or_ip)
                || e.ip() == host_or_ip
                || e.host().trim_matches(['[', ']']) == host_or_ip)
            && port.is_none_or(|p| e.port() == Some(u64::from(p)))
    })
}

/// Summary for failure messages.
pub fn summary(events: &[Event]) -> String {
    if events.is_empty() {
        return "(no events)".into();
    }
    events.iter().map(|e| format!("  {}", e.text())).collect::<Vec<_>>().join("\n")
}
