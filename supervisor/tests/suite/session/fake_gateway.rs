//! The in-process fake gateway: a tonic `SupervisorSession` server on a unix socket, on its own runtime
//! (dropping it kills every connection at once, like a crashed gateway). It answers Hello with Welcome
//! and, unless the supervisor already has it, PolicyPush; records every message and the credentials of
//! every call; ends its half of a stream when the supervisor ended its own; can refuse the credentials.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openshell_proto::supervisor::v1::supervisor_session_server::{
    SupervisorSession, SupervisorSessionServer,
};
use openshell_proto::supervisor::v1::{
    GatewayMessage, LaunchSpec, PolicyPush, SupervisorMessage, Welcome, gateway_message,
    supervisor_message::Msg,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// One message the fake gateway received, with the number of the session (1, 2, ...) it came on.
#[derive(Clone, Debug)]
pub struct Rec {
    pub session: usize,
    pub msg: Msg,
}

/// What the fake gateway answers and records.
pub struct Shared {
    pub launch: LaunchSpec,
    pub policy: Mutex<PolicyPush>,
    pub reject: AtomicBool,
    pub attempts: AtomicUsize,
    pub sessions: AtomicUsize,
    /// `(authorization, x-openshell-sandbox-id)` of every Open call.
    pub credentials: Mutex<Vec<(String, String)>>,
    /// Sender of the current session's response stream.
    pub current: Mutex<Option<mpsc::Sender<Result<GatewayMessage, Status>>>>,
    pub log: std::sync::mpsc::Sender<Rec>,
}

#[derive(Clone)]
struct Fake(Arc<Shared>);

fn gw(msg: gateway_message::Msg) -> Result<GatewayMessage, Status> {
    Ok(GatewayMessage { msg: Some(msg) })
}

#[tonic::async_trait]
impl SupervisorSession for Fake {
    type OpenStream = ReceiverStream<Result<GatewayMessage, Status>>;
    type RelayStream = ReceiverStream<Result<openshell_proto::supervisor::v1::RelayDown, Status>>;

    /// Relays are covered end to end through the real gateway (e2e `gateway_tty`).
    async fn relay(
        &self,
        _req: Request<Streaming<openshell_proto::supervisor::v1::RelayUp>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        Err(Status::unimplemented("the fake gateway has no relays"))
    }

    async fn open(
        &self,
        req: Request<Streaming<SupervisorMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let shared = self.0.clone();
        shared.attempts.fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| {
            req.metadata().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
        };
        shared.credentials.lock().unwrap().push((header("authorization"), header("x-openshell-sandbox-id")));
        if shared.reject.load(Ordering::SeqCst) {
            return Err(Status::unauthenticated("invalid sandbox secret"));
        }
        let session = shared.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::channel(64);
        *shared.current.lock().unwrap() = Some(tx.clone());
        let mut inbound = req.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let Some(msg) = m.msg else { continue };
                if let Msg::Hello(hello) = &msg {
                    let welcome = Welcome {
                        session_id: session.to_string(),
                        heartbeat_interval_ms: 1000,
                        launch: Some(shared.launch.clone()),
                    };
                    let _ = tx.send(gw(gateway_message::Msg::Welcome(welcome))).await;
                    let policy = shared.policy.lock().unwrap().clone();
                    if hello.loaded_policy_revision != policy.revision {
                        let _ = tx.send(gw(gateway_message::Msg::Policy(policy))).await;
                    }
                }
                let _ = shared.log.send(Rec { session, msg });
            }
            // The supervisor closed its half: end ours, like the real gateway.
            let mut current = shared.current.lock().unwrap();
            if current.as_ref().is_some_and(|c| c.same_channel(&tx)) {
                *current = None;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The fake gateway, on its own runtime: dropping it kills every connection at once (a crashed gateway).
pub struct FakeGateway {
    rt: Option<tokio::runtime::Runtime>,
    pub shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<Rec>,
    seen: Vec<Rec>,
}

impl FakeGateway {
    pub fn start(socket: &Path, launch: LaunchSpec, policy: PolicyPush) -> Self {
        let _ = std::fs::remove_file(socket);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (log, rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            launch,
            policy: Mutex::new(policy),
            reject: AtomicBool::new(false),
            attempts: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            credentials: Mutex::new(Vec::new()),
            current: Mutex::new(None),
            log,
        });
        let listener = rt.block_on(async { tokio::net::UnixListener::bind(socket) }).unwrap();
        let service = SupervisorSessionServer::new(Fake(shared.clone()));
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        FakeGateway { rt: Some(rt), shared, rx, seen: Vec::new() }
    }

    pub fn push(&self, msg: gateway_message::Msg) {
        let tx = self.shared.current.lock().unwrap().clone().expect("no open session to push to");
        self.rt.as_ref().unwrap().block_on(tx.send(gw(msg))).unwrap();
    }

    /// The first message (since the start, in arrival order) that `pred` accepts, waiting up to `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Rec) -> bool) -> Option<Rec> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.seen.iter().find(|r| pred(r)) {
                return Some(r.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(r) => self.seen.push(r),
                Err(_) => return None,
            }
        }
    }

    /// Stops the gateway the hard way: every connection ends at once, the socket stops answering.
    pub fn crash(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Every message received so far.
    pub fn all(&mut self) -> Vec<Rec> {
        while let Ok(r) = self.rx.try_recv() {
            self.seen.push(r);
        }
        self.seen.clone()
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.crash();
    }
}
