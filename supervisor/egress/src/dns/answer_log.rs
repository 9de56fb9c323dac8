//! Which names the sandbox DNS server gave out for which addresses.
//!
//! Threat handled: losing the host name on transparent capture. A client that
//! sends neither SNI nor `Host` (raw TCP, server-speaks-first protocols) is
//! decided by the name it resolved through our DNS; and a client-claimed name
//! is accepted for an address our DNS handed out for that name without a
//! second resolution (no false `destination_mismatch` when a CDN rotates
//! addresses between two lookups).
//! Residual risk: several names can share an address (virtual hosting); the
//! most recently answered name wins for un-named connections. The log is
//! bounded (oldest addresses evicted) and entries outlive the DNS TTL by a
//! grace period because clients cache answers longer than they should.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Addresses remembered.
const MAX_ADDRS: usize = 4096;
/// Names remembered per address.
const MAX_NAMES: usize = 8;
/// Minimum time an answer is remembered, whatever its TTL.
const GRACE: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Inner {
    by_ip: HashMap<IpAddr, Vec<(String, Instant)>>,
    order: VecDeque<IpAddr>,
}

/// Bounded map address -> names answered for it.
#[derive(Debug, Default)]
pub(crate) struct AnswerLog {
    inner: Mutex<Inner>,
}

impl AnswerLog {
    /// Remembers that `name` was answered with `ip` (TTL `ttl` seconds).
    pub(crate) fn record(&self, name: &str, ip: IpAddr, ttl: u32) {
        let ip = ip.to_canonical();
        let until = Instant::now() + GRACE.max(Duration::from_secs(u64::from(ttl)));
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = &mut *inner;
        if !inner.by_ip.contains_key(&ip) {
            while inner.order.len() >= MAX_ADDRS {
                if let Some(old) = inner.order.pop_front() {
                    inner.by_ip.remove(&old);
                }
            }
            inner.order.push_back(ip);
        }
        let names = inner.by_ip.entry(ip).or_default();
        names.retain(|(n, _)| n != name);
        names.push((name.to_owned(), until));
        if names.len() > MAX_NAMES {
            names.remove(0);
        }
    }

    /// Whether `name` was answered with `ip` and has not expired.
    pub(crate) fn contains(&self, ip: IpAddr, name: &str) -> bool {
        let now = Instant::now();
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_ip.get(&ip.to_canonical()).is_some_and(|v| v.iter().any(|(n, t)| n == name && *t > now))
    }

    /// The most recently answered, unexpired name for `ip`.
    pub(crate) fn name_for(&self, ip: IpAddr) -> Option<String> {
        let now = Instant::now();
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.by_ip.get(&ip.to_canonical())?.iter().rev().find(|(_, t)| *t > now).map(|(n, _)| n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_bounds() {
        let log = AnswerLog::default();
        let ip: IpAddr = "93.184.216.34".parse().unwrap();
        log.record("a.example.com", ip, 30);
        log.record("b.example.com", ip, 30);
        assert!(log.contains(ip, "a.example.com"));
        assert!(log.contains("::ffff:93.184.216.34".parse().unwrap(), "b.example.com"));
        assert_eq!(log.name_for(ip).as_deref(), Some("b.example.com"));
        log.record("a.example.com", ip, 30);
        assert_eq!(log.name_for(ip).as_deref(), Some("a.example.com"));
        for i in 0..20 {
            log.record(&format!("n{i}.example.com"), ip, 30);
        }
        assert!(!log.contains(ip, "a.example.com"), "oldest names evicted");
        for i in 0..(MAX_ADDRS as u32 + 10) {
            log.record("x.example.com", IpAddr::from(i.to_be_bytes()), 1);
        }
        assert!(log.inner.lock().unwrap().by_ip.len() <= MAX_ADDRS);
        assert_eq!(log.name_for(ip), None, "oldest addresses evicted");
    }
}
