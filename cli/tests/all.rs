//! Integration tests of the `openshell` binary: one test binary (link time on 2 cores), suites in
//! `suite/`. `offline` runs without any gateway; `with_gateway` against an in-process fake gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod suite;
