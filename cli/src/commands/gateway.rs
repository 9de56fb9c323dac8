//! `openshell gateway start|stop|status`: the local gateway of this user's state directory.
//!
//! `stop` signals the pid in `<state>/gateway.pid` only after checking that it still names a gateway
//! process (a stale pid file must not make us SIGTERM whatever process reused the number).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Subcommand;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Ctx;
use crate::client::{self, GATEWAY_BIN, PID_NAME, SOCKET_NAME};
use crate::config::{Source, Target};
use crate::exit::{CliError, OK};
use crate::output;

const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_POLL: Duration = Duration::from_millis(20);
/// `/proc/PID/comm` holds at most 15 characters of the executable's name.
const GATEWAY_COMM: &str = "openshell-gatew";

#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Start the local gateway (commands also start it on first use).
    Start {
        /// Run it in this terminal instead of in the background.
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the local gateway (sandboxes of the local driver keep running).
    Stop,
    /// Show the gateway's status (same as `openshell status`).
    Status,
}

pub async fn run(ctx: &Ctx<'_>, cmd: GatewayCommand) -> Result<u8, CliError> {
    match cmd {
        GatewayCommand::Start { foreground } => start(ctx, foreground).await,
        GatewayCommand::Stop => stop(ctx).await,
        GatewayCommand::Status => super::status::run(ctx).await,
    }
}

/// These verbs manage the local gateway whatever endpoint the other commands use; say so when they differ.
fn note_other_endpoint(target: &Target) {
    if target.source != Source::LocalDefault {
        eprintln!(
            "openshell: note: other commands use {} (from {}), not this local gateway",
            target.endpoint, target.source
        );
    }
}

async fn start(ctx: &Ctx<'_>, foreground: bool) -> Result<u8, CliError> {
    let target = ctx.target()?;
    note_other_endpoint(&target);
    let dir = &target.state_dir;
    let socket = dir.join(SOCKET_NAME);
    let endpoint = format!("unix://{}", socket.display());
    if let Ok(s) = client::probe(&socket).await {
        output::print(&format!(
            "gateway already running at {endpoint} (pid {}, version {})\n",
            s.pid, s.version
        ))?;
        return Ok(OK);
    }
    if foreground {
        let bin = client::find_program(GATEWAY_BIN, ctx.env).ok_or_else(|| {
            CliError::other(format!("`{GATEWAY_BIN}` is found neither next to openshell nor in PATH"))
        })?;
        // Only returns on failure; on success the gateway replaces this process (signals go to it).
        let e = Command::new(&bin).arg("--state-dir").arg(dir).exec();
        return Err(CliError::other(format!("cannot run {}: {e}", bin.display())));
    }
    let unreachable = |why: String| CliError::Unreachable {
        endpoint: endpoint.clone(),
        why,
        hint: format!("see {}", dir.join(client::LOG_NAME).display()),
    };
    client::start_local(dir, ctx.env).await.map_err(unreachable)?;
    let pid = client::probe(&socket).await.map(|s| s.pid.to_string()).unwrap_or_else(|_| "?".into());
    output::print(&format!("gateway started at {endpoint} (pid {pid})\n"))?;
    Ok(OK)
}

async fn stop(ctx: &Ctx<'_>) -> Result<u8, CliError> {
    let target = ctx.target()?;
    note_other_endpoint(&target);
    let dir = &target.state_dir;
    let socket = dir.join(SOCKET_NAME);
    let pid_path = dir.join(PID_NAME);
    let answering = client::probe(&socket).await.is_ok();
    let text = match std::fs::read_to_string(&pid_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !answering => {
            output::print("gateway is not running\n")?;
            return Ok(OK);
        }
        Err(e) => {
            return Err(CliError::other(format!(
                "the gateway answers at {} but its pid file {} cannot be read: {e}",
                socket.display(),
                pid_path.display()
            )));
        }
    };
    // 0 and 1 would signal our process group or init: never acceptable, whatever the file says.
    let pid = match text.trim().parse::<i32>() {
        Ok(p) if p > 1 => Pid::from_raw(p),
        _ => return Err(CliError::other(format!("{} does not hold a valid pid", pid_path.display()))),
    };
    if !is_gateway(pid) {
        if answering {
            return Err(CliError::other(format!(
                "pid {pid} in {} is not the gateway, yet a gateway answers at {}; stop it by hand",
                pid_path.display(),
                socket.display()
            )));
        }
        output::print("gateway is not running (stale pid file)\n")?;
        return Ok(OK);
    }
    match kill(pid, Signal::SIGTERM) {
        Ok(()) => {}
        Err(Errno::ESRCH) => {
            output::print("gateway is not running (stale pid file)\n")?;
            return Ok(OK);
        }
        Err(e) => return Err(CliError::other(format!("cannot signal the gateway (pid {pid}): {e}"))),
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while client::probe(&socket).await.is_ok() && kill(pid, None).is_ok() {
        if Instant::now() >= deadline {
            return Err(CliError::other(format!(
                "the gateway (pid {pid}) still answers {} s after SIGTERM",
                STOP_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(STOP_POLL).await;
    }
    output::print(&format!("gateway stopped (pid {pid})\n"))?;
    Ok(OK)
}

/// Whether `pid` runs the gateway. Where `/proc` cannot tell, trust the pid file.
fn is_gateway(pid: Pid) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm")) {
        Ok(comm) => comm.trim_end().starts_with(GATEWAY_COMM),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => !Path::new("/proc/self").exists(),
        Err(_) => true,
    }
}
