//! Thin tonic services over [`crate::lifecycle::Gateway`]: decode, call, encode. Authentication happened
//! in [`crate::auth`] before any of this runs.

pub mod attach;
pub mod convert;
pub mod logs;
pub mod sandboxes;
pub mod session;
pub mod status;

use std::sync::Arc;

use openshell_proto::gateway::v1::gateway_service_server::GatewayServiceServer;
use openshell_proto::gateway::v1::log_service_server::LogServiceServer;
use openshell_proto::gateway::v1::sandbox_service_server::SandboxServiceServer;
use openshell_proto::supervisor::v1::supervisor_session_server::SupervisorSessionServer;
use tonic::service::Routes;

use crate::lifecycle::Gateway;

/// Every service of the gateway, ready to be served behind the auth layer.
pub fn routes(gateway: &Arc<Gateway>) -> Routes {
    let mut builder = Routes::builder();
    builder
        .add_service(SandboxServiceServer::new(sandboxes::Api(Arc::clone(gateway))))
        .add_service(LogServiceServer::new(logs::Api(Arc::clone(gateway))))
        .add_service(GatewayServiceServer::new(status::Api(Arc::clone(gateway))))
        .add_service(SupervisorSessionServer::new(session::Api(Arc::clone(gateway))));
    builder.routes()
}
