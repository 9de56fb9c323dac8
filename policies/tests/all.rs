//! Integration tests: one binary (see `suite/`) to keep link times down.

// Test helpers outside `#[test]` functions panic on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
