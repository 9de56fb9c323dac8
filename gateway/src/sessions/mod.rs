//! Connected supervisor sessions, by sandbox id. At most one per sandbox: a new session replaces the
//! old one (whose outbound channel is dropped, ending its stream).

pub mod relays;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use openshell_proto::supervisor::v1::GatewayMessage;
use tokio::sync::mpsc;

pub type Outbound = mpsc::Sender<Result<GatewayMessage, tonic::Status>>;

struct Entry {
    session_id: u64,
    tx: Outbound,
    agent_running: bool,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session and returns its id; an older session of the same sandbox is dropped.
    pub fn register(&self, sandbox_id: &str, tx: Outbound, agent_running: bool) -> u64 {
        let session_id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(sandbox_id.to_string(), Entry { session_id, tx, agent_running });
        session_id
    }

    /// Removes the session if it is still the current one for the sandbox. Returns whether it was.
    pub fn unregister(&self, sandbox_id: &str, session_id: u64) -> bool {
        let mut map = self.lock();
        if map.get(sandbox_id).is_some_and(|e| e.session_id == session_id) {
            map.remove(sandbox_id);
            true
        } else {
            false
        }
    }

    /// Drops the sandbox's session whatever it is (deletion).
    pub fn remove(&self, sandbox_id: &str) {
        self.lock().remove(sandbox_id);
    }

    #[must_use]
    pub fn is_connected(&self, sandbox_id: &str) -> bool {
        self.lock().contains_key(sandbox_id)
    }

    #[must_use]
    pub fn is_current(&self, sandbox_id: &str, session_id: u64) -> bool {
        self.lock().get(sandbox_id).is_some_and(|e| e.session_id == session_id)
    }

    #[must_use]
    pub fn agent_running(&self, sandbox_id: &str) -> bool {
        self.lock().get(sandbox_id).is_some_and(|e| e.agent_running)
    }

    pub fn set_agent_running(&self, sandbox_id: &str, session_id: u64, running: bool) {
        if let Some(e) = self.lock().get_mut(sandbox_id).filter(|e| e.session_id == session_id) {
            e.agent_running = running;
        }
    }

    #[must_use]
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Queues a message for the sandbox's supervisor. False when it is not connected or its queue is full
    /// (a stuck session; the heartbeat timeout will end it).
    pub fn send(&self, sandbox_id: &str, msg: GatewayMessage) -> bool {
        let tx = self.lock().get(sandbox_id).map(|e| e.tx.clone());
        tx.is_some_and(|tx| tx.try_send(Ok(msg)).is_ok())
    }
}
