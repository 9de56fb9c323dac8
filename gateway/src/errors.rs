//! The gateway's domain error and its ONE mapping to a gRPC status: the code is chosen here, internal
//! details are logged with a request id and never sent to the client.

use crate::drivers::DriverError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("sandbox `{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency: the resource changed since the caller read it.
    #[error("{0}")]
    Conflict(String),
    /// The request is valid but not in the sandbox's current phase.
    #[error("{0}")]
    WrongPhase(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("compute driver: {0}")]
    Driver(DriverError),
}

impl From<StoreError> for GatewayError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => GatewayError::NotFound(id),
            StoreError::NameTaken(name) => GatewayError::AlreadyExists(format!(
                "a sandbox named `{name}` already exists; choose another name or delete it first"
            )),
            StoreError::Conflict { id, .. } => GatewayError::Conflict(format!(
                "sandbox `{id}` was changed concurrently; read it again and retry"
            )),
            other => GatewayError::Store(other),
        }
    }
}

impl From<DriverError> for GatewayError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::InvalidSpec(msg) => GatewayError::InvalidArgument(msg),
            DriverError::Unavailable(name, why) => {
                GatewayError::Unavailable(format!("compute driver `{name}` is not available: {why}"))
            }
            other => GatewayError::Driver(other),
        }
    }
}

static NEXT_REQUEST_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl From<GatewayError> for tonic::Status {
    fn from(e: GatewayError) -> Self {
        use tonic::Status;
        match e {
            GatewayError::InvalidArgument(m) => Status::invalid_argument(m),
            e @ GatewayError::NotFound(_) => Status::not_found(e.to_string()),
            GatewayError::AlreadyExists(m) => Status::already_exists(m),
            GatewayError::Conflict(m) => Status::aborted(m),
            GatewayError::WrongPhase(m) => Status::failed_precondition(m),
            GatewayError::Unauthenticated(m) => Status::unauthenticated(m),
            GatewayError::PermissionDenied(m) => Status::permission_denied(m),
            GatewayError::Unavailable(m) => Status::unavailable(m),
            internal @ (GatewayError::Store(_) | GatewayError::Driver(_)) => {
                let id = NEXT_REQUEST_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(request_id = id, "internal error: {internal}");
                Status::internal(format!("internal error (gateway log, request id {id})"))
            }
        }
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
