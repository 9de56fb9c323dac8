//! The upstream connect seam.
//!
//! Threat handled: none by itself; it exists so that tests can exercise the
//! real decision path (including transparent capture, whose original
//! destination is the listener's own address in a single-namespace test)
//! while connecting somewhere reachable. Production uses [`DirectConnector`];
//! the seam is injected explicitly through [`crate::EgressOptions::connector`].
//! Residual risk: whoever constructs `EgressOptions` chooses the connector; the
//! supervisor must always pass [`DirectConnector`]. Events always report the
//! checked address, not where a test connector really went.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpStream;

/// Future returned by [`Connector::connect`].
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// Opens the upstream TCP connection to an already checked address.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Connects to `addr`.
    fn connect(&self, addr: SocketAddr) -> ConnectFuture;
}

/// The production connector: a plain `connect()` to `addr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

impl Connector for DirectConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture {
        Box::pin(TcpStream::connect(addr))
    }
}
