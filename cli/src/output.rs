//! How read commands print: a table for people (`-o table`, the default) or a stable document for
//! programs (`-o json`, `-o yaml`).
//!
//! The JSON/YAML documents are the structs defined here, not the raw protobuf messages, so that they stay
//! stable when the wire format grows. Conventions:
//! - phases are lower-case words: `provisioning`, `ready`, `stopped`, `failed`, `deleting`,
//!   `disconnected` (`unspecified` if the gateway sent none);
//! - times are RFC 3339 strings in UTC with milliseconds (`2025-01-31T12:00:00.123Z`), or `null` when
//!   unknown (never a 0 epoch);
//! - maps (env, labels) are sorted by key;
//! - `enforcement` is the supervisor's report as a JSON object (`null` before the agent started).
//!
//! Text that came from a sandbox (reasons, event fields) is printed with control characters replaced.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};

use openshell_proto::gateway::v1::{Phase, Sandbox};
use serde::Serialize;

use crate::exit::{CliError, sanitize};

/// The `-o` flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Prints `value` as pretty JSON or YAML.
pub fn structured<T: Serialize>(format: Format, value: &T) -> Result<String, CliError> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value).map(|mut s| {
            s.push('\n');
            s
        })?,
        Format::Yaml | Format::Table => serde_yaml_ng::to_string(value)?,
    };
    Ok(text)
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::other(format!("cannot encode the output as JSON: {e}"))
    }
}

impl From<serde_yaml_ng::Error> for CliError {
    fn from(e: serde_yaml_ng::Error) -> Self {
        CliError::other(format!("cannot encode the output as YAML: {e}"))
    }
}

/// Writes to stdout. A closed pipe (`openshell sandbox list | head -1`) is not an error.
pub fn print(text: &str) -> Result<(), CliError> {
    try_print(text).map(|_| ())
}

/// Writes to stdout; `Ok(false)` once the reader has gone away (a closed pipe), so that a streaming
/// command can stop.
pub fn try_print(text: &str) -> Result<bool, CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::other(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints a value in the chosen format; `table` renders it with `render`.
pub fn emit<T: Serialize>(
    format: Format,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    match format {
        Format::Table => print(&render(value)),
        _ => print(&structured(format, value)?),
    }
}

/// The lower-case name of a phase.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Unspecified => "unspecified",
        Phase::Provisioning => "provisioning",
        Phase::Ready => "ready",
        Phase::Stopped => "stopped",
        Phase::Failed => "failed",
        Phase::Deleting => "deleting",
        Phase::Disconnected => "disconnected",
    }
}

/// RFC 3339 UTC with milliseconds; `None` for 0 or negative (unset) times.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    if ms <= 0 {
        return None;
    }
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Short age like `42s`, `5m`, `3h`, `2d`; `-` when unknown.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "-".into();
    }
    let s = (now_ms - then_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Cuts `text` to `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// A sandbox as printed by `-o json|yaml`.
#[derive(Debug, Serialize)]
pub struct SandboxView {
    pub name: String,
    pub id: String,
    pub phase: &'static str,
    pub phase_reason: String,
    /// The agent's exit status once it exited (128+N when killed by signal N).
    pub exit_code: Option<i32>,
    pub connected: bool,
    /// The policy revision the gateway wants applied, and the one the supervisor acknowledged.
    pub policy_revision: u64,
    pub acked_policy_revision: u64,
    pub resource_version: u64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub last_seen: Option<String>,
    pub spec: SpecView,
    pub history: Vec<TransitionView>,
    pub enforcement: Option<serde_json::Value>,
    /// For the AGE column; the documents carry `created_at`.
    #[serde(skip)]
    pub created_at_ms: i64,
}

/// What the sandbox was created with. Empty strings mean the gateway's default.
#[derive(Debug, Default, Serialize)]
pub struct SpecView {
    pub command: Vec<String>,
    pub workdir: String,
    pub rootfs: String,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub driver: String,
}

/// One phase change.
#[derive(Debug, Serialize)]
pub struct TransitionView {
    pub phase: &'static str,
    pub reason: String,
    pub at: Option<String>,
}

/// `sandbox list -o json|yaml`: an object, so that fields can be added later.
#[derive(Debug, Serialize)]
pub struct SandboxListView {
    pub sandboxes: Vec<SandboxView>,
}

impl From<&Sandbox> for SandboxView {
    fn from(s: &Sandbox) -> Self {
        let spec = s.spec.as_ref().map_or_else(SpecView::default, |p| SpecView {
            command: p.command.clone(),
            workdir: p.workdir.clone(),
            rootfs: p.rootfs.clone(),
            env: p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            labels: p.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            driver: p.driver.clone(),
        });
        Self {
            name: s.name.clone(),
            id: s.id.clone(),
            phase: phase_name(s.phase()),
            phase_reason: s.phase_reason.clone(),
            exit_code: s.exit_code,
            connected: s.connected,
            policy_revision: s.policy_revision,
            acked_policy_revision: s.acked_policy_revision,
            resource_version: s.resource_version,
            created_at: rfc3339_ms(s.created_at_ms),
            updated_at: rfc3339_ms(s.updated_at_ms),
            last_seen: rfc3339_ms(s.last_seen_ms),
            spec,
            history: s
                .history
                .iter()
                .map(|t| TransitionView {
                    phase: phase_name(t.phase()),
                    reason: t.reason.clone(),
                    at: rfc3339_ms(t.at_ms),
                })
                .collect(),
            // Not JSON (an older supervisor?): keep the text rather than dropping it.
            enforcement: (!s.enforcement_json.is_empty()).then(|| {
                serde_json::from_str(&s.enforcement_json)
                    .unwrap_or_else(|_| serde_json::Value::String(s.enforcement_json.clone()))
            }),
            created_at_ms: s.created_at_ms,
        }
    }
}

const REASON_WIDTH: usize = 48;

/// The `sandbox list` table.
pub fn sandbox_table(list: &SandboxListView, now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = list
        .sandboxes
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.phase.to_string(),
                age(now_ms, s.created_at_ms),
                format!("{}/{}", s.acked_policy_revision, s.policy_revision),
                s.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                s.id.clone(),
                truncate(&sanitize(&s.phase_reason), REASON_WIDTH),
            ]
        })
        .collect();
    table(&["NAME", "PHASE", "AGE", "POLICY", "EXIT", "ID", "REASON"], &rows)
}

/// `sandbox get` in table mode: one field per line, then the phase history.
pub fn sandbox_detail(s: &SandboxView) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let or_default = |v: &str, d: &str| if v.is_empty() { d.to_string() } else { sanitize(v) };
    let reason =
        if s.phase_reason.is_empty() { String::new() } else { format!(" ({})", sanitize(&s.phase_reason)) };
    let keys = |m: &BTreeMap<String, String>| {
        if m.is_empty() { "-".to_string() } else { m.keys().cloned().collect::<Vec<_>>().join(", ") }
    };
    let labels = if s.spec.labels.is_empty() {
        "-".to_string()
    } else {
        s.spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    };
    let mut rows = vec![
        ("name", s.name.clone()),
        ("id", s.id.clone()),
        ("phase", format!("{}{reason}", s.phase)),
        ("exit code", s.exit_code.map_or_else(|| "-".into(), |c| c.to_string())),
        ("policy", format!("revision {}, acknowledged {}", s.policy_revision, s.acked_policy_revision)),
        (
            "connected",
            format!("{} (last seen {})", if s.connected { "yes" } else { "no" }, or_dash(&s.last_seen)),
        ),
        ("created", or_dash(&s.created_at)),
        ("updated", or_dash(&s.updated_at)),
        (
            "command",
            if s.spec.command.is_empty() {
                "(login shell)".into()
            } else {
                sanitize(&s.spec.command.join(" "))
            },
        ),
        ("workdir", or_default(&s.spec.workdir, "(fresh directory)")),
        ("rootfs", or_default(&s.spec.rootfs, "(host, read-only)")),
        ("driver", or_default(&s.spec.driver, "local")),
        // Values may be secrets the user would rather not see on screen; `-o json` has them.
        ("env", keys(&s.spec.env)),
        ("labels", sanitize(&labels)),
    ];
    if let Some(e) = &s.enforcement {
        rows.push(("enforcement", sanitize(&e.to_string())));
    }
    let mut out: String = rows.iter().map(|(k, v)| format!("{:<12} {v}\n", format!("{k}:"))).collect();
    if !s.history.is_empty() {
        out.push_str("history:\n");
        for t in &s.history {
            let line = format!("  {}  {:<12}  {}", or_dash(&t.at), t.phase, sanitize(&t.reason));
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests;
