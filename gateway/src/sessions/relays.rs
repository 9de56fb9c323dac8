//! Relays between a user's call (Attach) and the supervisor's Relay stream.
//!
//! The gateway never dials a sandbox: to relay bytes it asks the supervisor, on the session stream, to
//! open a Relay call for a fresh random id, and waits here until that call arrives (or the supervisor
//! refuses, or a bound passes). Only the sandbox the relay was requested for can claim it; an id is used
//! once.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use openshell_proto::supervisor::v1::{RelayDown, RelayUp};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};
use tonic::{Status, Streaming};

use crate::errors::GatewayError;

/// The supervisor's side of a relay, handed to whoever requested it.
pub struct Claimed {
    pub up: Streaming<RelayUp>,
    pub down: mpsc::Sender<Result<RelayDown, Status>>,
}

/// Why a relay did not arrive.
pub type Outcome = Result<Claimed, String>;

struct Pending {
    sandbox_id: String,
    tx: oneshot::Sender<Outcome>,
}

#[derive(Default)]
pub struct Relays {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Relays {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a relay for `sandbox_id`: its id (to send in OpenRelay) and where its stream will come.
    pub fn expect(&self, sandbox_id: &str) -> (String, oneshot::Receiver<Outcome>) {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let relay_id = hex::encode(bytes);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(relay_id.clone(), Pending { sandbox_id: sandbox_id.to_string(), tx });
        (relay_id, rx)
    }

    /// Drops a relay nobody will claim any more (the requester gave up).
    pub fn forget(&self, relay_id: &str) {
        self.lock().remove(relay_id);
    }

    /// The supervisor of `sandbox_id` opened the stream for `relay_id`.
    pub fn claim(&self, sandbox_id: &str, relay_id: &str, claimed: Claimed) -> Result<(), GatewayError> {
        let pending = self.take(sandbox_id, relay_id)?;
        pending
            .tx
            .send(Ok(claimed))
            .map_err(|_| GatewayError::NotFound(format!("relay {relay_id} (its client left)")))
    }

    /// The supervisor of `sandbox_id` cannot serve `relay_id`.
    pub fn refuse(&self, sandbox_id: &str, relay_id: &str, error: String) {
        if let Ok(pending) = self.take(sandbox_id, relay_id) {
            let _ = pending.tx.send(Err(error));
        }
    }

    fn take(&self, sandbox_id: &str, relay_id: &str) -> Result<Pending, GatewayError> {
        let mut map = self.lock();
        let pending =
            map.remove(relay_id).ok_or_else(|| GatewayError::NotFound(format!("relay {relay_id}")))?;
        if pending.sandbox_id != sandbox_id {
            // Another sandbox's relay: it stays claimable by its own sandbox.
            map.insert(relay_id.to_string(), pending);
            return Err(GatewayError::PermissionDenied("this relay belongs to another sandbox".into()));
        }
        Ok(pending)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_requesting_sandbox_can_claim_and_only_once() {
        let relays = Relays::default();
        let (id, mut rx) = relays.expect("sbx-a");
        assert_eq!(id.len(), 32);
        relays.refuse("sbx-b", &id, "nope".into());
        assert!(rx.try_recv().is_err(), "another sandbox cannot refuse it");
        assert!(matches!(relays.take("sbx-b", &id), Err(GatewayError::PermissionDenied(_))));
        assert_eq!(relays.len(), 1);
        relays.refuse("sbx-a", &id, "no terminal".into());
        assert!(matches!(rx.try_recv(), Ok(Err(e)) if e == "no terminal"));
        assert!(matches!(relays.take("sbx-a", &id), Err(GatewayError::NotFound(_))), "used once");
        let (id2, _rx2) = relays.expect("sbx-a");
        assert_ne!(id, id2);
        relays.forget(&id2);
        assert_eq!(relays.len(), 0);
    }
}
