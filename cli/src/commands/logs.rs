//! `openshell logs` (and `sandbox logs`): a sandbox's output, security events and lifecycle notes.
//!
//! Table output is one line per entry: `TIME SOURCE LEVEL TEXT`, where a security event is summarised
//! (`denied network example.com:443 by /usr/bin/curl (no_endpoint); hint: ...`). `-o json` prints JSON
//! Lines, one [`LogEntryView`] per line, so that `--follow` output can be consumed as it arrives;
//! `-o yaml` prints one YAML document per entry. The agent's own stdout/stderr text is printed as it
//! came; event and gateway fields have control characters replaced.

use clap::{Args, ValueEnum};
use openshell_proto::gateway::v1::{GetLogsRequest, ListSandboxesRequest, LogEntry, LogLevel, LogSource};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Ctx;
use crate::client::Gateway;
use crate::exit::{CliError, OK, sanitize};
use crate::output::{self, Format, now_ms, rfc3339_ms};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Sandbox name or id; may be left out when exactly one sandbox exists.
    pub name: Option<String>,
    /// Keep printing new entries until the sandbox is deleted (or Ctrl-C).
    #[arg(short, long)]
    pub follow: bool,
    /// Only entries from this long ago (30s, 10m, 2h, 1d, 1h30m) or since this RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only entries at this level or above.
    #[arg(long, value_enum)]
    pub level: Option<Level>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl From<Level> for LogLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

pub async fn run(ctx: &Ctx<'_>, args: LogsArgs) -> Result<u8, CliError> {
    let since_ms = match &args.since {
        Some(s) => parse_since(s, now_ms()).map_err(CliError::Invalid)?,
        None => 0,
    };
    let mut gw = ctx.connect().await?;
    let name = resolve_name(&mut gw, args.name).await?;
    let req = GetLogsRequest {
        name,
        follow: args.follow,
        since_ms,
        min_level: args.level.map_or(LogLevel::Unspecified, LogLevel::from) as i32,
        after_seq: 0,
    };
    let mut stream = gw.logs.get_logs(req).await.map_err(|s| gw.fail(s))?.into_inner();
    while let Some(entry) = stream.message().await.map_err(|s| gw.fail(s))? {
        if !output::try_print(&render_entry(ctx.format, &entry)?)? {
            break;
        }
    }
    Ok(OK)
}

/// The sandbox to use when NAME was left out: the only one there is.
pub async fn resolve_name(gw: &mut Gateway, name: Option<String>) -> Result<String, CliError> {
    if let Some(n) = name {
        return Ok(n);
    }
    let list = gw.sandboxes.list_sandboxes(ListSandboxesRequest::default()).await.map_err(|s| gw.fail(s))?;
    let mut names: Vec<String> = list.into_inner().sandboxes.into_iter().map(|s| s.name).collect();
    match names.len() {
        0 => Err(CliError::NotFound("there are no sandboxes".into())),
        1 => Ok(names.remove(0)),
        n => {
            names.sort();
            Err(CliError::Invalid(format!("{n} sandboxes exist; name one of: {}", names.join(", "))))
        }
    }
}

/// Parses `--since`: a duration before `now_ms` (`30s`, `10m`, `2h`, `1d`, `500ms`, `1h30m`) or an RFC 3339
/// time. Returns milliseconds since the epoch.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let err = || {
        format!(
            "invalid --since `{}`: expected a duration like 30s, 10m, 2h, 1d or an RFC 3339 time like 2025-01-31T12:00:00Z",
            text.escape_default()
        )
    };
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| err());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = n.checked_mul(unit_ms).and_then(|v| total.checked_add(v)).ok_or_else(err)?;
    }
    Ok(now_ms.saturating_sub(total))
}

/// One entry as printed by `-o json` (one per line) and `-o yaml`.
#[derive(Debug, Serialize)]
pub struct LogEntryView {
    pub seq: u64,
    pub time: Option<String>,
    /// `stdout`, `stderr`, `event` or `gateway`.
    pub source: &'static str,
    /// `debug`, `info`, `warn`, `error` (or `unspecified`).
    pub level: &'static str,
    pub text: String,
    /// For `event` entries: the security event as an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

pub fn source_name(s: LogSource) -> &'static str {
    match s {
        LogSource::Unspecified => "unspecified",
        LogSource::Stdout => "stdout",
        LogSource::Stderr => "stderr",
        LogSource::Event => "event",
        LogSource::Gateway => "gateway",
    }
}

fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Unspecified => "unspecified",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// One entry in the chosen format, newline included.
pub fn render_entry(format: Format, e: &LogEntry) -> Result<String, CliError> {
    let view = LogEntryView {
        seq: e.seq,
        time: rfc3339_ms(e.time_ms),
        source: source_name(e.source()),
        level: level_name(e.level()),
        text: e.text.clone(),
        event: (e.source() == LogSource::Event).then(|| serde_json::from_str(&e.text).ok()).flatten(),
    };
    Ok(match format {
        Format::Json => serde_json::to_string(&view)? + "\n",
        Format::Yaml => format!("---\n{}", serde_yaml_ng::to_string(&view)?),
        Format::Table => {
            let text = match e.source() {
                LogSource::Stdout | LogSource::Stderr => e.text.clone(),
                LogSource::Event => {
                    summarize_event(&e.text).map_or_else(|| sanitize(&e.text), |s| s.with_hint())
                }
                _ => sanitize(&e.text),
            };
            let time = view.time.as_deref().unwrap_or("-");
            format!("{time} {:<7} {:<5} {text}\n", view.source, view.level)
        }
    })
}

/// A security event in one line.
#[derive(Debug, PartialEq, Eq)]
pub struct EventSummary {
    pub deny: bool,
    /// `denied network example.com:443 by /usr/bin/curl (no_endpoint)`.
    pub line: String,
    pub hint: Option<String>,
}

impl EventSummary {
    pub fn with_hint(&self) -> String {
        match &self.hint {
            Some(h) => format!("{}; hint: {h}", self.line),
            None => self.line.clone(),
        }
    }
}

/// Summarises a security event (the supervisor's JSON object); `None` when it is not one.
pub fn summarize_event(text: &str) -> Option<EventSummary> {
    let v: Value = serde_json::from_str(text).ok()?;
    let s = |val: &Value| match val {
        Value::String(s) => Some(sanitize(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let kind = s(&v["kind"])?;
    let decision = s(&v["decision"])?;
    let detail = &v["detail"];
    // Allow/deny wording only fits enforcement decisions; lifecycle and config events just say what happened.
    let enforcement = matches!(kind.as_str(), "network" | "dns" | "filesystem" | "process");
    let verb = match decision.as_str() {
        "deny" => "denied".to_string(),
        _ if !enforcement => String::new(),
        "allow" => "allowed".to_string(),
        "audit" => "allowed (audit only)".to_string(),
        "info" => String::new(),
        other => other.to_string(),
    };
    let host = s(&v["host"]).or_else(|| s(&v["ip"]));
    let target = match kind.as_str() {
        "network" => match (host, s(&v["port"])) {
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            (Some(h), None) => Some(h),
            (None, Some(p)) => Some(format!("port {p}")),
            (None, None) => None,
        },
        "dns" => host,
        "filesystem" => match (s(&detail["access"]), s(&detail["path"])) {
            (Some(a), Some(p)) => Some(format!("{a} {p}")),
            (a, p) => p.or(a),
        },
        "process" => s(&detail["syscall"]).or_else(|| s(&detail["message"])),
        _ => s(&detail["message"]),
    };
    let mut line = [verb, kind].iter().filter(|w| !w.is_empty()).cloned().collect::<Vec<_>>().join(" ");
    if let Some(t) = target {
        line.push_str(&format!(" {t}"));
    }
    if let Some(b) = s(&v["binary"]) {
        line.push_str(&format!(" by {b}"));
    }
    if let Some(r) = s(&v["reason"]) {
        line.push_str(&format!(" ({r})"));
    }
    Some(EventSummary { deny: decision == "deny", line, hint: s(&v["hint"]) })
}

#[cfg(test)]
mod tests;
