//! `openshell-gateway`: parse, set up logging, run. See `architecture/gateway.md`.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use openshell_gateway::config::{self, Args, StatePaths};

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env(config::ENV_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();

    // Started in the background (by the CLI): leave the caller's session so that its terminal's signals
    // and hang-up do not reach us. In a terminal, stay in the foreground so Ctrl-C works.
    if !std::io::stdin().is_terminal() {
        let _ = nix::unistd::setsid();
    }
    let env = |k: &str| std::env::var(k).ok();
    let Some(root) =
        args.state_dir.clone().or_else(|| config::default_state_dir(&env, nix::unistd::geteuid().as_raw()))
    else {
        eprintln!(
            "openshell-gateway: no state directory: pass --state-dir or set OPENSHELL_STATE_DIR or HOME"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("openshell-gateway: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(openshell_gateway::server::run(args, StatePaths { root })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("openshell-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
