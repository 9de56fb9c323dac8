//! Integration tests of `openshell-egress`, one binary (see conventions).
//! Every server and client here uses 127.0.0.1 only.

// Test helpers panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
