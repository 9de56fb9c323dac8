//! The test CA and the fake internet's server certificate (rcgen), and the rustls acceptor.

use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

use super::FakeConfig;

/// Creates a fresh CA, writes its PEM to `cfg.ca_out`, and returns an acceptor whose certificate
/// covers `cfg.cert_names` and every address in `cfg.addrs`.
pub(super) fn acceptor(cfg: &FakeConfig) -> Result<TlsAcceptor> {
    let ca_key = KeyPair::generate().context("generate CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.distinguished_name.push(DnType::CommonName, "openshell e2e test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
    if let Some(path) = &cfg.ca_out {
        std::fs::write(path, ca_cert.pem()).with_context(|| format!("write {}", path.display()))?;
    }
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = cfg.cert_names.clone();
    names.extend(cfg.addrs.iter().map(ToString::to_string));
    let leaf_key = KeyPair::generate().context("generate server key")?;
    let mut leaf_params = CertificateParams::new(names).context("server cert params")?;
    leaf_params.distinguished_name.push(DnType::CommonName, "fake internet");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).context("sign server cert")?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), CertificateDer::from(ca_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .context("server certificate")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
