//! TLS material for the TCP listener, created in `<state>/tls/` on first use: a CA (kept), a client
//! certificate for mTLS users and a bearer token (kept, 0600), and a server certificate (re-issued at
//! every start for the current address). Clients trust `ca.pem`.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct Material {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// The bearer token users present (`tls/token`).
    pub token: String,
}

pub fn ensure(dir: &Path, addr: SocketAddr) -> anyhow::Result<Material> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key_pem) = match (read(dir, "ca.pem"), read(dir, "ca.key")) {
        (Some(cert), Some(key)) => (cert, key),
        _ => create_ca(dir)?,
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("tls/ca.key")?;
    // Same subject and key as the stored CA certificate: what it signs chains to `ca.pem`.
    let issuer = Issuer::new(ca_params()?, ca_key);
    if read(dir, "client.pem").is_none() || read(dir, "client.key").is_none() {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "openshell user");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        write_private(dir, "client.key", &key.serialize_pem())?;
        write_private(dir, "client.pem", &cert.pem())?;
    }
    let token = match read(dir, "token") {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = crate::auth::new_secret();
            write_private(dir, "token", &t)?;
            t
        }
    };
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(h) = host.to_str().filter(|h| !h.is_empty())
    {
        names.push(h.to_string());
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, "openshell gateway");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Material {
        ca_cert_pem: ca_pem,
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
        token,
    })
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "openshell gateway CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn create_ca(dir: &Path) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    write_private(dir, "ca.key", &key.serialize_pem())?;
    write_private(dir, "ca.pem", &cert.pem())?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn write_private(dir: &Path, name: &str, content: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    crate::files::write_private(&path, content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
