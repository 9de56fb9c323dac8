//! The sandbox lifecycle: the one place that decides phases. User operations ([`ops`]), supervisor
//! session events ([`session`]) and the reconciler ([`reconcile`]) all change records through
//! [`Gateway::mutate`], an optimistic-concurrency read-modify-write that also records phase changes in
//! the sandbox's log and wakes watchers. See `architecture/gateway.md` for the phase diagram.

pub mod busy;
pub mod hub;
pub mod ops;
pub mod reconcile;
pub mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::drivers::{ComputeDriver, Instance};
use crate::errors::{GatewayError, Result};
use crate::model::{LogLevel, LogSource, NewLog, Phase, SandboxRecord, now_ms};
use crate::sessions::Sessions;
use crate::sessions::relays::Relays;
use crate::store::{Store, StoreError};
use hub::Hub;

/// How often supervisors send heartbeats; a session silent for three intervals is dropped.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Grace between SIGTERM and SIGKILL when a stop request does not say.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Gateway {
    pub store: Arc<dyn Store>,
    drivers: BTreeMap<&'static str, Arc<dyn ComputeDriver>>,
    pub sessions: Sessions,
    /// Relays requested from supervisors, waiting for their streams.
    pub relays: Relays,
    pub hub: Hub,
    /// Sandboxes with a user operation in progress (the reconciler waits for them).
    pub busy: busy::Busy,
    /// Where supervisors of local sandboxes dial the gateway.
    supervisor_endpoint: String,
    pub state_dir: PathBuf,
    pub started_at_ms: i64,
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        drivers: Vec<Arc<dyn ComputeDriver>>,
        supervisor_endpoint: String,
        state_dir: PathBuf,
    ) -> Arc<Gateway> {
        Arc::new(Gateway {
            store,
            drivers: drivers.into_iter().map(|d| (d.name(), d)).collect(),
            sessions: Sessions::default(),
            relays: Relays::default(),
            hub: Hub::default(),
            busy: busy::Busy::default(),
            supervisor_endpoint,
            state_dir,
            started_at_ms: now_ms(),
        })
    }

    pub fn drivers(&self) -> impl Iterator<Item = &Arc<dyn ComputeDriver>> {
        self.drivers.values()
    }

    fn driver(&self, name: &str) -> Result<&Arc<dyn ComputeDriver>> {
        self.drivers.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.drivers.keys().copied().collect();
            GatewayError::InvalidArgument(format!(
                "unknown compute driver `{name}`; this gateway has: {}",
                known.join(", ")
            ))
        })
    }

    /// The sandbox by name or id.
    pub async fn find(&self, name_or_id: &str) -> Result<SandboxRecord> {
        if name_or_id.is_empty() {
            return Err(GatewayError::InvalidArgument("a sandbox name is required".into()));
        }
        self.store
            .get_sandbox(name_or_id)
            .await?
            .ok_or_else(|| GatewayError::NotFound(name_or_id.to_string()))
    }

    /// Read-modify-write of one sandbox. `expected`: the version the caller read (user requests); a
    /// mismatch is a conflict. Without it, concurrent changes are retried (internal transitions).
    /// `change` returns false when nothing needs writing. Phase changes are logged and watchers woken.
    pub async fn mutate(
        &self,
        id: &str,
        expected: Option<u64>,
        change: impl Fn(&mut SandboxRecord) -> bool,
    ) -> Result<SandboxRecord> {
        for _ in 0..32 {
            let current =
                self.store.get_sandbox(id).await?.ok_or_else(|| GatewayError::NotFound(id.into()))?;
            if let Some(v) = expected.filter(|v| *v != current.resource_version) {
                return Err(GatewayError::Conflict(format!(
                    "sandbox `{}` changed since it was read (version {v}, now {}); read it again and retry",
                    current.name, current.resource_version
                )));
            }
            let mut next = current.clone();
            if !change(&mut next) {
                return Ok(current);
            }
            match self.store.update_sandbox(&next, current.resource_version).await {
                Ok(stored) => {
                    if stored.phase != current.phase || stored.phase_reason != current.phase_reason {
                        self.log_phase(&stored).await;
                    }
                    self.hub.notify(id);
                    return Ok(stored);
                }
                Err(StoreError::Conflict { .. }) if expected.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(GatewayError::Conflict(format!("sandbox `{id}` is changing too fast; retry")))
    }

    /// Moves to `phase` with `reason` unless the sandbox is being deleted.
    pub async fn set_phase(&self, id: &str, phase: Phase, reason: String) -> Result<SandboxRecord> {
        self.mutate(id, None, |r| {
            if r.phase == Phase::Deleting || (r.phase == phase && r.phase_reason == reason) {
                return false;
            }
            r.phase = phase;
            r.phase_reason.clone_from(&reason);
            true
        })
        .await
    }

    pub(crate) async fn log_phase(&self, r: &SandboxRecord) {
        let level = if r.phase == Phase::Failed { LogLevel::Error } else { LogLevel::Info };
        let text = format!("phase {}: {}", r.phase.as_str(), r.phase_reason);
        self.append_logs(&r.id, vec![NewLog { time_ms: now_ms(), source: LogSource::Gateway, level, text }])
            .await;
    }

    /// Stores log entries and wakes followers. A store failure is logged, not returned: losing a log line
    /// must not break a session.
    pub async fn append_logs(&self, id: &str, entries: Vec<NewLog>) {
        if entries.is_empty() {
            return;
        }
        match self.store.append_logs(id, &entries).await {
            Ok(_) => self.hub.notify(id),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!("storing {} log entries of {id}: {e}", entries.len()),
        }
    }

    /// The instance the driver started, from the record.
    #[must_use]
    pub fn instance(r: &SandboxRecord) -> Option<Instance> {
        if r.driver_state.is_empty() {
            return None;
        }
        serde_json::from_str(&r.driver_state).ok()
    }
}
