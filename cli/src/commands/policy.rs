//! `openshell policy set|get`: policy revisions of a sandbox.
//!
//! `set` does not stop at "stored": it watches until the supervisor acknowledges the revision (up to
//! 5 s) and says whether it is applied, because a stored policy that is not enforced yet is exactly the
//! confusion users of the reference system report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use openshell_proto::gateway::v1::{GetPolicyRequest, Phase, UpdatePolicyRequest, WatchSandboxRequest};
use serde::Serialize;

use super::Ctx;
use crate::client::Gateway;
use crate::exit::{CliError, OK};
use crate::output::{self, Format, rfc3339_ms};

/// How long `policy set` waits for the supervisor's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Store a new policy revision and wait (up to 5 s) until the sandbox applies it.
    #[command(visible_alias = "update")]
    Set {
        /// Sandbox name or id.
        name: String,
        /// Policy file (YAML, `version: 1`).
        #[arg(short, long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Print a sandbox's policy (the current revision unless --revision is given).
    Get {
        /// Sandbox name or id.
        name: String,
        #[arg(long, value_name = "N")]
        revision: Option<u64>,
    },
}

/// `policy set -o json|yaml`.
#[derive(Debug, Serialize)]
pub struct SetView {
    pub name: String,
    pub revision: u64,
    /// The supervisor acknowledged this revision (or a later one) within 5 s.
    pub applied: bool,
    pub acked_revision: u64,
}

/// `policy get -o json|yaml`.
#[derive(Debug, Serialize)]
pub struct PolicyView {
    pub name: String,
    pub revision: u64,
    pub created_at: Option<String>,
    pub yaml: String,
}

pub async fn run(ctx: &Ctx<'_>, cmd: PolicyCommand) -> Result<u8, CliError> {
    match cmd {
        PolicyCommand::Set { name, file } => set(ctx, name, file).await,
        PolicyCommand::Get { name, revision } => get(ctx, name, revision).await,
    }
}

async fn set(ctx: &Ctx<'_>, name: String, file: PathBuf) -> Result<u8, CliError> {
    let yaml = std::fs::read_to_string(&file)
        .map_err(|e| CliError::Invalid(format!("cannot read the policy file {}: {e}", file.display())))?;
    let mut gw = ctx.connect().await?;
    let started = Instant::now();
    let req = UpdatePolicyRequest { name: name.clone(), policy_yaml: yaml, resource_version: None };
    let rev = gw.sandboxes.update_policy(req).await.map_err(|s| gw.fail(s))?.into_inner();
    if ctx.format == Format::Table {
        output::print(&format!("policy revision {} stored for sandbox {name}\n", rev.revision))?;
    }
    let ack = wait_for_ack(&mut gw, &name, rev.revision).await;
    let view = SetView {
        name: name.clone(),
        revision: rev.revision,
        applied: ack.acked >= rev.revision,
        acked_revision: ack.acked,
    };
    output::emit(ctx.format, &view, |v| {
        if v.applied {
            format!(
                "applied: the sandbox enforces revision {} ({} ms)\n",
                v.revision,
                started.elapsed().as_millis()
            )
        } else if ack.not_running {
            format!(
                "not yet acknowledged: sandbox {} is not running; revision {} applies when it starts\n",
                v.name, v.revision
            )
        } else {
            format!(
                "not yet acknowledged: the sandbox still enforces revision {} after {} s; it applies revision {} when its supervisor reconnects\n",
                v.acked_revision,
                ACK_TIMEOUT.as_secs(),
                v.revision
            )
        }
    })?;
    Ok(OK)
}

struct Ack {
    acked: u64,
    not_running: bool,
}

/// Watches until `acked_policy_revision >= revision`, the sandbox is seen not running, or the timeout.
async fn wait_for_ack(gw: &mut Gateway, name: &str, revision: u64) -> Ack {
    let mut ack = Ack { acked: 0, not_running: false };
    let watch = gw.sandboxes.watch_sandbox(WatchSandboxRequest { name: name.into() });
    let wait = async {
        let Ok(resp) = watch.await else { return };
        let mut stream = resp.into_inner();
        while let Ok(Some(sb)) = stream.message().await {
            ack.acked = sb.acked_policy_revision;
            if ack.acked >= revision {
                return;
            }
            if matches!(sb.phase(), Phase::Stopped | Phase::Failed | Phase::Deleting) {
                ack.not_running = true;
                return;
            }
        }
    };
    // Running out of time is an answer ("not yet"), not an error.
    let _ = tokio::time::timeout(ACK_TIMEOUT, wait).await;
    ack
}

async fn get(ctx: &Ctx<'_>, name: String, revision: Option<u64>) -> Result<u8, CliError> {
    let mut gw = ctx.connect().await?;
    let req = GetPolicyRequest { name: name.clone(), revision: revision.unwrap_or(0) };
    let rev = gw.sandboxes.get_policy(req).await.map_err(|s| gw.fail(s))?.into_inner();
    let view = PolicyView {
        name,
        revision: rev.revision,
        created_at: rfc3339_ms(rev.created_at_ms),
        yaml: rev.yaml,
    };
    output::emit(ctx.format, &view, |v| {
        // A YAML comment, so that the output can be edited and given back to `policy set` as is.
        let mut text = format!(
            "# policy revision {} of sandbox {}, created {}\n{}",
            v.revision,
            v.name,
            v.created_at.as_deref().unwrap_or("-"),
            v.yaml
        );
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    })?;
    Ok(OK)
}
