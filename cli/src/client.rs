//! Connecting to the gateway, and starting the local one on demand.
//!
//! Only the local default endpoint is ever auto-started: a configured or explicit endpoint that does not
//! answer is reported as unreachable, because starting some other gateway in its place would silently
//! send the user's sandboxes somewhere they did not ask for.

use std::error::Error as StdError;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use openshell_proto::gateway::v1::gateway_service_client::GatewayServiceClient;
use openshell_proto::gateway::v1::log_service_client::LogServiceClient;
use openshell_proto::gateway::v1::sandbox_service_client::SandboxServiceClient;
use openshell_proto::gateway::v1::{GatewayStatus, GetStatusRequest};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint as TonicEndpoint, Uri};
use tonic::{Request, Status};

use crate::config::{
    ENV_GATEWAY, ENV_NO_AUTOSTART, ENV_PATH, Endpoint, Env, Source, Target, loose_mode_warning,
};
use crate::exit::CliError;

/// The gateway's executable.
pub const GATEWAY_BIN: &str = "openshell-gateway";
pub const SOCKET_NAME: &str = "gateway.sock";
pub const LOG_NAME: &str = "gateway.log";
pub const PID_NAME: &str = "gateway.pid";

/// How long a freshly started gateway gets to answer, and how often we look.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const START_POLL: Duration = Duration::from_millis(10);
/// One readiness probe (connect + GetStatus) on the local socket.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Adds `authorization: Bearer <token>` to every call when a token is configured.
#[derive(Clone, Default)]
pub struct Auth {
    header: Option<MetadataValue<Ascii>>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

pub type Svc = InterceptedService<Channel, Auth>;

/// Clients of the three gateway services over one connection.
pub struct Gateway {
    pub endpoint: String,
    pub sandboxes: SandboxServiceClient<Svc>,
    pub logs: LogServiceClient<Svc>,
    pub gateway: GatewayServiceClient<Svc>,
}

impl Gateway {
    /// Maps a failed call to the CLI's error.
    pub fn fail(&self, status: Status) -> CliError {
        CliError::from_status(&status, &self.endpoint)
    }
}

/// Whether [`connect`] may start the local gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoStart {
    IfLocalDefault,
    Never,
}

/// Connects to the target's gateway, starting the local one first when allowed and needed.
pub async fn connect(target: &Target, env: &dyn Env, autostart: AutoStart) -> Result<Gateway, CliError> {
    let auth = auth(target)?;
    let channel = match channel(target).await {
        Ok(c) => c,
        Err(_) if autostart == AutoStart::IfLocalDefault && target.may_autostart() => {
            start_local(&target.state_dir, env).await.map_err(|e| unreachable(target, e))?;
            channel(target).await.map_err(|why| unreachable(target, why))?
        }
        Err(why) => return Err(unreachable(target, why)),
    };
    Ok(Gateway {
        endpoint: target.endpoint.to_string(),
        sandboxes: SandboxServiceClient::with_interceptor(channel.clone(), auth.clone()),
        logs: LogServiceClient::with_interceptor(channel.clone(), auth.clone()),
        gateway: GatewayServiceClient::with_interceptor(channel, auth),
    })
}

/// The "cannot reach" error with a hint that fits how the endpoint was chosen.
pub fn unreachable(target: &Target, why: String) -> CliError {
    let hint = match &target.source {
        Source::LocalDefault if target.no_autostart => {
            format!(
                "start it with `openshell gateway start` ({ENV_NO_AUTOSTART} is set, so it is not started on demand)"
            )
        }
        Source::LocalDefault => format!("see {}", target.state_dir.join(LOG_NAME).display()),
        Source::Flag => "check the --gateway value, or that the gateway there is running".into(),
        Source::Env => format!("check {ENV_GATEWAY}, or that the gateway there is running"),
        Source::ConfigFile(p) => {
            format!("check `gateway:` in {}, or that the gateway there is running", p.display())
        }
    };
    CliError::Unreachable { endpoint: target.endpoint.to_string(), why, hint }
}

fn auth(target: &Target) -> Result<Auth, CliError> {
    let Some(path) = &target.token_file else { return Ok(Auth::default()) };
    let text = fs::read_to_string(path)
        .map_err(|e| CliError::Invalid(format!("cannot read the token file {}: {e}", path.display())))?;
    if let Some(w) = loose_mode_warning(path) {
        eprintln!("openshell: {w}");
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(CliError::Invalid(format!("the token file {} is empty", path.display())));
    }
    let mut header = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
        CliError::Invalid(format!(
            "the token file {} holds characters not allowed in a header",
            path.display()
        ))
    })?;
    // Keeps the value out of debug output of the HTTP stack.
    header.set_sensitive(true);
    Ok(Auth { header: Some(header) })
}

/// Opens the connection. The error is a short reason for the user.
async fn channel(target: &Target) -> Result<Channel, String> {
    match &target.endpoint {
        Endpoint::Unix(path) => unix_channel(path).await,
        Endpoint::Https(uri) => {
            let tls = match &target.ca_file {
                Some(ca) => {
                    let pem =
                        fs::read(ca).map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
                None => ClientTlsConfig::new().with_native_roots(),
            };
            let ep = TonicEndpoint::from_shared(uri.clone())
                .and_then(|e| e.tls_config(tls))
                .map_err(|e| describe(&e))?
                .connect_timeout(TCP_CONNECT_TIMEOUT);
            ep.connect().await.map_err(|e| describe(&e))
        }
    }
}

async fn unix_channel(path: &Path) -> Result<Channel, String> {
    let path = path.to_path_buf();
    // The URI is required by the API but unused: every connection goes to the socket.
    TonicEndpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| describe(&e))
}

/// The root cause of a connection error in words (tonic's own text is just "transport error").
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        // The OS text ("No such file or directory") says little about a socket; say what it means.
        return match io.kind() {
            ErrorKind::NotFound => "no socket at this path".into(),
            ErrorKind::ConnectionRefused => "connection refused (nothing is listening)".into(),
            ErrorKind::PermissionDenied => "permission denied".into(),
            ErrorKind::TimedOut => "timed out".into(),
            _ => io.to_string(),
        };
    }
    cur.to_string()
}

/// Asks the gateway on a unix socket for its status (readiness probe; no credentials needed locally).
pub async fn probe(socket: &Path) -> Result<GatewayStatus, String> {
    let call = async {
        let channel = unix_channel(socket).await?;
        GatewayServiceClient::new(channel)
            .get_status(GetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_string())
    };
    tokio::time::timeout(PROBE_TIMEOUT, call).await.unwrap_or_else(|_| Err("no answer within 1 s".into()))
}

/// `openshell-gateway` next to this executable, else in `$PATH`.
pub fn find_program(name: &str, env: &dyn Env) -> Option<PathBuf> {
    let sibling = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(name)));
    if let Some(p) = sibling.filter(|p| is_executable(p)) {
        return Some(p);
    }
    let path = env.var_os(ENV_PATH)?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts the local gateway detached and waits until it answers. The error is a reason for the user.
pub async fn start_local(state_dir: &Path, env: &dyn Env) -> Result<(), String> {
    let exe_dir =
        std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)).unwrap_or_default();
    let bin = find_program(GATEWAY_BIN, env).ok_or_else(|| {
        format!(
            "no gateway is running and `{GATEWAY_BIN}` is found neither in {} nor in PATH",
            exe_dir.display()
        )
    })?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| format!("cannot create the state directory {}: {e}", state_dir.display()))?;
    let log_path = state_dir.join(LOG_NAME);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let log_err = log.try_clone().map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let mut child = Command::new(&bin)
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group at once, so a Ctrl-C meant for this command never reaches it, even
        // before it calls setsid itself; and a cwd that cannot pin a mount the user wants to unmount.
        .process_group(0)
        .current_dir("/")
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let socket = state_dir.join(SOCKET_NAME);
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if probe(&socket).await.is_ok() {
            // Reap it if it ever exits while this command still runs; never block on it.
            std::thread::spawn(move || child.wait());
            return Ok(());
        }
        // A zero exit may mean another gateway won the race: keep probing for that one.
        if let Ok(Some(status)) = child.try_wait()
            && !status.success()
        {
            return Err(format!(
                "{} exited ({status}){}",
                bin.display(),
                log_tail(&log_path, log_start).map(|t| format!(": {t}")).unwrap_or_default()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "started {} but it did not answer within {} s; see {}",
                bin.display(),
                START_TIMEOUT.as_secs(),
                log_path.display()
            ));
        }
        tokio::time::sleep(START_POLL).await;
    }
}

/// The last lines the gateway wrote since `from`, to show why it did not start.
fn log_tail(path: &Path, from: u64) -> Option<String> {
    let text = fs::read(path).ok()?;
    let start = usize::try_from(from).ok()?.min(text.len());
    let new = String::from_utf8_lossy(&text[start..]);
    let lines: Vec<&str> = new.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    (!tail.is_empty()).then(|| crate::exit::sanitize(&tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_socket_is_described() {
        let dir = tempfile::tempdir().unwrap();
        let why = probe(&dir.path().join("gateway.sock")).await.unwrap_err();
        assert_eq!(why, "no socket at this path");
    }

    #[tokio::test]
    async fn socket_without_listener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let why = probe(&path).await.unwrap_err();
        assert_eq!(why, "connection refused (nothing is listening)");
    }

    #[test]
    fn log_tail_shows_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gateway.log");
        fs::write(&p, "old\nerror: a\n\nerror: b\n").unwrap();
        assert_eq!(log_tail(&p, 4).as_deref(), Some("error: a | error: b"));
        assert_eq!(log_tail(&p, 100), None);
    }
}
