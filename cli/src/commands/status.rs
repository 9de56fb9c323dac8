//! `openshell status` (and `gateway status`): where the gateway is and what it reports. Never starts a
//! gateway: a status probe that changes the state it reports would be misleading.

use openshell_proto::gateway::v1::{GatewayStatus, GetStatusRequest};
use serde::Serialize;

use super::Ctx;
use crate::client::{self, AutoStart, Gateway};
use crate::config::{Source, Target};
use crate::exit::{CliError, OK, UNREACHABLE, sanitize};
use crate::output::{self, rfc3339_ms};

/// `status -o json|yaml`. Gateway fields are `null` when it cannot be reached.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub endpoint: String,
    /// How the endpoint was chosen: `--gateway`, `OPENSHELL_GATEWAY`, the config file, or `local default`.
    pub source: String,
    pub reachable: bool,
    /// Why it cannot be reached.
    pub error: Option<String>,
    pub version: Option<String>,
    pub pid: Option<u32>,
    pub state_dir: Option<String>,
    pub database: Option<String>,
    pub drivers: Vec<DriverView>,
    pub sandboxes: Option<u32>,
    pub connected_sessions: Option<u32>,
    pub started_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DriverView {
    pub name: String,
    pub ready: bool,
    pub detail: String,
}

/// Connects without auto-start and asks for the status. `Err` carries the reason it is unreachable.
pub async fn query(ctx: &Ctx<'_>, target: &Target) -> Result<GatewayStatus, CliError> {
    let mut gw: Gateway = client::connect(target, ctx.env, AutoStart::Never).await?;
    gw.gateway.get_status(GetStatusRequest {}).await.map(|r| r.into_inner()).map_err(|s| gw.fail(s))
}

pub fn view(target: &Target, result: &Result<GatewayStatus, CliError>) -> StatusView {
    let mut v = StatusView {
        endpoint: target.endpoint.to_string(),
        source: target.source.to_string(),
        reachable: false,
        error: None,
        version: None,
        pid: None,
        state_dir: None,
        database: None,
        drivers: vec![],
        sandboxes: None,
        connected_sessions: None,
        started_at: None,
    };
    match result {
        Ok(s) => {
            v.reachable = true;
            v.version = Some(s.version.clone());
            v.pid = Some(s.pid);
            v.state_dir = Some(s.state_dir.clone());
            v.database = Some(s.database.clone());
            v.drivers = s
                .drivers
                .iter()
                .map(|d| DriverView { name: d.name.clone(), ready: d.ready, detail: d.detail.clone() })
                .collect();
            v.sandboxes = Some(s.sandboxes);
            v.connected_sessions = Some(s.connected_sessions);
            v.started_at = rfc3339_ms(s.started_at_ms);
        }
        Err(CliError::Unreachable { why, .. }) => v.error = Some(why.clone()),
        Err(e) => v.error = Some(e.to_string()),
    }
    v
}

fn render(v: &StatusView, target: &Target) -> String {
    let dash = |o: &Option<String>| o.as_deref().map_or_else(|| "-".to_string(), sanitize);
    let mut rows = vec![("endpoint", format!("{} ({})", v.endpoint, v.source))];
    if !v.reachable {
        let why = dash(&v.error);
        let state = match &target.source {
            Source::LocalDefault if !target.no_autostart => {
                format!("no: not running ({why}); it starts on first use, or with `openshell gateway start`")
            }
            _ => format!("no: {why}"),
        };
        rows.push(("reachable", state));
        rows.push(("state dir", target.state_dir.display().to_string()));
    } else {
        let drivers = if v.drivers.is_empty() {
            "-".to_string()
        } else {
            v.drivers
                .iter()
                .map(|d| {
                    let state = if d.ready { "ready" } else { "NOT ready" };
                    if d.detail.is_empty() {
                        format!("{} ({state})", d.name)
                    } else {
                        format!("{} ({state}: {})", d.name, d.detail)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        rows.extend([
            ("reachable", "yes".to_string()),
            ("version", dash(&v.version)),
            ("pid", v.pid.map_or_else(|| "-".into(), |p| p.to_string())),
            ("started", dash(&v.started_at)),
            ("state dir", dash(&v.state_dir)),
            ("database", dash(&v.database)),
            ("drivers", sanitize(&drivers)),
            ("sandboxes", v.sandboxes.map_or_else(|| "-".into(), |n| n.to_string())),
            ("sessions", v.connected_sessions.map_or_else(|| "-".into(), |n| format!("{n} connected"))),
        ]);
    }
    rows.iter().map(|(k, val)| format!("{:<11} {val}\n", format!("{k}:"))).collect()
}

/// Prints the status; exit 5 when the gateway cannot be reached (so that scripts can test it).
pub async fn run(ctx: &Ctx<'_>) -> Result<u8, CliError> {
    let target = ctx.target()?;
    let result = match query(ctx, &target).await {
        // Not a reachability question (refused credentials, a bad token file): report it as such.
        Err(e) if !matches!(e, CliError::Unreachable { .. }) => return Err(e),
        r => r,
    };
    let v = view(&target, &result);
    output::emit(ctx.format, &v, |v| render(v, &target))?;
    Ok(if v.reachable { OK } else { UNREACHABLE })
}
