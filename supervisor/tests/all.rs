//! Integration tests of `openshell-supervisor` through the real binary (one test binary, codex style).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod suite;
