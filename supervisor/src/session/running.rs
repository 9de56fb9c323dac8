//! The session while the agent runs: one loop that serves the gateway's messages (policy pushes, Stop),
//! sends control messages and batches, reconnects, forwards signals, and ends when the agent exits.
//!
//! Nothing here waits for the gateway: while it is unreachable the agent keeps running under the last
//! good policy, events and output lines wait in the bounded outbox, and control messages of a lost
//! session are dropped (the next Hello tells the gateway the revision in force, whether the agent runs
//! and the enforcement report; it pushes again what it still wants).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use openshell_proto::supervisor::v1::{
    AgentStarted, Hello, PolicyAck, PolicyPush, SupervisorMessage, gateway_message, supervisor_message,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{ConnEvent, Connection};
use super::outbox::{EventPump, Outbox};
use super::terminal::Terminal;
use super::{Signals, msg, relay};
use crate::sandbox::{Sandbox, StartError};

/// After SIGKILL was asked of sandbox init for the agent, how long before init itself is killed.
const KILL_INIT_AFTER: Duration = Duration::from_secs(2);

/// What the loop works with.
pub struct Ctx<'a> {
    pub conn: &'a mut Connection,
    /// The agent's terminal (`tty` launches), served to OpenRelay(ATTACH).
    pub terminal: Option<&'a Arc<Terminal>>,
    pub outbox: &'a Outbox,
    pub pump: &'a mut EventPump,
    pub signals: &'a mut Signals,
    pub sandbox_id: &'a str,
}

/// How the agent ended, the policy revision in force at that time, and the control messages the current
/// session has not sent yet (an agent that exits at once ends the loop before AgentStarted went out).
pub struct Ended {
    pub status: Result<u8, StartError>,
    pub revision: u64,
    pub unsent: Vec<SupervisorMessage>,
}

/// The next step of a Stop: SIGTERM was sent; at `at`, `step`.
struct Escalation {
    at: Instant,
    step: Step,
}

enum Step {
    KillAgent,
    KillInit,
}

/// Runs until the agent exits. Starts by reporting the start and acknowledging `revision`.
pub async fn supervise(ctx: Ctx<'_>, sandbox: &Sandbox, mut revision: u64) -> Ended {
    let Ctx { conn, terminal, outbox, pump, signals, sandbox_id } = ctx;
    let enforcement_json = sandbox.enforcement_json();
    let mut control: VecDeque<SupervisorMessage> = VecDeque::from([
        msg(supervisor_message::Msg::Started(AgentStarted {
            init_pid: sandbox.init_pid,
            enforcement_json: enforcement_json.clone(),
        })),
        msg(supervisor_message::Msg::Ack(PolicyAck { revision, ok: true, error: String::new() })),
    ]);
    let mut stop: Option<Escalation> = None;
    let waiter = sandbox.wait();
    tokio::pin!(waiter);
    loop {
        let now = Instant::now();
        let due = outbox.due_at().map(Instant::from_std);
        let tx = conn.sender();
        let sendable = tx.is_some() && (!control.is_empty() || due.is_some_and(|d| d <= now));
        let batch_timer = due.filter(|d| *d > now);
        let escalate_at = stop.as_ref().map(|s| s.at);
        tokio::select! {
            status = &mut waiter => return Ended { status, revision, unsent: control.into() },
            ev = conn.next(|| running_hello(sandbox_id, revision, sandbox, &enforcement_json)) => match ev {
                ConnEvent::Up => {}
                // The next Hello says where we are; what this session did not deliver is moot.
                ConnEvent::Down(_) => control.clear(),
                ConnEvent::Message(gateway_message::Msg::Welcome(w)) => {
                    conn.set_heartbeat(super::heartbeat_interval(w.heartbeat_interval_ms));
                    tracing::info!(session_id = %w.session_id, "welcomed by the gateway (agent running)");
                }
                ConnEvent::Message(gateway_message::Msg::Policy(push)) => {
                    let ack = apply(sandbox, &mut revision, push).await;
                    control.push_back(msg(supervisor_message::Msg::Ack(ack)));
                }
                ConnEvent::Message(gateway_message::Msg::Stop(s)) => {
                    if stop.is_none() {
                        tracing::info!(grace_ms = s.grace_ms, "the gateway stops the agent");
                        signal_agent(sandbox, libc::SIGTERM);
                        let grace = Duration::from_millis(u64::from(s.grace_ms));
                        stop = Some(Escalation { at: Instant::now() + grace, step: Step::KillAgent });
                    }
                }
                ConnEvent::Message(gateway_message::Msg::OpenRelay(open)) => {
                    if let Err(refused) = relay::open(conn.client(), open, terminal) {
                        tracing::info!(relay_id = %refused.relay_id, "relay refused: {}", refused.error);
                        control.push_back(msg(supervisor_message::Msg::RelayRefused(refused)));
                    }
                }
                ConnEvent::Message(gateway_message::Msg::Heartbeat(_)) => {}
            },
            permit = reserve(tx.as_ref()), if sendable => match permit {
                Some(permit) => {
                    let next = control.pop_front().or_else(|| outbox.take_batch(Some(std::time::Instant::now())));
                    if let Some(m) = next {
                        permit.send(m);
                    }
                }
                None => {
                    tracing::warn!("the session stream stopped accepting messages; reconnecting");
                    conn.mark_down();
                    control.clear();
                }
            },
            _ = sleep_until(batch_timer), if batch_timer.is_some() => {}
            _ = outbox.changed() => {}
            _ = pump.pump(outbox) => {}
            sig = signals.next() => match sig {
                libc::SIGHUP => tracing::info!("SIGHUP ignored: the gateway pushes policy changes"),
                // The exit path (AgentExited, then exit with the agent's status) follows the agent's exit.
                _ => {
                    tracing::info!(signal = sig, "stopping: forwarding SIGTERM to the agent");
                    signal_agent(sandbox, libc::SIGTERM);
                }
            },
            _ = sleep_until(escalate_at), if escalate_at.is_some() => {
                stop = match stop.take().map(|s| s.step) {
                    Some(Step::KillAgent) => {
                        tracing::warn!("the agent outlived its grace period; SIGKILL");
                        signal_agent(sandbox, libc::SIGKILL);
                        Some(Escalation { at: Instant::now() + KILL_INIT_AFTER, step: Step::KillInit })
                    }
                    Some(Step::KillInit) => {
                        tracing::warn!("the agent survived SIGKILL through init; killing sandbox init");
                        sandbox.kill_init();
                        None
                    }
                    None => None,
                };
            }
        }
    }
}

/// Applies a pushed revision; the answer for the gateway. The revision in force is skipped (a reconnect
/// may repeat it); a refused one leaves the last good revision in force.
async fn apply(sandbox: &Sandbox, revision: &mut u64, push: PolicyPush) -> PolicyAck {
    if push.revision == *revision {
        return PolicyAck { revision: push.revision, ok: true, error: String::new() };
    }
    match sandbox.apply_policy(&push.yaml).await {
        Ok(generation) => {
            tracing::info!(revision = push.revision, generation, "policy revision applied");
            *revision = push.revision;
            PolicyAck { revision: push.revision, ok: true, error: String::new() }
        }
        Err(e) => {
            let error = crate::error_chain(&e);
            tracing::warn!(
                revision = push.revision,
                in_force = *revision,
                "policy revision refused: {error}"
            );
            PolicyAck { revision: push.revision, ok: false, error }
        }
    }
}

fn running_hello(sandbox_id: &str, revision: u64, sandbox: &Sandbox, enforcement_json: &str) -> Hello {
    Hello {
        sandbox_id: sandbox_id.to_string(),
        supervisor_version: env!("CARGO_PKG_VERSION").to_string(),
        loaded_policy_revision: revision,
        agent_running: true,
        init_pid: sandbox.init_pid,
        enforcement_json: enforcement_json.to_string(),
    }
}

/// Signals go through sandbox init (a blocking request), on the blocking pool: the loop keeps serving.
fn signal_agent(sandbox: &Sandbox, sig: i32) {
    let send = sandbox.signaller();
    drop(tokio::task::spawn_blocking(move || send(sig)));
}

async fn reserve<T>(tx: Option<&mpsc::Sender<T>>) -> Option<mpsc::Permit<'_, T>> {
    match tx {
        Some(tx) => tx.reserve().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
