//! `openshell sandbox ...`: lifecycle verbs. `create` lives in `create.rs`.
//!
//! `delete`, `stop` and `start` read the sandbox first and send its `resource_version`, so that a change
//! made by someone else in between surfaces as a conflict (exit 4) instead of acting on a sandbox the
//! user did not look at.

use std::io::IsTerminal;
use std::time::Instant;

use clap::{Args, Subcommand};
use openshell_proto::gateway::v1::{
    DeleteSandboxRequest, GetSandboxRequest, ListSandboxesRequest, Sandbox, StartSandboxRequest,
    StopSandboxRequest,
};

use super::create::{self, CreateArgs};
use super::logs::{self, LogsArgs};
use super::{Ctx, attach};
use crate::client::Gateway;
use crate::exit::{CliError, OK};
use crate::names::{PairKind, parse_pairs};
use crate::output::{self, Format, SandboxListView, SandboxView, now_ms, phase_name};
use crate::progress::Progress;

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Create a sandbox and run a command in it (follows its output unless --detach).
    Create(CreateArgs),
    /// List sandboxes.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one sandbox.
    Get(NameArg),
    /// Delete sandboxes (stops their agents and removes their state).
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Stop a sandbox's agent; the sandbox stays.
    Stop(StopArgs),
    /// Start a stopped or failed sandbox again and wait until it is ready.
    Start(NameArg),
    /// A sandbox's output and security events (same as `openshell logs`).
    Logs(LogsArgs),
    /// Attach to the terminal of a sandbox that runs on one (created without a command, or with --tty).
    #[command(visible_alias = "attach")]
    Connect(NameArg),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only sandboxes with this label (repeatable; all must match).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// Sandbox name or id.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Sandbox names or ids.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Delete every sandbox.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Sandbox name or id.
    pub name: String,
    /// Milliseconds between SIGTERM and SIGKILL (the gateway's default when left out).
    #[arg(long, value_name = "MS")]
    pub grace_ms: Option<u32>,
}

pub async fn run(ctx: &Ctx<'_>, cmd: SandboxCommand) -> Result<u8, CliError> {
    match cmd {
        SandboxCommand::Create(a) => create::run(ctx, a).await,
        SandboxCommand::Connect(a) => {
            let mut gw = ctx.connect().await?;
            let ended = attach::attach(&mut gw, &a.name).await?;
            attach::outcome(&mut gw, &a.name, ended).await
        }
        SandboxCommand::List(a) => list(ctx, a).await,
        SandboxCommand::Get(a) => get(ctx, a).await,
        SandboxCommand::Delete(a) => delete(ctx, a).await,
        SandboxCommand::Stop(a) => stop(ctx, a).await,
        SandboxCommand::Start(a) => start(ctx, a).await,
        SandboxCommand::Logs(a) => logs::run(ctx, a).await,
    }
}

async fn list(ctx: &Ctx<'_>, args: ListArgs) -> Result<u8, CliError> {
    let labels = parse_pairs(&args.labels, PairKind::Label).map_err(CliError::Invalid)?;
    let mut gw = ctx.connect().await?;
    let resp = gw.sandboxes.list_sandboxes(ListSandboxesRequest { labels }).await.map_err(|s| gw.fail(s))?;
    let mut sandboxes = resp.into_inner().sandboxes;
    sandboxes.sort_by(|a, b| a.name.cmp(&b.name));
    let view = SandboxListView { sandboxes: sandboxes.iter().map(SandboxView::from).collect() };
    output::emit(ctx.format, &view, |v| output::sandbox_table(v, now_ms()))?;
    Ok(OK)
}

async fn get(ctx: &Ctx<'_>, args: NameArg) -> Result<u8, CliError> {
    let mut gw = ctx.connect().await?;
    let sb = fetch(&mut gw, &args.name).await?;
    output::emit(ctx.format, &SandboxView::from(&sb), output::sandbox_detail)?;
    Ok(OK)
}

/// GetSandbox, with "not found" worded for the user.
pub async fn fetch(gw: &mut Gateway, name: &str) -> Result<Sandbox, CliError> {
    gw.sandboxes.get_sandbox(GetSandboxRequest { name: name.into() }).await.map(|r| r.into_inner()).map_err(
        |s| match gw.fail(s) {
            CliError::NotFound(m) if m.is_empty() => CliError::NotFound(format!("no sandbox named `{name}`")),
            e => e,
        },
    )
}

async fn delete(ctx: &Ctx<'_>, args: DeleteArgs) -> Result<u8, CliError> {
    let mut gw = ctx.connect().await?;
    // (name, version to pass): with --all, the listed version; otherwise read each one first.
    let targets: Vec<(String, Option<u64>)> = if args.all {
        let resp =
            gw.sandboxes.list_sandboxes(ListSandboxesRequest::default()).await.map_err(|s| gw.fail(s))?;
        resp.into_inner().sandboxes.into_iter().map(|s| (s.name, Some(s.resource_version))).collect()
    } else {
        args.names.into_iter().map(|n| (n, None)).collect()
    };
    let mut first_error: Option<u8> = None;
    for (name, version) in targets {
        match delete_one(&mut gw, &name, version).await {
            Ok(()) => {
                if ctx.format == Format::Table {
                    output::print(&format!("deleted {name}\n"))?;
                }
            }
            Err(e) => {
                // Keep going: one stuck sandbox must not keep the others alive.
                eprintln!("openshell: {name}: {e}");
                first_error.get_or_insert(e.code());
            }
        }
    }
    Ok(first_error.unwrap_or(OK))
}

async fn delete_one(gw: &mut Gateway, name: &str, version: Option<u64>) -> Result<(), CliError> {
    let version = match version {
        Some(v) => v,
        None => fetch(gw, name).await?.resource_version,
    };
    let req = DeleteSandboxRequest { name: name.into(), resource_version: Some(version) };
    gw.sandboxes.delete_sandbox(req).await.map_err(|s| gw.fail(s))?;
    Ok(())
}

async fn stop(ctx: &Ctx<'_>, args: StopArgs) -> Result<u8, CliError> {
    let mut gw = ctx.connect().await?;
    let current = fetch(&mut gw, &args.name).await?;
    let req = StopSandboxRequest {
        name: args.name.clone(),
        resource_version: Some(current.resource_version),
        grace_ms: args.grace_ms.unwrap_or(0),
    };
    let sb = gw.sandboxes.stop_sandbox(req).await.map_err(|s| gw.fail(s))?.into_inner();
    let view = SandboxView::from(&sb);
    output::emit(ctx.format, &view, |v| {
        let exit = v.exit_code.map(|c| format!(", agent exit status {c}")).unwrap_or_default();
        format!("sandbox {} {}{exit}\n", v.name, v.phase)
    })?;
    Ok(OK)
}

async fn start(ctx: &Ctx<'_>, args: NameArg) -> Result<u8, CliError> {
    let mut gw = ctx.connect().await?;
    let current = fetch(&mut gw, &args.name).await?;
    let req =
        StartSandboxRequest { name: args.name.clone(), resource_version: Some(current.resource_version) };
    let started = Instant::now();
    let sb = gw.sandboxes.start_sandbox(req).await.map_err(|s| gw.fail(s))?.into_inner();
    let mut progress = Progress::new(std::io::stderr().is_terminal(), ctx.verbose, started);
    progress.step(format!("starting {} ({})", sb.name, phase_name(sb.phase())));
    create::wait_ready(&mut gw, &sb.name, &mut progress).await
}
