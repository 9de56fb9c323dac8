//! `openshell-supervisor`: the enforcement point of one sandbox.
//!
//! `run` launches a command in a sandbox (standalone mode), `session` serves one sandbox for the gateway
//! (gateway-driven mode; both start the sandbox through `sandbox`), `check` reports what this host can
//! enforce, and the hidden `__launch` is the single-threaded stage the supervisor re-executes itself into
//! to build the sandbox (see architecture/supervisor.md).
#![forbid(unsafe_code)]

mod binaries;
mod check;
mod launch;
mod passwd;
mod reload;
mod run;
mod sandbox;
mod session;
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
    /// Serve one sandbox for the gateway: dial out, launch what it says, report until the agent exits.
    Session(session::SessionArgs),
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
        Command::Session(args) => session::main(args),
    }
}

/// `e: cause: cause...` in one line (for messages that leave the process: events, the gateway).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // Some errors repeat their source in their own message (e.g. the transport's I/O errors).
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// Logs to stderr; `OPENSHELL_LOG` (an `EnvFilter` directive) overrides `default`.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPENSHELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // No colour codes when stderr is a file (session mode: the driver's supervisor.log).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// The supervisor's async runtime. One worker: the supervisor is I/O-bound (tunnels splice in the kernel)
/// and shares the host with hundreds of others; a second worker costs memory and cross-thread wakeups,
/// not latency. Blocking work (slow identity lookups, hashing, the launch) runs on the blocking pool.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()
}
