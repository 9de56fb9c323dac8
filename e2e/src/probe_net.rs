//! The probe's network actions (safe code: std sockets). Each returns an `Outcome` whose `ok` means
//! "the destination was really reached": a TCP connect only counts when the fake internet echoed the
//! probe's nonce, because a sandbox's capture listener may accept a connection it then refuses to
//! forward.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::dnswire;
use crate::probe_out::Outcome;
use crate::ws;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A nonce for echo checks (no RNG dependency: time and pid are enough to tell runs apart).
pub fn nonce() -> String {
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("n{}x{}", t % 1_000_000_000_000, std::process::id())
}

/// Connects with the 5 s timeout the suites rely on, returning the elapsed milliseconds.
pub fn timed_connect(addr: SocketAddr) -> (Result<TcpStream, std::io::Error>, u128) {
    let t = Instant::now();
    let r = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
    (r, t.elapsed().as_millis())
}

/// Reads until EOF, `limit` bytes, `stop` returning true on what was read, or an error/timeout.
pub fn read_until(
    s: &mut impl Read,
    limit: usize,
    stop: impl Fn(&[u8]) -> bool,
) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    while out.len() < limit && !stop(&out) {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Resolver used by the network actions: the first nameserver of /etc/resolv.conf, UDP, 3 s.
pub fn resolve(qname: &str, aaaa: bool) -> Result<(IpAddr, dnswire::Answer), std::io::Error> {
    let conf = std::fs::read_to_string("/etc/resolv.conf")?;
    let ns = dnswire::nameserver(&conf)
        .ok_or_else(|| std::io::Error::other("no nameserver in /etc/resolv.conf"))?;
    let sock = UdpSocket::bind(if ns.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    sock.connect(SocketAddr::new(ns, 53))?;
    sock.set_read_timeout(Some(Duration::from_secs(3)))?;
    let id = (std::process::id() & 0xFFFF) as u16;
    let q = dnswire::build_query(id, qname, aaaa).map_err(std::io::Error::other)?;
    sock.send(&q)?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf)?;
    Ok((ns, dnswire::parse_answer(&buf[..n]).map_err(std::io::Error::other)?))
}

/// `dns QNAME [aaaa]`: ok when NOERROR with at least one address.
pub fn dns(qname: &str, aaaa: bool) -> Outcome {
    match resolve(qname, aaaa) {
        Err(e) => Outcome::from_io("dns query", &e),
        Ok((ns, a)) => {
            let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
            let extra = json!({"rcode": a.rcode, "answers": ips, "nameserver": ns.to_string()});
            if a.rcode == "NoError" && !ips.is_empty() {
                Outcome::ok(format!("{qname} -> {}", ips.join(","))).with(extra)
            } else {
                Outcome::fail(None, format!("{qname}: rcode {} with {} answers", a.rcode, ips.len()))
                    .with(extra)
            }
        }
    }
}

fn first_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.lines().next().unwrap_or("").trim().to_string()
}

/// Sends `PING nonce` on an open stream; reached when the first reply line is the fake internet's
/// `PONG nonce ...` (HTTP/TLS ports) or the echo `PING nonce` (echo ports).
fn ping_stream(s: &mut TcpStream) -> (bool, String, Option<std::io::Error>) {
    let n = nonce();
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    if let Err(e) = s.write_all(format!("PING {n}\r\n").as_bytes()) {
        return (false, String::new(), Some(e));
    }
    let (b, err) = read_until(s, 4096, |b| b.contains(&b'\n'));
    let line = first_line(&b);
    let reached = line.starts_with(&format!("PONG {n}")) || line == format!("PING {n}");
    (reached, line, err)
}

/// `connect IP PORT`.
pub fn connect_ping(addr: SocketAddr) -> Outcome {
    let (r, ms) = timed_connect(addr);
    let mut s = match r {
        Err(e) => return Outcome::from_io("connect", &e).with(json!({"connected": false, "elapsed_ms": ms})),
        Ok(s) => s,
    };
    let t = Instant::now();
    let (reached, line, err) = ping_stream(&mut s);
    let extra =
        json!({"connected": true, "elapsed_ms": ms, "reply_ms": t.elapsed().as_millis(), "reply": line});
    if reached {
        Outcome::ok(format!("reached {addr}: {line}")).with(extra)
    } else {
        let why = err.as_ref().map(ToString::to_string).unwrap_or_else(|| "closed".into());
        Outcome::fail(
            err.and_then(|e| e.raw_os_error()),
            format!("connected to {addr} but not reached ({why}); reply {line:?}"),
        )
        .with(extra)
    }
}

/// `connect-name HOST PORT`: resolve through the sandbox DNS (A, else AAAA), then `connect`.
pub fn connect_name(host: &str, port: u16) -> Outcome {
    let ip = match resolve(host, false) {
        Ok((_, a)) if !a.ips.is_empty() => a.ips[0],
        _ => match resolve(host, true) {
            Ok((_, a)) if !a.ips.is_empty() => a.ips[0],
            Ok((_, a)) => return Outcome::fail(None, format!("{host} did not resolve: {}", a.rcode)),
            Err(e) => return Outcome::from_io("resolve", &e),
        },
    };
    let mut o = connect_ping(SocketAddr::new(ip, port));
    if let Value::Object(m) = &mut o.extra {
        m.insert("ip".into(), Value::String(ip.to_string()));
    }
    o
}

/// `udp-send IP PORT`: ok when the echo came back.
pub fn udp_send(addr: SocketAddr) -> Outcome {
    let run = || -> Result<(bool, String), std::io::Error> {
        let sock = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        sock.connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let n = nonce();
        sock.send(format!("PING {n}").as_bytes())?;
        let mut buf = [0u8; 2048];
        let got = sock.recv(&mut buf)?;
        let reply = String::from_utf8_lossy(&buf[..got]).into_owned();
        Ok((reply.contains(&n), reply))
    };
    match run() {
        Err(e) => Outcome::from_io("udp", &e),
        Ok((true, r)) => Outcome::ok(format!("echo from {addr}: {r}")),
        Ok((false, r)) => Outcome::fail(None, format!("unexpected reply {r:?}")),
    }
}

/// A parsed `scheme://authority/path` URL.
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub authority: String,
    pub path: String,
}

pub fn parse_url(url: &str) -> Result<Url, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("not a URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = match scheme {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        s => return Err(format!("unsupported scheme {s}")),
    };
    let (host, port) = if let Some(h) = authority.strip_prefix('[') {
        let (h, p) = h.split_once(']').ok_or("bad IPv6 authority")?;
        (
            h.to_string(),
            p.strip_prefix(':').map(str::parse).transpose().map_err(|_| "bad port")?.unwrap_or(default),
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| "bad port")?),
            None => (authority.to_string(), default),
        }
    };
    Ok(Url { scheme: scheme.into(), host, port, authority: authority.into(), path: path.into() })
}

/// The proxy from `HTTP_PROXY`/`http_proxy` (must be `http://IP:PORT`, as the sandbox sets it).
fn proxy_addr() -> Result<SocketAddr, String> {
    let p = std::env::var("HTTP_PROXY")
        .or_else(|_| std::env::var("http_proxy"))
        .map_err(|_| "HTTP_PROXY is not set".to_string())?;
    let u = parse_url(&p)?;
    let ip: IpAddr = u.host.parse().map_err(|_| format!("proxy host is not an IP literal: {p}"))?;
    Ok(SocketAddr::new(ip, u.port))
}

/// Splits a response into (status, headers text, body bytes).
fn split_response(b: &[u8]) -> (u16, String, Vec<u8>) {
    let end = head_end(b).unwrap_or(b.len());
    let head = String::from_utf8_lossy(&b[..end]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, b[end..].to_vec())
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok()).flatten()
    })
}

/// `http-proxy-get URL`: absolute-form GET through `$HTTP_PROXY`.
pub fn http_proxy_get(url: &str) -> Result<Outcome, String> {
    let u = parse_url(url)?;
    let proxy = proxy_addr()?;
    let (r, ms) = timed_connect(proxy);
    let mut s = match r {
        Err(e) => return Ok(Outcome::from_io("connect to proxy", &e).with(json!({"elapsed_ms": ms}))),
        Ok(s) => s,
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let req = format!(
        "GET {url} HTTP/1.1\r\nHost: {}\r\nUser-Agent: openshell-probe\r\nConnection: close\r\n\r\n",
        u.authority
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Ok(Outcome::from_io("send", &e));
    }
    let (b, err) = read_until(&mut s, 4 << 20, |_| false);
    let (status, head, body) = split_response(&b);
    let body = String::from_utf8_lossy(&body).into_owned();
    let extra =
        json!({"status": status, "head": head, "body": body, "read_error": err.map(|e| e.to_string())});
    Ok(if (200..300).contains(&status) {
        Outcome::ok(format!("{status}")).with(extra)
    } else {
        Outcome::fail(None, format!("status {status}: {}", body.chars().take(300).collect::<String>()))
            .with(extra)
    })
}

/// Sends CONNECT and reads the proxy's answer (head plus a Content-Length body).
fn proxy_connect(host: &str, port: u16) -> Result<(TcpStream, u16, String, String), std::io::Error> {
    let proxy = proxy_addr().map_err(std::io::Error::other)?;
    let (r, _) = timed_connect(proxy);
    let mut s = r?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    s.write_all(
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: openshell-probe\r\n\r\n")
            .as_bytes(),
    )?;
    let (mut b, err) = read_until(&mut s, 1 << 20, |b| head_end(b).is_some());
    if head_end(&b).is_none() {
        return Err(err.unwrap_or_else(|| std::io::Error::other("proxy closed before a response head")));
    }
    let (status, head, mut body) = split_response(&b);
    if status != 200 {
        let want = content_length(&head).unwrap_or(0);
        if body.len() < want {
            let (more, _) = read_until(&mut s, want - body.len(), |_| false);
            body.extend(more);
        }
    }
    b.clear();
    Ok((s, status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// `connect-proxy HOST PORT`: ok when the proxy answered 200 (the tunnel is then pinged).
pub fn connect_proxy(host: &str, port: u16) -> Result<Outcome, String> {
    Ok(match proxy_connect(host, port) {
        Err(e) => Outcome::from_io("CONNECT", &e),
        Ok((mut s, status, head, body)) => {
            let mut extra = json!({"status": status, "head": head, "body": body});
            if status == 200 {
                let (reached, line, _) = ping_stream(&mut s);
                extra["tunnel_reached"] = Value::Bool(reached);
                extra["tunnel_reply"] = Value::String(line);
                Outcome::ok(format!("200, tunnel reached: {reached}")).with(extra)
            } else {
                Outcome::fail(None, format!("status {status}: {body}")).with(extra)
            }
        }
    })
}

/// `ws-echo URL MODE`: WebSocket handshake and one echoed text frame, directly (name resolved by the
/// sandbox DNS; the transparent capture must police it), as an absolute-form request to the proxy, or
/// inside a CONNECT tunnel.
pub fn ws_echo(url: &str, mode: &str) -> Result<Outcome, String> {
    let u = parse_url(url)?;
    let (stream, target) = match mode {
        "direct" => {
            let ip = match u.host.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => match resolve(&u.host, false) {
                    Ok((_, a)) if !a.ips.is_empty() => a.ips[0],
                    Ok((_, a)) => {
                        return Ok(Outcome::fail(None, format!("{} did not resolve: {}", u.host, a.rcode)));
                    }
                    Err(e) => return Ok(Outcome::from_io("resolve", &e)),
                },
            };
            (timed_connect(SocketAddr::new(ip, u.port)).0, u.path.clone())
        }
        "forward" => (timed_connect(proxy_addr()?).0, format!("http://{}{}", u.authority, u.path)),
        "connect" => match proxy_connect(&u.host, u.port) {
            Ok((s, 200, _, _)) => (Ok(s), u.path.clone()),
            Ok((_, st, _, body)) => {
                return Ok(Outcome::fail(None, format!("CONNECT status {st}: {body}"))
                    .with(json!({"status": st, "body": body})));
            }
            Err(e) => return Ok(Outcome::from_io("CONNECT", &e)),
        },
        m => return Err(format!("unknown mode {m}")),
    };
    let mut s = match stream {
        Err(e) => return Ok(Outcome::from_io("connect", &e)),
        Ok(s) => s,
    };
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let n = nonce();
    let key = ws::base64(&ws::sha1(n.as_bytes())[..16]);
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: openshell-probe\r\n\r\n",
        u.authority
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Ok(Outcome::from_io("send handshake", &e));
    }
    let (b, err) = read_until(&mut s, 1 << 20, |b| head_end(b).is_some());
    let (status, head, mut rest) = split_response(&b);
    let accept_ok = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ws::accept_key(&key)
        })
    });
    if status != 101 || !accept_ok {
        let body = String::from_utf8_lossy(&rest).into_owned();
        return Ok(Outcome::fail(
            err.and_then(|e| e.raw_os_error()),
            format!("handshake failed: status {status}, accept ok {accept_ok}: {body}"),
        )
        .with(json!({"status": status, "head": head, "body": body})));
    }
    let msg = format!("echo {n}");
    if let Err(e) =
        s.write_all(&ws::encode_frame(ws::OP_TEXT, msg.as_bytes(), Some([0x11, 0x22, 0x33, 0x44])))
    {
        return Ok(Outcome::from_io("send frame", &e));
    }
    let mut buf = [0u8; 16384];
    loop {
        match ws::decode_frame(&rest) {
            Err(e) => return Ok(Outcome::fail(None, format!("bad frame: {e}"))),
            Ok(Some((f, _))) => {
                let got = String::from_utf8_lossy(&f.payload).into_owned();
                let _ = s.write_all(&ws::encode_frame(ws::OP_CLOSE, &[0x03, 0xE8], Some([1, 2, 3, 4])));
                return Ok(if f.opcode == ws::OP_TEXT && got == msg {
                    Outcome::ok(format!("echoed {got:?}")).with(json!({"status": 101}))
                } else {
                    Outcome::fail(None, format!("unexpected frame opcode {} payload {got:?}", f.opcode))
                });
            }
            Ok(None) => match s.read(&mut buf) {
                Ok(0) => return Ok(Outcome::fail(None, "closed before the echo")),
                Ok(k) => rest.extend_from_slice(&buf[..k]),
                Err(e) => return Ok(Outcome::from_io("read frame", &e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://allowed.test/big?n=3").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("allowed.test", 80, "/big?n=3"));
        let u = parse_url("https://[fd00::2]:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.authority.as_str()),
            ("fd00::2", 8443, "/", "[fd00::2]:8443")
        );
        assert!(parse_url("ftp://x").is_err());
    }
}
