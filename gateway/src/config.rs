//! The gateway's command line and where its state lives.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Overrides the state directory (also read by the CLI, which must find the same socket).
pub const ENV_STATE_DIR: &str = "OPENSHELL_STATE_DIR";
/// `tracing` filter for the gateway's log (e.g. `info`, `openshell_gateway=debug`).
pub const ENV_LOG: &str = "OPENSHELL_LOG";
const ENV_XDG_STATE_HOME: &str = "XDG_STATE_HOME";
const ENV_HOME: &str = "HOME";

#[derive(Debug, Parser)]
#[command(name = "openshell-gateway", version, about = "The openshell control plane")]
pub struct Args {
    /// State directory (socket, database, per-sandbox state). Default: $OPENSHELL_STATE_DIR, else
    /// /var/lib/openshell as root, else $XDG_STATE_HOME/openshell or ~/.local/state/openshell.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Also listen on this TCP address with TLS (server certificate from a CA the gateway creates in
    /// `<state>/tls/` on first use; clients authenticate with the bearer token in `<state>/tls/token` or a
    /// client certificate signed by that CA).
    #[arg(long)]
    pub listen_tcp: Option<SocketAddr>,
    /// Serve /healthz, /readyz and /metrics over plain HTTP on this address.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// The supervisor binary the local driver starts. Default: next to this binary, else in PATH.
    #[arg(long)]
    pub supervisor_bin: Option<PathBuf>,
    /// How often the reconciler compares desired and actual state, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub reconcile_interval_ms: u64,
}

/// The default state directory for this process (see [`Args::state_dir`]).
#[must_use]
pub fn default_state_dir(env: &dyn Fn(&str) -> Option<String>, euid: u32) -> Option<PathBuf> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(ENV_STATE_DIR) {
        return Some(PathBuf::from(dir));
    }
    if euid == 0 {
        return Some(PathBuf::from("/var/lib/openshell"));
    }
    if let Some(xdg) = non_empty(ENV_XDG_STATE_HOME) {
        return Some(PathBuf::from(xdg).join("openshell"));
    }
    non_empty(ENV_HOME).map(|h| PathBuf::from(h).join(".local/state/openshell"))
}

/// Paths inside the state directory.
#[derive(Clone, Debug)]
pub struct StatePaths {
    pub root: PathBuf,
}

impl StatePaths {
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.root.join("gateway.sock")
    }
    #[must_use]
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("gateway.pid")
    }
    #[must_use]
    pub fn database(&self) -> PathBuf {
        self.root.join("gateway.db")
    }
    #[must_use]
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_resolution() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let d = |vars, uid| default_state_dir(&env(vars), uid);
        assert_eq!(d(&[("OPENSHELL_STATE_DIR", "/s"), ("HOME", "/h")], 0), Some("/s".into()));
        assert_eq!(d(&[("HOME", "/h")], 0), Some("/var/lib/openshell".into()));
        assert_eq!(d(&[("HOME", "/h"), ("XDG_STATE_HOME", "/x")], 1000), Some("/x/openshell".into()));
        assert_eq!(d(&[("HOME", "/h")], 1000), Some("/h/.local/state/openshell".into()));
        assert_eq!(d(&[], 1000), None);
    }
}
