//! Test fixtures: loopback-only servers, seams, and a harness around `Egress`.
//! Every socket here binds 127.0.0.1; nothing leaves the machine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use openshell_egress::{
    AddressGuard, AddressRefused, BinaryIdentity, ConnectFuture, Connector, Egress, EgressOptions,
    EgressSockets, EventLog, EventSink, IdentitySource, ResolverChoice, SsrfGuard,
};
use openshell_policy::{NetworkEngine, Policy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

pub const CURL: &str = "/usr/bin/curl";

pub fn identity(path: &str) -> BinaryIdentity {
    BinaryIdentity {
        path: path.into(),
        sha256: "ab".repeat(32),
        pid: 4242,
        ancestors: vec!["/bin/bash".into()],
    }
}

pub fn engine(yaml: &str, generation: u64) -> Arc<NetworkEngine> {
    let policy = Policy::from_yaml(yaml).unwrap_or_else(|e| panic!("test policy: {e}"));
    Arc::new(NetworkEngine::new(Arc::new(policy), generation).unwrap())
}

/// The real SSRF guard, except that loopback is reachable (test servers live
/// there). Injected explicitly; production never uses it.
#[derive(Debug)]
pub struct LoopbackAllowed;

impl AddressGuard for LoopbackAllowed {
    fn check(&self, ip: IpAddr, allowed_ips: &[IpNet]) -> Result<(), AddressRefused> {
        if ip.to_canonical().is_loopback() {
            return Ok(());
        }
        SsrfGuard.check(ip, allowed_ips)
    }
}

/// Connects every checked address to `to` (capture tests: the original
/// destination is the capture listener itself in a single namespace).
#[derive(Debug)]
pub struct RedirectTo(pub SocketAddr);

impl Connector for RedirectTo {
    fn connect(&self, _addr: SocketAddr) -> ConnectFuture {
        Box::pin(TcpStream::connect(self.0))
    }
}

/// An upstream DNS server on loopback answering A/AAAA from a table
/// (TTL 300); unknown names are NXDOMAIN.
pub struct TestDns {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    pub async fn start(records: &[(&str, &str)]) -> Self {
        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in records {
            table.entry(format!("{}.", name.to_ascii_lowercase())).or_default().push(ip.parse().unwrap());
        }
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let q2 = Arc::clone(&queries);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else { continue };
                let Ok(req) = Message::from_vec(&buf[..n]) else { continue };
                q2.fetch_add(1, Ordering::SeqCst);
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.metadata.recursion_available = true;
                resp.metadata.message_type = MessageType::Response;
                let Some(q) = req.queries.first() else { continue };
                resp.add_query(q.clone());
                let key = q.name().to_ascii().to_ascii_lowercase();
                match table.get(&key) {
                    None => resp.metadata.response_code = ResponseCode::NXDomain,
                    Some(ips) => {
                        for ip in ips {
                            let rdata = match (ip, q.query_type()) {
                                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                                _ => continue,
                            };
                            resp.add_answer(Record::from_rdata(q.name().clone(), 300, rdata));
                        }
                    }
                }
                let _ = sock.send_to(&resp.to_vec().unwrap(), from).await;
            }
        });
        Self { addr, queries, task }
    }
}

/// A TCP echo server; counts accepted connections.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub async fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a2 = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { continue };
                a2.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Self { addr, accepted, task }
    }
}

/// An HTTP/1.1 server that answers every request with a JSON description of
/// it (method, target, headers, connection number), and accepts WebSocket-style
/// upgrades by echoing bytes after `101`.
pub struct HttpEcho {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for HttpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpEcho {
    pub async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let a2 = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { continue };
                let conn_no = a2.fetch_add(1, Ordering::SeqCst) + 1;
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| describe(conn_no, req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            let Ok(s) = acceptor.accept(s).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(s), svc).with_upgrades().await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).with_upgrades().await;
                        }
                    }
                });
            }
        });
        Self { addr, accepted, task }
    }
}

async fn describe(conn: usize, mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let resp = Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json = serde_json::json!({
        "conn": conn,
        "method": method,
        "target": target,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5")
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap())
}

/// A CA and a server certificate for `name`, for TLS tests.
pub struct TestPki {
    pub ca_file: tempfile::NamedTempFile,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

pub fn pki(name: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    TestPki { ca_file, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) }
}

/// A running `Egress` with loopback sockets.
pub struct Harness {
    pub egress: Egress,
    pub proxy: SocketAddr,
    pub capture: Option<SocketAddr>,
    pub dns_udp: Option<SocketAddr>,
    pub dns_tcp: Option<SocketAddr>,
    pub events: EventLog,
}

pub struct Setup {
    pub yaml: String,
    pub identity: IdentitySource,
    pub guard: Arc<dyn AddressGuard>,
    pub connector: Option<Arc<dyn Connector>>,
    pub dns_upstream: Option<SocketAddr>,
    /// A capture listener (bound by the test so the policy can name its port).
    pub capture: Option<std::net::TcpListener>,
    pub dns: bool,
    pub extra_ca: Option<std::path::PathBuf>,
    pub sniff_timeout: Duration,
    /// Pass a `NETLINK_SOCK_DIAG` socket (this test's own netns).
    pub sock_diag: bool,
}

impl Setup {
    pub fn new(yaml: &str) -> Self {
        Self {
            yaml: yaml.to_owned(),
            identity: IdentitySource::Fixed(identity(CURL)),
            guard: Arc::new(LoopbackAllowed),
            connector: None,
            dns_upstream: None,
            capture: None,
            dns: false,
            extra_ca: None,
            sniff_timeout: Duration::from_millis(300),
            sock_diag: false,
        }
    }

    pub async fn start(self) -> Harness {
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let mut sockets = EgressSockets { proxy: vec![proxy], ..Default::default() };
        if self.sock_diag {
            use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
            sockets.sock_diag = socket(
                AddressFamily::Netlink,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkSockDiag,
            )
            .ok();
        }
        let mut capture = None;
        if let Some(l) = self.capture {
            let a = l.local_addr().unwrap();
            capture = Some(a);
            sockets.capture.push((a.port(), l));
        }
        let (mut dns_udp, mut dns_tcp) = (None, None);
        if self.dns {
            let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            dns_udp = Some(u.local_addr().unwrap());
            sockets.dns_udp.push(u);
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            dns_tcp = Some(t.local_addr().unwrap());
            sockets.dns_tcp.push(t);
        }
        let mut opts = EgressOptions::new("sb-test", self.identity);
        // A resolver that is never reachable unless a test DNS is given: port 9
        // (discard) on loopback answers nothing.
        let upstream = self.dns_upstream.unwrap_or_else(|| "127.0.0.1:9".parse().unwrap());
        opts.upstream_resolver = ResolverChoice::Fixed(vec![upstream]);
        opts.address_guard = self.guard;
        if let Some(c) = self.connector {
            opts.connector = c;
        }
        opts.extra_ca_file = self.extra_ca;
        opts.connect_timeout = Duration::from_secs(3);
        opts.capture_sniff_timeout = self.sniff_timeout;
        let (sink, events) = EventSink::memory();
        let egress = Egress::start(sockets, opts, engine(&self.yaml, 1), sink).await.unwrap();
        Harness { egress, proxy: proxy_addr, capture, dns_udp, dns_tcp, events }
    }
}

/// Reads one HTTP/1.1 response (head + Content-Length body) from `s`.
pub async fn read_response(s: &mut TcpStream) -> io::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok((status, headers, body))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Waits until `cond` holds, for at most 5 s.
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in 5s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
