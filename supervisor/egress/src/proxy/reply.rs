//! JSON error responses of the explicit proxy (403 policy denials, 400 malformed
//! requests, 502 unreachable destinations), both as raw bytes for the
//! hand-written CONNECT path and as hyper responses for the forward path.
//!
//! Threat handled: agents hanging or guessing. Every refusal is an immediate,
//! complete HTTP response with a machine-readable reason and a hint.
//! Residual risk: the body names the binary and host, which the agent already
//! knows; nothing about other policies or the host is revealed.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::gate::{Denial, Unreachable};

/// Body of a 403.
#[derive(Debug, Serialize)]
pub(crate) struct DeniedBody<'a> {
    pub error: &'static str,
    pub reason: &'a str,
    pub detail: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub binary: Option<&'a str>,
    pub policy_generation: u64,
    pub hint: &'a str,
    /// The policy whose endpoint refused the request (L7 denials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'a str>,
    /// Index of that endpoint in the policy's `endpoints`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<usize>,
}

impl<'a> DeniedBody<'a> {
    pub(crate) fn new(d: &'a Denial, host: &'a str, port: u16, binary: Option<&'a str>) -> Self {
        Self {
            error: "policy_denied",
            reason: d.code,
            detail: &d.detail,
            host,
            port,
            binary,
            policy_generation: d.generation,
            hint: &d.hint,
            policy: d.endpoint.as_ref().map(|n| n.0.as_str()),
            endpoint: d.endpoint.as_ref().map(|n| n.1),
        }
    }
}

/// Body of a 400.
#[derive(Debug, Serialize)]
pub(crate) struct BadRequestBody<'a> {
    pub error: &'static str,
    pub detail: &'a str,
}

impl<'a> BadRequestBody<'a> {
    pub(crate) fn new(detail: &'a str) -> Self {
        Self { error: "bad_request", detail }
    }
}

/// Body of a 502.
#[derive(Debug, Serialize)]
pub(crate) struct UnreachableBody<'a> {
    pub error: &'static str,
    pub reason: &'a str,
    pub detail: &'a str,
    pub host: &'a str,
    pub port: u16,
}

impl<'a> UnreachableBody<'a> {
    pub(crate) fn new(u: &'a Unreachable, host: &'a str, port: u16) -> Self {
        Self { error: "upstream_unreachable", reason: u.code, detail: &u.detail, host, port }
    }
}

fn json(body: &impl Serialize) -> Vec<u8> {
    let mut v = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"internal\"}".to_vec());
    v.push(b'\n');
    v
}

/// A complete HTTP/1.1 response with a JSON body, as bytes; `close` adds
/// `Connection: close`.
pub(crate) fn raw(status: StatusCode, body: &impl Serialize, close: bool) -> Vec<u8> {
    let body = json(body);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The same as a hyper response.
pub(crate) fn response(status: StatusCode, body: &impl Serialize, close: bool) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(json(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if close {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_denial_shape() {
        let d = Denial {
            code: "no_endpoint",
            detail: "no endpoint".into(),
            hint: "add it".into(),
            generation: 3,
            ip: None,
            endpoint: None,
        };
        let bytes = raw(StatusCode::FORBIDDEN, &DeniedBody::new(&d, "x.com", 443, Some("/bin/curl")), true);
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(head.contains("Content-Type: application/json"));
        assert!(head.contains("Connection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "policy_denied");
        assert_eq!(v["reason"], "no_endpoint");
        assert_eq!(v["policy_generation"], 3);
        assert_eq!(v["binary"], "/bin/curl");
        assert!(v.get("policy").is_none() && v.get("endpoint").is_none());
        let d = Denial { endpoint: Some(Box::new(("web".into(), 2))), ..d };
        let v: serde_json::Value = serde_json::to_value(DeniedBody::new(&d, "x.com", 80, None)).unwrap();
        assert_eq!((v["policy"].as_str(), v["endpoint"].as_u64()), (Some("web"), Some(2)));
    }
}
