//! `openshell.gateway.v1.LogService`: stored entries, then (with `follow`) new ones as they arrive. A
//! follow ends once the sandbox has stopped or failed and everything stored was sent, or it is deleted.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::log_service_server::LogService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::lifecycle::Gateway;
use crate::model::{LogFilter, Phase};

const BATCH: u32 = 1000;

pub struct Api(pub Arc<Gateway>);

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

#[tonic::async_trait]
impl LogService for Api {
    type GetLogsStream = LogStream;

    async fn get_logs(
        &self,
        req: Request<pb::GetLogsRequest>,
    ) -> Result<Response<Self::GetLogsStream>, Status> {
        let req = req.into_inner();
        let gateway = Arc::clone(&self.0);
        // Subscribe before the first read so that nothing appended in between is missed.
        let mut sub = gateway.hub.subscribe();
        let id = gateway.find(&req.name).await?.id;
        let mut filter = LogFilter {
            after_seq: req.after_seq,
            since_ms: req.since_ms,
            min_level: convert::log_level_from_pb(req.min_level),
            limit: BATCH,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                // Read the phase BEFORE the entries: entries stored before a stop are then all sent.
                let finished = match gateway.store.get_sandbox(&id).await {
                    Ok(Some(r)) => matches!(r.phase, Phase::Stopped | Phase::Failed),
                    _ => true,
                };
                let entries = match gateway.store.read_logs(&id, &filter).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(crate::errors::GatewayError::from(e)))).await;
                        return;
                    }
                };
                let full = entries.len() >= BATCH as usize;
                for entry in &entries {
                    filter.after_seq = entry.seq;
                    if tx.send(Ok(convert::log_entry(entry))).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                if !req.follow || finished {
                    return;
                }
                tokio::select! {
                    _ = sub.changed(&id, Duration::from_secs(2)) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
