//! TLS client configuration for `https://` URLs fetched by the forward proxy.
//!
//! Threat handled: a forward-proxied `https://` request must be as safe as the
//! agent connecting itself. Certificates are verified against the host's trust
//! roots (`rustls-native-certs`, which honours `SSL_CERT_FILE`/`SSL_CERT_DIR`)
//! plus an optional extra CA; the ring provider is the only crypto provider.
//! Residual risk: the proxy's trust roots are the host's, not the sandbox
//! image's; an image that trusts an extra corporate CA needs it passed as
//! `extra_ca_file`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::sync::OnceCell;

use crate::error::EgressError;

/// The upstream TLS client configuration, built on first use: loading the
/// host's trust store (hundreds of certificates, milliseconds of CPU) is not
/// on the sandbox's startup path, and an agent that never sends an `https://`
/// URL to the forward proxy never pays for it. The extra CA is read and
/// checked at construction, so a bad `extra_ca_file` still fails at start.
pub(crate) struct TlsClient {
    extra: Vec<CertificateDer<'static>>,
    config: OnceCell<Arc<ClientConfig>>,
}

impl TlsClient {
    /// Reads and checks the optional extra CA bundle.
    pub(crate) fn new(extra_ca: Option<&Path>) -> Result<Self, EgressError> {
        let mut extra = Vec::new();
        if let Some(path) = extra_ca {
            let ca_err = |source| EgressError::ExtraCa { path: path.to_owned(), source };
            let mut reader = BufReader::new(File::open(path).map_err(ca_err)?);
            let mut check = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(ca_err)?;
                check.add(cert.clone()).map_err(|source| EgressError::Tls { source })?;
                extra.push(cert);
            }
        }
        Ok(Self { extra, config: OnceCell::new() })
    }

    /// The configuration (ALPN `http/1.1`); the first call loads the host's
    /// trust roots on the blocking pool.
    pub(crate) async fn config(&self) -> Result<Arc<ClientConfig>, String> {
        self.config
            .get_or_try_init(|| async {
                let extra = self.extra.clone();
                tokio::task::spawn_blocking(move || client_config(extra))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            })
            .await
            .cloned()
    }
}

/// Builds the upstream client configuration (ALPN `http/1.1`).
fn client_config(extra: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>, EgressError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::debug!(errors = native.errors.len(), "some native trust roots could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "loaded native trust roots");
    for cert in extra {
        roots.add(cert).map_err(|source| EgressError::Tls { source })?;
    }
    if roots.is_empty() {
        tracing::warn!("no TLS trust roots: https:// requests through the forward proxy will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| EgressError::Tls { source })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
