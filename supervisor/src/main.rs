//! `openshell-supervisor`: the enforcement point of one sandbox.
//!
//! `run` launches a command in a sandbox (standalone mode; the gateway-driven mode uses the same path),
//! `check` reports what this host can enforce, and the hidden `__launch` is the single-threaded stage the
//! supervisor re-executes itself into to build the sandbox (see architecture/supervisor.md).
#![forbid(unsafe_code)]

mod binaries;
mod check;
mod launch;
mod passwd;
mod reload;
mod run;
mod spec;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "openshell-supervisor", version, about = "Runs a command in a policy-governed sandbox")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a sandbox and exit with its status.
    Run(run::RunArgs),
    /// Print what this host can enforce.
    Check(check::CheckArgs),
    /// Internal: the single-threaded launch stage.
    #[command(name = "__launch", hide = true)]
    Launch {
        #[arg(long)]
        control_fd: i32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Launch { control_fd } => launch::stage_main(control_fd),
        Command::Check(args) => check::main(&args),
        Command::Run(args) => run::main(args),
    }
}
