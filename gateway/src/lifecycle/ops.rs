//! What users ask for: create, start, stop, delete, new policy revision. Each validates its input before
//! changing anything, and takes the caller's resource version (when given) as a precondition of its first
//! write, so that two clients acting on one sandbox at once get one success and one clean conflict.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openshell_policy::Policy;
use openshell_proto::supervisor::v1::{GatewayMessage, PolicyPush, Stop, gateway_message};

use super::{DEFAULT_STOP_GRACE, Gateway};
use crate::auth;
use crate::drivers::{DriverError, Instance, Provision};
use crate::errors::{GatewayError, Result};
use crate::model::{Phase, PolicyRevisionRecord, SandboxRecord, SandboxSpec, now_ms};
use crate::names;

/// Bounds on what one request may store.
const MAX_ARGS: usize = 4096;
const MAX_ENV: usize = 1024;
const MAX_LABELS: usize = 64;
const MAX_VALUE: usize = 64 * 1024;
const MAX_POLICY: usize = 1024 * 1024;

pub struct CreateRequest {
    pub name: String,
    pub spec: SandboxSpec,
    pub policy_yaml: String,
}

/// Another request is deleting the sandbox: for the caller this is a lost race, like any conflict.
fn being_deleted(name: &str) -> GatewayError {
    GatewayError::Conflict(format!("sandbox `{name}` is being deleted by another request"))
}

fn invalid(msg: impl Into<String>) -> GatewayError {
    GatewayError::InvalidArgument(msg.into())
}

/// Parses and validates a policy; the error lists every problem with its field path and line.
pub fn validate_policy(yaml: &str) -> Result<()> {
    if yaml.len() > MAX_POLICY {
        return Err(invalid(format!("policy is {} bytes; at most {MAX_POLICY}", yaml.len())));
    }
    Policy::from_yaml(yaml).map(|_| ()).map_err(|errors| invalid(format!("invalid policy:\n{errors}")))
}

fn validate_spec(spec: &mut SandboxSpec) -> Result<()> {
    if spec.command.is_empty() {
        return Err(invalid("spec.command: a command is required"));
    }
    if spec.command.len() > MAX_ARGS || spec.command.iter().any(|a| a.len() > MAX_VALUE) {
        return Err(invalid(format!("spec.command: at most {MAX_ARGS} arguments of {MAX_VALUE} bytes")));
    }
    if spec.command.iter().any(|a| a.contains('\0')) || spec.command[0].is_empty() {
        return Err(invalid(
            "spec.command: arguments must not contain NUL and the program must not be empty",
        ));
    }
    if spec.env.len() > MAX_ENV {
        return Err(invalid(format!("spec.env: at most {MAX_ENV} variables")));
    }
    for (k, v) in &spec.env {
        names::validate_env_name(k).map_err(|e| invalid(format!("spec.env: {e}")))?;
        if v.contains('\0') || v.len() > MAX_VALUE {
            return Err(invalid(format!(
                "spec.env.{k}: value contains NUL or is longer than {MAX_VALUE} bytes"
            )));
        }
    }
    if spec.labels.len() > MAX_LABELS {
        return Err(invalid(format!("spec.labels: at most {MAX_LABELS} labels")));
    }
    for (k, v) in &spec.labels {
        let ok_key = !k.is_empty()
            && k.len() <= 63
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !ok_key || v.len() > 253 || v.chars().any(char::is_control) {
            return Err(invalid(format!(
                "spec.labels: `{}` is not a valid label (key: 1-63 of [A-Za-z0-9-_./]; value: at most 253 printable characters)",
                k.escape_debug()
            )));
        }
    }
    for (field, path) in [("workdir", &spec.workdir), ("rootfs", &spec.rootfs)] {
        if let Some(p) = path {
            let p = std::path::Path::new(p);
            let normal = p.components().all(|c| !matches!(c, std::path::Component::ParentDir));
            if !p.is_absolute() || !normal {
                return Err(invalid(format!(
                    "spec.{field}: `{}` must be an absolute path without `..`",
                    p.display()
                )));
            }
        }
    }
    if let Some(root) = &spec.rootfs {
        let root = std::path::Path::new(root);
        if !root.join("bin").exists() && !root.join("usr").exists() {
            return Err(invalid(format!(
                "spec.rootfs: {} is not a root filesystem (no /bin or /usr)",
                root.display()
            )));
        }
    }
    if spec.driver.is_empty() {
        spec.driver = "local".into();
    }
    Ok(())
}

impl Gateway {
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<SandboxRecord> {
        let CreateRequest { name, mut spec, policy_yaml } = req;
        let name = if name.is_empty() { names::generate_name() } else { name };
        names::validate_name(&name).map_err(invalid)?;
        validate_spec(&mut spec)?;
        let policy_yaml = if policy_yaml.trim().is_empty() {
            openshell_policy::DEFAULT_POLICY_YAML.to_string()
        } else {
            policy_yaml
        };
        validate_policy(&policy_yaml)?;
        let driver = self.driver(&spec.driver)?.clone();

        let secret = auth::new_secret();
        let now = now_ms();
        let id = names::generate_id();
        let _busy = self.busy.claim(&id);
        let record = SandboxRecord {
            id,
            name,
            spec: spec.clone(),
            phase: Phase::Provisioning,
            phase_reason: "creating".into(),
            resource_version: 1,
            policy_revision: 1,
            acked_policy_revision: 0,
            exit_code: None,
            created_at_ms: now,
            updated_at_ms: now,
            last_seen_ms: 0,
            secret_hash: auth::secret_hash(&secret),
            driver_state: String::new(),
            enforcement_json: String::new(),
        };
        self.store.create_sandbox(&record, &policy_yaml).await?;
        self.log_phase(&record).await;
        self.hub.notify(&record.id);
        let provision = Provision {
            sandbox_id: record.id.clone(),
            spec,
            secret,
            gateway_endpoint: self.supervisor_endpoint.clone(),
        };
        match driver.create(&provision).await {
            Err(DriverError::InvalidSpec(msg)) => {
                // Nothing was started: leave no trace of the request.
                let _ = self.store.delete_sandbox(&record.id, record.resource_version).await;
                self.hub.notify(&record.id);
                Err(invalid(msg))
            }
            started => self.record_start(&record.id, started, "creating").await,
        }
    }

    /// After a create or start: stores the instance the driver started (so that it can be found again
    /// after a restart), or records why it could not start.
    async fn record_start(
        &self,
        id: &str,
        started: std::result::Result<Instance, DriverError>,
        claimed_reason: &str,
    ) -> Result<SandboxRecord> {
        match started {
            Ok(instance) => {
                let state = serde_json::to_string(&instance).unwrap_or_default();
                self.mutate(id, None, |r| {
                    r.driver_state.clone_from(&state);
                    if r.phase_reason == claimed_reason {
                        r.phase_reason = "supervisor starting".into();
                    }
                    true
                })
                .await
            }
            Err(e) => self.set_phase(id, Phase::Failed, format!("the driver could not start it: {e}")).await,
        }
    }

    pub async fn start(self: &Arc<Self>, name: &str, expected: Option<u64>) -> Result<SandboxRecord> {
        let record = self.find(name).await?;
        let _busy = self.busy.claim(&record.id);
        let expected = Some(expected.unwrap_or(record.resource_version));
        match record.phase {
            Phase::Stopped | Phase::Failed | Phase::Disconnected => {}
            Phase::Provisioning | Phase::Ready => {
                return Err(GatewayError::WrongPhase(format!(
                    "sandbox `{}` is already running",
                    record.name
                )));
            }
            Phase::Deleting => {
                return Err(being_deleted(&record.name));
            }
        }
        let driver = self.driver(&record.spec.driver)?.clone();
        let secret = auth::new_secret();
        let hash = auth::secret_hash(&secret);
        // The conditional write claims the start; a concurrent start or stop gets a conflict here.
        let claimed = self
            .mutate(&record.id, expected, |r| {
                r.phase = Phase::Provisioning;
                r.phase_reason = "starting".into();
                r.secret_hash.clone_from(&hash);
                r.exit_code = None;
                r.acked_policy_revision = 0;
                r.enforcement_json.clear();
                true
            })
            .await?;
        // A disconnected or failed instance may still have processes: the new one replaces them.
        self.sessions.remove(&record.id);
        let old = Gateway::instance(&claimed);
        if let Err(e) = driver.stop(&record.id, old.as_ref(), Duration::from_millis(500)).await {
            tracing::warn!("stopping the old instance of {}: {e}", record.id);
        }
        let provision = Provision {
            sandbox_id: record.id.clone(),
            spec: record.spec.clone(),
            secret,
            gateway_endpoint: self.supervisor_endpoint.clone(),
        };
        let started = driver.start(&provision).await;
        self.record_start(&record.id, started, "starting").await
    }

    pub async fn stop(
        self: &Arc<Self>,
        name: &str,
        expected: Option<u64>,
        grace: Option<Duration>,
    ) -> Result<SandboxRecord> {
        let record = self.find(name).await?;
        let _busy = self.busy.claim(&record.id);
        let expected = Some(expected.unwrap_or(record.resource_version));
        match record.phase {
            Phase::Stopped => return Ok(record),
            Phase::Deleting => {
                return Err(being_deleted(&record.name));
            }
            Phase::Provisioning | Phase::Ready | Phase::Disconnected | Phase::Failed => {}
        }
        let grace = grace.unwrap_or(DEFAULT_STOP_GRACE);
        let claimed = self
            .mutate(&record.id, expected, |r| {
                r.phase_reason = "stopping (requested by the user)".into();
                true
            })
            .await?;
        let grace_ms = u32::try_from(grace.as_millis()).unwrap_or(u32::MAX);
        let asked = self
            .sessions
            .send(&record.id, GatewayMessage { msg: Some(gateway_message::Msg::Stop(Stop { grace_ms })) });
        if asked {
            // The supervisor reports the agent's exit and ends its session; wait for that (bounded).
            let deadline = Instant::now() + grace + Duration::from_secs(2);
            let mut sub = self.hub.subscribe();
            while self.sessions.is_connected(&record.id) && Instant::now() < deadline {
                sub.changed(&record.id, Duration::from_millis(100)).await;
            }
        }
        let driver = self.driver(&record.spec.driver)?.clone();
        let instance = Gateway::instance(&claimed);
        driver.stop(&record.id, instance.as_ref(), grace).await?;
        self.sessions.remove(&record.id);
        let stopped = self
            .mutate(&record.id, None, |r| {
                if r.phase == Phase::Deleting {
                    return false;
                }
                r.phase = Phase::Stopped;
                r.phase_reason = match r.exit_code {
                    Some(code) => format!("stopped by the user (agent exited with status {code})"),
                    None => "stopped by the user".into(),
                };
                true
            })
            .await?;
        if stopped.phase == Phase::Deleting {
            return Err(being_deleted(&stopped.name));
        }
        Ok(stopped)
    }

    pub async fn delete(self: &Arc<Self>, name: &str, expected: Option<u64>) -> Result<String> {
        let record = self.find(name).await?;
        let _busy = self.busy.claim(&record.id);
        let expected = Some(expected.unwrap_or(record.resource_version));
        let claimed = self
            .mutate(&record.id, expected, |r| {
                r.phase = Phase::Deleting;
                r.phase_reason = "deleting (requested by the user)".into();
                true
            })
            .await?;
        self.finish_delete(&claimed).await?;
        Ok(record.id)
    }

    /// Removes the instance and then the record. Also used by the reconciler for sandboxes left in
    /// `Deleting` by a gateway that died mid-way.
    pub async fn finish_delete(&self, record: &SandboxRecord) -> Result<()> {
        self.sessions.remove(&record.id);
        let driver = self.driver(&record.spec.driver)?.clone();
        driver.delete(&record.id, Gateway::instance(record).as_ref()).await?;
        // Late messages from the dying session may still bump the version: retry on conflict.
        for _ in 0..16 {
            let Some(current) = self.store.get_sandbox(&record.id).await? else { break };
            match self.store.delete_sandbox(&current.id, current.resource_version).await {
                // NotFound: a concurrent finisher (the reconciler) removed it first; the goal is met.
                Ok(()) | Err(crate::store::StoreError::NotFound(_)) => break,
                Err(crate::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        self.hub.notify(&record.id);
        Ok(())
    }

    pub async fn update_policy(
        self: &Arc<Self>,
        name: &str,
        yaml: &str,
        expected: Option<u64>,
    ) -> Result<PolicyRevisionRecord> {
        validate_policy(yaml)?;
        let record = self.find(name).await?;
        if record.phase == Phase::Deleting {
            return Err(being_deleted(&record.name));
        }
        let mut version = expected.unwrap_or(record.resource_version);
        let (revision, _) = loop {
            match self.store.add_policy_revision(&record.id, yaml, version).await {
                Ok(done) => break done,
                Err(crate::store::StoreError::Conflict { found, .. }) if expected.is_none() => {
                    version = found
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.hub.notify(&record.id);
        let push = PolicyPush { revision: revision.revision, yaml: revision.yaml.clone() };
        self.sessions.send(&record.id, GatewayMessage { msg: Some(gateway_message::Msg::Policy(push)) });
        Ok(revision)
    }

    /// Labels filter for list.
    pub async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<SandboxRecord>> {
        let all = self.store.list_sandboxes().await?;
        Ok(all.into_iter().filter(|r| labels.iter().all(|(k, v)| r.spec.labels.get(k) == Some(v))).collect())
    }
}
