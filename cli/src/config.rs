//! Where the gateway is and how to authenticate to it: environment, config file, local defaults.
//!
//! Threat handled: a bearer token leaking through argv (visible to every local user in `/proc`) or a
//! config file readable by others. The token is only ever read from `token_file`; a config file looser
//! than 0600 draws a warning. Residual risk: the token file itself is the user's responsibility.
//!
//! The process environment is read through the [`Env`] trait so that resolution is tested with a fake,
//! never by mutating the real environment.

use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::exit::CliError;

/// Gateway endpoint; overrides the config file.
pub const ENV_GATEWAY: &str = "OPENSHELL_GATEWAY";
/// Path of the config file.
pub const ENV_CONFIG: &str = "OPENSHELL_CONFIG";
/// State directory of the local gateway.
pub const ENV_STATE_DIR: &str = "OPENSHELL_STATE_DIR";
/// `1` disables starting a local gateway on demand.
pub const ENV_NO_AUTOSTART: &str = "OPENSHELL_NO_AUTOSTART";
pub const ENV_XDG_STATE_HOME: &str = "XDG_STATE_HOME";
pub const ENV_XDG_CONFIG_HOME: &str = "XDG_CONFIG_HOME";
pub const ENV_HOME: &str = "HOME";
pub const ENV_PATH: &str = "PATH";

/// Where root's local gateway keeps its state (same rule as the gateway).
const ROOT_STATE_DIR: &str = "/var/lib/openshell";
const SOCKET_NAME: &str = "gateway.sock";

/// Read access to the process environment.
pub trait Env {
    /// The variable's value; `None` when unset or empty.
    fn var_os(&self, name: &str) -> Option<OsString>;
    /// Whether the effective user is root.
    fn is_root(&self) -> bool;

    fn var(&self, name: &str) -> Option<String> {
        self.var_os(name).and_then(|v| v.into_string().ok())
    }
}

/// The real environment of this process.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name).filter(|v| !v.is_empty())
    }

    fn is_root(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }
}

/// `config.yaml`. Every field is optional; unknown fields are an error.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Gateway endpoint (`unix:///path` or `https://host:port`).
    pub gateway: Option<String>,
    /// PEM file with the CA that signed the gateway's certificate (https endpoints).
    pub ca_file: Option<PathBuf>,
    /// File holding the bearer token (never passed on the command line).
    pub token_file: Option<PathBuf>,
}

/// A loaded config file and the warnings to print about it.
#[derive(Debug, Default)]
pub struct Loaded {
    pub path: Option<PathBuf>,
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The config file's path: `$OPENSHELL_CONFIG`, else `$XDG_CONFIG_HOME/openshell/config.yaml`, else
/// `$HOME/.config/openshell/config.yaml`. The flag says whether it was named explicitly.
pub fn config_path(env: &dyn Env) -> Option<(PathBuf, bool)> {
    if let Some(p) = env.var_os(ENV_CONFIG) {
        return Some((PathBuf::from(p), true));
    }
    let base = match env.var_os(ENV_XDG_CONFIG_HOME) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(env.var_os(ENV_HOME)?).join(".config"),
    };
    Some((base.join("openshell").join("config.yaml"), false))
}

/// Loads the config file. A missing file means defaults, except when `$OPENSHELL_CONFIG` names it (a
/// typo there should not silently fall back to a local gateway).
pub fn load(env: &dyn Env) -> Result<Loaded, CliError> {
    let Some((path, explicit)) = config_path(env) else { return Ok(Loaded::default()) };
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound && !explicit => return Ok(Loaded::default()),
        Err(e) => {
            return Err(CliError::Invalid(format!("cannot read the config file {}: {e}", path.display())));
        }
    };
    let mut config = parse(&text, &path)?;
    // Relative paths in the file are relative to the file, not to wherever the command runs.
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    config.ca_file = config.ca_file.map(|p| dir.join(p));
    config.token_file = config.token_file.map(|p| dir.join(p));
    let warnings = loose_mode_warning(&path).into_iter().collect();
    Ok(Loaded { path: Some(path), config, warnings })
}

/// Parses config text; errors name the file (and, from serde, the offending field).
pub fn parse(text: &str, path: &Path) -> Result<Config, CliError> {
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_yaml_ng::from_str(text)
        .map_err(|e| CliError::Invalid(format!("invalid config file {}: {e}", path.display())))
}

/// A warning when a file holding configuration or secrets is accessible to other users.
pub fn loose_mode_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "warning: {} has mode {mode:04o}, readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// The local gateway's state directory: `$OPENSHELL_STATE_DIR`, else `/var/lib/openshell` as root, else
/// `$XDG_STATE_HOME/openshell`, else `$HOME/.local/state/openshell` (the gateway's own rule).
pub fn state_dir(env: &dyn Env) -> Result<PathBuf, CliError> {
    if let Some(d) = env.var_os(ENV_STATE_DIR) {
        return Ok(PathBuf::from(d));
    }
    if env.is_root() {
        return Ok(PathBuf::from(ROOT_STATE_DIR));
    }
    if let Some(x) = env.var_os(ENV_XDG_STATE_HOME) {
        return Ok(PathBuf::from(x).join("openshell"));
    }
    match env.var_os(ENV_HOME) {
        Some(h) => Ok(PathBuf::from(h).join(".local").join("state").join("openshell")),
        None => Err(CliError::Invalid(format!(
            "cannot find a state directory: set {ENV_STATE_DIR} (neither {ENV_XDG_STATE_HOME} nor {ENV_HOME} is set)"
        ))),
    }
}

/// A gateway address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Https(String),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "`{s}`: a unix endpoint needs an absolute path (unix:///path/to/gateway.sock)"
                ));
            }
            return Ok(Self::Unix(path));
        }
        if s.starts_with("https://") {
            let uri: tonic::transport::Uri = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("`{s}`: no host"));
            }
            return Ok(Self::Https(s.to_string()));
        }
        Err(format!("`{s}`: expected unix:///absolute/path or https://host:port"))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Https(u) => f.write_str(u),
        }
    }
}

/// Where the endpoint came from; only [`Source::LocalDefault`] may be auto-started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    ConfigFile(PathBuf),
    LocalDefault,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("--gateway"),
            Self::Env => f.write_str(ENV_GATEWAY),
            Self::ConfigFile(p) => write!(f, "`gateway:` in {}", p.display()),
            Self::LocalDefault => f.write_str("local default"),
        }
    }
}

/// Everything needed to connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub endpoint: Endpoint,
    pub source: Source,
    /// The local gateway's state directory (auto-start, `gateway start|stop`).
    pub state_dir: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// Whether `$OPENSHELL_NO_AUTOSTART` forbids starting a local gateway.
    pub no_autostart: bool,
}

impl Target {
    pub fn may_autostart(&self) -> bool {
        self.source == Source::LocalDefault && !self.no_autostart
    }
}

/// Resolves the endpoint: `--gateway`, else `$OPENSHELL_GATEWAY`, else the config's `gateway:`, else the
/// local socket in the state directory.
pub fn resolve(env: &dyn Env, flag: Option<&str>, loaded: &Loaded) -> Result<Target, CliError> {
    let state_dir = state_dir(env)?;
    let config_source = || loaded.path.clone().map(Source::ConfigFile).unwrap_or(Source::LocalDefault);
    let chosen = match (flag, env.var(ENV_GATEWAY), loaded.config.gateway.as_deref()) {
        (Some(f), _, _) => Some((f.to_string(), Source::Flag)),
        (None, Some(e), _) => Some((e, Source::Env)),
        (None, None, Some(c)) => Some((c.to_string(), config_source())),
        (None, None, None) => None,
    };
    let (endpoint, source) = match chosen {
        Some((text, source)) => {
            let ep = Endpoint::parse(&text)
                .map_err(|e| CliError::Invalid(format!("invalid gateway endpoint from {source}: {e}")))?;
            (ep, source)
        }
        None => (Endpoint::Unix(state_dir.join(SOCKET_NAME)), Source::LocalDefault),
    };
    let no_autostart = env.var(ENV_NO_AUTOSTART).is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    Ok(Target {
        endpoint,
        source,
        state_dir,
        ca_file: loaded.config.ca_file.clone(),
        token_file: loaded.config.token_file.clone(),
        no_autostart,
    })
}

#[cfg(test)]
mod tests;
