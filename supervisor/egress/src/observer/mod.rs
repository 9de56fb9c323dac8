//! Denials the sandbox kernel makes on its own, turned into `network` deny events.
//!
//! With every address local in the agent's network namespace (egress.md, *Capture without netfilter*), a
//! connection to a port no policy names is reset by that namespace's kernel, a UDP datagram to anything
//! but the DNS port is answered with ICMP port unreachable, and neither ever reaches a supervisor
//! listener. Sandbox init hands over an `AF_PACKET` socket on the sandbox's `lo` whose locked classic BPF
//! filter (`openshell_supervisor_sys::observer`) lets through only those answers (and ICMP echo requests);
//! this module reads it and emits one event per refusal:
//! - reset of a connection attempt: reason `port_not_allowed`, destination ip/port, host from the DNS
//!   answer log when it knows the address;
//! - port unreachable: reason `udp_not_allowed` (answers to DNS replies that arrive after their socket
//!   closed are skipped: their source is the DNS port);
//! - echo request: reason `icmp_not_allowed`.
//!
//! Connections and datagrams that reach a listener (the supervisor's or the agent's own) never get here:
//! the kernel's socket table, not a copy of the policy's ports, decides what is refused, so reloads need
//! nothing. Flood control: [`limit`]. Attribution to a binary is best effort ([`attribute`], and
//! [`crate::identity`] for TCP) and never delays an event by more than [`ATTRIBUTION_BUDGET`]: the
//! connecting socket is usually gone by the time the reset is read.
//!
//! Threat handled: silent denials (issue 2: every denial produces its event, UDP and ICMP included).
//! Residual risk: events only, never enforcement (the kernel already refused); refusals beyond the
//! socket's receive buffer in a burst are lost uncounted (see the sys module).

mod attribute;
mod limit;
mod packet;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::unix::AsyncFd;
use tokio::sync::Semaphore;

use crate::events::{Event, EventDecision, EventKind};
use crate::state::{Counters, Shared};
use limit::{Key, Limiter, Proto, Summary, Verdict};
use packet::Refused;

/// Longest an event waits for its attribution.
pub(crate) const ATTRIBUTION_BUDGET: Duration = Duration::from_millis(200);
/// Attributions in flight; beyond, events go out unattributed at once.
const CONCURRENT_ATTRIBUTIONS: usize = 4;
/// Packets read per wake-up before yielding to other tasks.
const BATCH: usize = 256;
/// Receive buffer: the filter queues at most 256 bytes of a packet.
const RECV_BUF: usize = 512;
/// Packets read synchronously when the egress layer stops.
const DRAIN_MAX: usize = 4096;

/// The supervisor's end of the refusal observer.
pub(crate) struct Observer {
    fd: AsyncFd<OwnedFd>,
    /// Host pid of sandbox init (`/proc/<init>/net/udp` for attribution), if known.
    init_pid: Option<i32>,
    /// Ports of the sandbox DNS (their late answers to closed sockets are not the agent's refusals).
    dns_ports: Vec<u16>,
    limiter: Mutex<Limiter>,
    /// Events waiting for their attribution, by sequence number; emitted as they are when draining.
    pending: Mutex<HashMap<u64, Event>>,
    next: AtomicU64,
    attributions: Arc<Semaphore>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("fd", &self.fd.get_ref().as_raw_fd()).finish_non_exhaustive()
    }
}

impl Observer {
    /// Adopts the packet socket (needs a tokio runtime).
    pub(crate) fn new(fd: OwnedFd, init_pid: Option<i32>, dns_ports: Vec<u16>) -> io::Result<Self> {
        // `AsyncFd::new` is deprecated in favour of the `unsafe` `AsyncFd::register`, whose contract is
        // that the descriptor stays open and the same for the `AsyncFd`'s lifetime: an `OwnedFd` moved in
        // guarantees exactly that (it is closed only when the `AsyncFd` drops it), so the safe call is
        // sound here and this crate stays free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Self {
            fd,
            init_pid,
            dns_ports,
            limiter: Mutex::new(Limiter::default()),
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            attributions: Arc::new(Semaphore::new(CONCURRENT_ATTRIBUTIONS)),
        })
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn recv_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self.fd.get_ref().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
    }

    /// One packet read from the socket. `attribute`: look the sender up (not while draining).
    fn on_packet(self: &Arc<Self>, shared: &Arc<Shared>, bytes: &[u8], attribute: bool) {
        let Some(refused) = packet::parse(bytes) else {
            tracing::debug!(len = bytes.len(), "refusal observer: unrecognised packet");
            return;
        };
        if let Refused::Udp { agent, .. } = refused
            && self.dns_ports.contains(&agent.port())
        {
            return;
        }
        Counters::bump(&shared.counters.denied);
        Counters::bump(&shared.counters.refused);
        let now = Instant::now();
        self.close_window(shared, now, false);
        if self.limiter().admit(key(&refused), now) == Verdict::Held {
            return;
        }
        let event = refusal_event(shared, &refused);
        match refused {
            Refused::Tcp { agent, dst } | Refused::Udp { agent, dst } if attribute => {
                self.attribute(shared, event, refused, agent, dst);
            }
            _ => shared.events.emit(event),
        }
    }

    /// Emits `event` once its sender is known, or [`ATTRIBUTION_BUDGET`] has passed.
    fn attribute(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        mut event: Event,
        refused: Refused,
        agent: SocketAddr,
        dst: SocketAddr,
    ) {
        let Ok(permit) = Arc::clone(&self.attributions).try_acquire_owned() else {
            event.detail.insert("attribution".into(), "unknown: too many lookups in flight".into());
            return shared.events.emit(event);
        };
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(seq, event);
        let (obs, shared) = (Arc::clone(self), Arc::clone(shared));
        tokio::spawn(async move {
            let found =
                tokio::time::timeout(ATTRIBUTION_BUDGET, obs.lookup(&shared, refused, agent, dst)).await;
            drop(permit);
            let Some(mut event) = obs.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&seq)
            else {
                return; // drained meanwhile
            };
            match found {
                Ok(Ok(who)) => {
                    event.binary = Some(who.binary);
                    event.binary_sha256 = who.sha256;
                    event.pid = Some(who.pid);
                    if !who.ancestors.is_empty() {
                        event.detail.insert("ancestors".into(), who.ancestors.into());
                    }
                }
                Ok(Err(why)) => {
                    event.detail.insert("attribution".into(), why.into());
                }
                Err(_) => {
                    event.detail.insert("attribution".into(), "unknown: lookup timed out".into());
                }
            }
            shared.events.emit(event);
        });
    }

    async fn lookup(
        &self,
        shared: &Shared,
        refused: Refused,
        agent: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Sender, String> {
        match refused {
            Refused::Tcp { .. } => match shared.identify(agent, dst).await {
                Ok(id) => Ok(Sender {
                    binary: id.path.clone(),
                    sha256: Some(id.sha256.clone()),
                    pid: id.pid,
                    ancestors: id.ancestors.clone(),
                }),
                Err(e) => Err(format!("unknown: {e}")),
            },
            Refused::Udp { .. } => {
                let init = self.init_pid.ok_or("unknown: no sandbox init to look in")?;
                let found = tokio::task::spawn_blocking(move || {
                    attribute::udp_sender(std::path::Path::new("/proc"), init, agent, dst)
                })
                .await
                .map_err(|e| format!("unknown: {e}"))??;
                Ok(Sender { binary: found.1, sha256: None, pid: found.0, ancestors: Vec::new() })
            }
            Refused::Echo { .. } => Err("unknown".into()),
        }
    }

    /// Closes the flood-control window if due (or `force`) and emits its summaries.
    fn close_window(&self, shared: &Shared, now: Instant, force: bool) {
        let summaries = self.limiter().close_due(now, force);
        for s in summaries {
            shared.events.emit(summary_event(shared, s));
        }
    }

    /// Reads what is queued and emits every pending event now (the sandbox is going away).
    pub(crate) fn drain(self: &Arc<Self>, shared: &Arc<Shared>) {
        let mut buf = [0u8; RECV_BUF];
        for _ in 0..DRAIN_MAX {
            match self.recv_now(&mut buf) {
                Ok(n) => self.on_packet(shared, &buf[..n.min(RECV_BUF)], false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut pending: Vec<(u64, Event)> =
            self.pending.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
        pending.sort_by_key(|(seq, _)| *seq);
        for (_, mut event) in pending {
            event.detail.insert("attribution".into(), "unknown: the sandbox ended first".into());
            shared.events.emit(event);
        }
        self.close_window(shared, Instant::now(), true);
    }
}

/// Who sent a refused packet.
struct Sender {
    binary: String,
    sha256: Option<String>,
    pid: i32,
    ancestors: Vec<String>,
}

/// Reads the observer until the task is aborted.
pub(crate) async fn serve(shared: Arc<Shared>, obs: Arc<Observer>) {
    let mut buf = [0u8; RECV_BUF];
    loop {
        let due = obs.limiter().due();
        let wake = tokio::time::Instant::from_std(due.unwrap_or_else(Instant::now));
        tokio::select! {
            ready = obs.fd.readable() => {
                let mut guard = match ready {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(error = %e, "refusal observer stopped: kernel refusals are not reported");
                        return;
                    }
                };
                for _ in 0..BATCH {
                    match guard.try_io(|_| obs.recv_now(&mut buf)) {
                        Ok(Ok(n)) => obs.on_packet(&shared, &buf[..n.min(RECV_BUF)], true),
                        Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "refusal observer: recv failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                        Err(_would_block) => break,
                    }
                }
            }
            () = tokio::time::sleep_until(wake), if due.is_some() => {}
        }
        obs.close_window(&shared, Instant::now(), false);
    }
}

fn key(r: &Refused) -> Key {
    match *r {
        Refused::Tcp { dst, .. } => Key { proto: Proto::Tcp, ip: dst.ip().to_canonical(), port: dst.port() },
        Refused::Udp { dst, .. } => Key { proto: Proto::Udp, ip: dst.ip().to_canonical(), port: dst.port() },
        Refused::Echo { dst, .. } => Key { proto: Proto::Icmp, ip: dst.to_canonical(), port: 0 },
    }
}

const fn reason(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "port_not_allowed",
        Proto::Udp => "udp_not_allowed",
        Proto::Icmp => "icmp_not_allowed",
    }
}

fn proto_name(proto: Proto, ip: IpAddr) -> &'static str {
    match (proto, ip.is_ipv4()) {
        (Proto::Tcp, _) => "tcp",
        (Proto::Udp, _) => "udp",
        (Proto::Icmp, true) => "icmp",
        (Proto::Icmp, false) => "icmpv6",
    }
}

fn base_event(shared: &Shared, proto: Proto) -> Event {
    let mut e =
        Event::new(&shared.sandbox_id, EventKind::Network, EventDecision::Deny).with_detail("door", "kernel");
    e.reason = Some(reason(proto).to_owned());
    e.generation = Some(shared.engine().generation());
    e
}

/// The event for one refusal (before attribution).
fn refusal_event(shared: &Shared, r: &Refused) -> Event {
    let k = key(r);
    let mut e = base_event(shared, k.proto);
    let host = shared.answers.name_for(k.ip);
    let shown = host.clone().unwrap_or_else(|| k.ip.to_string());
    e.ip = Some(k.ip);
    e.detail.insert("proto".into(), proto_name(k.proto, k.ip).into());
    let (message, hint) = match *r {
        Refused::Tcp { agent, dst } => {
            e.port = Some(dst.port());
            e.detail.insert("source".into(), agent.to_string().into());
            tcp_texts(shared, &shown, k.ip, dst.port())
        }
        Refused::Udp { agent, dst } => {
            e.port = Some(dst.port());
            e.detail.insert("source".into(), agent.to_string().into());
            (
                format!("UDP datagram to {shown}:{} dropped by the sandbox", dst.port()),
                "only DNS is answered over UDP inside the sandbox and no UDP leaves it; reach the service \
                 over TCP (an endpoint in network_policies)"
                    .to_owned(),
            )
        }
        Refused::Echo { src, .. } => {
            e.detail.insert("source".into(), src.to_string().into());
            (
                format!("ICMP echo request to {shown} dropped by the sandbox"),
                "ICMP (ping) never leaves the sandbox; check reachability with a TCP connection instead"
                    .to_owned(),
            )
        }
    };
    e.host = Some(shown);
    e.hint = Some(hint);
    e.detail.insert("message".into(), message.into());
    e
}

fn tcp_texts(shared: &Shared, shown: &str, ip: IpAddr, port: u16) -> (String, String) {
    let message =
        format!("connection to {shown}:{port} refused by the sandbox: nothing listens on port {port}");
    let hint = if ip.is_loopback() {
        format!(
            "{ip} is the sandbox's own loopback, not the host's; nothing in the sandbox listens on port {port}"
        )
    } else if shared.engine().policy().network_ports().contains(&port) {
        format!(
            "port {port} is named by the policy but has no capture listener (the explicit proxy's own port, \
             or a listener that could not be opened: see the lifecycle event); connect through the proxy"
        )
    } else {
        format!(
            "no network policy names port {port}; add an endpoint for {shown} with port {port} to \
             network_policies (only ports a policy names are captured)"
        )
    };
    (message, hint)
}

/// The event closing a flood-control window.
fn summary_event(shared: &Shared, s: Summary) -> Event {
    match s {
        Summary::Repeats { key, count } => {
            let mut e = base_event(shared, key.proto);
            let shown = shared.answers.name_for(key.ip).unwrap_or_else(|| key.ip.to_string());
            e.ip = Some(key.ip);
            if key.proto != Proto::Icmp {
                e.port = Some(key.port);
            }
            e.host = Some(shown);
            e.detail.insert("proto".into(), proto_name(key.proto, key.ip).into());
            e.detail.insert("suppressed".into(), count.into());
            e.detail.insert(
                "message".into(),
                format!("{count} more refusals of the same destination within {:?}", limit::WINDOW).into(),
            );
            e
        }
        Summary::Overflow { proto, count } => {
            let mut e = base_event(shared, proto);
            e.detail.insert("suppressed".into(), count.into());
            e.detail.insert(
                "message".into(),
                format!(
                    "{count} refusals to further destinations within {:?} were not reported one by one (more \
                     than {} destinations)",
                    limit::WINDOW,
                    limit::MAX_KEYS
                )
                .into(),
            );
            e
        }
    }
}

#[cfg(test)]
mod tests;
