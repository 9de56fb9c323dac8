//! `openshell completions bash|zsh|fish`: a completion script on stdout.

use clap::{Args, ValueEnum};
use clap_complete::Shell as Generator;

use crate::exit::{CliError, OK};
use crate::output;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `cmd` is the whole command tree (from `main.rs`, which owns it).
pub fn run(args: &CompletionsArgs, mut cmd: clap::Command) -> Result<u8, CliError> {
    let generator = match args.shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(generator, &mut cmd, "openshell", &mut buf);
    output::print(&String::from_utf8_lossy(&buf))?;
    Ok(OK)
}
