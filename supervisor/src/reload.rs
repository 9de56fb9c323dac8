//! Network policy reload: from a new policy text to a new generation of network decisions.
//!
//! Both modes use it: standalone mode reads the policy file again on SIGHUP ([`Reloader::reload_file`]),
//! gateway-driven mode applies the text of a `PolicyPush` ([`Reloader::apply`]). Only `network_policies`
//! is dynamic. A text that fails to parse or compile keeps the last good generation and says why (the
//! error, and a `config` event); a policy whose static sections changed is applied for its network part
//! only, and the event says that the rest needs a new sandbox. Ports that the new generation names are
//! opened as capture listeners in the agent's netns by sandbox init.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openshell_egress::Egress;
use openshell_egress::events::{Event, EventDecision, EventKind, EventSink};
use openshell_policy::{EngineError, NetworkEngine, Policy, PolicyErrors};
use tokio::sync::Mutex;

use crate::launch::Control;

/// Why a new policy was refused; the last good generation stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy")]
    Invalid(#[source] PolicyErrors),
    #[error("the network policy does not compile")]
    Compile(#[source] EngineError),
}

pub struct Reloader {
    /// The sandbox's root filesystem, where symlinked binaries are resolved.
    root: PathBuf,
    control: Control,
    events: EventSink,
    sandbox_id: String,
    state: Mutex<State>,
}

struct State {
    policy: Arc<Policy>,
    generation: u64,
}

impl Reloader {
    pub fn new(
        root: PathBuf,
        (policy, generation): (Arc<Policy>, u64),
        control: Control,
        events: EventSink,
        sandbox_id: String,
    ) -> Self {
        Reloader { root, control, events, sandbox_id, state: Mutex::new(State { policy, generation }) }
    }

    /// Reads `path` and applies it (standalone mode, SIGHUP).
    pub async fn reload_file(&self, egress: &Egress, path: &Path) -> Result<u64, ReloadError> {
        match tokio::fs::read_to_string(path).await {
            Ok(text) => self.apply(egress, &text).await,
            Err(source) => {
                let state = self.state.lock().await;
                let error = ReloadError::Read { path: path.to_path_buf(), source };
                self.rejected(&state, &error);
                Err(error)
            }
        }
    }

    /// Applies the network part of the policy in `text` and returns the new generation. Concurrent calls
    /// are applied one after the other.
    pub async fn apply(&self, egress: &Egress, text: &str) -> Result<u64, ReloadError> {
        let mut state = self.state.lock().await;
        let compiled = Policy::from_yaml(text)
            .map_err(ReloadError::Invalid)
            .map(|p| Arc::new(crate::binaries::with_resolved_binaries(p, &self.root)))
            .and_then(|new| {
                let engine =
                    NetworkEngine::new(new.clone(), state.generation + 1).map_err(ReloadError::Compile)?;
                Ok((new, Arc::new(engine)))
            });
        let (new, engine) = match compiled {
            Ok(c) => c,
            Err(error) => {
                self.rejected(&state, &error);
                return Err(error);
            }
        };
        let generation = engine.generation();
        let old_ports = state.policy.network_ports();
        for port in new.network_ports().difference(&old_ports) {
            let opened =
                self.control.open_capture_port(*port).map_err(|e| e.to_string()).and_then(|listeners| {
                    egress.add_capture_listeners(*port, listeners).map_err(|e| e.to_string())
                });
            if let Err(e) = opened {
                tracing::warn!("opening a capture listener for port {port}: {e}");
            }
        }
        let static_changed = new.filesystem != state.policy.filesystem
            || new.landlock != state.policy.landlock
            || new.process != state.policy.process;
        let closed = egress.reload(engine);
        let mut event = Event::new(&self.sandbox_id, EventKind::Config, EventDecision::Info)
            .with_detail("tunnels_closed", closed);
        event.reason = Some("policy_reloaded".into());
        event.generation = Some(generation);
        if static_changed {
            event = event.with_detail(
                "ignored",
                "filesystem_policy, landlock and process are static: they apply when the sandbox is recreated",
            );
        }
        self.events.emit(event);
        *state = State { policy: new, generation };
        Ok(generation)
    }

    fn rejected(&self, state: &State, error: &ReloadError) {
        let mut event = Event::new(&self.sandbox_id, EventKind::Config, EventDecision::Deny)
            .with_detail("error", crate::error_chain(error));
        event.reason = Some("invalid_policy".into());
        event.generation = Some(state.generation);
        self.events.emit(event);
    }
}
