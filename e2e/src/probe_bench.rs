//! The probe's load-generator actions for the bench (run as the agent inside the sandbox, or outside
//! it for the direct baseline): per-request latency on new connections, request rate over one
//! keep-alive connection, bulk throughput, and holding N tunnels open while the bench reads the
//! supervisor's memory. HTTPS uses rustls trusting `$SSL_CERT_FILE`.
//!
//! Honesty rules: a direct baseline resolves its host once, before timing (the proxied runs do not
//! resolve in the probe either); every response must be a `200` with the advertised length; bodies of
//! `/big` are checked byte for byte against [`pattern_byte`], so a figure is never produced for
//! bytes that did not arrive intact and in order.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use crate::probe_net::{Url, parse_url, resolve, timed_connect};
use crate::probe_out::Outcome;

/// Period of the `/big` body pattern (prime, so chunk boundaries never line up with it by accident).
pub const PATTERN_PERIOD: usize = 251;
/// Requests made before the timed ones in latency runs (the first one of a sandbox also hashes the
/// probe binary for its identity; it is reported on its own as `first_us`).
const WARMUP: usize = 5;
/// Body size of each tunnel's request in `hold-tunnels` (the tunnel must really carry data).
pub const HOLD_BODY: usize = 256 * 1024;
const READ_BUF: usize = 256 * 1024;

/// Byte `i` of every `/big` body.
pub fn pattern_byte(i: usize) -> u8 {
    // The period is below 256, so the remainder always fits.
    u8::try_from(i % PATTERN_PERIOD).unwrap_or(0)
}

/// `len` bytes of the pattern starting at offset 0 (a multiple of the period keeps consecutive
/// chunks continuous when `len` is one).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// A whole number of periods just under 64 KiB: the fake internet writes `/big` in these chunks.
pub fn pattern_chunk() -> Vec<u8> {
    pattern(PATTERN_PERIOD * (65536 / PATTERN_PERIOD))
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn proxy() -> std::io::Result<SocketAddr> {
    let p = std::env::var("HTTP_PROXY").or_else(|_| std::env::var("http_proxy")).map_err(io)?;
    let u = parse_url(&p).map_err(io)?;
    Ok(SocketAddr::new(u.host.parse::<IpAddr>().map_err(io)?, u.port))
}

fn tls_config() -> std::io::Result<Arc<rustls::ClientConfig>> {
    let path = std::env::var("SSL_CERT_FILE").map_err(|_| io("SSL_CERT_FILE is not set"))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&path).map_err(io)? {
        roots.add(c.map_err(io)?).map_err(io)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Where and how a connection is opened: `direct` (to an address resolved once, before timing),
/// `forward` (absolute-form request to the proxy) or `connect` (a CONNECT tunnel).
struct Plan {
    url: Url,
    mode: String,
    direct: Option<SocketAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
    buf: Vec<u8>,
}

impl Plan {
    fn new(url: &str, mode: &str) -> std::io::Result<Plan> {
        let url = parse_url(url).map_err(io)?;
        if !matches!(mode, "direct" | "forward" | "connect") {
            return Err(io(format!("unknown mode {mode}")));
        }
        let direct = if mode == "direct" {
            let ip = match url.host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => *resolve(&url.host, false)?.1.ips.first().ok_or_else(|| io("no address"))?,
            };
            Some(SocketAddr::new(ip, url.port))
        } else {
            None
        };
        let tls = if url.scheme == "https" { Some(tls_config()?) } else { None };
        Ok(Plan { url, mode: mode.to_string(), direct, tls, buf: vec![0u8; READ_BUF] })
    }

    /// Opens a connection and returns the stream and the request target to use on it.
    fn open(&self) -> std::io::Result<(Box<dyn Stream>, String)> {
        let u = &self.url;
        let tcp = match (self.mode.as_str(), self.direct) {
            ("direct", Some(addr)) => timed_connect(addr).0?,
            ("forward", _) => {
                let s = timed_connect(proxy()?).0?;
                s.set_nodelay(true)?;
                return Ok((Box::new(s), format!("http://{}{}", u.authority, u.path)));
            }
            _ => connect_tunnel(&u.host, u.port)?,
        };
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok((Box::new(tcp), u.path.clone())),
            Some(cfg) => {
                let name = ServerName::try_from(u.host.clone()).map_err(io)?;
                let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(io)?;
                Ok((Box::new(rustls::StreamOwned::new(conn, tcp)), u.path.clone()))
            }
        }
    }

    fn get(&mut self, s: &mut dyn Stream, target: &str, keep_alive: bool) -> std::io::Result<usize> {
        get(s, target, &self.url.authority, keep_alive, &mut self.buf)
    }
}

/// A CONNECT tunnel through the proxy named by `HTTP_PROXY`.
fn connect_tunnel(host: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    let mut s = timed_connect(proxy()?).0?;
    s.set_nodelay(true)?;
    s.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes())?;
    let mut buf = vec![0u8; 4096];
    let (status, _, head_end, filled) = read_head(&mut s, &mut buf)?;
    if status != 200 {
        return Err(io(format!("CONNECT answered {status}")));
    }
    // The proxy sends nothing after its 200 before the client speaks.
    if filled != head_end {
        return Err(io("bytes after the CONNECT response"));
    }
    Ok(s)
}

/// Reads into `buf` until it holds a complete response head (as a client does: whole reads, not
/// byte by byte). Returns (status, content-length, head length, bytes in `buf`).
fn read_head(s: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<(u16, Option<usize>, usize, usize)> {
    let mut filled = 0;
    let end = loop {
        if let Some(i) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if filled == buf.len() {
            return Err(io("response head too large"));
        }
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(io("closed in the response head"));
        }
        filled += n;
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let status = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let len = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok());
    Ok((status, len, end, filled))
}

/// One GET on an open stream; the body is read (and checked against the pattern for `/big`) and
/// discarded. Returns the body size, which must be the advertised one. Requests are strictly
/// sequential, so a read never takes bytes of a later response.
fn get(
    s: &mut dyn Stream,
    target: &str,
    host: &str,
    keep_alive: bool,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    // One write per request: several small segments would meet Nagle and delayed ACKs.
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\nUser-Agent: openshell-bench\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let (status, len, head_end, filled) = read_head(s, buf)?;
    if status != 200 {
        return Err(io(format!("status {status}")));
    }
    let len = len.ok_or_else(|| io("no Content-Length"))?;
    let check = target.contains("/big?n=").then(|| pattern(buf.len() + PATTERN_PERIOD));
    let verify = |got: usize, bytes: &[u8]| -> std::io::Result<()> {
        if let Some(p) = &check {
            let at = got % PATTERN_PERIOD;
            if *bytes != p[at..at + bytes.len()] {
                return Err(io(format!("body corrupted between bytes {got} and {}", got + bytes.len())));
            }
        }
        Ok(())
    };
    let first = filled - head_end;
    if first > len {
        return Err(io("more bytes than Content-Length"));
    }
    verify(0, &buf[head_end..filled])?;
    let mut got = first;
    while got < len {
        let room = (len - got).min(buf.len());
        let n = s.read(&mut buf[..room])?;
        if n == 0 {
            return Err(io(format!("closed in the body after {got} of {len} bytes")));
        }
        verify(got, &buf[..n])?;
        got += n;
    }
    Ok(got)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `bench-http URL N MODE`: N timed requests, each on a new connection, after a few untimed ones;
/// extra.samples_us, extra.first_us (the very first request, cold caches).
pub fn bench_http(url: &str, n: usize, mode: &str) -> Result<Outcome, String> {
    let run = || -> std::io::Result<(Vec<u64>, u64)> {
        let mut plan = Plan::new(url, mode)?;
        let mut samples = Vec::with_capacity(n);
        let mut first = 0;
        for i in 0..n + WARMUP {
            let t = Instant::now();
            let (mut s, target) = plan.open()?;
            plan.get(s.as_mut(), &target, false)?;
            let us = micros(t.elapsed());
            if i == 0 {
                first = us;
            }
            if i >= WARMUP {
                samples.push(us);
            }
        }
        Ok((samples, first))
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("bench-http", &e),
        Ok((s, first)) => {
            Outcome::ok(format!("{} requests", s.len())).with(json!({"samples_us": s, "first_us": first}))
        }
    })
}

/// `bench-keepalive URL N MODE`: N requests over one connection; extra.seconds and the per-request
/// extra.samples_us.
pub fn bench_keepalive(url: &str, n: usize, mode: &str) -> Result<Outcome, String> {
    let run = || -> std::io::Result<(f64, Vec<u64>)> {
        let mut plan = Plan::new(url, mode)?;
        let (mut s, target) = plan.open()?;
        for _ in 0..WARMUP {
            plan.get(s.as_mut(), &target, true)?;
        }
        let mut samples = Vec::with_capacity(n);
        let t = Instant::now();
        for _ in 0..n {
            let r = Instant::now();
            plan.get(s.as_mut(), &target, true)?;
            samples.push(micros(r.elapsed()));
        }
        Ok((t.elapsed().as_secs_f64(), samples))
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("bench-keepalive", &e),
        Ok((secs, samples)) => Outcome::ok(format!("{n} requests in {secs:.3} s"))
            .with(json!({"seconds": secs, "requests": n, "samples_us": samples})),
    })
}

/// `bench-bulk URL MODE`: one download, checked byte for byte; extra.bytes and extra.seconds.
pub fn bench_bulk(url: &str, mode: &str) -> Result<Outcome, String> {
    let run = || -> std::io::Result<(usize, f64)> {
        let mut plan = Plan::new(url, mode)?;
        let (mut s, target) = plan.open()?;
        let t = Instant::now();
        let n = plan.get(s.as_mut(), &target, false)?;
        Ok((n, t.elapsed().as_secs_f64()))
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("bench-bulk", &e),
        Ok((bytes, secs)) => Outcome::ok(format!("{bytes} bytes in {secs:.3} s"))
            .with(json!({"bytes": bytes, "seconds": secs})),
    })
}

/// `hold-tunnels HOST PORT N SECS`: prints `START`, waits a second (the bench samples the idle
/// supervisor), opens N CONNECT tunnels and downloads [`HOLD_BODY`] checked bytes through each (so
/// every tunnel really carried data), prints `HOLDING N` and keeps them open for SECS seconds.
pub fn hold_tunnels(host: &str, port: u16, n: usize, secs: u64) -> Result<Outcome, String> {
    let run = || -> std::io::Result<usize> {
        println!("START");
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(1));
        let target = format!("/big?n={HOLD_BODY}");
        let mut buf = vec![0u8; READ_BUF];
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = connect_tunnel(host, port)?;
            get(&mut s, &target, host, true, &mut buf)?;
            held.push(s);
        }
        println!("HOLDING {}", held.len());
        std::io::stdout().flush()?;
        std::thread::sleep(Duration::from_secs(secs));
        Ok(held.len())
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("hold-tunnels", &e),
        Ok(k) => Outcome::ok(format!("held {k} tunnels")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_chunks_are_continuous() {
        let c = pattern_chunk();
        assert_eq!(c.len() % PATTERN_PERIOD, 0);
        let mut two = c.clone();
        two.extend_from_slice(&c);
        assert_eq!(two, pattern(2 * c.len()));
        assert_eq!(pattern_byte(PATTERN_PERIOD + 3), 3);
    }
}
