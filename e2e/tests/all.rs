//! The e2e suites: one test binary (suites under `suite/`). Build every binary first:
//! `cargo build --workspace --bins && cargo test -p openshell-e2e`. Needs root (network namespaces).
// Test code fails by panicking; helpers outside #[test] fns are not covered by clippy.toml's
// allow-unwrap-in-tests, hence the crate-level allowance here (test binary only).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
