//! The session stream and its reconnection.
//!
//! A [`Link`] is one open `SupervisorSession.Open` stream: Hello is already queued as its first message
//! when the call is made (a gateway may wait for it before answering), a heartbeat task keeps it alive,
//! and dropping the send half closes the request stream. [`Connection`] owns the current link and
//! replaces it after any failure with jittered exponential backoff (25-50 ms, doubling, capped at 1 s, so
//! that a restarted gateway sees every sandbox back within about a second), forever: the agent keeps
//! running under its last good policy meanwhile. Refused credentials are retried too (logged clearly): the
//! driver kills this process if the secret really changed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openshell_proto::supervisor::v1::{
    GatewayMessage, Heartbeat, Hello, SupervisorMessage, gateway_message, supervisor_message,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use super::msg;
use super::transport::{Client, Transport};

/// Messages waiting for the HTTP/2 stream; beyond this, senders wait (batches stay in the outbox).
const OUTBOUND_QUEUE: usize = 32;
/// Bound on the gateway's answer to Open. Generous: the gateway may wait for the driver to record the
/// instance (it races the spawn) before it answers.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// While the gateway stays unreachable, a reminder at most this often (not one line per attempt).
const LOG_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to the gateway")]
    Connect(#[source] tonic::transport::Error),
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the gateway refused the session ({:?}: {})", .0.code(), .0.message())]
    Refused(Status),
    #[error("the session stream failed ({:?}: {})", .0.code(), .0.message())]
    Stream(Status),
    #[error("the gateway ended the session")]
    Ended,
    #[error("the session stream no longer accepts messages")]
    SendClosed,
}

impl LinkError {
    /// The gateway does not accept these credentials (or this sandbox).
    pub fn is_auth(&self) -> bool {
        matches!(self, LinkError::Refused(s) | LinkError::Stream(s)
            if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied))
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// One open session stream.
pub struct Link {
    /// `None` once the request stream was closed by us.
    tx: Option<mpsc::Sender<SupervisorMessage>>,
    rx: Streaming<GatewayMessage>,
    heartbeat: Option<JoinHandle<()>>,
    /// The client of this link's connection: relays are further calls on the same HTTP/2 connection.
    client: Client,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl Link {
    async fn open(transport: &Transport, hello: Hello) -> Result<Link, LinkError> {
        let mut client = tokio::time::timeout(OPEN_TIMEOUT, transport.connect())
            .await
            .map_err(|_| LinkError::Timeout(OPEN_TIMEOUT))?
            .map_err(LinkError::Connect)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        // A fresh channel has room: Hello is the first message whatever happens next.
        tx.try_send(msg(supervisor_message::Msg::Hello(hello))).map_err(|_| LinkError::SendClosed)?;
        let response = tokio::time::timeout(OPEN_TIMEOUT, client.open(ReceiverStream::new(rx)))
            .await
            .map_err(|_| LinkError::Timeout(OPEN_TIMEOUT))?
            .map_err(LinkError::Refused)?;
        let mut link = Link { tx: Some(tx), rx: response.into_inner(), heartbeat: None, client };
        link.set_heartbeat(DEFAULT_HEARTBEAT);
        Ok(link)
    }

    /// (Re)starts the heartbeat task. It holds only a weak sender, so closing the request stream is not
    /// delayed by it, and it skips a beat rather than wait when the queue is full (traffic is flowing, or
    /// the stream is stuck and keepalive will tell).
    fn set_heartbeat(&mut self, every: Duration) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let Some(weak) = self.tx.as_ref().map(mpsc::Sender::downgrade) else { return };
        let every = every.max(MIN_HEARTBEAT);
        self.heartbeat = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(tx) = weak.upgrade() else { return };
                let _ = tx.try_send(msg(supervisor_message::Msg::Heartbeat(Heartbeat { time_ms: now_ms() })));
            }
        }));
    }
}

/// What happened on the connection.
#[derive(Debug)]
pub enum ConnEvent {
    /// A new session stream is open (its Hello is sent).
    Up,
    Message(gateway_message::Msg),
    /// The stream ended or failed; the next call to [`Connection::next`] reconnects.
    Down(LinkError),
}

/// The current link, or the attempt to get one.
pub struct Connection {
    transport: Arc<Transport>,
    link: Option<Link>,
    attempt: Option<JoinHandle<Result<Link, LinkError>>>,
    backoff: Backoff,
    /// The first attempt goes out at once; later ones after a backoff delay.
    delay_next: bool,
    failing: Failing,
}

impl Connection {
    pub fn new(transport: Transport) -> Self {
        Connection {
            transport: Arc::new(transport),
            link: None,
            attempt: None,
            backoff: Backoff::new(),
            delay_next: false,
            failing: Failing::default(),
        }
    }

    /// A sender for the current link (cloned so that the caller's borrow does not pin the connection).
    pub fn sender(&self) -> Option<mpsc::Sender<SupervisorMessage>> {
        self.link.as_ref().and_then(|l| l.tx.clone())
    }

    /// A client on the current link's connection (for relays).
    pub fn client(&self) -> Option<Client> {
        self.link.as_ref().map(|l| l.client.clone())
    }

    pub fn set_heartbeat(&mut self, every: Duration) {
        if let Some(link) = &mut self.link {
            link.set_heartbeat(every);
        }
    }

    /// Ends our half of the stream: the gateway sees the end of the request stream after everything sent
    /// before. Its end of the stream then comes through [`Connection::next`].
    pub fn close_send(&mut self) {
        if let Some(link) = &mut self.link {
            link.tx = None;
            if let Some(h) = link.heartbeat.take() {
                h.abort();
            }
        }
    }

    /// Gives up the current link (a send failed); the next call to [`Connection::next`] reconnects.
    pub fn mark_down(&mut self) {
        self.link = None;
        self.delay_next = true;
    }

    /// Waits for the next thing to happen: a message on the current link, its end, or (when there is no
    /// link) the result of a connection attempt, which sends `hello()` first. Cancel-safe: an attempt in
    /// progress and a partly received message survive a dropped call.
    pub async fn next(&mut self, hello: impl FnOnce() -> Hello) -> ConnEvent {
        if let Some(link) = &mut self.link {
            return loop {
                match link.rx.message().await {
                    Ok(Some(GatewayMessage { msg: Some(m) })) => {
                        // A gateway that answers is healthy again: the next outage starts with short delays.
                        self.backoff.reset();
                        break ConnEvent::Message(m);
                    }
                    Ok(Some(GatewayMessage { msg: None })) => continue,
                    Ok(None) => break self.lost(LinkError::Ended),
                    Err(status) => break self.lost(LinkError::Stream(status)),
                }
            };
        }
        if self.attempt.is_none() {
            let delay = if std::mem::replace(&mut self.delay_next, true) {
                self.backoff.next()
            } else {
                Duration::ZERO
            };
            let transport = Arc::clone(&self.transport);
            let hello = hello();
            self.attempt = Some(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                Link::open(&transport, hello).await
            }));
        }
        let Some(attempt) = self.attempt.as_mut() else { return std::future::pending().await };
        let result = attempt.await;
        self.attempt = None;
        match result {
            Ok(Ok(link)) => {
                self.failing.recovered(self.transport.display());
                self.link = Some(link);
                ConnEvent::Up
            }
            Ok(Err(e)) => {
                self.failing.failed(self.transport.display(), &e);
                ConnEvent::Down(e)
            }
            Err(join) => {
                let e = LinkError::Stream(Status::internal(format!("connection task failed: {join}")));
                ConnEvent::Down(e)
            }
        }
    }

    fn lost(&mut self, e: LinkError) -> ConnEvent {
        self.link = None;
        self.delay_next = true;
        match &e {
            LinkError::Ended => tracing::info!("the gateway ended the session"),
            e if e.is_auth() => tracing::error!("{e}; this supervisor's credentials are refused, retrying"),
            e => tracing::warn!("{e}; reconnecting"),
        }
        ConnEvent::Down(e)
    }
}

/// Keeps the log readable while the gateway is unreachable: the first failure, changes of reason, a
/// reminder every [`LOG_EVERY`], and the recovery.
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    attempts: u64,
    last_reason: String,
    last_logged: Option<Instant>,
}

impl Failing {
    fn failed(&mut self, endpoint: &str, e: &LinkError) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.attempts += 1;
        let reason = crate::error_chain(e);
        let due = self.last_logged.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        if reason != self.last_reason || due {
            if e.is_auth() {
                tracing::error!(
                    attempts = self.attempts,
                    "{endpoint}: {reason}. The gateway does not accept this sandbox's secret; retrying (a \
                     sandbox whose secret changed is restarted by its driver)"
                );
            } else {
                tracing::warn!(attempts = self.attempts, "{endpoint}: {reason}; retrying");
            }
            self.last_reason = reason;
            self.last_logged = Some(now);
        }
    }

    fn recovered(&mut self, endpoint: &str) {
        match self.since.take() {
            Some(since) => tracing::info!(
                attempts = self.attempts,
                "connected to the gateway at {endpoint} after {:.1}s",
                since.elapsed().as_secs_f64()
            ),
            None => tracing::info!("connected to the gateway at {endpoint}"),
        }
        *self = Failing::default();
    }
}

/// Exponential backoff with "equal jitter": each delay is uniform in [base/2, base], base doubling from
/// [`BACKOFF_FIRST`] to [`BACKOFF_CAP`]. Jitter spreads hundreds of supervisors reconnecting to a
/// restarted gateway.
struct Backoff {
    base: Duration,
    rng: u64,
}

impl Backoff {
    fn new() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let seed = (u64::from(nanos) << 32) ^ u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
        Backoff { base: BACKOFF_FIRST, rng: seed | 1 }
    }

    fn reset(&mut self) {
        self.base = BACKOFF_FIRST;
    }

    fn next(&mut self) -> Duration {
        let base = self.base;
        self.base = (base * 2).min(BACKOFF_CAP);
        // xorshift64: statistical quality is irrelevant here, only spread.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = base / 2;
        let span = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_micros(self.rng % (span + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_doubling_and_capped() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!((Duration::from_millis(25)..=Duration::from_millis(50)).contains(&first), "{first:?}");
        let second = b.next();
        assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&second), "{second:?}");
        for _ in 0..20 {
            let d = b.next();
            assert!(d <= BACKOFF_CAP, "{d:?}");
        }
        let capped: Vec<_> = (0..10).map(|_| b.next()).collect();
        assert!(capped.iter().all(|d| *d >= Duration::from_millis(500)), "{capped:?}");
        assert!(capped.windows(2).any(|w| w[0] != w[1]), "jittered: {capped:?}");
        b.reset();
        assert!(b.next() <= Duration::from_millis(50));
    }

    #[test]
    fn auth_errors_are_recognised() {
        assert!(LinkError::Refused(Status::unauthenticated("no")).is_auth());
        assert!(LinkError::Stream(Status::permission_denied("no")).is_auth());
        assert!(!LinkError::Refused(Status::unavailable("down")).is_auth());
        assert!(!LinkError::Ended.is_auth());
    }
}
