//! Network policy reload on SIGHUP (standalone mode).
//!
//! Only `network_policies` is dynamic. A file that fails to parse keeps the last good generation and says
//! why in a `config` event; a file whose static sections changed is applied for its network part only, and
//! the event says that the rest needs a new sandbox. Ports that the new generation names are opened as
//! capture listeners in the agent's netns by sandbox init.

use std::path::PathBuf;
use std::sync::Arc;

use openshell_egress::Egress;
use openshell_egress::events::{Event, EventDecision, EventKind, EventSink};
use openshell_policy::{NetworkEngine, Policy};
use tokio::sync::Mutex;

use crate::launch::Control;

pub struct Reloader {
    path: PathBuf,
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
        (path, root): (PathBuf, PathBuf),
        policy: Arc<Policy>,
        generation: u64,
        control: Control,
        events: EventSink,
        sandbox_id: String,
    ) -> Self {
        Reloader { path, root, control, events, sandbox_id, state: Mutex::new(State { policy, generation }) }
    }

    pub async fn reload(&self, egress: &Egress) {
        let mut state = self.state.lock().await;
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) => return self.rejected(&state, format!("cannot read {}: {e}", self.path.display())),
        };
        let new = match Policy::from_yaml(&text) {
            Ok(p) => Arc::new(crate::binaries::with_resolved_binaries(p, &self.root)),
            Err(errors) => return self.rejected(&state, errors.to_string()),
        };
        let generation = state.generation + 1;
        let engine = match NetworkEngine::new(new.clone(), generation) {
            Ok(e) => Arc::new(e),
            Err(e) => return self.rejected(&state, e.to_string()),
        };
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
    }

    fn rejected(&self, state: &State, why: String) {
        let mut event =
            Event::new(&self.sandbox_id, EventKind::Config, EventDecision::Deny).with_detail("error", why);
        event.reason = Some("invalid_policy".into());
        event.generation = Some(state.generation);
        self.events.emit(event);
    }
}
