//! Change notifications: "something about sandbox X changed" (record, session, logs). Readers re-read
//! the store; a lagging reader simply re-reads, so nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { tx: broadcast::channel(4096).0 }
    }
}

impl Hub {
    pub fn notify(&self, sandbox_id: &str) {
        let _ = self.tx.send(Arc::from(sandbox_id));
    }

    #[must_use]
    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.tx.subscribe() }
    }
}

pub struct Subscription {
    rx: broadcast::Receiver<Arc<str>>,
}

impl Subscription {
    /// Waits until sandbox `id` may have changed, or `max` passed. Returns false when the hub is gone.
    pub async fn changed(&mut self, id: &str, max: Duration) -> bool {
        let wait = async {
            loop {
                match self.rx.recv().await {
                    Ok(changed) if &*changed == id => return true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return true,
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::time::timeout(max, wait).await.unwrap_or(true)
    }
}
