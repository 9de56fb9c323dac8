//! The probe's load-generator actions for the bench (run as the agent inside the sandbox, or outside
//! it for the direct baseline): per-request latency on new connections, request rate over one
//! keep-alive connection, bulk throughput, and holding N tunnels open while the bench reads the
//! supervisor's memory. HTTPS uses rustls trusting `$SSL_CERT_FILE`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

use crate::probe_net::{Url, parse_url, resolve, timed_connect};
use crate::probe_out::Outcome;

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

/// Opens a connection for `u` in `mode` (direct | forward | connect) and returns the stream and the
/// request target to use on it.
fn open(
    u: &Url,
    mode: &str,
    tls: &Option<Arc<rustls::ClientConfig>>,
) -> std::io::Result<(Box<dyn Stream>, String)> {
    let tcp = match mode {
        "direct" => {
            let ip = match u.host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => *resolve(&u.host, false)?.1.ips.first().ok_or_else(|| io("no address"))?,
            };
            timed_connect(SocketAddr::new(ip, u.port)).0?
        }
        "forward" => {
            let s = timed_connect(proxy()?).0?;
            s.set_nodelay(true)?;
            return Ok((Box::new(s), format!("http://{}{}", u.authority, u.path)));
        }
        "connect" => {
            let mut s = timed_connect(proxy()?).0?;
            let req =
                format!("CONNECT {}:{} HTTP/1.1\r\nHost: {}:{}\r\n\r\n", u.host, u.port, u.host, u.port);
            s.write_all(req.as_bytes())?;
            let (status, _) = read_head(&mut s)?;
            if status != 200 {
                return Err(io(format!("CONNECT answered {status}")));
            }
            s
        }
        m => return Err(io(format!("unknown mode {m}"))),
    };
    tcp.set_nodelay(true)?;
    match tls {
        None => Ok((Box::new(tcp), u.path.clone())),
        Some(cfg) => {
            let name = ServerName::try_from(u.host.clone()).map_err(io)?;
            let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(io)?;
            Ok((Box::new(rustls::StreamOwned::new(conn, tcp)), u.path.clone()))
        }
    }
}

/// Reads a response head byte by byte (no over-read): (status, content-length).
fn read_head(s: &mut dyn Read) -> std::io::Result<(u16, usize)> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(io("closed in the response head"));
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text.split_whitespace().nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
    let len = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((status, len))
}

/// One GET on an open stream, body read and discarded; returns the body size.
fn get(s: &mut dyn Stream, target: &str, host: &str, keep_alive: bool) -> std::io::Result<usize> {
    let conn = if keep_alive { "keep-alive" } else { "close" };
    // One write per request: several small segments would meet Nagle and delayed ACKs.
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\nUser-Agent: openshell-bench\r\n\r\n"
    );
    s.write_all(req.as_bytes())?;
    s.flush()?;
    let (status, len) = read_head(s)?;
    if status != 200 {
        return Err(io(format!("status {status}")));
    }
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let n = s.read(&mut buf[..left.min(256 * 1024)])?;
        if n == 0 {
            return Err(io("closed in the body"));
        }
        left -= n;
    }
    Ok(len)
}

fn tls_for(u: &Url) -> std::io::Result<Option<Arc<rustls::ClientConfig>>> {
    if u.scheme == "https" { tls_config().map(Some) } else { Ok(None) }
}

/// `bench-http URL N MODE`: N requests, each on a new connection; extra.samples_us.
pub fn bench_http(url: &str, n: usize, mode: &str) -> Result<Outcome, String> {
    let u = parse_url(url)?;
    let run = || -> std::io::Result<Vec<u128>> {
        let tls = tls_for(&u)?;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let (mut s, target) = open(&u, mode, &tls)?;
            get(s.as_mut(), &target, &u.authority, false)?;
            samples.push(t.elapsed().as_micros());
        }
        Ok(samples)
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("bench-http", &e),
        Ok(s) => Outcome::ok(format!("{} requests", s.len())).with(json!({"samples_us": s})),
    })
}

/// `bench-keepalive URL N MODE`: N requests over one connection; extra.seconds.
pub fn bench_keepalive(url: &str, n: usize, mode: &str) -> Result<Outcome, String> {
    let u = parse_url(url)?;
    let run = || -> std::io::Result<f64> {
        let tls = tls_for(&u)?;
        let (mut s, target) = open(&u, mode, &tls)?;
        let t = Instant::now();
        for _ in 0..n {
            get(s.as_mut(), &target, &u.authority, true)?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("bench-keepalive", &e),
        Ok(secs) => {
            Outcome::ok(format!("{n} requests in {secs:.3} s")).with(json!({"seconds": secs, "requests": n}))
        }
    })
}

/// `bench-bulk URL MODE`: one download; extra.bytes and extra.seconds.
pub fn bench_bulk(url: &str, mode: &str) -> Result<Outcome, String> {
    let u = parse_url(url)?;
    let run = || -> std::io::Result<(usize, f64)> {
        let tls = tls_for(&u)?;
        let (mut s, target) = open(&u, mode, &tls)?;
        let t = Instant::now();
        let n = get(s.as_mut(), &target, &u.authority, false)?;
        Ok((n, t.elapsed().as_secs_f64()))
    };
    Ok(match run() {
        Err(e) => Outcome::from_io("bench-bulk", &e),
        Ok((bytes, secs)) => Outcome::ok(format!("{bytes} bytes in {secs:.3} s"))
            .with(json!({"bytes": bytes, "seconds": secs})),
    })
}

/// `hold-tunnels HOST PORT N SECS`: opens N CONNECT tunnels, prints `HOLDING N` on stdout, keeps them
/// for SECS seconds (the bench samples the supervisor's memory meanwhile).
pub fn hold_tunnels(host: &str, port: u16, n: usize, secs: u64) -> Result<Outcome, String> {
    let run = || -> std::io::Result<usize> {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = timed_connect(proxy()?).0?;
            s.write_all(format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes())?;
            let (status, _) = read_head(&mut s)?;
            if status != 200 {
                return Err(io(format!("CONNECT answered {status}")));
            }
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
