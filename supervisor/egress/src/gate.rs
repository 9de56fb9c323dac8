//! The one decision path for TCP egress: decide, resolve, check addresses,
//! connect to exactly the checked address. Every `network` allow/deny event is
//! emitted from here (and from [`crate::tunnels`] on reload).
//!
//! Threats handled:
//! - destinations the policy does not name (decision by `openshell-policy`,
//!   cached per binary/host/port/generation);
//! - SSRF and rebinding: every resolved address is checked, the connection goes
//!   to one of the checked addresses, never to a second resolution;
//! - DNS exfiltration: a name is resolved only after the policy allowed it
//!   (except when the policy names IP-literal endpoints on that port, see below);
//! - SNI/Host spoofing on capture: a name taken from the client's own bytes must
//!   resolve to (or have been answered by our DNS for) the address it connects to.
//!
//! Residual risk: when a policy has IP-literal endpoints on a port, a name that
//! no host pattern allows is resolved before the final decision so that it can
//! match by address; such lookups reach the upstream resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use openshell_policy::{
    AllowedBy, Decision, DenyReason, Enforcement, HostPattern, NetworkEngine, NetworkRequest,
};
use tokio::net::TcpStream;

use crate::dial::Connector;
use crate::events::{Event, EventDecision, EventKind};
use crate::identity::{BinaryIdentity, IdentityError};
use crate::l7;
use crate::policy_view;
use crate::state::{Counters, Shared};
use crate::tunnels::Door;

/// How the destination address is known.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin {
    /// Explicit proxy: the agent named a host; we resolve it.
    Named,
    /// Transparent capture: the agent connected to `dst`; `host` came from SNI or
    /// `Host` (`claimed`), or from our DNS answers / the IP literal (not claimed).
    Captured { dst: IpAddr, claimed: bool },
}

/// A policy refusal (HTTP 403 / RST).
#[derive(Debug, Clone)]
pub(crate) struct Denial {
    pub code: &'static str,
    pub detail: String,
    pub hint: String,
    pub generation: u64,
    pub ip: Option<IpAddr>,
    /// The endpoint that would have to change (policy name, index), when one
    /// matched.
    pub endpoint: Option<Box<(String, usize)>>,
}

/// The destination could not be reached (HTTP 502); not a policy decision.
#[derive(Debug, Clone)]
pub(crate) struct Unreachable {
    pub code: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    Denied(Denial),
    Unreachable(Unreachable),
}

/// An allowed destination with its checked addresses.
pub(crate) struct Checked {
    pub engine: Arc<NetworkEngine>,
    pub allowed: AllowedBy,
    pub addrs: Vec<IpAddr>,
}

/// The connection attempt being decided, for events.
#[derive(Clone, Copy)]
pub(crate) struct Attempt<'a> {
    pub door: Door,
    pub host: &'a str,
    pub port: u16,
}

impl Shared {
    /// Decides and checks `attempt` for `id`. Emits a deny event on refusal.
    pub(crate) async fn authorize(
        &self,
        id: &BinaryIdentity,
        at: Attempt<'_>,
        origin: Origin,
    ) -> Result<Checked, Refusal> {
        let engine = self.engine();
        let generation = engine.generation();
        let literal = at.host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        let mut ips: Vec<IpAddr> = match origin {
            Origin::Captured { dst, .. } => vec![dst],
            Origin::Named => literal.into_iter().collect(),
        };
        let mut decision = engine.decide(&request(id, at, &ips));
        if let (Decision::Deny(DenyReason::NoEndpoint { .. }), Origin::Named, None) =
            (&decision, origin, literal)
            && policy_view::has_ip_endpoint_on_port(&engine, at.port)
        {
            match self.upstream.resolve_ips(at.host).await {
                Ok(resolved) => {
                    ips = resolved;
                    decision = engine.decide(&request(id, at, &ips));
                }
                Err(e) => {
                    tracing::debug!(host = at.host, error = %e, "no addresses for IP-endpoint matching")
                }
            }
        }
        let allowed = match decision {
            Decision::Allow(allowed) => allowed,
            Decision::Deny(reason) => {
                let d = Denial {
                    code: reason.code(),
                    detail: reason.to_string(),
                    hint: reason.hint(),
                    generation,
                    ip: ips.first().copied(),
                    endpoint: None,
                };
                return Err(self.denied(Some(id), at, d));
            }
        };
        let Some(endpoint) = engine.endpoint(&allowed) else {
            let d = Denial {
                code: "internal_error",
                detail: format!("endpoint {} of policy {} is missing", allowed.endpoint, allowed.policy),
                hint: "report this as a bug".to_owned(),
                generation,
                ip: None,
                endpoint: None,
            };
            return Err(self.denied(Some(id), at, d));
        };
        let addrs = match origin {
            Origin::Captured { dst, claimed } => {
                // An IP-literal endpoint naming this very address allows it
                // whatever name the client claims.
                let ip_endpoint = matches!(endpoint.host, HostPattern::Ip(ip) if ip == dst);
                if claimed && !ip_endpoint {
                    self.verify_claim(at.host, literal, dst)
                        .await
                        .map_err(|detail| self.mismatch(id, at, dst, generation, detail))?;
                }
                vec![dst]
            }
            Origin::Named if !ips.is_empty() => ips,
            Origin::Named => self.upstream.resolve_ips(at.host).await.map_err(|e| {
                Refusal::Unreachable(Unreachable { code: "dns_failed", detail: e.to_string() })
            })?,
        };
        // An IP-literal endpoint allows exactly its address, whatever else the
        // name resolved to.
        let mut addrs = addrs;
        if let HostPattern::Ip(only) = endpoint.host {
            addrs.retain(|a| *a == only);
            if addrs.is_empty() {
                let d = Denial {
                    code: "address_not_allowed",
                    detail: format!("{} does not resolve to {only}", at.host),
                    hint: format!("connect to {only} directly"),
                    generation,
                    ip: None,
                    endpoint: None,
                };
                return Err(self.denied(Some(id), at, d));
            }
        }
        for ip in &addrs {
            if let Err(e) = self.guard.check(*ip, &endpoint.allowed_ips) {
                let d = Denial {
                    code: "address_not_allowed",
                    hint: format!(
                        "{} resolves to {ip}; add a CIDR covering it to allowed_ips of network_policies.{} \
                         (loopback, link-local and unspecified addresses can never be allowed)",
                        at.host, allowed.policy
                    ),
                    detail: e.detail,
                    generation,
                    ip: Some(e.ip),
                    endpoint: None,
                };
                return Err(self.denied(Some(id), at, d));
            }
        }
        Ok(Checked { engine, allowed, addrs })
    }

    /// `Ok` when `host` (claimed by the client) may be served from `dst`.
    async fn verify_claim(&self, host: &str, literal: Option<IpAddr>, dst: IpAddr) -> Result<(), String> {
        if let Some(ip) = literal {
            return if ip == dst { Ok(()) } else { Err(format!("client named {ip} but connected to {dst}")) };
        }
        if self.answers.contains(dst, host) {
            return Ok(());
        }
        match self.upstream.resolve_ips(host).await {
            Ok(ips) if ips.contains(&dst) => Ok(()),
            Ok(ips) => Err(format!("{host} resolves to {ips:?}, not to the destination {dst}")),
            Err(e) => Err(format!("cannot verify that {host} is served from {dst}: {e}")),
        }
    }

    fn mismatch(
        &self,
        id: &BinaryIdentity,
        at: Attempt<'_>,
        dst: IpAddr,
        generation: u64,
        detail: String,
    ) -> Refusal {
        let d = Denial {
            code: "destination_mismatch",
            detail,
            hint: format!("connect to an address that {} resolves to (use the sandbox DNS)", at.host),
            generation,
            ip: Some(dst),
            endpoint: None,
        };
        self.denied(Some(id), at, d)
    }

    /// Emits the deny event for `d` and wraps it.
    pub(crate) fn denied(&self, id: Option<&BinaryIdentity>, at: Attempt<'_>, d: Denial) -> Refusal {
        self.denied_with(id, at, d, Vec::new())
    }

    /// [`Self::denied`] with more `detail` fields in the event.
    pub(crate) fn denied_with(
        &self,
        id: Option<&BinaryIdentity>,
        at: Attempt<'_>,
        d: Denial,
        extra: Vec<(&'static str, serde_json::Value)>,
    ) -> Refusal {
        Counters::bump(&self.counters.denied);
        let mut e = self.network_event(EventDecision::Deny, id, at);
        e.ip = d.ip;
        e.reason = Some(d.code.to_owned());
        e.hint = Some(d.hint.clone());
        e.generation = Some(d.generation);
        e.detail.insert("message".to_owned(), d.detail.clone().into());
        if let Some(named) = &d.endpoint {
            e.policy = Some(named.0.clone());
            e.detail.insert("endpoint".to_owned(), named.1.into());
        }
        for (k, v) in extra {
            e.detail.insert(k.to_owned(), v);
        }
        self.events.emit(e);
        Refusal::Denied(d)
    }

    /// Emits an `audit` event: `at` goes ahead although it violates the L7
    /// rules of the matched endpoint, whose enforcement is `audit`.
    pub(crate) fn audited(
        &self,
        id: &BinaryIdentity,
        at: Attempt<'_>,
        c: &Checked,
        code: &'static str,
        message: String,
        extra: Vec<(&'static str, serde_json::Value)>,
    ) {
        let mut e = self.network_event(EventDecision::Audit, Some(id), at);
        e.policy = Some(c.allowed.policy.clone());
        e.generation = Some(c.engine.generation());
        e.reason = Some(code.to_owned());
        e.detail.insert("endpoint".to_owned(), c.allowed.endpoint.into());
        e.detail.insert("message".to_owned(), message.into());
        for (k, v) in extra {
            e.detail.insert(k.to_owned(), v);
        }
        self.events.emit(e);
    }

    /// For doors that cannot see HTTP requests (CONNECT tunnels, transparent
    /// capture): an endpoint with L7 rules fails closed
    /// (`l7_inspection_unavailable`), unless its enforcement is `audit`.
    pub(crate) fn require_no_l7(
        &self,
        id: &BinaryIdentity,
        at: Attempt<'_>,
        c: &Checked,
    ) -> Result<(), Refusal> {
        let Some(ep) = c.engine.endpoint(&c.allowed) else { return Ok(()) };
        if !l7::restricts(ep) {
            return Ok(());
        }
        let message = format!(
            "endpoint {} of network_policies.{} restricts HTTP methods/paths (access, rules, deny_rules or path), \
             which cannot be checked on a {} connection: its bytes are not inspected",
            c.allowed.endpoint,
            c.allowed.policy,
            at.door.as_str()
        );
        if ep.enforcement == Enforcement::Audit {
            self.audited(
                id,
                at,
                c,
                "l7_inspection_unavailable",
                format!("{message}; allowed WITHOUT enforcing these rules (enforcement: audit)"),
                Vec::new(),
            );
            return Ok(());
        }
        let d = Denial {
            code: "l7_inspection_unavailable",
            detail: message,
            hint: format!(
                "this endpoint restricts HTTP methods/paths, which needs TLS inspection (not available yet): \
                 use `access: full` for this host (endpoint {} of network_policies.{}), or reach it over plain \
                 http through the proxy",
                c.allowed.endpoint, c.allowed.policy
            ),
            generation: c.engine.generation(),
            ip: None,
            endpoint: Some(Box::new((c.allowed.policy.clone(), c.allowed.endpoint))),
        };
        Err(self.denied(Some(id), at, d))
    }

    /// Denial for a connection whose identity could not be established.
    pub(crate) fn identity_denied(&self, err: &IdentityError, at: Attempt<'_>) -> Refusal {
        let d = Denial {
            code: err.code(),
            detail: err.to_string(),
            hint: err.hint(),
            generation: self.engine().generation(),
            ip: None,
            endpoint: None,
        };
        let extra = match err {
            IdentityError::AmbiguousOwner { binaries, .. } => vec![("binaries", binaries.clone().into())],
            _ => Vec::new(),
        };
        self.denied_with(None, at, d, extra)
    }

    /// Emits the allow event for a connection to `addr`.
    pub(crate) fn allowed(&self, id: &BinaryIdentity, at: Attempt<'_>, ip: IpAddr, c: &Checked) {
        Counters::bump(&self.counters.allowed);
        let mut e = self.network_event(EventDecision::Allow, Some(id), at);
        e.ip = Some(ip);
        e.policy = Some(c.allowed.policy.clone());
        e.generation = Some(c.engine.generation());
        e.detail.insert("endpoint".to_owned(), c.allowed.endpoint.into());
        self.events.emit(e);
    }

    fn network_event(&self, decision: EventDecision, id: Option<&BinaryIdentity>, at: Attempt<'_>) -> Event {
        let mut e =
            Event::new(&self.sandbox_id, EventKind::Network, decision).with_detail("door", at.door.as_str());
        if let Some(id) = id {
            e.binary = Some(id.path.clone());
            e.binary_sha256 = Some(id.sha256.clone());
            e.pid = Some(id.pid);
            if !id.ancestors.is_empty() {
                e.detail.insert("ancestors".to_owned(), id.ancestors.clone().into());
            }
        }
        e.host = Some(at.host.to_owned());
        e.port = Some(at.port);
        e
    }

    /// Connects to the first reachable checked address, in order; returns the
    /// stream and the address it is connected to.
    pub(crate) async fn connect(
        &self,
        addrs: &[IpAddr],
        port: u16,
    ) -> Result<(TcpStream, IpAddr), Unreachable> {
        connect_any(self.connector.as_ref(), addrs, port, self.connect_timeout).await
    }
}

fn request(id: &BinaryIdentity, at: Attempt<'_>, ips: &[IpAddr]) -> NetworkRequest {
    NetworkRequest {
        binary: id.path.clone(),
        ancestors: id.ancestors.clone(),
        host: at.host.to_owned(),
        port: at.port,
        ips: ips.to_vec(),
    }
}

/// Tries each address in order; each attempt gets an equal share of `budget`
/// (at least two seconds). `TCP_NODELAY` is set on success.
pub(crate) async fn connect_any(
    connector: &dyn Connector,
    addrs: &[IpAddr],
    port: u16,
    budget: Duration,
) -> Result<(TcpStream, IpAddr), Unreachable> {
    let n = u32::try_from(addrs.len().max(1)).unwrap_or(u32::MAX);
    let per = (budget / n).max(Duration::from_secs(2)).min(budget);
    let mut last = String::from("no addresses");
    for ip in addrs {
        let sa = SocketAddr::new(*ip, port);
        match tokio::time::timeout(per, connector.connect(sa)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, *ip));
            }
            Ok(Err(e)) => last = format!("{sa}: {e}"),
            Err(_) => last = format!("{sa}: connect timed out after {}s", per.as_secs()),
        }
    }
    Err(Unreachable { code: "connect_failed", detail: last })
}
