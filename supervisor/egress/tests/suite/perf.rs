//! Rough, ignored measurements (debug build; run with
//! `cargo test -p openshell-egress --test all perf -- --ignored --nocapture`).
//! Numbers are indicative only: release builds are much faster.

use std::time::{Duration, Instant};

use openshell_egress::IdentitySource;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::*;

fn policy(port: u16, binary: &str) -> String {
    format!(
        "version: 1\nnetwork_policies:\n  p:\n    endpoints: [{{host: 127.0.0.1, port: {port}}}]\n    \
         binaries: [{{path: \"{binary}\"}}]\n"
    )
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn roundtrip_direct(addr: std::net::SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    t.elapsed()
}

async fn roundtrip_proxy(proxy: std::net::SocketAddr, port: u16) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn perf_connect_latency_and_throughput() {
    let echo = Echo::start().await;
    let port = echo.addr.port();
    let exe = std::env::current_exe().unwrap().to_string_lossy().into_owned();
    let me = i32::try_from(std::process::id()).unwrap();
    for (label, source, diag) in [
        ("fixed identity", IdentitySource::Fixed(identity(&exe)), false),
        ("/proc/net/tcp identity", IdentitySource::SandboxInit { init_pid: me }, false),
        ("sock_diag identity", IdentitySource::SandboxInit { init_pid: me }, true),
    ] {
        let mut setup = Setup::new(&policy(port, &exe));
        setup.identity = source;
        setup.sock_diag = diag;
        let h = setup.start().await;
        roundtrip_proxy(h.proxy, port).await; // warm caches (hash, decision)
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            direct.push(roundtrip_direct(echo.addr).await);
            proxied.push(roundtrip_proxy(h.proxy, port).await);
        }
        let (d, p) = (p50(direct), p50(proxied));
        println!(
            "{label}: connect+1B roundtrip p50 direct {d:?}, via CONNECT {p:?}, added {:?}",
            p.saturating_sub(d)
        );
    }

    // Throughput: a sink server; 256 MiB one way.
    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = sink.accept().await else { continue };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
            });
        }
    });
    let h = Setup::new(&policy(sink_addr.port(), "/usr/bin/curl")).start().await;
    const TOTAL: usize = 256 << 20;
    let chunk = vec![7u8; 256 * 1024];
    let send = |mut s: TcpStream| {
        let chunk = chunk.clone();
        async move {
            let t = Instant::now();
            for _ in 0..TOTAL / chunk.len() {
                s.write_all(&chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut n = [0u8; 8];
            s.read_exact(&mut n).await.unwrap();
            assert_eq!(u64::from_be_bytes(n) as usize, TOTAL);
            TOTAL as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64
        }
    };
    let direct = send(TcpStream::connect(sink_addr).await.unwrap()).await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", sink_addr.port()).as_bytes()).await.unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).await.unwrap();
    let tunneled = send(s).await;
    println!(
        "throughput direct {direct:.0} MiB/s, tunnel {tunneled:.0} MiB/s ({:.0}%)",
        tunneled / direct * 100.0
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn perf_memory_per_tunnel() {
    let echo = Echo::start().await;
    let h = Setup::new(&policy(echo.addr.port(), "/usr/bin/curl")).start().await;
    // Warm up allocator and runtime with one tunnel.
    let mut keep = Vec::new();
    let before = rss_kib();
    for _ in 0..100 {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        s.write_all(format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", echo.addr.port()).as_bytes())
            .await
            .unwrap();
        let mut head = [0u8; 39];
        s.read_exact(&mut head).await.unwrap();
        s.write_all(&[1u8; 4096]).await.unwrap();
        let mut b = [0u8; 4096];
        s.read_exact(&mut b).await.unwrap();
        keep.push(s);
    }
    let after = rss_kib();
    println!(
        "100 tunnels (test process incl. clients and echo server): RSS {before} KiB -> {after} KiB (+{} KiB, {} KiB/tunnel)",
        after - before,
        (after - before) / 100
    );
    assert_eq!(h.egress.stats().open_tunnels, 100);
}
