//! The openshell gateway: the control plane. See `architecture/gateway.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod drivers;
pub mod errors;
pub mod files;
pub mod health;
pub mod lifecycle;
pub mod model;
pub mod names;
pub mod server;
pub mod sessions;
pub mod store;
pub mod tls;
