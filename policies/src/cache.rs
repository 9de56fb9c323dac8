//! Bounded, sharded cache of network decisions for one policy generation.
//!
//! Concern: evaluation cost on the connection path, and memory growth driven
//! by the agent (it chooses host names). The cache is bounded (a shard is
//! cleared when full, so a flood of distinct names costs re-evaluation, never
//! memory) and sharded behind `RwLock`s so concurrent lookups rarely contend.
//! Keys use std's randomly seeded SipHash, so the agent cannot aim collisions.
//!
//! Validity: an engine (and its cache) belongs to one policy generation; a
//! reload builds a new engine, so entries never outlive their policy. Resolved
//! addresses are not part of the key, because the decision does not depend on
//! them except through IP-literal endpoints; the engine puts exactly those
//! addresses in the key (`ips`, empty when the policy has no IP-literal
//! endpoints). SSRF checks on resolved addresses happen after the decision, in
//! Rust ([`crate::check_address`]), and are never cached here.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{PoisonError, RwLock};

use crate::decision::Decision;

const SHARDS: usize = 16;

/// Cache key: (binary path, normalized host, port, relevant resolved addresses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) binary: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) ips: Vec<IpAddr>,
}

pub(crate) struct DecisionCache {
    hasher: RandomState,
    per_shard: usize,
    shards: Vec<RwLock<HashMap<Key, Decision>>>,
}

impl DecisionCache {
    /// A cache holding at most about `capacity` decisions.
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            hasher: RandomState::new(),
            per_shard,
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, key: &Key) -> &RwLock<HashMap<Key, Decision>> {
        // Truncation is intended: only the low bits pick a shard.
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Decision> {
        // A poisoned lock only means another thread panicked mid-insert; every
        // entry is still a complete decision for this generation.
        self.shard(key).read().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    pub(crate) fn insert(&self, key: Key, decision: Decision) {
        let mut shard = self.shard(&key).write().unwrap_or_else(PoisonError::into_inner);
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.clear();
        }
        shard.insert(key, decision);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::DenyReason;

    fn key(i: usize) -> Key {
        Key { binary: "/b".into(), host: format!("h{i}.example"), port: 443, ips: vec![] }
    }

    #[test]
    fn bounded() {
        let cache = DecisionCache::new(64);
        let d = Decision::Deny(DenyReason::NoEndpoint { host: "h".into(), port: 443 });
        for i in 0..10_000 {
            cache.insert(key(i), d.clone());
        }
        assert!(cache.len() <= 64);
        cache.insert(key(1), d.clone());
        assert_eq!(cache.get(&key(1)), Some(d));
        assert_eq!(cache.get(&key(99_999)), None);
    }
}
