//! Compute drivers: where and how a sandbox's supervisor runs. The gateway talks to every driver through
//! [`ComputeDriver`]; `local` (this module's [`local::LocalDriver`]) runs the supervisor directly on this
//! host. Docker and Kubernetes drivers will implement the same trait.
//!
//! A driver knows processes/containers, not phases: the lifecycle code decides phases from what drivers
//! report (`inspect`, `list`, exit notifications) and from the supervisor's session.

pub mod local;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::model::SandboxSpec;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("driver `{0}` is not available: {1}")]
    Unavailable(String, String),
    #[error("{0}")]
    Io(String),
}

/// Everything a driver needs to start (or start again) a sandbox's supervisor.
#[derive(Clone)]
pub struct Provision {
    pub sandbox_id: String,
    pub spec: SandboxSpec,
    /// The session secret for this start. Handed to the supervisor outside the agent's reach (local: an
    /// inherited pipe); never written to disk, argv or environment.
    pub secret: String,
    /// Where the supervisor dials the gateway, e.g. `unix:///state/gateway.sock`.
    pub gateway_endpoint: String,
}

impl std::fmt::Debug for Provision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provision")
            .field("sandbox_id", &self.sandbox_id)
            .field("spec", &self.spec)
            .field("secret", &"<redacted>")
            .field("gateway_endpoint", &self.gateway_endpoint)
            .finish()
    }
}

/// A started instance, as the gateway stores it (`driver_state`) to find it again after a restart.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// Host pid of the supervisor (local driver).
    pub pid: u32,
    /// Start time of that pid (`/proc/PID/stat` field 22), so that a reused pid is not mistaken for it.
    pub start_time: u64,
    /// The agent's working directory on the host.
    pub workdir: PathBuf,
    /// Host paths the agent must not see (the gateway's state directory).
    pub hidden_paths: Vec<PathBuf>,
}

/// What a driver sees of an instance now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    Running,
    /// It ran and is gone; why, in words (e.g. "supervisor killed by signal 9").
    Exited {
        reason: String,
    },
    /// The driver knows nothing of it.
    Missing,
}

/// An instance the driver found, for reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedInstance {
    pub sandbox_id: String,
    pub running: bool,
}

/// Sent when an instance the driver started ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub sandbox_id: String,
    /// Which instance ended (a sandbox started again has a new one; the old one's exit is stale).
    pub pid: u32,
    pub start_time: u64,
    pub reason: String,
}

#[async_trait]
pub trait ComputeDriver: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Whether the driver can run sandboxes here, and what it runs on (or why not).
    async fn status(&self) -> (bool, String);

    /// Prepares the instance's state (first start) and starts the supervisor.
    async fn create(&self, p: &Provision) -> Result<Instance, DriverError>;

    /// Starts the supervisor again for an existing sandbox (its state is kept).
    async fn start(&self, p: &Provision) -> Result<Instance, DriverError>;

    /// Makes sure the supervisor and everything in the sandbox are gone: SIGTERM, then SIGKILL after
    /// `grace`. The gateway asks the supervisor to stop over its session first; this is the backstop.
    async fn stop(
        &self,
        sandbox_id: &str,
        instance: Option<&Instance>,
        grace: Duration,
    ) -> Result<(), DriverError>;

    /// Stops at once (SIGKILL) and removes the instance's state (including the default workdir).
    async fn delete(&self, sandbox_id: &str, instance: Option<&Instance>) -> Result<(), DriverError>;

    async fn inspect(&self, sandbox_id: &str, instance: Option<&Instance>) -> InstanceState;

    /// Every instance the driver has state for.
    async fn list(&self) -> Result<Vec<ListedInstance>, DriverError>;

    /// Exit notifications for instances this driver process started (not those rediscovered after a
    /// restart: the reconciler and the session cover those). Called once.
    fn exits(&self) -> Option<mpsc::UnboundedReceiver<Exit>>;
}
