//! Reading and classifying the first request on an explicit-proxy connection.
//!
//! Threat handled: hostile or broken clients. The head is bounded (64 KiB, 100
//! headers, 30 s), parsed with `httparse`, and every problem becomes a precise
//! 400 message instead of a hang or a panic. CONNECT targets must be
//! `host:port` with a valid DNS name or IP literal; forward targets must be
//! absolute `http://` or `https://` URLs.
//! Residual risk: later requests on a kept-alive forward connection are parsed
//! by hyper, whose own 400 responses carry no JSON body.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::sniff::valid_name;

/// Largest request head accepted.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted.
pub(crate) const MAX_HEADERS: usize = 100;
/// Time allowed for the first head to arrive.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no usable first request was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    #[error("the connection closed before a complete request head")]
    Eof,
    #[error("no complete request head within {}s", HEAD_TIMEOUT.as_secs())]
    Timeout,
    #[error("request head larger than {} bytes", MAX_HEAD)]
    TooLarge,
    #[error("more than {} header fields", MAX_HEADERS)]
    TooManyHeaders,
    #[error("malformed request: {0}")]
    Malformed(httparse::Error),
    #[error("read error")]
    Io(#[source] std::io::Error),
}

/// What the first request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirstRequest {
    /// `CONNECT host:port`; `head_len` bytes of `buf` belong to the head.
    Connect { host: String, port: u16, head_len: usize },
    /// An absolute-form request: handed to the forward proxy with all bytes.
    Forward,
}

/// Reads until `buf` holds one complete head; returns its length.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<usize, HeadError> {
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        if let Some(n) = complete_len(buf)? {
            return Ok(n);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        buf.reserve(4096.min(MAX_HEAD - buf.len()));
        let read = tokio::time::timeout_at(deadline, stream.read_buf(buf)).await;
        match read {
            Err(_) => return Err(HeadError::Timeout),
            Ok(Err(e)) => return Err(HeadError::Io(e)),
            Ok(Ok(0)) => return Err(HeadError::Eof),
            Ok(Ok(_)) => {}
        }
    }
}

fn complete_len(buf: &[u8]) -> Result<Option<usize>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(e) => Err(HeadError::Malformed(e)),
    }
}

/// Classifies a complete head (as returned by [`read_head`]).
pub(crate) fn classify(head: &[u8]) -> Result<FirstRequest, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("incomplete request head".to_owned()),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err("missing method or target".to_owned());
    };
    if method == "CONNECT" {
        let (host, port) = parse_authority(target)?;
        return Ok(FirstRequest::Connect { host, port, head_len });
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(FirstRequest::Forward);
    }
    if target.starts_with('/') {
        return Err(format!(
            "{method} {target} is not a proxy request: use an absolute URL (http://host/path) or CONNECT host:port"
        ));
    }
    Err(format!(
        "unsupported request target {target:?}: only http:// and https:// URLs and CONNECT are proxied"
    ))
}

/// Parses `host:port` / `[v6]:port` (CONNECT authority-form) into a normalized
/// host and a non-zero port.
pub(crate) fn parse_authority(authority: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or_else(|| format!("unclosed '[' in {authority:?}"))?;
        let p = p.strip_prefix(':').ok_or_else(|| format!("missing port in {authority:?}"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{h:?} is not an IPv6 address"));
        }
        (h, p)
    } else {
        authority
            .rsplit_once(':')
            .ok_or_else(|| format!("missing port in {authority:?} (expected host:port)"))?
    };
    let port = parse_port(port).ok_or_else(|| format!("invalid port {port:?} in {authority:?}"))?;
    let host = normalize_host(host).ok_or_else(|| format!("invalid host {host:?} in {authority:?}"))?;
    Ok((host, port))
}

/// A port in `1..=65535`, digits only.
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok().filter(|&n| n != 0)
}

/// Normalized host (lower case, no trailing dot, canonical IP literal), or
/// `None` when it is neither a DNS name nor an IP literal.
pub(crate) fn normalize_host(h: &str) -> Option<String> {
    valid_name(h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets() {
        let c = |s: &str| classify(format!("CONNECT {s} HTTP/1.1\r\nHost: {s}\r\n\r\n").as_bytes());
        let req = "CONNECT API.example.com.:443 HTTP/1.1\r\n\r\n";
        assert_eq!(
            classify(req.as_bytes()).unwrap(),
            FirstRequest::Connect { host: "api.example.com".into(), port: 443, head_len: req.len() }
        );
        assert!(
            matches!(c("[::1]:8443").unwrap(), FirstRequest::Connect { ref host, port: 8443, .. } if host == "::1")
        );
        assert!(
            matches!(c("1.2.3.4:1").unwrap(), FirstRequest::Connect { ref host, port: 1, .. } if host == "1.2.3.4")
        );
        for bad in [
            "example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:+1",
            ":443",
            "[::1:443",
            "[x]:1",
            "a b:1",
            "exa_mple..com:1",
        ] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forward_and_origin_form() {
        assert_eq!(classify(b"GET http://x.com/ HTTP/1.1\r\n\r\n").unwrap(), FirstRequest::Forward);
        assert_eq!(classify(b"GET HTTPS://x.com/ HTTP/1.1\r\n\r\n").unwrap(), FirstRequest::Forward);
        let e = classify(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
        assert!(e.contains("absolute URL"), "{e}");
        assert!(classify(b"GET ftp://x/ HTTP/1.1\r\n\r\n").unwrap_err().contains("unsupported"));
    }

    #[tokio::test]
    async fn reads_heads_with_limits() {
        let mut buf = BytesMut::new();
        let mut input: &[u8] = b"CONNECT a.com:443 HTTP/1.1\r\n\r\nextra";
        assert_eq!(read_head(&mut input, &mut buf).await.unwrap(), 30);
        let mut buf = BytesMut::new();
        let mut input: &[u8] = b"CONNECT a.com:443 HTTP/1.1\r\n";
        assert!(matches!(read_head(&mut input, &mut buf).await, Err(HeadError::Eof)));
        let mut many = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::new();
        assert!(matches!(read_head(&mut many.as_slice(), &mut buf).await, Err(HeadError::TooManyHeaders)));
        let mut huge = b"GET http://a/ HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let mut buf = BytesMut::new();
        assert!(matches!(read_head(&mut huge.as_slice(), &mut buf).await, Err(HeadError::TooLarge)));
        let mut buf = BytesMut::new();
        let mut bad: &[u8] = b"\x16\x03\x01\x00\x05hello\r\n\r\n";
        assert!(matches!(read_head(&mut bad, &mut buf).await, Err(HeadError::Malformed(_))));
    }
}
