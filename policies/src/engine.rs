//! The network decision engine: one validated policy generation, the bundled
//! Rego module compiled once, and a decision cache.
//!
//! Concern: the one question every egress door asks ("may binary B reach host
//! H on port P?") must get the same answer from every door, quickly, and must
//! fail closed. [`NetworkEngine::decide`] normalizes the request, consults the
//! per-generation cache, and otherwise evaluates `data.openshell.network.decision`
//! in regorus; any engine failure becomes [`DenyReason::Internal`]. The answer
//! names the endpoint that allowed it, so the caller can apply that endpoint's
//! L7 rules and `allowed_ips`.
//!
//! What the decision does NOT cover: resolved addresses. The caller resolves,
//! then runs [`crate::check_address`] with the allowing endpoint's
//! `allowed_ips` on every address before dialling it, and dials only a checked
//! address. That is why the cache key is (binary, host, port) and stays valid
//! whatever DNS answers. The one exception: an IP-literal endpoint also matches
//! when the destination's addresses include that IP, so the addresses equal to
//! some IP-literal endpoint of the policy are part of the key. When such an
//! endpoint allowed the request, the caller must dial exactly that address.
//!
//! Residual risk: evaluation cost is linear in the number of endpoints; cache
//! misses on huge policies cost more (see the `timing` test for numbers).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use serde_json::json;

use crate::cache::{DecisionCache, Key};
use crate::decision::{AllowedBy, Decision, DenyReason};
use crate::host::{HostPattern, normalize_host};
use crate::limits::{MAX_HOST_LEN, MAX_PATH_LEN};
use crate::model::{Endpoint, Policy};
use crate::rego_data::network_data;

/// The rule evaluated for every decision.
const DECISION_RULE: &str = "data.openshell.network.decision";
/// Decisions cached per generation.
const CACHE_CAPACITY: usize = 64 * 1024;
/// Idle evaluators kept for reuse.
const MAX_IDLE_EVALUATORS: usize = 8;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Failures of the decision engine. [`NetworkEngine::decide`] turns them into denials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The bundled Rego module did not compile.
    #[error("the bundled Rego module failed to load")]
    LoadModule {
        /// The regorus error.
        #[source]
        source: BoxError,
    },
    /// The policy data was rejected by regorus.
    #[error("the policy data failed to load into the Rego engine")]
    LoadData {
        /// The regorus error.
        #[source]
        source: BoxError,
    },
    /// Evaluation failed.
    #[error("Rego evaluation of {DECISION_RULE} failed")]
    Eval {
        /// The regorus error.
        #[source]
        source: BoxError,
    },
    /// The decision rule produced no value.
    #[error("{DECISION_RULE} is undefined for this input")]
    Undefined,
    /// The decision value does not have the documented shape.
    #[error("{DECISION_RULE} returned an unexpected value")]
    Malformed {
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// The decision named an endpoint the policy does not have.
    #[error("Rego named network_policies.{policy}.endpoints[{endpoint}], which does not exist")]
    UnknownEndpoint {
        /// Policy name from the decision.
        policy: String,
        /// Endpoint index from the decision.
        endpoint: usize,
    },
    /// The decision gave a deny reason this crate does not know.
    #[error("{DECISION_RULE} returned unknown deny reason `{reason}`")]
    UnknownReason {
        /// The reason string.
        reason: String,
    },
}

/// A connection attempt to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// The real executable (`/proc/<pid>/exe`), absolute.
    pub binary: String,
    /// Executables of the parent processes, nearest first (for custom Rego and events).
    pub ancestors: Vec<String>,
    /// Destination host as seen (CONNECT authority, SNI, Host header, DNS name or IP literal).
    pub host: String,
    /// Destination port.
    pub port: u16,
    /// Addresses the destination resolved to, or the original destination address.
    pub ips: Vec<IpAddr>,
}

/// Raw Rego output, before checking it against the policy.
#[derive(Deserialize)]
struct RawDecision {
    allow: bool,
    policy: Option<String>,
    endpoint: Option<usize>,
    reason: Option<String>,
    #[serde(default)]
    policies: Vec<String>,
}

struct Pool {
    template: regorus::Engine,
    idle: Vec<regorus::Engine>,
}

/// Network decisions for one policy generation. `Send + Sync`; share it in an `Arc`.
pub struct NetworkEngine {
    policy: Arc<Policy>,
    generation: u64,
    pool: Mutex<Pool>,
    cache: DecisionCache,
    ip_literals: BTreeSet<IpAddr>,
}

impl fmt::Debug for NetworkEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkEngine")
            .field("generation", &self.generation)
            .field("network_policies", &self.policy.network_policies.len())
            .field("cached_decisions", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl NetworkEngine {
    /// Compile the bundled Rego module with `policy`'s network data.
    ///
    /// # Errors
    /// [`EngineError`] when the module or data does not load, or a trial
    /// evaluation fails (so a broken engine is never installed).
    pub fn new(policy: Arc<Policy>, generation: u64) -> Result<Self, EngineError> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("openshell/network.rego".into(), crate::BUNDLED_REGO.into())
            .map_err(|e| EngineError::LoadModule { source: e.into() })?;
        engine
            .add_data(regorus::Value::from(network_data(&policy)))
            .map_err(|e| EngineError::LoadData { source: e.into() })?;
        let ip_literals = policy
            .network_policies
            .values()
            .flat_map(|p| &p.endpoints)
            .filter_map(|e| match e.host {
                HostPattern::Ip(ip) => Some(ip),
                _ => None,
            })
            .collect();
        let this = Self {
            policy,
            generation,
            pool: Mutex::new(Pool { template: engine, idle: Vec::new() }),
            cache: DecisionCache::new(CACHE_CAPACITY),
            ip_literals,
        };
        // Trial evaluation: prepares the template (clones start prepared) and
        // proves the module evaluates before this generation goes live.
        let trial = json!({
            "binary": {"path": "/", "ancestors": []},
            "destination": {"host": "engine-self-test.invalid", "port": 1, "ips": []},
        });
        let mut template = this.lock().template.clone();
        eval(&mut template, &trial)?;
        this.lock().template = template;
        Ok(this)
    }

    /// The policy generation this engine decides for.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The policy this engine decides for.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The endpoint an allow decision refers to.
    #[must_use]
    pub fn endpoint(&self, by: &AllowedBy) -> Option<&Endpoint> {
        self.policy.network_policies.get(&by.policy)?.endpoints.get(by.endpoint)
    }

    /// Decide, using the cache. Never fails: engine errors become
    /// [`DenyReason::Internal`] (fail closed) and are not cached.
    #[must_use]
    pub fn decide(&self, req: &NetworkRequest) -> Decision {
        let host = normalize_host(&req.host);
        if host.len() > MAX_HOST_LEN || req.binary.len() > MAX_PATH_LEN {
            // Nothing can match; keep agent-chosen giant strings out of the cache.
            return Decision::Deny(DenyReason::NoEndpoint { host: truncate(host), port: req.port });
        }
        let key = Key { binary: req.binary.clone(), host, port: req.port, ips: self.relevant_ips(&req.ips) };
        if let Some(decision) = self.cache.get(&key) {
            return decision;
        }
        match self.evaluate(req) {
            Ok(decision) => {
                self.cache.insert(key, decision.clone());
                decision
            }
            Err(e) => Decision::Deny(DenyReason::Internal { detail: error_chain(&e) }),
        }
    }

    /// Decide without the cache by evaluating the Rego module.
    ///
    /// # Errors
    /// [`EngineError`] when evaluation fails or returns something unexpected.
    pub fn evaluate(&self, req: &NetworkRequest) -> Result<Decision, EngineError> {
        let host = normalize_host(&req.host);
        let ips: Vec<String> = req.ips.iter().map(|ip| ip.to_canonical().to_string()).collect();
        let input = json!({
            "binary": {"path": req.binary, "ancestors": req.ancestors},
            "destination": {"host": host, "port": req.port, "ips": ips},
        });
        let raw = self.evaluate_input(&input)?;
        let raw: RawDecision =
            serde_json::from_value(raw).map_err(|source| EngineError::Malformed { source })?;
        self.to_decision(req, host, raw)
    }

    /// Evaluate the decision rule on an arbitrary input document (for
    /// `openshell policy test` and debugging) and return the raw decision
    /// document. The input shape is documented in `rego/network.rego`.
    ///
    /// # Errors
    /// [`EngineError`] when evaluation fails or the rule is undefined.
    pub fn evaluate_input(&self, input: &serde_json::Value) -> Result<serde_json::Value, EngineError> {
        let mut engine = {
            let mut pool = self.lock();
            match pool.idle.pop() {
                Some(e) => e,
                None => pool.template.clone(),
            }
        };
        let result = eval(&mut engine, input);
        let mut pool = self.lock();
        if pool.idle.len() < MAX_IDLE_EVALUATORS {
            pool.idle.push(engine);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // The pool holds only prepared evaluators; a panic elsewhere cannot
        // leave it inconsistent.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn relevant_ips(&self, ips: &[IpAddr]) -> Vec<IpAddr> {
        if self.ip_literals.is_empty() {
            return Vec::new();
        }
        let set: BTreeSet<IpAddr> =
            ips.iter().map(|ip| ip.to_canonical()).filter(|ip| self.ip_literals.contains(ip)).collect();
        set.into_iter().collect()
    }

    fn to_decision(
        &self,
        req: &NetworkRequest,
        host: String,
        raw: RawDecision,
    ) -> Result<Decision, EngineError> {
        if raw.allow {
            let policy = raw.policy.unwrap_or_default();
            let endpoint = raw.endpoint.unwrap_or(usize::MAX);
            let Some(ep) = self.policy.network_policies.get(&policy).and_then(|p| p.endpoints.get(endpoint))
            else {
                return Err(EngineError::UnknownEndpoint { policy, endpoint });
            };
            let enforcement = ep.enforcement;
            return Ok(Decision::Allow(AllowedBy { policy, endpoint, enforcement }));
        }
        let port = req.port;
        let reason = match raw.reason.as_deref() {
            Some("no_endpoint") => DenyReason::NoEndpoint { host, port },
            Some("binary_not_allowed") => DenyReason::BinaryNotAllowed {
                binary: req.binary.clone(),
                host,
                port,
                policies: raw.policies,
            },
            other => return Err(EngineError::UnknownReason { reason: other.unwrap_or("(none)").to_owned() }),
        };
        Ok(Decision::Deny(reason))
    }
}

fn eval(engine: &mut regorus::Engine, input: &serde_json::Value) -> Result<serde_json::Value, EngineError> {
    engine.set_input(regorus::Value::from(input.clone()));
    let value = engine.eval_rule(DECISION_RULE.into()).map_err(|e| EngineError::Eval { source: e.into() })?;
    if value == regorus::Value::Undefined {
        return Err(EngineError::Undefined);
    }
    serde_json::to_value(&value).map_err(|source| EngineError::Malformed { source })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn truncate(mut host: String) -> String {
    if host.len() > MAX_HOST_LEN {
        let mut end = MAX_HOST_LEN;
        while !host.is_char_boundary(end) {
            end -= 1;
        }
        host.truncate(end);
        host.push('…');
    }
    host
}

#[cfg(test)]
mod tests;
