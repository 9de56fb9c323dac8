//! The "fake internet": HTTP, TLS (test CA), WebSocket, TCP/UDP echo and DNS servers run inside a
//! network namespace the test created, so egress tests never touch a real network. Every request it
//! sees is appended to a JSONL log, which lets a test prove that a denied destination was NOT reached
//! (a proxy that answers 403 after forwarding the request would otherwise pass).

mod http;
mod tls;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::dnswire;

/// What to serve, where. Written as JSON by the harness, read by the `fake-internet` binary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeConfig {
    /// Every service is bound on each of these addresses (they must be assigned already).
    pub addrs: Vec<IpAddr>,
    /// Plain HTTP (also answers `PING nonce` lines with `PONG nonce local=ADDR`).
    pub http_ports: Vec<u16>,
    /// TLS with the test CA's certificate (a connection whose first byte is not a TLS handshake is
    /// served as plain HTTP/PING, so probes can tell "reached" from "refused" on TLS ports too).
    pub tls_ports: Vec<u16>,
    pub tcp_echo_ports: Vec<u16>,
    pub udp_echo_ports: Vec<u16>,
    /// DNS on port 53, UDP and TCP, answering from `records`.
    pub dns: bool,
    pub records: BTreeMap<String, Vec<IpAddr>>,
    /// Subject names of the server certificate (the addresses are added as IP SANs).
    pub cert_names: Vec<String>,
    /// Where to write the test CA (PEM).
    pub ca_out: Option<PathBuf>,
    /// Files served as-is (e.g. a git "dumb http" repository at `/repo.git/...`).
    pub static_root: Option<PathBuf>,
    /// JSONL request log.
    pub log: PathBuf,
}

/// One line of the request log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogEntry {
    /// http | https | ping | tcp-echo | udp-echo | dns | ws
    pub kind: String,
    pub local: String,
    pub peer: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub qname: Option<String>,
    #[serde(default)]
    pub qtype: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

impl LogEntry {
    /// The IP part of `local` (which address of the fake internet was reached).
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local.parse::<SocketAddr>().ok().map(|s| s.ip())
    }
}

/// Reads a request log (missing file = empty).
pub fn read_log(path: &Path) -> Vec<LogEntry> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub(crate) struct State {
    pub cfg: FakeConfig,
    log: Mutex<std::fs::File>,
}

impl State {
    pub(crate) fn log(&self, e: LogEntry) {
        if let (Ok(mut line), Ok(mut f)) = (serde_json::to_vec(&e), self.log.lock()) {
            line.push(b'\n');
            let _ = f.write_all(&line);
        }
    }
}

/// Binds everything, prints `READY` on stdout, then serves until killed.
pub async fn run(cfg: FakeConfig) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.log)
        .with_context(|| format!("open log {}", cfg.log.display()))?;
    let acceptor = tls::acceptor(&cfg)?;
    let st = Arc::new(State { cfg: cfg.clone(), log: Mutex::new(log) });
    for &ip in &cfg.addrs {
        for &port in &cfg.http_ports {
            spawn_tcp(bind(ip, port).await?, st.clone(), None);
        }
        for &port in &cfg.tls_ports {
            spawn_tcp(bind(ip, port).await?, st.clone(), Some(acceptor.clone()));
        }
        for &port in &cfg.tcp_echo_ports {
            let l = bind(ip, port).await?;
            let st = st.clone();
            tokio::spawn(async move {
                while let Ok((s, peer)) = l.accept().await {
                    tokio::spawn(tcp_echo(s, peer, st.clone()));
                }
            });
        }
        for &port in &cfg.udp_echo_ports {
            let sock = UdpSocket::bind(SocketAddr::new(ip, port))
                .await
                .with_context(|| format!("bind udp {ip}:{port}"))?;
            tokio::spawn(udp_echo(sock, st.clone()));
        }
        if cfg.dns {
            let sock = UdpSocket::bind(SocketAddr::new(ip, 53))
                .await
                .with_context(|| format!("bind udp {ip}:53"))?;
            tokio::spawn(dns_udp(sock, st.clone()));
            let l = bind(ip, 53).await?;
            let st = st.clone();
            tokio::spawn(async move {
                while let Ok((s, peer)) = l.accept().await {
                    tokio::spawn(dns_tcp(s, peer, st.clone()));
                }
            });
        }
    }
    println!("READY");
    std::future::pending::<()>().await;
    Ok(())
}

async fn bind(ip: IpAddr, port: u16) -> Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(ip, port)).await.with_context(|| format!("bind tcp {ip}:{port}"))
}

fn spawn_tcp(l: TcpListener, st: Arc<State>, tls: Option<tokio_rustls::TlsAcceptor>) {
    tokio::spawn(async move {
        while let Ok((s, peer)) = l.accept().await {
            let (st, tls) = (st.clone(), tls.clone());
            tokio::spawn(async move {
                let _ = http::serve_conn(s, peer, st, tls).await;
            });
        }
    });
}

async fn tcp_echo(mut s: TcpStream, peer: SocketAddr, st: Arc<State>) {
    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    st.log(LogEntry { kind: "tcp-echo".into(), local, peer: peer.to_string(), ..Default::default() });
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

async fn udp_echo(sock: UdpSocket, st: Arc<State>) {
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
        st.log(LogEntry {
            kind: "udp-echo".into(),
            local: local.clone(),
            peer: peer.to_string(),
            ..Default::default()
        });
        let _ = sock.send_to(&buf[..n], peer).await;
    }
}

fn log_dns(st: &State, q: &[u8], local: &str, peer: SocketAddr) {
    let (qname, qtype) = dnswire::question(q).unwrap_or_else(|_| ("?".into(), "?".into()));
    st.log(LogEntry {
        kind: "dns".into(),
        local: local.into(),
        peer: peer.to_string(),
        qname: Some(qname),
        qtype: Some(qtype),
        ..Default::default()
    });
}

async fn dns_udp(sock: UdpSocket, st: Arc<State>) {
    let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut buf = vec![0u8; 4096];
    while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
        log_dns(&st, &buf[..n], &local, peer);
        let resp = dnswire::respond(&buf[..n], &st.cfg.records);
        let _ = sock.send_to(&resp, peer).await;
    }
}

async fn dns_tcp(mut s: TcpStream, peer: SocketAddr, st: Arc<State>) {
    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut q).await.is_err() {
            return;
        }
        log_dns(&st, &q, &local, peer);
        let resp = dnswire::respond(&q, &st.cfg.records);
        let mut out = u16::try_from(resp.len()).unwrap_or(0).to_be_bytes().to_vec();
        out.extend_from_slice(&resp);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}
