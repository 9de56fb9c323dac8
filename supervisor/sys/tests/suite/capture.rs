//! The capture mechanism of egress.md, proven inside a private network namespace: with `local 0.0.0.0/0`
//! and `local ::/0` on `lo`, a connection to any address lands on the wildcard listener of its port and
//! `getsockname()` of the accepted socket is the original destination; other ports are refused at once.
//! Nothing here can reach a real network: the namespace has only `lo` (asserted first).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use openshell_supervisor_sys::net;

use super::in_private_netns;

fn interfaces() -> Vec<String> {
    let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(|s| s.trim().to_string()).collect()
}

#[test]
fn every_address_is_local_and_capture_sees_the_original_destination() {
    in_private_netns(
        "suite::capture::every_address_is_local_and_capture_sees_the_original_destination",
        || {
            assert_eq!(interfaces(), ["lo"], "the namespace must hold nothing but lo");
            let report = net::setup_capture_network().unwrap();
            net::allow_unprivileged_low_ports().unwrap();
            assert_eq!(
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap().trim(),
                "0"
            );

            let listeners: Vec<_> = net::wildcard_addrs(443, report.ipv6)
                .into_iter()
                .map(|a| net::tcp_listener(a).unwrap())
                .collect();
            let mut targets: Vec<SocketAddr> = vec!["93.184.216.34:443".parse().unwrap()];
            if report.ipv6 {
                targets.push("[2606:2800:220:1::1]:443".parse().unwrap());
            }
            for (target, listener) in targets.iter().zip(&listeners) {
                let mut client = TcpStream::connect_timeout(target, Duration::from_secs(2)).unwrap();
                let (mut accepted, peer) = listener.accept().unwrap();
                assert_eq!(accepted.local_addr().unwrap(), *target, "original destination");
                assert_eq!(client.peer_addr().unwrap(), *target);
                assert_eq!(client.local_addr().unwrap(), peer);
                // Source selection: IPv4 picks the (now local) destination itself, IPv6 picks ::1.
                let expected_peer_ip = if target.is_ipv4() { target.ip() } else { "::1".parse().unwrap() };
                assert_eq!(peer.ip(), expected_peer_ip);
                client.write_all(b"ping").unwrap();
                let mut buf = [0u8; 4];
                accepted.read_exact(&mut buf).unwrap();
                assert_eq!(&buf, b"ping");
            }

            // A port nobody listens on: refused at once, never a hang.
            let start = Instant::now();
            let err =
                TcpStream::connect_timeout(&"93.184.216.34:444".parse().unwrap(), Duration::from_secs(2))
                    .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
            if report.ipv6 {
                let err =
                    TcpStream::connect_timeout(&"[2001:db8::1]:444".parse().unwrap(), Duration::from_secs(2))
                        .unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            }
        },
    );
}

#[test]
fn dns_to_any_resolver_reaches_the_wildcard_udp_socket() {
    in_private_netns("suite::capture::dns_to_any_resolver_reaches_the_wildcard_udp_socket", || {
        let report = net::setup_capture_network().unwrap();
        net::allow_unprivileged_low_ports().unwrap();
        let servers: Vec<UdpSocket> =
            net::wildcard_addrs(53, report.ipv6).into_iter().map(|a| net::udp_socket(a).unwrap()).collect();
        let proxy = net::tcp_listener("127.0.0.1:3128".parse().unwrap()).unwrap();
        assert_eq!(proxy.local_addr().unwrap().to_string(), "127.0.0.1:3128");

        let client = UdpSocket::bind("0.0.0.0:0").unwrap();
        client.send_to(b"query", "8.8.8.8:53").unwrap();
        servers[0].set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = servers[0].recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"query");
        // The answer goes back to the client as if it came from 8.8.8.8.
        let answer = UdpSocket::bind("8.8.8.8:53").map(|s| s.send_to(b"answer", from));
        assert!(answer.is_err(), "port 53 is taken by the wildcard socket: {answer:?}");
        servers[0].send_to(b"answer", from).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"answer");
    });
}
