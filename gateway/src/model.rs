//! Domain types of the gateway, independent of the wire (proto) and of the store's SQL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lifecycle phase of a sandbox. See `architecture/gateway.md` for the transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Provisioning,
    Ready,
    Stopped,
    Failed,
    Deleting,
    Disconnected,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Provisioning,
        Phase::Ready,
        Phase::Stopped,
        Phase::Failed,
        Phase::Deleting,
        Phase::Disconnected,
    ];

    /// Stable name used in the store and in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provisioning => "provisioning",
            Phase::Ready => "ready",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Deleting => "deleting",
            Phase::Disconnected => "disconnected",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether a supervisor process is expected to exist in this phase.
    #[must_use]
    pub fn expects_process(self) -> bool {
        matches!(self, Phase::Provisioning | Phase::Ready | Phase::Disconnected)
    }
}

/// What the user asked for; never changes after creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    pub command: Vec<String>,
    /// Host directory given by the user; `None`: a fresh one in the sandbox's state directory.
    pub workdir: Option<String>,
    /// Root filesystem; `None`: the host's.
    pub rootfs: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Compute driver name ("local").
    pub driver: String,
    /// The agent runs on a pseudo-terminal reached with Attach.
    #[serde(default)]
    pub tty: bool,
}

/// One sandbox as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxRecord {
    /// Opaque, unique, never reused (e.g. `sbx-` + 16 hex digits).
    pub id: String,
    /// Unique among live sandboxes.
    pub name: String,
    pub spec: SandboxSpec,
    pub phase: Phase,
    pub phase_reason: String,
    /// Optimistic-concurrency version: 1 at creation, +1 on every update.
    pub resource_version: u64,
    /// Desired policy revision (the newest stored one).
    pub policy_revision: u64,
    /// Revision the supervisor last acknowledged (0: none).
    pub acked_policy_revision: u64,
    pub exit_code: Option<i32>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_seen_ms: i64,
    /// Hex SHA-256 of the sandbox's session secret (the secret itself is never stored).
    pub secret_hash: String,
    /// What the driver needs to find the instance again (opaque JSON owned by the driver).
    pub driver_state: String,
    /// The supervisor's enforcement report (JSON), empty until it has started the agent.
    pub enforcement_json: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhaseTransition {
    pub phase: Phase,
    pub reason: String,
    pub at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRevisionRecord {
    pub sandbox_id: String,
    pub revision: u64,
    pub yaml: String,
    pub created_at_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogSource {
    Stdout,
    Stderr,
    Event,
    Gateway,
}

impl LogSource {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Stdout => "stdout",
            LogSource::Stderr => "stderr",
            LogSource::Event => "event",
            LogSource::Gateway => "gateway",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<LogSource> {
        [LogSource::Stdout, LogSource::Stderr, LogSource::Event, LogSource::Gateway]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Ordered: a filter "at least Warn" keeps Warn and Error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<LogLevel> {
        [LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A log entry before the store numbers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLog {
    pub time_ms: i64,
    pub source: LogSource,
    pub level: LogLevel,
    pub text: String,
}

/// A stored log entry; `seq` increases per sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub seq: u64,
    pub time_ms: i64,
    pub source: LogSource,
    pub level: LogLevel,
    pub text: String,
}

/// Which stored log entries to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only entries with `seq > after_seq`.
    pub after_seq: u64,
    /// Only entries with `time_ms >= since_ms` (0: no bound).
    pub since_ms: i64,
    pub min_level: Option<LogLevel>,
    /// At most this many entries, oldest first (0: no bound).
    pub limit: u32,
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
