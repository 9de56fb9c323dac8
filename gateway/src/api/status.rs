//! `openshell.gateway.v1.GatewayService`.

use std::sync::Arc;

use openshell_proto::gateway::v1 as pb;
use openshell_proto::gateway::v1::gateway_service_server::GatewayService;
use tonic::{Request, Response, Status};

use crate::lifecycle::Gateway;

pub struct Api(pub Arc<Gateway>);

#[tonic::async_trait]
impl GatewayService for Api {
    async fn get_status(
        &self,
        _req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GatewayStatus>, Status> {
        let g = &self.0;
        let sandboxes = g.store.list_sandboxes().await.map_err(crate::errors::GatewayError::from)?.len();
        let mut drivers = Vec::new();
        for d in g.drivers() {
            let (ready, detail) = d.status().await;
            drivers.push(pb::DriverStatus { name: d.name().to_string(), ready, detail });
        }
        Ok(Response::new(pb::GatewayStatus {
            version: env!("CARGO_PKG_VERSION").to_string(),
            state_dir: g.state_dir.display().to_string(),
            database: g.store.describe(),
            drivers,
            sandboxes: u32::try_from(sandboxes).unwrap_or(u32::MAX),
            connected_sessions: u32::try_from(g.sessions.count()).unwrap_or(u32::MAX),
            started_at_ms: g.started_at_ms,
            pid: std::process::id(),
        }))
    }
}
