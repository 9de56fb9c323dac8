//! `openshell`: the command-line client of the gateway. This file parses, dispatches and turns errors
//! into exit codes (see `exit.rs`); each verb lives in `commands/<noun>.rs`.
#![forbid(unsafe_code)]

mod client;
mod commands;
mod config;
mod exit;
mod names;
mod output;
mod progress;
mod terminal;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use commands::{Ctx, completions, doctor, gateway, logs, policy, sandbox, status};
use config::ProcessEnv;
use exit::CliError;
use output::Format;

#[derive(Parser, Debug)]
#[command(name = "openshell", version, about = "Run agents in sandboxes that enforce a policy", after_help = exit::EXIT_CODES_HELP)]
struct Cli {
    /// Output format of read commands.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Gateway endpoint (unix:///path or https://host:port); overrides OPENSHELL_GATEWAY and the config file.
    #[arg(long, global = true, value_name = "ENDPOINT")]
    gateway: Option<String>,
    /// Say more: provisioning steps, all security events, gateway notes.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, inspect, stop, start and delete sandboxes.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// A sandbox's output and security events.
    Logs(logs::LogsArgs),
    /// Set or show a sandbox's policy.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Start, stop or inspect the local gateway.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Where the gateway is and what it reports.
    Status,
    /// Check whether this host can run sandboxes and the gateway is usable.
    Doctor,
    /// Print a shell completion script.
    Completions(completions::CompletionsArgs),
}

async fn dispatch(ctx: &Ctx<'_>, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Sandbox(c) => sandbox::run(ctx, c).await,
        Command::Logs(a) => logs::run(ctx, a).await,
        Command::Policy(c) => policy::run(ctx, c).await,
        Command::Gateway(c) => gateway::run(ctx, c).await,
        Command::Status => status::run(ctx).await,
        Command::Doctor => doctor::run(ctx).await,
        Command::Completions(a) => completions::run(&a, Cli::command()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx { env: &ProcessEnv, format: cli.output, verbose: cli.verbose, gateway: cli.gateway };
    // One thread is plenty for a client and starts faster than a pool.
    let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(dispatch(&ctx, cli.command)),
        Err(e) => Err(CliError::other(format!("cannot start the async runtime: {e}"))),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("openshell: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.code())
        }
    }
}
