//! How the supervisor reaches the gateway: the endpoint (`unix:///path.sock`, `http://host:port`,
//! `https://host:port` with the CA of `--ca-file`) and the credentials every request carries.
//!
//! Threat handled: talking to an impostor gateway over TCP (TLS verifies the gateway's certificate against
//! the given CA only, never the host's trust store) and leaking the secret (the `authorization` value is
//! marked sensitive: HPACK never indexes it and `Debug` output redacts it). Residual risk: plain
//! `http://` is unauthenticated and unencrypted; it is meant for loopback and tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use openshell_proto::supervisor::v1::supervisor_session_client::SupervisorSessionClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use super::secret::Secret;

/// Metadata naming the sandbox whose secret the `authorization` value is.
pub const HEADER_SANDBOX_ID: &str = "x-openshell-sandbox-id";
/// Bound on establishing the connection (TCP/unix connect and TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings detect a gateway that vanished without closing the connection (host gone, partition):
/// the stream fails within interval + timeout and the session reconnects.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

pub type Client = SupervisorSessionClient<InterceptedService<Channel, Credentials>>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("--gateway {0}: expected unix:///absolute/path.sock, http://host:port or https://host:port")]
    Endpoint(String),
    #[error("--gateway {0}: https needs --ca-file (the CA that signed the gateway's certificate)")]
    NoCa(String),
    #[error("--ca-file is only used with an https:// gateway")]
    CaWithoutTls,
    #[error("--ca-file {}: cannot read it", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--gateway {endpoint}: invalid endpoint")]
    Invalid {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("--sandbox-id {0:?}: must be visible ASCII")]
    SandboxId(String),
    #[error("the secret cannot be sent as a header value")]
    Secret,
}

/// Adds the sandbox's credentials to every request.
#[derive(Clone)]
pub struct Credentials {
    authorization: MetadataValue<Ascii>,
    sandbox_id: MetadataValue<Ascii>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("sandbox_id", &self.sandbox_id).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(sandbox_id: &str, secret: &Secret) -> Result<Self, TransportError> {
        let mut authorization = MetadataValue::try_from(format!("Bearer {}", secret.expose()))
            .map_err(|_| TransportError::Secret)?;
        authorization.set_sensitive(true);
        let sandbox_id = MetadataValue::try_from(sandbox_id)
            .ok()
            .filter(|_| !sandbox_id.is_empty() && sandbox_id.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| TransportError::SandboxId(sandbox_id.to_string()))?;
        Ok(Credentials { authorization, sandbox_id })
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let metadata = req.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        metadata.insert(HEADER_SANDBOX_ID, self.sandbox_id.clone());
        Ok(req)
    }
}

enum Target {
    /// Unix socket path; the URI of the endpoint is a placeholder.
    Unix(PathBuf),
    Tcp,
}

/// A way to the gateway; cheap to connect again after a failure.
pub struct Transport {
    endpoint: Endpoint,
    target: Target,
    credentials: Credentials,
    display: String,
}

impl Transport {
    pub fn new(
        gateway: &str,
        ca_file: Option<&Path>,
        credentials: Credentials,
    ) -> Result<Self, TransportError> {
        let invalid = |source| TransportError::Invalid { endpoint: gateway.to_string(), source };
        let (endpoint, target) = if let Some(path) = gateway.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(TransportError::Endpoint(gateway.to_string()));
            }
            if ca_file.is_some() {
                return Err(TransportError::CaWithoutTls);
            }
            (Endpoint::from_static("http://localhost"), Target::Unix(path))
        } else if gateway.starts_with("https://") {
            let ca_path = ca_file.ok_or_else(|| TransportError::NoCa(gateway.to_string()))?;
            let pem = std::fs::read(ca_path)
                .map_err(|source| TransportError::CaFile { path: ca_path.to_path_buf(), source })?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            let endpoint = Endpoint::from_shared(gateway.to_string()).map_err(invalid)?;
            (endpoint.tls_config(tls).map_err(invalid)?, Target::Tcp)
        } else if gateway.starts_with("http://") {
            if ca_file.is_some() {
                return Err(TransportError::CaWithoutTls);
            }
            (Endpoint::from_shared(gateway.to_string()).map_err(invalid)?, Target::Tcp)
        } else {
            return Err(TransportError::Endpoint(gateway.to_string()));
        };
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Ok(Transport { endpoint, target, credentials, display: gateway.to_string() })
    }

    /// The endpoint as given (for logs).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Connects (eagerly: a gateway that is down is an error here, not on the first message) and returns a
    /// client that sends the credentials with every request.
    pub async fn connect(&self) -> Result<Client, tonic::transport::Error> {
        let channel = match &self.target {
            Target::Tcp => self.endpoint.connect().await?,
            Target::Unix(path) => {
                let path = path.clone();
                let connector = tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
                });
                self.endpoint.connect_with_connector(connector).await?
            }
        };
        Ok(SupervisorSessionClient::with_interceptor(channel, self.credentials.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new("sbx-1", &Secret::for_test("s3cret")).unwrap()
    }

    #[test]
    fn endpoints() {
        assert!(Transport::new("unix:///run/gw.sock", None, creds()).is_ok());
        assert!(Transport::new("http://127.0.0.1:7000", None, creds()).is_ok());
        assert!(matches!(Transport::new("unix://rel.sock", None, creds()), Err(TransportError::Endpoint(_))));
        assert!(matches!(Transport::new("ftp://x", None, creds()), Err(TransportError::Endpoint(_))));
        assert!(matches!(Transport::new("https://gw:443", None, creds()), Err(TransportError::NoCa(_))));
        assert!(matches!(
            Transport::new("http://gw:80", Some(Path::new("/ca.pem")), creds()),
            Err(TransportError::CaWithoutTls)
        ));
        assert!(matches!(
            Transport::new("https://gw:443", Some(Path::new("/nonexistent/ca.pem")), creds()),
            Err(TransportError::CaFile { .. })
        ));
    }

    #[test]
    fn credentials_are_added_and_redacted() {
        let mut c = creds();
        let req = c.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer s3cret");
        assert_eq!(req.metadata().get(HEADER_SANDBOX_ID).unwrap(), "sbx-1");
        assert!(req.metadata().get("authorization").unwrap().is_sensitive());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credentials::new("bad id", &Secret::for_test("x")).is_err());
        assert!(Credentials::new("", &Secret::for_test("x")).is_err());
    }
}
