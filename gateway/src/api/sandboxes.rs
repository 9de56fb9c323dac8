//! `openshell.gateway.v1.SandboxService`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::sandbox_service_server::SandboxService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::lifecycle::Gateway;
use crate::lifecycle::ops::CreateRequest;
use crate::model::SandboxRecord;

pub struct Api(pub Arc<Gateway>);

impl Api {
    async fn to_pb(&self, r: &SandboxRecord, with_history: bool) -> Result<pb::Sandbox, Status> {
        let history = if with_history {
            self.0.store.phase_history(&r.id).await.map_err(crate::errors::GatewayError::from)?
        } else {
            Vec::new()
        };
        Ok(convert::sandbox(r, self.0.sessions.is_connected(&r.id), &history))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Sandbox, Status>> + Send>>;

#[tonic::async_trait]
impl SandboxService for Api {
    type AttachStream = super::attach::AttachStream;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<pb::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        Ok(Response::new(super::attach::attach(&self.0, req.into_inner()).await?))
    }

    async fn create_sandbox(
        &self,
        req: Request<pb::CreateSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let req = req.into_inner();
        let record = self
            .0
            .create(CreateRequest {
                name: req.name,
                spec: convert::spec_from_pb(req.spec),
                policy_yaml: req.policy_yaml,
            })
            .await?;
        Ok(Response::new(self.to_pb(&record, false).await?))
    }

    async fn get_sandbox(
        &self,
        req: Request<pb::GetSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let record = self.0.find(&req.into_inner().name).await?;
        Ok(Response::new(self.to_pb(&record, true).await?))
    }

    async fn list_sandboxes(
        &self,
        req: Request<pb::ListSandboxesRequest>,
    ) -> Result<Response<pb::ListSandboxesResponse>, Status> {
        let labels = req.into_inner().labels.into_iter().collect();
        let records = self.0.list(&labels).await?;
        // Without the enforcement reports (about 4 KB each; GetSandbox has them): a list of thousands of
        // sandboxes must stay far below the 4 MiB message limit.
        let sandboxes = records
            .iter()
            .map(|r| {
                let mut s = convert::sandbox(r, self.0.sessions.is_connected(&r.id), &[]);
                s.enforcement_json.clear();
                s
            })
            .collect();
        Ok(Response::new(pb::ListSandboxesResponse { sandboxes }))
    }

    async fn delete_sandbox(
        &self,
        req: Request<pb::DeleteSandboxRequest>,
    ) -> Result<Response<pb::DeleteSandboxResponse>, Status> {
        let req = req.into_inner();
        let id = self.0.delete(&req.name, req.resource_version).await?;
        Ok(Response::new(pb::DeleteSandboxResponse { id }))
    }

    async fn stop_sandbox(
        &self,
        req: Request<pb::StopSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let req = req.into_inner();
        let grace = (req.grace_ms > 0).then(|| Duration::from_millis(u64::from(req.grace_ms)));
        let record = self.0.stop(&req.name, req.resource_version, grace).await?;
        Ok(Response::new(self.to_pb(&record, false).await?))
    }

    async fn start_sandbox(
        &self,
        req: Request<pb::StartSandboxRequest>,
    ) -> Result<Response<pb::Sandbox>, Status> {
        let req = req.into_inner();
        let record = self.0.start(&req.name, req.resource_version).await?;
        Ok(Response::new(self.to_pb(&record, false).await?))
    }

    type WatchSandboxStream = WatchStream;

    async fn watch_sandbox(
        &self,
        req: Request<pb::WatchSandboxRequest>,
    ) -> Result<Response<Self::WatchSandboxStream>, Status> {
        let gateway = Arc::clone(&self.0);
        let mut sub = gateway.hub.subscribe();
        let first = gateway.find(&req.into_inner().name).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let id = first.id.clone();
            let mut last: Option<(u64, bool)> = None;
            loop {
                let record = match gateway.store.get_sandbox(&id).await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(crate::errors::GatewayError::from(e)))).await;
                        break;
                    }
                };
                let connected = gateway.sessions.is_connected(&id);
                if last != Some((record.resource_version, connected)) {
                    last = Some((record.resource_version, connected));
                    let history = gateway.store.phase_history(&id).await.unwrap_or_default();
                    if tx.send(Ok(convert::sandbox(&record, connected, &history))).await.is_err() {
                        break;
                    }
                }
                tokio::select! {
                    _ = sub.changed(&id, Duration::from_secs(5)) => {}
                    () = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn update_policy(
        &self,
        req: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::PolicyRevision>, Status> {
        let req = req.into_inner();
        let rev = self.0.update_policy(&req.name, &req.policy_yaml, req.resource_version).await?;
        Ok(Response::new(convert::policy_revision(rev)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::PolicyRevision>, Status> {
        let req = req.into_inner();
        let record = self.0.find(&req.name).await?;
        let rev = self
            .0
            .store
            .get_policy_revision(&record.id, req.revision)
            .await
            .map_err(crate::errors::GatewayError::from)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "sandbox `{}` has no policy revision {}",
                    record.name, req.revision
                ))
            })?;
        Ok(Response::new(convert::policy_revision(rev)))
    }
}
