//! Who is calling. One tower layer in front of every service: it looks up the RPC's declared caller in
//! the table generated from the `.proto` files (`openshell_proto::caller_of`), refuses undeclared RPCs,
//! authenticates the caller for that declaration and puts an [`Identity`] into the request's extensions.
//!
//! - Users, on the unix socket: the peer's uid (kernel credentials) must be the gateway's or root; the
//!   socket is 0600 anyway. On TCP+TLS: the bearer token (compared by SHA-256, constant time) or a client
//!   certificate the TLS layer verified against the gateway's CA.
//! - Sandboxes: `x-openshell-sandbox-id` and `authorization: Bearer <secret>`; the store keeps only the
//!   secret's SHA-256. A failure never says whether the sandbox exists.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use openshell_proto::Caller;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::store::Store;

pub const HEADER_SANDBOX_ID: &str = "x-openshell-sandbox-id";

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    User,
    Sandbox(String),
}

/// How users prove who they are on one listener.
#[derive(Clone, Debug)]
pub enum UserAuth {
    /// Unix socket: the peer's uid must be this one or root.
    PeerUid(u32),
    /// TCP+TLS: bearer token (by its SHA-256), or any client certificate verified by the TLS layer.
    TokenOrClientCert { token_sha256: [u8; 32] },
}

#[derive(Clone)]
pub struct AuthLayer {
    users: UserAuth,
    store: Arc<dyn Store>,
}

impl AuthLayer {
    pub fn new(users: UserAuth, store: Arc<dyn Store>) -> Self {
        AuthLayer { users, store }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    layer: AuthLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The ready service is the one we were polled for; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let claims = Claims::of(&req);
        Box::pin(async move {
            match authenticate(&layer, claims).await {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// What authentication looks at, taken from the request before any await (the body need not be Sync).
struct Claims {
    path: String,
    bearer: Option<String>,
    sandbox_id: Option<String>,
    peer_uid: Option<u32>,
    has_client_cert: bool,
}

impl Claims {
    fn of<B>(req: &http::Request<B>) -> Claims {
        let ext = req.extensions();
        Claims {
            path: req.uri().path().to_string(),
            bearer: bearer(req).map(str::to_string),
            sandbox_id: req
                .headers()
                .get(HEADER_SANDBOX_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            peer_uid: ext
                .get::<tonic::transport::server::UdsConnectInfo>()
                .and_then(|info| info.peer_cred)
                .map(|cred| cred.uid()),
            has_client_cert: ext
                .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
                .and_then(|info| info.peer_certs())
                .is_some_and(|certs| !certs.is_empty()),
        }
    }
}

async fn authenticate(layer: &AuthLayer, claims: Claims) -> Result<Identity, Status> {
    match openshell_proto::caller_of(&claims.path) {
        None => {
            Err(Status::permission_denied(format!("{}: no such RPC, or it declares no caller", claims.path)))
        }
        Some(Caller::User) => authenticate_user(&layer.users, &claims).map(|()| Identity::User),
        Some(Caller::Sandbox) => {
            authenticate_sandbox(layer.store.as_ref(), &claims).await.map(Identity::Sandbox)
        }
    }
}

fn authenticate_user(users: &UserAuth, claims: &Claims) -> Result<(), Status> {
    match users {
        UserAuth::PeerUid(owner) => match claims.peer_uid {
            Some(uid) if uid == *owner || uid == 0 => Ok(()),
            Some(uid) => Err(Status::permission_denied(format!(
                "uid {uid} may not use this gateway (it belongs to uid {owner})"
            ))),
            None => Err(Status::unauthenticated("the peer's credentials are unknown")),
        },
        UserAuth::TokenOrClientCert { token_sha256 } => {
            if let Some(token) = &claims.bearer {
                if constant_time_eq(&sha256(token.as_bytes()), token_sha256) {
                    return Ok(());
                }
                return Err(Status::unauthenticated("invalid bearer token"));
            }
            if claims.has_client_cert {
                Ok(())
            } else {
                Err(Status::unauthenticated("a bearer token or a client certificate is required"))
            }
        }
    }
}

async fn authenticate_sandbox(store: &dyn Store, claims: &Claims) -> Result<String, Status> {
    let refused = || Status::unauthenticated("invalid sandbox credentials");
    let id = claims.sandbox_id.as_deref().ok_or_else(refused)?;
    let secret = claims.bearer.as_deref().ok_or_else(refused)?;
    if id.len() > 64 || !id.starts_with("sbx-") {
        return Err(refused());
    }
    let record = store.get_sandbox(id).await.map_err(|e| {
        tracing::error!("authenticating sandbox {id}: {e}");
        Status::unavailable("the gateway cannot check credentials right now")
    })?;
    let Some(record) = record.filter(|r| r.id == id) else {
        return Err(refused());
    };
    let expected = hex::decode(&record.secret_hash).unwrap_or_default();
    if constant_time_eq(&sha256(secret.as_bytes()), &expected) { Ok(record.id) } else { Err(refused()) }
}

fn bearer<B>(req: &http::Request<B>) -> Option<&str> {
    req.headers().get(http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Hex SHA-256 of a secret, as stored.
#[must_use]
pub fn secret_hash(secret: &str) -> String {
    hex::encode(sha256(secret.as_bytes()))
}

/// A new random secret (256 bits, hex).
#[must_use]
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The identity the auth layer put on a request (always present behind the layer).
pub fn identity<T>(req: &tonic::Request<T>) -> Result<Identity, Status> {
    req.extensions().get::<Identity>().cloned().ok_or_else(|| Status::unauthenticated("unauthenticated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_and_comparison() {
        let s = new_secret();
        assert_eq!(s.len(), 64);
        assert_ne!(s, new_secret());
        let h = secret_hash(&s);
        assert!(constant_time_eq(&sha256(s.as_bytes()), &hex::decode(h).unwrap()));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"ab", b"ac"));
    }
}
