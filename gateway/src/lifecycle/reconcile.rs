//! Desired vs actual state, at start and periodically: sandboxes whose supervisor vanished are marked
//! Failed with the reason, deletions interrupted by a crash are finished, instances the store does not know
//! (orphans) are removed, and exits the driver observed are recorded.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::Gateway;
use crate::drivers::InstanceState;
use crate::model::Phase;

impl Gateway {
    /// One pass. `at_start`: the gateway just started, so no session exists yet and every live instance
    /// is Disconnected until its supervisor reconnects.
    pub async fn reconcile(self: &Arc<Self>, at_start: bool) {
        let records = match self.store.list_sandboxes().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reconcile: listing sandboxes: {e}");
                return;
            }
        };
        let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for record in records {
            // An operation in progress in a request handler finishes the job itself (records the
            // instance, removes the record); judging it half-way would be wrong.
            if self.busy.contains(&record.id) {
                continue;
            }
            if record.phase == Phase::Deleting {
                if let Err(e) = self.finish_delete(&record).await {
                    tracing::warn!("reconcile: finishing the deletion of {}: {e}", record.id);
                }
                continue;
            }
            if !record.phase.expects_process() || self.sessions.is_connected(&record.id) {
                continue;
            }
            let Some(driver) = self.drivers.get(record.spec.driver.as_str()).cloned() else { continue };
            let state = driver.inspect(&record.id, Gateway::instance(&record).as_ref()).await;
            // Re-check: the supervisor may have connected while we looked.
            if self.sessions.is_connected(&record.id) {
                continue;
            }
            let change = match state {
                InstanceState::Running if at_start && record.phase != Phase::Disconnected => Some((
                    Phase::Disconnected,
                    "gateway restarted; waiting for the supervisor to reconnect".to_string(),
                )),
                InstanceState::Running => None,
                InstanceState::Exited { reason } => Some((Phase::Failed, reason)),
                InstanceState::Missing => Some((Phase::Failed, "the sandbox's instance has vanished".into())),
            };
            if let Some((phase, reason)) = change
                && let Err(e) = self.set_phase(&record.id, phase, reason).await
            {
                tracing::debug!("reconcile: {}: {e}", record.id);
            }
        }
        for driver in self.drivers.values() {
            let listed = match driver.list().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!("reconcile: listing instances of driver {}: {e}", driver.name());
                    continue;
                }
            };
            for orphan in listed.into_iter().filter(|i| !known.contains(&i.sandbox_id)) {
                // Re-check against the store: it may have been created since we listed.
                if matches!(self.store.get_sandbox(&orphan.sandbox_id).await, Ok(None)) {
                    tracing::info!("reconcile: removing orphaned instance {}", orphan.sandbox_id);
                    if let Err(e) = driver.delete(&orphan.sandbox_id, None).await {
                        tracing::warn!("reconcile: removing orphan {}: {e}", orphan.sandbox_id);
                    }
                }
            }
        }
    }

    /// Runs the reconciler every `interval` and records exits reported by drivers as they happen.
    pub fn spawn_background(self: &Arc<Self>, interval: Duration) {
        for driver in self.drivers.values() {
            let Some(mut exits) = driver.exits() else { continue };
            let gateway = Arc::clone(self);
            tokio::spawn(async move {
                while let Some(exit) = exits.recv().await {
                    let gateway = Arc::clone(&gateway);
                    tokio::spawn(async move { gateway.on_instance_exit(exit).await });
                }
            });
        }
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                gateway.reconcile(false).await;
            }
        });
    }

    /// A supervisor process this gateway started has ended. Its session (if any) reports the agent's
    /// exit first; give it a moment, then record a failure if a process was still expected.
    async fn on_instance_exit(self: &Arc<Self>, exit: crate::drivers::Exit) {
        let id = exit.sandbox_id.as_str();
        let mut sub = self.hub.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
        while self.sessions.is_connected(id) && tokio::time::Instant::now() < deadline {
            sub.changed(id, Duration::from_millis(50)).await;
        }
        let Ok(Some(record)) = self.store.get_sandbox(id).await else { return };
        // The exit of an instance that was already replaced (start again) says nothing about this one.
        let current =
            Gateway::instance(&record).is_some_and(|i| i.pid == exit.pid && i.start_time == exit.start_time);
        if current
            && record.phase.expects_process()
            && !self.sessions.is_connected(id)
            && let Err(e) = self.set_phase(id, Phase::Failed, exit.reason.clone()).await
        {
            tracing::debug!("recording the exit of {id}: {e}");
        }
    }
}
