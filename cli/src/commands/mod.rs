//! One module per noun; each verb is a function taking the shared [`Ctx`] and returning the exit code.

pub mod attach;
pub mod completions;
pub mod create;
pub mod doctor;
pub mod gateway;
pub mod logs;
pub mod policy;
pub mod sandbox;
pub mod status;

use crate::client::{self, AutoStart, Gateway};
use crate::config::{self, Env, Target};
use crate::exit::CliError;
use crate::output::Format;

/// What every command gets from the global flags.
pub struct Ctx<'a> {
    pub env: &'a dyn Env,
    pub format: Format,
    pub verbose: bool,
    /// `--gateway`.
    pub gateway: Option<String>,
}

impl Ctx<'_> {
    /// Loads the config file (printing its warnings) and resolves the endpoint.
    pub fn target(&self) -> Result<Target, CliError> {
        let loaded = config::load(self.env)?;
        for w in &loaded.warnings {
            eprintln!("openshell: {w}");
        }
        config::resolve(self.env, self.gateway.as_deref(), &loaded)
    }

    /// Connects, starting the local gateway if that is the endpoint and it is not running.
    pub async fn connect(&self) -> Result<Gateway, CliError> {
        let target = self.target()?;
        client::connect(&target, self.env, AutoStart::IfLocalDefault).await
    }
}
