//! The end of a session: what the session loop had not sent, everything still pending, then the last word (AgentExited, or LaunchFailed),
//! then the end of the stream, reconnecting if needed, within a bound.
//!
//! "Delivered" means: our half of the stream was closed after the last message and the gateway then ended
//! its half cleanly. A gateway reads the request stream to its end before it ends the response, so
//! everything before our end was received. When the bound passes first the supervisor exits anyway (the
//! gateway learns from the driver that the process is gone).

use std::time::Duration;

use openshell_proto::supervisor::v1::{Hello, SupervisorMessage};

use super::link::{ConnEvent, Connection, LinkError};
use super::outbox::Outbox;

/// Sends `first`, every pending batch and `last`, closes the stream and waits until the gateway ended it,
/// for at most `within`. Returns whether that happened. A session that fails on the way is replaced
/// (Hello is `hello`) and everything not yet handed to a stream, plus `last`, is sent again; `first`
/// (control messages of the session in place when this is called) only goes on that session: the next
/// Hello supersedes it.
pub async fn deliver_last(
    conn: &mut Connection,
    outbox: &Outbox,
    first: Vec<SupervisorMessage>,
    last: &[SupervisorMessage],
    hello: &Hello,
    within: Duration,
) -> bool {
    let mut first = first;
    let attempt = async {
        loop {
            let Some(tx) = conn.sender() else {
                // Up or Down: either way, look again.
                first.clear();
                let _ = conn.next(|| hello.clone()).await;
                continue;
            };
            let mut sent = true;
            let pending = std::iter::from_fn(|| outbox.take_batch(None));
            for m in first.drain(..).chain(pending).chain(last.iter().cloned()) {
                if tx.send(m).await.is_err() {
                    sent = false;
                    break;
                }
            }
            drop(tx);
            if !sent {
                conn.mark_down();
                continue;
            }
            conn.close_send();
            loop {
                match conn.next(|| hello.clone()).await {
                    // A policy push racing the exit, a heartbeat: nothing to act on any more.
                    ConnEvent::Message(_) => continue,
                    ConnEvent::Down(LinkError::Ended) => return true,
                    ConnEvent::Down(_) | ConnEvent::Up => break,
                }
            }
        }
    };
    match tokio::time::timeout(within, attempt).await {
        Ok(delivered) => delivered,
        Err(_) => {
            tracing::warn!(
                "the gateway did not confirm the end of the session within {within:?}; exiting anyway"
            );
            false
        }
    }
}
