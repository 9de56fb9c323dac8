//! State shared by every door: the current engine generation, resolvers, the
//! address guard, the tunnel registry and counters.
//!
//! Threat handled: mixing generations. Each connection takes one snapshot of the
//! engine (`Arc`) and decides everything with it; a reload swaps the pointer for
//! new connections and re-decides live tunnels (see [`crate::tunnels`]).
//! Residual risk: none specific; this is plumbing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openshell_policy::NetworkEngine;
use tokio::sync::Semaphore;

use crate::dial::Connector;
use crate::dns::{AnswerLog, DenialDedupe};
use crate::events::EventSink;
use crate::guard::AddressGuard;
use crate::identity::{BinaryIdentity, IdentityError, IdentityResolver, IdentitySource};
use crate::resolve::Upstream;
use crate::tls::TlsClient;
use crate::tunnels::Tunnels;

/// Concurrent identity lookups (each holds a blocking-pool thread; bounding
/// them bounds threads, hence memory, under connection bursts).
const IDENTITY_LOOKUPS: usize = 8;

/// Counters behind [`crate::EgressStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub proxy_connections: AtomicU64,
    pub capture_connections: AtomicU64,
    pub dns_queries: AtomicU64,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    /// Refusals of the sandbox kernel seen by the refusal observer.
    pub refused: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a connection handler needs.
pub(crate) struct Shared {
    pub sandbox_id: String,
    engine: RwLock<Arc<NetworkEngine>>,
    pub events: EventSink,
    identity: Arc<IdentityResolver>,
    identity_is_fixed: bool,
    pub upstream: Upstream,
    pub guard: Arc<dyn AddressGuard>,
    pub connector: Arc<dyn Connector>,
    pub tunnels: Arc<Tunnels>,
    pub answers: AnswerLog,
    pub dns_denials: DenialDedupe,
    pub tls: TlsClient,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub sniff_timeout: Duration,
    pub counters: Counters,
    /// Bounds concurrent TCP connections handled (proxy + capture + DNS/TCP).
    pub conn_limit: Arc<Semaphore>,
    /// Bounds concurrent `/proc` identity lookups (blocking-pool threads).
    identity_slots: Semaphore,
}

/// Construction parameters for [`Shared`].
pub(crate) struct SharedParts {
    pub sandbox_id: String,
    pub engine: Arc<NetworkEngine>,
    pub events: EventSink,
    pub identity: IdentitySource,
    pub sock_diag: Option<std::os::fd::OwnedFd>,
    pub upstream: Upstream,
    pub guard: Arc<dyn AddressGuard>,
    pub connector: Arc<dyn Connector>,
    pub tls: TlsClient,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub sniff_timeout: Duration,
    pub max_connections: usize,
}

impl Shared {
    pub(crate) fn new(p: SharedParts) -> Self {
        let identity_is_fixed = matches!(p.identity, IdentitySource::Fixed(_));
        Self {
            sandbox_id: p.sandbox_id,
            engine: RwLock::new(p.engine),
            events: p.events,
            identity: Arc::new(IdentityResolver::new(p.identity, p.sock_diag)),
            identity_is_fixed,
            upstream: p.upstream,
            guard: p.guard,
            connector: p.connector,
            tunnels: Arc::new(Tunnels::default()),
            answers: AnswerLog::default(),
            dns_denials: DenialDedupe::default(),
            tls: p.tls,
            connect_timeout: p.connect_timeout,
            idle_timeout: p.idle_timeout,
            sniff_timeout: p.sniff_timeout,
            counters: Counters::default(),
            conn_limit: Arc::new(Semaphore::new(p.max_connections)),
            identity_slots: Semaphore::new(IDENTITY_LOOKUPS),
        }
    }

    /// The engine generation new decisions use.
    pub(crate) fn engine(&self) -> Arc<NetworkEngine> {
        Arc::clone(&self.engine.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set_engine(&self, engine: Arc<NetworkEngine>) {
        *self.engine.write().unwrap_or_else(PoisonError::into_inner) = engine;
    }

    /// Identity of the process behind an accepted connection (`/proc` reads run
    /// on the blocking pool).
    pub(crate) async fn identify(
        &self,
        agent: SocketAddr,
        ours: SocketAddr,
    ) -> Result<Arc<BinaryIdentity>, Arc<IdentityError>> {
        if self.identity_is_fixed {
            return self.identity.lookup(agent, ours).map(Arc::new).map_err(Arc::new);
        }
        // The common case (recent owner, known binary) needs no blocking-pool hop.
        if let Some(r) = self.identity.lookup_fast(agent, ours) {
            return r.map(Arc::new).map_err(Arc::new);
        }
        let resolver = Arc::clone(&self.identity);
        // The semaphore is never closed; a failed acquire only means no bound.
        let _slot = self.identity_slots.acquire().await.ok();
        match tokio::task::spawn_blocking(move || resolver.lookup(agent, ours)).await {
            Ok(r) => r.map(Arc::new).map_err(Arc::new),
            Err(join) => Err(Arc::new(IdentityError::Exe { pid: 0, source: std::io::Error::other(join) })),
        }
    }
}
