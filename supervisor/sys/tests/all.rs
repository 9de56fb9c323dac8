//! Integration tests of `openshell-supervisor-sys` (one test binary, codex style). Each test isolates
//! itself on a dedicated thread: network namespaces, Landlock domains and seccomp filters all apply to
//! the calling thread only, so the test process itself stays unrestricted and no fork is needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod suite;
