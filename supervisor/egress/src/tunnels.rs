//! Registry of live tunnels (CONNECT, capture, WebSocket), re-decided on reload.
//!
//! Threat handled: a policy update that removes access must not leave existing
//! connections open. On [`crate::Egress::reload`] every tunnel is decided again
//! under the new generation (same binary, host, port and connected address) and
//! its address re-checked against the newly matched endpoint; tunnels that are
//! no longer allowed are cancelled and a `network` deny event with reason
//! `policy_reloaded` is emitted for each.
//! Residual risk: plain forward-proxy requests are decided per request and are
//! not registered; a response already streaming when the policy changes runs
//! to completion.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use openshell_policy::{Decision, NetworkEngine, NetworkRequest};
use tokio::sync::watch;

use crate::events::{Event, EventDecision, EventKind, EventSink};
use crate::guard::AddressGuard;
use crate::identity::BinaryIdentity;

/// Which door a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// `CONNECT host:port` on the explicit proxy.
    Connect,
    /// Absolute-form request on the explicit proxy.
    Forward,
    /// WebSocket upgrade through the forward proxy.
    Websocket,
    /// Transparent capture listener.
    Capture,
}

impl Door {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Forward => "forward",
            Self::Websocket => "websocket",
            Self::Capture => "capture",
        }
    }
}

/// What a tunnel was allowed as.
#[derive(Debug, Clone)]
pub(crate) struct TunnelInfo {
    pub door: Door,
    pub identity: Arc<BinaryIdentity>,
    pub host: String,
    pub port: u16,
    pub ip: IpAddr,
    pub policy: String,
    pub generation: u64,
}

struct Entry {
    info: TunnelInfo,
    cancel: watch::Sender<bool>,
}

/// The registry. Entries remove themselves when their [`TunnelHandle`] drops.
#[derive(Default)]
pub(crate) struct Tunnels {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
}

/// Held by a running tunnel; deregisters on drop.
pub(crate) struct TunnelHandle {
    id: u64,
    registry: Weak<Tunnels>,
    cancel: watch::Receiver<bool>,
}

impl TunnelHandle {
    /// Turns `true` when the registry closes this tunnel.
    pub(crate) fn cancelled(&self) -> watch::Receiver<bool> {
        self.cancel.clone()
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        if let Some(reg) = self.registry.upgrade() {
            reg.live.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        }
    }
}

impl Tunnels {
    pub(crate) fn register(self: &Arc<Self>, info: TunnelInfo) -> TunnelHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        self.live.lock().unwrap_or_else(PoisonError::into_inner).insert(id, Entry { info, cancel: tx });
        TunnelHandle { id, registry: Arc::downgrade(self), cancel: rx }
    }

    pub(crate) fn len(&self) -> usize {
        self.live.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Re-decides every tunnel under `engine`; cancels and reports those no
    /// longer allowed. Returns how many were closed.
    pub(crate) fn redecide(
        &self,
        engine: &NetworkEngine,
        guard: &dyn AddressGuard,
        events: &EventSink,
        sandbox_id: &str,
    ) -> usize {
        let mut closed = Vec::new();
        {
            let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
            for entry in live.values_mut() {
                match redecide_one(engine, guard, &entry.info) {
                    Ok(policy) => {
                        entry.info.policy = policy;
                        entry.info.generation = engine.generation();
                    }
                    Err((prior, detail)) => {
                        entry.cancel.send_replace(true);
                        closed.push((entry.info.clone(), prior, detail));
                    }
                }
            }
        }
        for (info, prior, detail) in &closed {
            let mut e = Event::new(sandbox_id, EventKind::Network, EventDecision::Deny)
                .with_detail("door", info.door.as_str())
                .with_detail("denied_by", *prior)
                .with_detail("message", detail.as_str())
                .with_detail("previous_generation", info.generation);
            e.binary = Some(info.identity.path.clone());
            e.binary_sha256 = Some(info.identity.sha256.clone());
            e.pid = Some(info.identity.pid);
            e.host = Some(info.host.clone());
            e.ip = Some(info.ip);
            e.port = Some(info.port);
            e.policy = Some(info.policy.clone());
            e.reason = Some("policy_reloaded".to_owned());
            e.generation = Some(engine.generation());
            events.emit(e);
        }
        closed.len()
    }
}

/// The allowing policy under `engine`, or `(code, detail)` when the tunnel is
/// no longer allowed.
fn redecide_one(
    engine: &NetworkEngine,
    guard: &dyn AddressGuard,
    t: &TunnelInfo,
) -> Result<String, (&'static str, String)> {
    let req = NetworkRequest {
        binary: t.identity.path.clone(),
        ancestors: t.identity.ancestors.clone(),
        host: t.host.clone(),
        port: t.port,
        ips: vec![t.ip],
    };
    match engine.decide(&req) {
        Decision::Deny(reason) => Err((reason.code(), reason.to_string())),
        Decision::Allow(by) => {
            let Some(endpoint) = engine.endpoint(&by) else {
                return Err(("internal_error", "matched endpoint missing".to_owned()));
            };
            guard.check(t.ip, &endpoint.allowed_ips).map_err(|e| ("address_not_allowed", e.detail))?;
            // Tunnel bytes are not inspected: an endpoint that gained L7 rules
            // closes CONNECT and capture tunnels, as it would refuse them now.
            if matches!(t.door, Door::Connect | Door::Capture)
                && crate::l7::restricts(endpoint)
                && endpoint.enforcement == openshell_policy::Enforcement::Enforce
            {
                return Err((
                    "l7_inspection_unavailable",
                    format!(
                        "endpoint {} of network_policies.{} now restricts HTTP methods/paths, which a tunnel \
                         cannot be checked against",
                        by.endpoint, by.policy
                    ),
                ));
            }
            Ok(by.policy)
        }
    }
}
