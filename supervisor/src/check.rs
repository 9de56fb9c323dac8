//! `openshell-supervisor check`: what this host can enforce, as a table or JSON.

use std::process::ExitCode;

use clap::Args;
use openshell_supervisor_sys::probe::HostSupport;

#[derive(Args)]
pub struct CheckArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn main(args: &CheckArgs) -> ExitCode {
    let support = HostSupport::detect();
    if args.json {
        match serde_json::to_string_pretty(&support) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("openshell-supervisor: cannot encode the report: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", support.render_table());
    }
    if support.can_sandbox() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
