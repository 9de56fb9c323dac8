//! `openshell sandbox create`: validate locally, create, then either wait until ready (`--detach`) or
//! run in the foreground: stream the agent's output and exit with its status.
//!
//! In the foreground stdout carries only the agent's stdout, so that `openshell sandbox create -- cmd |
//! jq` behaves like `cmd | jq`; everything the CLI itself says goes to stderr, prefixed `openshell: `.
//! Ctrl-C (or SIGTERM, e.g. from a CI timeout) stops the sandbox rather than orphaning it, and the
//! output keeps flowing until the agent has ended; a second one quits without waiting.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use openshell_proto::gateway::v1::{
    CreateSandboxRequest, GetLogsRequest, GetSandboxRequest, LogEntry, LogSource, Phase, Sandbox,
    SandboxSpec, StopSandboxRequest, WatchSandboxRequest,
};
use tokio::signal::unix::{SignalKind, signal};
use tonic::{Code, Status, Streaming};

use super::logs::summarize_event;
use super::{Ctx, attach};
use crate::client::Gateway;
use crate::exit::{CliError, OK, OTHER, sanitize};
use crate::names::{PairKind, parse_pairs, validate_name};
use crate::progress::Progress;

/// Exit status after a second Ctrl-C left the sandbox behind (the shell's convention for SIGINT).
const EXIT_INTERRUPTED: u8 = 130;
const SPINNER_TICK: Duration = Duration::from_millis(80);
/// Pause before re-opening a log stream that ended while the sandbox still runs.
const RESUME_DELAY: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Sandbox name: lower-case letters, digits and '-', starting with a letter (generated when left out).
    #[arg(long)]
    pub name: Option<String>,
    /// Policy file (YAML, `version: 1`); the gateway's default policy when left out.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Host directory the agent gets read-write as its working directory.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Environment variable for the agent (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Label of the sandbox (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Compute driver (the gateway's default, `local`, when left out).
    #[arg(long)]
    pub driver: Option<String>,
    /// Return once the sandbox is ready (printing its name) instead of following the agent.
    #[arg(long)]
    pub detach: bool,
    /// Run the agent on a terminal and attach to it (the default without a command, or when stdin and
    /// stdout are terminals and --detach is not given).
    #[arg(short = 't', long, conflicts_with = "no_tty")]
    pub tty: bool,
    /// Run the agent with its output in the logs, never on a terminal.
    #[arg(long)]
    pub no_tty: bool,
    /// The agent's command, after `--` (the default: your login shell, on a terminal).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// What the request takes from where the CLI runs.
pub struct Host {
    /// stdin and stdout are terminals.
    pub on_terminal: bool,
    /// `$SHELL`.
    pub shell: Option<String>,
    /// `$TERM`.
    pub term: Option<String>,
}

impl Host {
    pub fn from_env(env: &dyn crate::config::Env) -> Host {
        Host {
            on_terminal: std::io::stdin().is_terminal() && std::io::stdout().is_terminal(),
            shell: env.var("SHELL"),
            term: env.var("TERM"),
        }
    }

    /// The user's login shell: `$SHELL` when it is an absolute path, else `/bin/sh`.
    fn login_shell(&self) -> Vec<String> {
        let shell = self.shell.clone().filter(|s| s.starts_with('/')).unwrap_or_else(|| "/bin/sh".into());
        vec![shell, "-l".into()]
    }
}

/// Whether the agent runs on a terminal: as asked, else without a command (a shell), else when the user
/// is at a terminal and stays attached.
fn wants_tty(args: &CreateArgs, host: &Host) -> bool {
    args.tty || (!args.no_tty && (args.command.is_empty() || (host.on_terminal && !args.detach)))
}

/// Builds the request, checking every input first: nothing is sent when something is wrong.
pub fn build_request(args: &CreateArgs, host: &Host) -> Result<CreateSandboxRequest, CliError> {
    if let Some(n) = &args.name {
        validate_name(n).map_err(CliError::Invalid)?;
    }
    if args.command.is_empty() && args.no_tty {
        return Err(CliError::Invalid("--no-tty needs a command after `--`".into()));
    }
    let tty = wants_tty(args, host);
    let command = if args.command.is_empty() { host.login_shell() } else { args.command.clone() };
    let mut env = parse_pairs(&args.env, PairKind::Env).map_err(CliError::Invalid)?;
    if tty && !env.contains_key("TERM") {
        let term = host.term.clone().filter(|t| !t.is_empty() && t != "dumb");
        env.insert("TERM".into(), term.unwrap_or_else(|| "xterm-256color".into()));
    }
    let labels = parse_pairs(&args.labels, PairKind::Label).map_err(CliError::Invalid)?;
    let policy_yaml = match &args.policy {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| CliError::Invalid(format!("cannot read the policy file {}: {e}", p.display())))?,
        None => String::new(),
    };
    let workdir = match &args.workdir {
        // The gateway may run elsewhere and in another cwd: only an absolute, resolved path means the same.
        Some(d) => {
            let abs = std::fs::canonicalize(d)
                .map_err(|e| CliError::Invalid(format!("cannot use --workdir {}: {e}", d.display())))?;
            if !abs.is_dir() {
                return Err(CliError::Invalid(format!("--workdir {} is not a directory", d.display())));
            }
            abs.into_os_string().into_string().map_err(|p| {
                CliError::Invalid(format!("--workdir {} is not valid UTF-8", PathBuf::from(p).display()))
            })?
        }
        None => String::new(),
    };
    Ok(CreateSandboxRequest {
        name: args.name.clone().unwrap_or_default(),
        spec: Some(SandboxSpec {
            command,
            tty,
            workdir,
            rootfs: String::new(),
            env,
            labels,
            driver: args.driver.clone().unwrap_or_default(),
        }),
        policy_yaml,
    })
}

pub async fn run(ctx: &Ctx<'_>, args: CreateArgs) -> Result<u8, CliError> {
    let req = build_request(&args, &Host::from_env(ctx.env))?;
    let tty = req.spec.as_ref().is_some_and(|s| s.tty);
    let mut gw = ctx.connect().await?;
    let started = Instant::now();
    let mut progress = Progress::new(std::io::stderr().is_terminal(), ctx.verbose, started);
    progress.step(if req.name.is_empty() {
        "creating sandbox".to_string()
    } else {
        format!("creating {}", req.name)
    });
    let created = match gw.sandboxes.create_sandbox(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            progress.finish(None);
            return Err(gw.fail(s));
        }
    };
    let name = created.name.clone();
    progress.step(format!("provisioning {name}"));
    if args.detach {
        wait_ready(&mut gw, &name, &mut progress).await
    } else if tty {
        if let Some(code) = await_running(&mut gw, &name, &mut progress).await? {
            return Ok(code);
        }
        let ended = attach::attach(&mut gw, &name).await?;
        attach::outcome(&mut gw, &name, ended).await
    } else {
        Foreground { gw, name, progress, verbose: ctx.verbose, last_seq: 0, stopping: false }.run().await
    }
}

/// Follows WatchSandbox until the sandbox is ready (prints its name, exit 0) or fails.
pub async fn wait_ready(gw: &mut Gateway, name: &str, progress: &mut Progress) -> Result<u8, CliError> {
    follow_until_ready(gw, name, progress, true).await
}

/// Before attaching: waits until the agent runs. `Some(code)` when it already ended (a quick command).
async fn await_running(
    gw: &mut Gateway,
    name: &str,
    progress: &mut Progress,
) -> Result<Option<u8>, CliError> {
    follow_until_ready(gw, name, progress, false).await?;
    let sb = gw
        .sandboxes
        .get_sandbox(GetSandboxRequest { name: name.into() })
        .await
        .map_err(|s| gw.fail(s))?
        .into_inner();
    Ok(match (sb.phase(), sb.exit_code) {
        (Phase::Stopped, Some(c)) => Some(u8::try_from(c).unwrap_or(OTHER)),
        _ => None,
    })
}

async fn follow_until_ready(
    gw: &mut Gateway,
    name: &str,
    progress: &mut Progress,
    print_name: bool,
) -> Result<u8, CliError> {
    let mut watch = match gw.sandboxes.watch_sandbox(WatchSandboxRequest { name: name.into() }).await {
        Ok(w) => w.into_inner(),
        Err(s) => {
            progress.finish(None);
            return Err(gw.fail(s));
        }
    };
    let mut tick = tokio::time::interval(SPINNER_TICK);
    loop {
        let update = tokio::select! {
            u = watch.message() => u,
            _ = tick.tick(), if progress.spinning() => { progress.tick(); continue; }
        };
        let sb = match update {
            Ok(Some(sb)) => sb,
            Ok(None) => {
                progress.finish(None);
                return Err(CliError::SandboxFailed(format!(
                    "sandbox {name} was deleted before it became ready"
                )));
            }
            Err(s) => {
                progress.finish(None);
                return Err(gw.fail(s));
            }
        };
        match sb.phase() {
            Phase::Ready | Phase::Stopped | Phase::Disconnected if became_ready(&sb) => {
                progress.finish(Some(format!("sandbox {name} ready in {} ms", progress.elapsed_ms())));
                if print_name {
                    crate::output::print(&format!("{name}\n"))?;
                }
                return Ok(OK);
            }
            Phase::Stopped | Phase::Failed => {
                progress.finish(None);
                let what = if sb.phase() == Phase::Failed { "failed" } else { "stopped" };
                return Err(CliError::SandboxFailed(format!(
                    "sandbox {name} {what}: {}",
                    reason_or_default(&sb)
                )));
            }
            _ => {}
        }
    }
}

/// Whether the current run reached READY. A quick agent may be READY and STOPPED before the first
/// update arrives, so the history is consulted, from the run's last PROVISIONING on (earlier entries
/// belong to earlier runs of a restarted sandbox).
pub fn became_ready(sb: &Sandbox) -> bool {
    let from = sb.history.iter().rposition(|t| t.phase() == Phase::Provisioning).unwrap_or(0);
    sb.phase() == Phase::Ready || sb.history[from..].iter().any(|t| t.phase() == Phase::Ready)
}

fn reason_or_default(sb: &Sandbox) -> String {
    if sb.phase_reason.is_empty() { "no reason given".into() } else { sanitize(&sb.phase_reason) }
}

/// State of a foreground run.
struct Foreground {
    gw: Gateway,
    name: String,
    progress: Progress,
    verbose: bool,
    /// Last log entry shown, to resume a stream without repeating lines.
    last_seq: u64,
    /// Ctrl-C was pressed once: StopSandbox was sent.
    stopping: bool,
}

impl Foreground {
    async fn run(mut self) -> Result<u8, CliError> {
        let signal_err = |e: std::io::Error| CliError::other(format!("cannot handle signals: {e}"));
        let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
        // The watch only feeds the progress display; without one, do not load the gateway with it.
        let mut watch = if self.progress.visible() {
            self.gw
                .sandboxes
                .watch_sandbox(WatchSandboxRequest { name: self.name.clone() })
                .await
                .ok()
                .map(|r| r.into_inner())
        } else {
            None
        };
        let mut logs = self.open_logs().await?;
        let mut tick = tokio::time::interval(SPINNER_TICK);
        loop {
            tokio::select! {
                msg = logs.message() => match msg {
                    Ok(Some(entry)) => self.show(&entry),
                    Ok(None) => match self.outcome().await? {
                        Some(code) => return Ok(code),
                        None => {
                            tokio::time::sleep(RESUME_DELAY).await;
                            logs = self.open_logs().await?;
                        }
                    },
                    Err(s) => {
                        self.progress.finish(None);
                        return Err(self.gw.fail(s));
                    }
                },
                update = next_update(&mut watch) => {
                    if !self.on_update(update) {
                        watch = None;
                    }
                }
                _ = tick.tick(), if self.progress.spinning() => self.progress.tick(),
                _ = sigint.recv() => if let Some(code) = self.interrupt() { return Ok(code) },
                _ = sigterm.recv() => if let Some(code) = self.interrupt() { return Ok(code) },
            }
        }
    }

    async fn open_logs(&mut self) -> Result<Streaming<LogEntry>, CliError> {
        let req = GetLogsRequest {
            name: self.name.clone(),
            follow: true,
            after_seq: self.last_seq,
            ..Default::default()
        };
        match self.gw.logs.get_logs(req).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                self.progress.finish(None);
                Err(self.gw.fail(s))
            }
        }
    }

    /// Shows one log entry. Agent output goes where the agent wrote it.
    fn show(&mut self, e: &LogEntry) {
        self.last_seq = self.last_seq.max(e.seq);
        match e.source() {
            LogSource::Stdout | LogSource::Stderr => {
                // The agent is talking: the spinner would only tear its lines.
                self.progress.finish(None);
                let line = format!("{}\n", e.text);
                // A reader that went away must not stop the sandbox or lose its exit status.
                let _ = if e.source() == LogSource::Stdout {
                    std::io::stdout()
                        .lock()
                        .write_all(line.as_bytes())
                        .and_then(|()| std::io::stdout().flush())
                } else {
                    std::io::stderr().lock().write_all(line.as_bytes())
                };
            }
            LogSource::Event => match summarize_event(&e.text) {
                Some(s) if s.deny || self.verbose => self.progress.line(&format!("openshell: {}", s.line)),
                Some(_) => {}
                None if self.verbose => {
                    self.progress.line(&format!("openshell: event: {}", sanitize(&e.text)))
                }
                None => {}
            },
            LogSource::Gateway | LogSource::Unspecified => {
                if self.verbose {
                    self.progress.line(&format!("openshell: gateway: {}", sanitize(&e.text)));
                }
            }
        }
    }

    /// Updates the progress display; false once the watch is no longer needed.
    fn on_update(&mut self, update: Result<Option<Sandbox>, Status>) -> bool {
        let Ok(Some(sb)) = update else {
            self.progress.finish(None);
            return false;
        };
        match sb.phase() {
            Phase::Provisioning => {
                self.progress.step(format!("provisioning {}", self.name));
                true
            }
            Phase::Ready => {
                let ms = self.progress.elapsed_ms();
                self.progress.finish(Some(format!("sandbox {} ready in {ms} ms", self.name)));
                false
            }
            Phase::Stopped | Phase::Failed | Phase::Deleting => {
                self.progress.finish(None);
                false
            }
            _ => true,
        }
    }

    /// First Ctrl-C: stop the sandbox and keep streaming until it ends. Second: leave.
    fn interrupt(&mut self) -> Option<u8> {
        self.progress.finish(None);
        if self.stopping {
            eprintln!(
                "openshell: leaving sandbox {} to stop on its own; `openshell sandbox get {}` shows its state",
                self.name, self.name
            );
            return Some(EXIT_INTERRUPTED);
        }
        self.stopping = true;
        eprintln!("openshell: stopping sandbox {} (Ctrl-C again to quit without waiting)", self.name);
        // In a task of its own so that the agent's last output keeps flowing while it stops.
        let mut client = self.gw.sandboxes.clone();
        let (name, endpoint) = (self.name.clone(), self.gw.endpoint.clone());
        tokio::spawn(async move {
            let req = StopSandboxRequest { name: name.clone(), resource_version: None, grace_ms: 0 };
            if let Err(s) = client.stop_sandbox(req).await {
                eprintln!("openshell: cannot stop sandbox {name}: {}", CliError::from_status(&s, &endpoint));
            }
        });
        None
    }

    /// After the log stream ended: the exit code, or `None` when the sandbox still runs (resume).
    async fn outcome(&mut self) -> Result<Option<u8>, CliError> {
        self.progress.finish(None);
        let sb = match self.gw.sandboxes.get_sandbox(GetSandboxRequest { name: self.name.clone() }).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => {
                return Err(CliError::SandboxFailed(format!(
                    "sandbox {} was deleted while it ran",
                    self.name
                )));
            }
            Err(s) => return Err(self.gw.fail(s)),
        };
        match sb.phase() {
            Phase::Stopped => match sb.exit_code {
                // Passed through as is; statuses outside 0..=255 cannot be exit codes.
                Some(c) => Ok(Some(u8::try_from(c).unwrap_or(OTHER))),
                None if self.stopping => Ok(Some(EXIT_INTERRUPTED)),
                None => Err(CliError::SandboxFailed(format!(
                    "sandbox {} stopped before the agent ran: {}",
                    self.name,
                    reason_or_default(&sb)
                ))),
            },
            Phase::Failed => Err(CliError::SandboxFailed(format!(
                "sandbox {} failed: {}",
                self.name,
                reason_or_default(&sb)
            ))),
            _ => Ok(None),
        }
    }
}

/// The next watch update, or never when there is no watch.
async fn next_update(watch: &mut Option<Streaming<Sandbox>>) -> Result<Option<Sandbox>, Status> {
    match watch {
        Some(w) => w.message().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
