//! An in-process fake gateway on `<dir>/gateway.sock`, enough to drive every CLI verb.
//!
//! The "agent" is scripted by its command words: `out:TEXT` / `err:TEXT` print a line, `deny:HOST` and
//! `allow:HOST` emit a network event, `exit:N` sets the exit status, `fail:REASON` makes the sandbox
//! FAILED, `stay` keeps it READY (its log stream then stays open). Sandboxes named `racy-*` report a
//! stale `resource_version` from GetSandbox, `stuck-*` refuse deletion, `slow-*` never acknowledge a
//! policy. Every call is recorded.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use openshell_proto::gateway::v1::gateway_service_server::{GatewayService, GatewayServiceServer};
use openshell_proto::gateway::v1::log_service_server::{LogService, LogServiceServer};
use openshell_proto::gateway::v1::sandbox_service_server::{SandboxService, SandboxServiceServer};
use openshell_proto::gateway::v1::*;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type Rpc<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

const T0: i64 = 1_738_324_800_000;

#[derive(Default)]
pub struct State {
    sandboxes: BTreeMap<String, (Sandbox, Vec<LogEntry>)>,
    policies: BTreeMap<String, Vec<String>>,
    /// Open follow streams of running sandboxes; dropped (ending the streams) when the sandbox stops.
    followers: BTreeMap<String, Vec<tokio::sync::mpsc::Sender<Result<LogEntry, Status>>>>,
    pub calls: Vec<String>,
}

#[derive(Clone, Default)]
struct Svc(Arc<Mutex<State>>);

pub struct Fake {
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Fake {
    /// Serves on `<dir>/gateway.sock` until dropped.
    pub fn start(dir: &Path) -> Self {
        let svc = Svc::default();
        let state = svc.0.clone();
        let sock = dir.join("gateway.sock");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::bind(&sock).unwrap();
                ready_tx.send(()).unwrap();
                tonic::transport::Server::builder()
                    .add_service(SandboxServiceServer::new(svc.clone()))
                    .add_service(LogServiceServer::new(svc.clone()))
                    .add_service(GatewayServiceServer::new(svc))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::UnixListenerStream::new(listener),
                        async {
                            let _ = stop_rx.await;
                        },
                    )
                    .await
                    .unwrap();
            });
        });
        ready_rx.recv().unwrap();
        Self { state, stop: Some(stop), thread: Some(thread) }
    }

    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn transition(phase: Phase, reason: &str) -> PhaseTransition {
    PhaseTransition { phase: phase as i32, reason: reason.into(), at_ms: T0 }
}

fn entry(seq: u64, source: LogSource, text: String) -> LogEntry {
    LogEntry { seq, time_ms: T0 + seq as i64, source: source as i32, level: LogLevel::Info as i32, text }
}

fn event(decision: &str, host: &str) -> String {
    format!(
        r#"{{"kind":"network","decision":"{decision}","binary":"/usr/bin/curl","host":"{host}","port":443,"reason":"no_endpoint","hint":"add {host}"}}"#
    )
}

/// Runs the scripted agent: the final sandbox and its logs.
fn script(name: &str, spec: SandboxSpec) -> (Sandbox, Vec<LogEntry>) {
    let mut logs = vec![entry(1, LogSource::Gateway, "provisioning".into())];
    let (mut phase, mut reason, mut exit) = (Phase::Stopped, "agent exited".to_string(), 0);
    for word in &spec.command {
        let seq = logs.len() as u64 + 1;
        match word.split_once(':').unwrap_or((word.as_str(), "")) {
            ("out", t) => logs.push(entry(seq, LogSource::Stdout, t.into())),
            ("err", t) => logs.push(entry(seq, LogSource::Stderr, t.into())),
            ("deny", h) => logs.push(entry(seq, LogSource::Event, event("deny", h))),
            ("allow", h) => logs.push(entry(seq, LogSource::Event, event("allow", h))),
            ("exit", n) => exit = n.parse().unwrap(),
            ("fail", r) => (phase, reason) = (Phase::Failed, r.to_string()),
            ("stay", _) => (phase, reason) = (Phase::Ready, "running".into()),
            _ => {}
        }
    }
    let mut history = vec![transition(Phase::Provisioning, "created")];
    if phase != Phase::Failed {
        history.push(transition(Phase::Ready, "policy acknowledged"));
    }
    if phase != Phase::Ready {
        history.push(transition(phase, &reason));
    }
    let sb = Sandbox {
        id: format!("id-{name}"),
        name: name.into(),
        spec: Some(spec),
        phase: phase as i32,
        phase_reason: reason,
        resource_version: 1,
        policy_revision: 1,
        acked_policy_revision: 1,
        connected: phase == Phase::Ready,
        exit_code: (phase == Phase::Stopped).then_some(exit),
        created_at_ms: T0,
        updated_at_ms: T0,
        last_seen_ms: T0,
        history,
        enforcement_json: String::new(),
    };
    (sb, logs)
}

impl Svc {
    fn record(&self, call: String) {
        self.0.lock().unwrap().calls.push(call);
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Sandbox) -> Result<T, Status>) -> Result<T, Status> {
        let mut st = self.0.lock().unwrap();
        let (sb, _) =
            st.sandboxes.get_mut(name).ok_or_else(|| Status::not_found(format!("no sandbox `{name}`")))?;
        f(sb)
    }
}

fn check_version(sb: &Sandbox, want: Option<u64>) -> Result<(), Status> {
    match want {
        Some(v) if v != sb.resource_version => {
            Err(Status::aborted(format!("resource_version {v} is stale (now {})", sb.resource_version)))
        }
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl SandboxService for Svc {
    type AttachStream = Pin<Box<dyn Stream<Item = Result<AttachOutput, Status>> + Send>>;

    /// Attach is covered end to end through the real gateway on a real terminal (e2e `gateway_tty`).
    async fn attach(&self, _r: Request<tonic::Streaming<AttachInput>>) -> Rpc<Self::AttachStream> {
        self.record("Attach".to_string());
        Err(Status::failed_precondition("the fake gateway has no terminals"))
    }

    async fn create_sandbox(&self, r: Request<CreateSandboxRequest>) -> Rpc<Sandbox> {
        let r = r.into_inner();
        let name = if r.name.is_empty() { "generated-1".to_string() } else { r.name.clone() };
        self.record(format!("CreateSandbox {name} policy={}", r.policy_yaml.len()));
        let mut st = self.0.lock().unwrap();
        if st.sandboxes.contains_key(&name) {
            return Err(Status::already_exists(format!("the name `{name}` is taken")));
        }
        let (sb, logs) = script(&name, r.spec.unwrap_or_default());
        let mut reply = sb.clone();
        reply.phase = Phase::Provisioning as i32;
        st.policies.insert(name.clone(), vec![r.policy_yaml]);
        st.sandboxes.insert(name, (sb, logs));
        Ok(Response::new(reply))
    }

    async fn get_sandbox(&self, r: Request<GetSandboxRequest>) -> Rpc<Sandbox> {
        let name = r.into_inner().name;
        self.record(format!("GetSandbox {name}"));
        let mut sb = self.with(&name, |sb| Ok(sb.clone()))?;
        if name.starts_with("racy") {
            // Someone else changes it right after we read it.
            sb.resource_version -= 1;
        }
        Ok(Response::new(sb))
    }

    async fn list_sandboxes(&self, r: Request<ListSandboxesRequest>) -> Rpc<ListSandboxesResponse> {
        let labels = r.into_inner().labels;
        self.record("ListSandboxes".into());
        let st = self.0.lock().unwrap();
        let sandboxes = st
            .sandboxes
            .values()
            .map(|(sb, _)| sb.clone())
            .filter(|sb| {
                labels.iter().all(|(k, v)| sb.spec.as_ref().and_then(|s| s.labels.get(k)) == Some(v))
            })
            .collect();
        Ok(Response::new(ListSandboxesResponse { sandboxes }))
    }

    async fn delete_sandbox(&self, r: Request<DeleteSandboxRequest>) -> Rpc<DeleteSandboxResponse> {
        let r = r.into_inner();
        self.record(format!("DeleteSandbox {} rv={:?}", r.name, r.resource_version));
        if r.name.starts_with("stuck") {
            return Err(Status::internal("the driver cannot remove it"));
        }
        let id = self.with(&r.name, |sb| check_version(sb, r.resource_version).map(|()| sb.id.clone()))?;
        self.0.lock().unwrap().sandboxes.remove(&r.name);
        Ok(Response::new(DeleteSandboxResponse { id }))
    }

    async fn stop_sandbox(&self, r: Request<StopSandboxRequest>) -> Rpc<Sandbox> {
        let r = r.into_inner();
        self.record(format!("StopSandbox {} rv={:?} grace={}", r.name, r.resource_version, r.grace_ms));
        self.0.lock().unwrap().followers.remove(&r.name);
        self.with(&r.name, |sb| {
            check_version(sb, r.resource_version)?;
            sb.phase = Phase::Stopped as i32;
            sb.exit_code = Some(143);
            sb.resource_version += 1;
            Ok(Response::new(sb.clone()))
        })
    }

    async fn start_sandbox(&self, r: Request<StartSandboxRequest>) -> Rpc<Sandbox> {
        let r = r.into_inner();
        self.record(format!("StartSandbox {} rv={:?}", r.name, r.resource_version));
        self.with(&r.name, |sb| {
            check_version(sb, r.resource_version)?;
            sb.phase = Phase::Ready as i32;
            sb.exit_code = None;
            sb.history.extend([transition(Phase::Provisioning, "start"), transition(Phase::Ready, "ok")]);
            sb.resource_version += 1;
            Ok(Response::new(sb.clone()))
        })
    }

    type WatchSandboxStream = BoxStream<Sandbox>;

    async fn watch_sandbox(&self, r: Request<WatchSandboxRequest>) -> Rpc<Self::WatchSandboxStream> {
        let name = r.into_inner().name;
        self.record(format!("WatchSandbox {name}"));
        let sb = self.with(&name, |sb| Ok(sb.clone()))?;
        // The state now, then nothing more (as if nothing changed), until the client leaves.
        let stream = tokio_stream::iter([Ok(sb)]).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn update_policy(&self, r: Request<UpdatePolicyRequest>) -> Rpc<PolicyRevision> {
        let r = r.into_inner();
        self.record(format!("UpdatePolicy {}", r.name));
        let revision = self.with(&r.name, |sb| {
            sb.policy_revision += 1;
            if !sb.name.starts_with("slow") {
                sb.acked_policy_revision = sb.policy_revision;
            }
            Ok(sb.policy_revision)
        })?;
        self.0.lock().unwrap().policies.entry(r.name).or_default().push(r.policy_yaml.clone());
        Ok(Response::new(PolicyRevision { revision, yaml: r.policy_yaml, created_at_ms: T0 }))
    }

    async fn get_policy(&self, r: Request<GetPolicyRequest>) -> Rpc<PolicyRevision> {
        let r = r.into_inner();
        self.record(format!("GetPolicy {} {}", r.name, r.revision));
        let st = self.0.lock().unwrap();
        let revs = st.policies.get(&r.name).ok_or_else(|| Status::not_found("no such sandbox"))?;
        let n = if r.revision == 0 { revs.len() as u64 } else { r.revision };
        let yaml = revs.get(n as usize - 1).ok_or_else(|| Status::not_found(format!("no revision {n}")))?;
        Ok(Response::new(PolicyRevision { revision: n, yaml: yaml.clone(), created_at_ms: T0 }))
    }
}

#[tonic::async_trait]
impl LogService for Svc {
    type GetLogsStream = BoxStream<LogEntry>;

    async fn get_logs(&self, r: Request<GetLogsRequest>) -> Rpc<Self::GetLogsStream> {
        let r = r.into_inner();
        self.record(format!("GetLogs {} follow={} after={}", r.name, r.follow, r.after_seq));
        let mut st = self.0.lock().unwrap();
        let (sb, logs) = st.sandboxes.get(&r.name).ok_or_else(|| Status::not_found("no such sandbox"))?;
        let entries: Vec<_> = logs.iter().filter(|e| e.seq > r.after_seq).cloned().collect();
        if r.follow && sb.phase() == Phase::Ready {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            for e in entries {
                tx.try_send(Ok(e)).unwrap();
            }
            st.followers.entry(r.name).or_default().push(tx);
            Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
        } else {
            Ok(Response::new(Box::pin(tokio_stream::iter(entries.into_iter().map(Ok)))))
        }
    }
}

#[tonic::async_trait]
impl GatewayService for Svc {
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Rpc<GatewayStatus> {
        let st = self.0.lock().unwrap();
        Ok(Response::new(GatewayStatus {
            version: "9.9.9-fake".into(),
            state_dir: "/fake/state".into(),
            database: "sqlite".into(),
            drivers: vec![DriverStatus { name: "local".into(), ready: true, detail: "rootless".into() }],
            sandboxes: st.sandboxes.len() as u32,
            connected_sessions: 0,
            started_at_ms: T0,
            pid: 4242,
        }))
    }
}
