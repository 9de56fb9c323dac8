//! `openshell.supervisor.v1.SupervisorSession`: one bidirectional stream per supervisor. The first
//! message must be Hello for the sandbox the credentials belong to; a session silent for three heartbeat
//! intervals is dropped.

use std::pin::Pin;
use std::sync::Arc;

use openshell_proto::supervisor::v1::supervisor_session_server::SupervisorSession;
use openshell_proto::supervisor::v1::{GatewayMessage, RelayUp, SupervisorMessage, supervisor_message::Msg};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Identity, identity};
use crate::lifecycle::{Gateway, HEARTBEAT_INTERVAL};

pub struct Api(pub Arc<Gateway>);

type Outbound = Pin<Box<dyn Stream<Item = Result<GatewayMessage, Status>> + Send>>;

#[tonic::async_trait]
impl SupervisorSession for Api {
    type OpenStream = Outbound;
    type RelayStream = super::attach::RelayStream;

    async fn relay(&self, req: Request<Streaming<RelayUp>>) -> Result<Response<Self::RelayStream>, Status> {
        let Identity::Sandbox(id) = identity(&req)? else {
            return Err(Status::permission_denied("only sandboxes open relays"));
        };
        Ok(Response::new(super::attach::relay(&self.0, &id, req.into_inner()).await?))
    }

    async fn open(
        &self,
        req: Request<Streaming<SupervisorMessage>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let Identity::Sandbox(id) = identity(&req)? else {
            return Err(Status::permission_denied("only sandboxes open sessions"));
        };
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HEARTBEAT_INTERVAL * 2, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello received"))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(Msg::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the first message of a session must be Hello")),
        };
        if hello.sandbox_id != id {
            return Err(Status::permission_denied("Hello names another sandbox than the credentials"));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let gateway = Arc::clone(&self.0);
        let session_id = gateway.session_opened(&id, &hello, tx).await?;
        tracing::info!(sandbox = %id, session_id, running = hello.agent_running, "supervisor session opened");
        tokio::spawn(async move {
            loop {
                let next = tokio::time::timeout(HEARTBEAT_INTERVAL * 3, inbound.message()).await;
                let msg = match next {
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        tracing::debug!(sandbox = %id, "session stream error: {e}");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(sandbox = %id, "supervisor silent for three heartbeats; dropping its session");
                        break;
                    }
                };
                if !gateway.sessions.is_current(&id, session_id) {
                    break; // replaced by a newer session, or the sandbox is being deleted
                }
                if let Err(e) = handle(&gateway, &id, session_id, msg).await {
                    tracing::warn!(sandbox = %id, "handling a supervisor message: {e}");
                }
            }
            gateway.session_closed(&id, session_id).await;
            tracing::info!(sandbox = %id, session_id, "supervisor session closed");
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

async fn handle(
    gateway: &Arc<Gateway>,
    id: &str,
    session_id: u64,
    msg: SupervisorMessage,
) -> crate::errors::Result<()> {
    match msg.msg {
        Some(Msg::Ack(ack)) => gateway.on_ack(id, &ack).await?,
        Some(Msg::Started(started)) => gateway.on_started(id, session_id, &started).await?,
        Some(Msg::Exited(exited)) => gateway.on_exited(id, session_id, &exited).await?,
        Some(Msg::LaunchFailed(f)) => gateway.on_launch_failed(id, &f.error).await?,
        Some(Msg::Logs(batch)) => gateway.on_logs(id, batch).await,
        Some(Msg::Events(batch)) => gateway.on_events(id, batch).await,
        Some(Msg::Heartbeat(_)) => gateway.on_heartbeat(id).await,
        Some(Msg::RelayRefused(r)) => gateway.relays.refuse(id, &r.relay_id, r.error),
        Some(Msg::Hello(_)) | None => {}
    }
    Ok(())
}
