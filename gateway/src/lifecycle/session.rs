//! What supervisors report over their session, turned into phases, logs and acknowledgements.
//! Ready = the session is up, the agent runs, and the current policy revision is acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openshell_proto::supervisor::v1::{
    AgentExited, AgentStarted, EventBatch, GatewayMessage, Hello, LaunchSpec, LogBatch, PolicyAck,
    PolicyPush, Stream as LogStream, Welcome, gateway_message,
};

use super::{Gateway, HEARTBEAT_INTERVAL};
use crate::errors::{GatewayError, Result};
use crate::model::{LogLevel, LogSource, NewLog, Phase, now_ms};
use crate::sessions::Outbound;

/// How long a new session waits for the driver to have recorded the instance (it races the spawn).
const INSTANCE_WAIT: Duration = Duration::from_secs(10);

fn ready_reason(revision: u64) -> String {
    format!("agent running; policy revision {revision} applied")
}

impl Gateway {
    /// A supervisor said hello: register its session, answer Welcome (and the desired policy when it
    /// does not have it), and move the phase. Returns the session id.
    pub async fn session_opened(self: &Arc<Self>, id: &str, hello: &Hello, tx: Outbound) -> Result<u64> {
        let record = self.wait_for_instance(id).await?;
        if record.phase == Phase::Deleting {
            return Err(GatewayError::WrongPhase("this sandbox is being deleted".into()));
        }
        let instance = Gateway::instance(&record);
        let launch = instance.as_ref().map(|i| LaunchSpec {
            command: record.spec.command.clone(),
            workdir: i.workdir.display().to_string(),
            rootfs: record.spec.rootfs.clone().unwrap_or_default(),
            env: record.spec.env.clone().into_iter().collect(),
            hidden_paths: i.hidden_paths.iter().map(|p| p.display().to_string()).collect(),
            chown_workdir: record.spec.workdir.is_none(),
            tty: record.spec.tty,
        });
        let heartbeat_interval_ms = u32::try_from(HEARTBEAT_INTERVAL.as_millis()).unwrap_or(5000);
        let session_id = self.sessions.register(id, tx.clone(), hello.agent_running);
        let welcome = Welcome { session_id: session_id.to_string(), heartbeat_interval_ms, launch };
        let mut out = vec![gateway_message::Msg::Welcome(welcome)];
        if hello.loaded_policy_revision != record.policy_revision {
            let rev = self.store.get_policy_revision(id, record.policy_revision).await?;
            if let Some(rev) = rev {
                out.push(gateway_message::Msg::Policy(PolicyPush { revision: rev.revision, yaml: rev.yaml }));
            }
        }
        for msg in out {
            if tx.send(Ok(GatewayMessage { msg: Some(msg) })).await.is_err() {
                return Err(GatewayError::Unavailable("the supervisor went away".into()));
            }
        }
        let now = now_ms();
        let running = hello.agent_running;
        let loaded = hello.loaded_policy_revision;
        let enforcement = hello.enforcement_json.clone();
        self.mutate(id, None, move |r| {
            r.last_seen_ms = now;
            if r.phase == Phase::Deleting {
                return true;
            }
            if running {
                r.acked_policy_revision = loaded;
                if !enforcement.is_empty() {
                    r.enforcement_json.clone_from(&enforcement);
                }
                if loaded == r.policy_revision {
                    r.phase = Phase::Ready;
                    r.phase_reason = format!("supervisor reconnected; {}", ready_reason(loaded));
                } else {
                    r.phase = Phase::Provisioning;
                    r.phase_reason =
                        format!("supervisor reconnected; applying policy revision {}", r.policy_revision);
                }
            } else {
                r.phase = Phase::Provisioning;
                r.phase_reason = "supervisor connected; launching the agent".into();
            }
            true
        })
        .await?;
        Ok(session_id)
    }

    async fn wait_for_instance(&self, id: &str) -> Result<crate::model::SandboxRecord> {
        let deadline = Instant::now() + INSTANCE_WAIT;
        let mut sub = self.hub.subscribe();
        loop {
            let record = self.find(id).await?;
            if !record.driver_state.is_empty() || Instant::now() >= deadline {
                return Ok(record);
            }
            sub.changed(id, Duration::from_millis(50)).await;
        }
    }

    pub async fn on_ack(&self, id: &str, ack: &PolicyAck) -> Result<()> {
        if !ack.ok {
            let text = format!(
                "policy revision {} refused by the supervisor: {}; the last good revision stays in force",
                ack.revision, ack.error
            );
            let entry =
                NewLog { time_ms: now_ms(), source: LogSource::Gateway, level: LogLevel::Error, text };
            self.append_logs(id, vec![entry]).await;
            return Ok(());
        }
        let running = self.sessions.agent_running(id);
        let revision = ack.revision;
        self.mutate(id, None, |r| {
            if r.acked_policy_revision == revision && (r.phase == Phase::Ready || !running) {
                return false;
            }
            r.acked_policy_revision = revision;
            if running
                && revision == r.policy_revision
                && matches!(r.phase, Phase::Provisioning | Phase::Disconnected)
            {
                r.phase = Phase::Ready;
                r.phase_reason = ready_reason(revision);
            }
            true
        })
        .await?;
        Ok(())
    }

    pub async fn on_started(&self, id: &str, session_id: u64, started: &AgentStarted) -> Result<()> {
        self.sessions.set_agent_running(id, session_id, true);
        let enforcement = started.enforcement_json.clone();
        self.mutate(id, None, |r| {
            r.enforcement_json.clone_from(&enforcement);
            if r.acked_policy_revision == r.policy_revision && r.phase == Phase::Provisioning {
                r.phase = Phase::Ready;
                r.phase_reason = ready_reason(r.policy_revision);
            }
            true
        })
        .await?;
        Ok(())
    }

    pub async fn on_exited(&self, id: &str, session_id: u64, exited: &AgentExited) -> Result<()> {
        self.sessions.set_agent_running(id, session_id, false);
        let code = exited.exit_code;
        self.mutate(id, None, |r| {
            if r.phase == Phase::Deleting {
                return false;
            }
            r.exit_code = Some(code);
            r.phase = Phase::Stopped;
            r.phase_reason = if r.phase_reason.starts_with("stopping") {
                format!("stopped by the user (agent exited with status {code})")
            } else {
                format!("agent exited with status {code}")
            };
            true
        })
        .await?;
        Ok(())
    }

    pub async fn on_launch_failed(&self, id: &str, error: &str) -> Result<()> {
        let reason = if error.starts_with("the sandbox could not be started") {
            error.to_string()
        } else {
            format!("the sandbox could not be started: {error}")
        };
        self.set_phase(id, Phase::Failed, reason).await?;
        Ok(())
    }

    pub async fn on_logs(&self, id: &str, batch: LogBatch) {
        let mut entries: Vec<NewLog> = batch
            .lines
            .into_iter()
            .map(|l| NewLog {
                time_ms: if l.time_ms > 0 { l.time_ms } else { now_ms() },
                source: if l.stream == LogStream::Stderr as i32 {
                    LogSource::Stderr
                } else {
                    LogSource::Stdout
                },
                level: LogLevel::Info,
                text: l.text,
            })
            .collect();
        if batch.dropped > 0 {
            entries.push(dropped_note(batch.dropped, "output lines"));
        }
        self.append_logs(id, entries).await;
    }

    pub async fn on_events(&self, id: &str, batch: EventBatch) {
        let mut entries: Vec<NewLog> = batch
            .events_json
            .into_iter()
            .map(|text| NewLog {
                time_ms: now_ms(),
                source: LogSource::Event,
                level: event_level(&text),
                text,
            })
            .collect();
        if batch.dropped > 0 {
            entries.push(dropped_note(batch.dropped, "security events"));
        }
        self.append_logs(id, entries).await;
    }

    pub async fn on_heartbeat(&self, id: &str) {
        if let Err(e) = self.store.touch_last_seen(id, now_ms()).await {
            tracing::debug!("recording last-seen of {id}: {e}");
        }
    }

    /// The session ended. If it was the current one and a process is expected, find out whether the
    /// supervisor is still alive (Disconnected, it will reconnect) or gone (Failed, with why).
    pub async fn session_closed(self: &Arc<Self>, id: &str, session_id: u64) {
        if !self.sessions.unregister(id, session_id) {
            return;
        }
        self.hub.notify(id);
        let Ok(Some(record)) = self.store.get_sandbox(id).await else { return };
        if !record.phase.expects_process() {
            return;
        }
        let Some(driver) = self.drivers.get(record.spec.driver.as_str()).cloned() else { return };
        let instance = Gateway::instance(&record);
        // A supervisor that was killed may still be a zombie for a moment: give its reaper a chance.
        let deadline = Instant::now() + Duration::from_millis(500);
        let state = loop {
            let state = driver.inspect(id, instance.as_ref()).await;
            if state != crate::drivers::InstanceState::Running || Instant::now() >= deadline {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if self.sessions.is_connected(id) {
            return; // it reconnected meanwhile
        }
        let result = match state {
            crate::drivers::InstanceState::Running => {
                self.set_phase(
                    id,
                    Phase::Disconnected,
                    "supervisor session lost; the agent keeps running under its last policy".into(),
                )
                .await
            }
            crate::drivers::InstanceState::Exited { reason } => {
                self.set_phase(id, Phase::Failed, reason).await
            }
            crate::drivers::InstanceState::Missing => {
                self.set_phase(id, Phase::Failed, "the supervisor's instance is missing".into()).await
            }
        };
        if let Err(e) = result {
            tracing::debug!("recording the end of the session of {id}: {e}");
        }
    }
}

fn dropped_note(n: u64, what: &str) -> NewLog {
    NewLog {
        time_ms: now_ms(),
        source: LogSource::Gateway,
        level: LogLevel::Warn,
        text: format!("the supervisor dropped {n} {what} while the gateway was unreachable"),
    }
}

/// Denials are warnings; degraded enforcement (severity high) is an error; the rest is information.
fn event_level(json: &str) -> LogLevel {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { return LogLevel::Info };
    let severity = v.pointer("/detail/severity").and_then(|s| s.as_str());
    match (v.get("decision").and_then(|d| d.as_str()), severity) {
        (_, Some("high")) => LogLevel::Error,
        (Some("deny"), _) => LogLevel::Warn,
        (Some("audit"), _) => LogLevel::Warn,
        _ => LogLevel::Info,
    }
}
