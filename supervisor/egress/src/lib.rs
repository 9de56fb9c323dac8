//! `openshell-egress`: everything the agent sends off the sandbox.
//!
//! The supervisor creates sockets inside the agent's network namespace (whose
//! only interface is `lo`, with every address routed locally) and hands them to
//! [`Egress::start`], which serves them from the host namespace where the real
//! network is. Three doors, one decision (see `architecture/egress.md`):
//! - the explicit proxy ([`proxy`]): `CONNECT` and absolute-form HTTP;
//! - transparent capture ([`capture`]): any address on a port the policy names;
//! - DNS ([`dns`]): names the policy names, answers SSRF-filtered.
//!
//! What the sandbox kernel refuses by itself (connections to ports no policy
//! names, UDP, ICMP) never reaches a door; the refusal observer ([`observer`])
//! reports it.
//!
//! Every TCP decision goes through [`gate`]: binary identity from `/proc`
//! ([`identity`]), `openshell-policy`'s cached decision, resolution, address
//! check ([`guard`]), connect to exactly the checked address. Tunnels are
//! registered ([`tunnels`]) and re-decided on [`Egress::reload`]. Every denial
//! is an [`events::Event`].
//!
//! Threat model summary: the agent is hostile and controls every byte it
//! sends, its DNS queries, its process tree and its binaries; it does not
//! control `/proc` of the host, the supervisor's resolver or the policy.
//! Residual risks are listed in each module's documentation.

#![forbid(unsafe_code)]

mod capture;
mod dial;
mod dns;
mod error;
pub mod events;
mod gate;
mod guard;
mod identity;
mod io;
mod l7;
mod observer;
mod policy_view;
mod proxy;
mod resolve;
mod sniff;
mod state;
mod tls;
mod tunnels;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openshell_policy::NetworkEngine;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

pub use capture::SNIFF_TIMEOUT;
pub use dial::{ConnectFuture, Connector, DirectConnector};
pub use error::EgressError;
pub use events::{Event, EventDecision, EventKind, EventLog, EventSink};
pub use guard::{AddressGuard, AddressRefused, SsrfGuard};
pub use identity::{BinaryIdentity, IdentityError, IdentitySource};
pub use resolve::ResolverChoice;

use state::{Shared, SharedParts};

/// Minimum tunnel idle timeout: long-lived streams (SSE, WebSocket, `git`
/// over SSH) must not be cut by the proxy.
pub const MIN_TUNNEL_IDLE: Duration = Duration::from_secs(3600);

/// Sockets created inside the agent's network namespace.
#[derive(Debug, Default)]
pub struct EgressSockets {
    /// Explicit proxy listeners (normally `127.0.0.1:3128`).
    pub proxy: Vec<std::net::TcpListener>,
    /// Transparent capture listeners with the port they serve.
    pub capture: Vec<(u16, std::net::TcpListener)>,
    /// DNS over UDP (port 53, IPv4 and IPv6).
    pub dns_udp: Vec<std::net::UdpSocket>,
    /// DNS over TCP (port 53, IPv4 and IPv6).
    pub dns_tcp: Vec<std::net::TcpListener>,
    /// Optional `socket(AF_NETLINK, SOCK_DGRAM, NETLINK_SOCK_DIAG)` created in
    /// the agent's netns: makes binary identity lookups constant-time instead
    /// of reading `/proc/<init>/net/tcp` (which grows with TIME_WAIT sockets).
    pub sock_diag: Option<std::os::fd::OwnedFd>,
    /// Optional `AF_PACKET` socket on the agent netns's `lo` carrying only the
    /// kernel's refusals (resets of connection attempts, ICMP port unreachable,
    /// echo requests), created by `openshell_supervisor_sys::observer`: each
    /// becomes a `network` deny event. Without it those denials are silent.
    pub observer: Option<std::os::fd::OwnedFd>,
}

/// How the egress layer behaves.
#[derive(Debug, Clone)]
pub struct EgressOptions {
    /// Sandbox id put in every event.
    pub sandbox_id: String,
    /// Where binary identities come from.
    pub identity: IdentitySource,
    /// Upstream DNS servers.
    pub upstream_resolver: ResolverChoice,
    /// Idle time after which a tunnel is closed; at least [`MIN_TUNNEL_IDLE`].
    pub tunnel_idle_timeout: Duration,
    /// The SSRF check. Production: [`SsrfGuard`]. Tests may inject another.
    pub address_guard: Arc<dyn AddressGuard>,
    /// How upstream connections are opened. Production: [`DirectConnector`].
    pub connector: Arc<dyn Connector>,
    /// Extra PEM CA bundle trusted for `https://` forward requests.
    pub extra_ca_file: Option<PathBuf>,
    /// Total time to connect upstream (shared among resolved addresses).
    pub connect_timeout: Duration,
    /// Concurrent TCP connections served (proxy, capture, DNS over TCP).
    pub max_connections: usize,
    /// How long capture waits for the client's first bytes (SNI / `Host`).
    pub capture_sniff_timeout: Duration,
}

impl EgressOptions {
    /// Production defaults: system resolver, one-hour idle timeout,
    /// [`SsrfGuard`], [`DirectConnector`], 10 s connect timeout, 4096
    /// connections, [`SNIFF_TIMEOUT`].
    #[must_use]
    pub fn new(sandbox_id: impl Into<String>, identity: IdentitySource) -> Self {
        Self {
            sandbox_id: sandbox_id.into(),
            identity,
            upstream_resolver: ResolverChoice::System,
            tunnel_idle_timeout: MIN_TUNNEL_IDLE,
            address_guard: Arc::new(SsrfGuard),
            connector: Arc::new(DirectConnector),
            extra_ca_file: None,
            connect_timeout: Duration::from_secs(10),
            max_connections: 4096,
            capture_sniff_timeout: SNIFF_TIMEOUT,
        }
    }
}

/// Counters and gauges of a running [`Egress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EgressStats {
    /// Policy generation used for new decisions.
    pub generation: u64,
    /// Tunnels (CONNECT, capture, WebSocket) open now.
    pub open_tunnels: usize,
    /// Connections accepted on the proxy listeners.
    pub proxy_connections: u64,
    /// Connections accepted on capture listeners.
    pub capture_connections: u64,
    /// DNS queries received.
    pub dns_queries: u64,
    /// Network allow decisions (connections and forwarded requests).
    pub allowed: u64,
    /// Denials (network and DNS).
    pub denied: u64,
    /// Events dropped because the event file could not keep up.
    pub events_dropped: u64,
    /// Refusals made by the sandbox kernel itself (connection resets, UDP,
    /// ICMP) seen by the refusal observer; included in `denied`.
    pub refused_by_kernel: u64,
}

/// The running egress layer. Dropping it stops every listener task (open
/// tunnels end when their tasks notice; the runtime's shutdown ends them all).
pub struct Egress {
    shared: Arc<Shared>,
    observer: Option<Arc<observer::Observer>>,
    runtime: Handle,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl Egress {
    /// Adopts `sockets` and starts serving them with `engine`.
    ///
    /// # Errors
    /// Invalid options, sockets that cannot be adopted, or an extra CA file
    /// that cannot be read. Nothing is served on error. The upstream resolver
    /// and the host's TLS trust store are loaded on first use, not here.
    pub async fn start(
        sockets: EgressSockets,
        opts: EgressOptions,
        engine: Arc<NetworkEngine>,
        events: EventSink,
    ) -> Result<Self, EgressError> {
        if opts.tunnel_idle_timeout < MIN_TUNNEL_IDLE {
            return Err(EgressError::IdleTimeoutTooShort { secs: opts.tunnel_idle_timeout.as_secs() });
        }
        let runtime = Handle::try_current().map_err(|_| EgressError::NoRuntime)?;
        let upstream = resolve::Upstream::new(&opts.upstream_resolver)?;
        let tls = tls::TlsClient::new(opts.extra_ca_file.as_deref())?;
        let proxy = adopt_tcp(sockets.proxy, "proxy")?;
        let dns_tcp = adopt_tcp(sockets.dns_tcp, "dns tcp")?;
        let mut capture = Vec::new();
        for (port, l) in sockets.capture {
            capture.push((port, adopt_tcp(vec![l], "capture")?));
        }
        let mut dns_udp = Vec::new();
        for s in sockets.dns_udp {
            s.set_nonblocking(true).map_err(|source| EgressError::Adopt { what: "dns udp", source })?;
            dns_udp.push(
                tokio::net::UdpSocket::from_std(s)
                    .map_err(|source| EgressError::Adopt { what: "dns udp", source })?,
            );
        }
        let dns_ports: Vec<u16> =
            dns_udp.iter().filter_map(|s| s.local_addr().ok()).map(|a| a.port()).collect();
        let init_pid = match &opts.identity {
            IdentitySource::SandboxInit { init_pid } => Some(*init_pid),
            IdentitySource::Fixed(_) => None,
        };
        let observer = match sockets.observer {
            Some(fd) => Some(Arc::new(
                observer::Observer::new(fd, init_pid, dns_ports)
                    .map_err(|source| EgressError::Adopt { what: "refusal observer", source })?,
            )),
            None => None,
        };
        let shared = Arc::new(Shared::new(SharedParts {
            sandbox_id: opts.sandbox_id,
            engine,
            events,
            identity: opts.identity,
            sock_diag: sockets.sock_diag,
            upstream,
            guard: opts.address_guard,
            connector: opts.connector,
            tls,
            connect_timeout: opts.connect_timeout,
            idle_timeout: opts.tunnel_idle_timeout,
            sniff_timeout: opts.capture_sniff_timeout,
            max_connections: opts.max_connections.max(1),
        }));
        let mut tasks = Vec::new();
        for l in proxy {
            tasks.push(runtime.spawn(proxy::serve(Arc::clone(&shared), l)));
        }
        for (_, ls) in capture {
            for l in ls {
                tasks.push(runtime.spawn(capture::serve(Arc::clone(&shared), l)));
            }
        }
        for s in dns_udp {
            tasks.push(runtime.spawn(dns::serve_udp(Arc::clone(&shared), s)));
        }
        for l in dns_tcp {
            tasks.push(runtime.spawn(dns::serve_tcp(Arc::clone(&shared), l)));
        }
        if let Some(o) = &observer {
            tasks.push(runtime.spawn(observer::serve(Arc::clone(&shared), Arc::clone(o))));
        }
        Ok(Self { shared, observer, runtime, tasks: Mutex::new(tasks) })
    }

    /// Switches new decisions to `engine`, re-decides every live tunnel under
    /// it and closes those no longer allowed (one `policy_reloaded` deny event
    /// each). Returns how many tunnels were closed.
    pub fn reload(&self, engine: Arc<NetworkEngine>) -> usize {
        self.shared.set_engine(Arc::clone(&engine));
        let closed = self.shared.tunnels.redecide(
            &engine,
            self.shared.guard.as_ref(),
            &self.shared.events,
            &self.shared.sandbox_id,
        );
        tracing::info!(generation = engine.generation(), closed, "network policy reloaded");
        closed
    }

    /// Starts serving capture listeners for a port added by a reload.
    ///
    /// # Errors
    /// A listener cannot be adopted (none of them is served then).
    pub fn add_capture_listeners(
        &self,
        port: u16,
        listeners: Vec<std::net::TcpListener>,
    ) -> Result<(), EgressError> {
        let _enter = self.runtime.enter();
        let adopted = adopt_tcp(listeners, "capture")?;
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        for l in adopted {
            tasks.push(self.runtime.spawn(capture::serve(Arc::clone(&self.shared), l)));
        }
        tracing::debug!(port, "capture listeners added");
        Ok(())
    }

    /// Current counters.
    #[must_use]
    pub fn stats(&self) -> EgressStats {
        let c = &self.shared.counters;
        EgressStats {
            generation: self.shared.engine().generation(),
            open_tunnels: self.shared.tunnels.len(),
            proxy_connections: c.proxy_connections.load(Ordering::Relaxed),
            capture_connections: c.capture_connections.load(Ordering::Relaxed),
            dns_queries: c.dns_queries.load(Ordering::Relaxed),
            allowed: c.allowed.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            events_dropped: self.shared.events.dropped(),
            refused_by_kernel: c.refused.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        // Refusals of the agent's last moments are already queued on the
        // observer: report them before the tasks go.
        if let Some(o) = &self.observer {
            o.drain(&self.shared);
        }
        for t in self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            t.abort();
        }
    }
}

fn adopt_tcp(
    listeners: Vec<std::net::TcpListener>,
    what: &'static str,
) -> Result<Vec<tokio::net::TcpListener>, EgressError> {
    listeners
        .into_iter()
        .map(|l| {
            l.set_nonblocking(true).map_err(|source| EgressError::Adopt { what, source })?;
            tokio::net::TcpListener::from_std(l).map_err(|source| EgressError::Adopt { what, source })
        })
        .collect()
}
