//! openshell-e2e: end-to-end harness for the real `openshell-supervisor`.
//!
//! - `probe` (bin, the only code with `unsafe`): run as the agent, performs one action, reports JSON.
//! - `fake-internet` (bin) + [`fake`]: HTTP/TLS/WebSocket/echo/DNS servers in a test-made netns.
//! - [`netns`]: creates and tears down the namespaces (client + internet) per test.
//! - [`sandbox`]: runs the supervisor (as root or as an unprivileged user) and collects outcomes.
//!
//! Threat handled: a sandbox that merely *looks* restrictive. Every escape the suites expect to be
//! blocked is also run without the sandbox (positive control) and must succeed there; network denials
//! are checked against the fake internet's request log, not only against the proxy's answer.
//! Residual risk: the corpus covers what it lists; an escape no case attempts is not detected.
#![forbid(unsafe_code)]

pub mod bench_gateway;
pub mod bins;
pub mod dnswire;
pub mod elf;
pub mod events;
pub mod fake;
pub mod gateway;
pub mod netns;
pub mod policy;
pub mod probe_bench;
pub mod probe_net;
pub mod probe_out;
pub mod pty;
pub mod sandbox;
pub mod ws;
