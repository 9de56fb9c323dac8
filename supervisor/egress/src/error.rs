//! Errors from starting the egress layer. Per-connection failures never surface
//! here: they become denials (403, RST, NXDOMAIN) and events.

use std::io;
use std::path::PathBuf;

/// Why [`crate::Egress::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A passed listener or socket could not be adopted by the runtime.
    #[error("cannot adopt the {what} socket")]
    Adopt {
        /// Which socket (`proxy`, `capture`, `dns udp`, `dns tcp`).
        what: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The upstream resolver configuration could not be read or built.
    #[error("cannot configure the upstream DNS resolver")]
    ResolverConfig {
        /// Cause.
        #[source]
        source: hickory_resolver::net::NetError,
    },
    /// The extra CA bundle could not be read.
    #[error("cannot read the extra CA file {path}")]
    ExtraCa {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The TLS client configuration could not be built.
    #[error("cannot build the upstream TLS configuration")]
    Tls {
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// The tunnel idle timeout is below the one-hour floor.
    #[error("tunnel idle timeout {secs}s is below the minimum of 3600s")]
    IdleTimeoutTooShort {
        /// Requested seconds.
        secs: u64,
    },
    /// `start` was called outside a Tokio runtime.
    #[error("Egress::start must run inside a Tokio runtime")]
    NoRuntime,
}
