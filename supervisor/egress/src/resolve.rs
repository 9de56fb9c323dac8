//! Upstream name resolution (hickory), shared by the proxy, capture and the
//! sandbox DNS server so all three see the same cached answers.
//!
//! Threat handled: resolving names the policy does not allow leaks data through
//! DNS (exfiltration by query name). Callers resolve only after the name was
//! allowed; this module never decides, it only resolves.
//! Residual risk: answers are as trustworthy as the host's resolver (no DNSSEC
//! validation); SSRF checks on every answer limit what a lying resolver can do.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RecordType};

use crate::error::EgressError;

/// Which upstream DNS servers the supervisor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolverChoice {
    /// The host's `/etc/resolv.conf` (read once, on the first lookup).
    System,
    /// These servers (UDP with TCP fallback), e.g. a test server on loopback.
    Fixed(Vec<SocketAddr>),
}

/// Why a name did not resolve to any usable address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The upstream lookup failed (NXDOMAIN, SERVFAIL, timeout...).
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        /// The name.
        host: String,
        /// Cause.
        #[source]
        source: NetError,
    },
    /// The lookup succeeded with no A/AAAA records.
    #[error("{host} has no IPv4 or IPv6 address")]
    NoAddresses {
        /// The name.
        host: String,
    },
}

/// The shared upstream resolver. Built on first use: reading the host's
/// resolver configuration (`/etc/resolv.conf`, hosts file) is not on the
/// sandbox's startup path, and a sandbox that never resolves a name never
/// reads it.
pub(crate) struct Upstream {
    choice: ResolverChoice,
    resolver: OnceLock<Result<TokioResolver, String>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    /// Never fails today: configuration problems surface on the first lookup
    /// (logged once, every lookup then fails, i.e. `dns_failed` / `SERVFAIL`).
    pub(crate) fn new(choice: &ResolverChoice) -> Result<Self, EgressError> {
        Ok(Self { choice: choice.clone(), resolver: OnceLock::new() })
    }

    fn resolver(&self) -> Result<&TokioResolver, NetError> {
        let built = self.resolver.get_or_init(|| {
            build(&self.choice).map_err(|e| {
                let msg = format!("upstream resolver configuration: {e}");
                tracing::warn!("{msg}");
                msg
            })
        });
        built.as_ref().map_err(|msg| NetError::from(msg.clone()))
    }

    /// Addresses for `host`; an IP literal is returned as is without any lookup.
    /// Order: as the resolver returned them (IPv4 first), duplicates removed.
    pub(crate) async fn resolve_ips(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip.to_canonical()]);
        }
        let lookup = self
            .resolver()
            .map_err(|source| ResolveError::Lookup { host: host.to_owned(), source })?
            .lookup_ip(host)
            .await
            .map_err(|source| ResolveError::Lookup { host: host.to_owned(), source })?;
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in lookup.iter().map(|ip| ip.to_canonical()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        if out.is_empty() {
            return Err(ResolveError::NoAddresses { host: host.to_owned() });
        }
        Ok(out)
    }

    /// Raw lookup of one record type (for the sandbox DNS server).
    pub(crate) async fn lookup(&self, name: Name, rtype: RecordType) -> Result<Lookup, NetError> {
        self.resolver()?.lookup(name, rtype).await
    }
}

fn build(choice: &ResolverChoice) -> Result<TokioResolver, EgressError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match choice {
        ResolverChoice::System => {
            TokioResolver::builder(provider).map_err(|source| EgressError::ResolverConfig { source })?
        }
        ResolverChoice::Fixed(servers) => {
            let name_servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut b =
                TokioResolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), provider);
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 2;
    opts.cache_size = 4096;
    builder.build().map_err(|source| EgressError::ResolverConfig { source })
}
