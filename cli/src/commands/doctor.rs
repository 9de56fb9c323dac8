//! `openshell doctor`: can this host run sandboxes, and is the gateway usable? One line per check
//! (`ok`, `warn`, `fail`) and a verdict; exit 1 when a check fails. Never starts a gateway.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Ctx;
use super::status::query;
use crate::client::find_program;
use crate::config::Source;
use crate::exit::{CliError, OK, OTHER, sanitize};
use crate::output;

const SUPERVISOR_BIN: &str = "openshell-supervisor";
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Verdict,
    pub detail: String,
}

/// `doctor -o json|yaml`.
#[derive(Debug, Serialize)]
pub struct DoctorView {
    pub checks: Vec<Check>,
    /// `ok` (ready), `warn` (ready with warnings) or `fail`.
    pub verdict: Verdict,
}

/// What `openshell-supervisor check --json` prints (see supervisor/src/check.rs). Unknown fields are
/// ignored on purpose: this is another program's output, not our config, and it may grow.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct HostSupport {
    pub kernel: String,
    pub landlock_abi: Option<u32>,
    pub seccomp_filter: bool,
    pub user_namespaces: bool,
    pub sandbox_namespaces: bool,
    pub privileged: bool,
}

fn check(name: &str, status: Verdict, detail: impl Into<String>) -> Check {
    Check { name: name.into(), status, detail: detail.into() }
}

/// The host checks from the supervisor's report.
pub fn host_checks(h: &HostSupport) -> Vec<Check> {
    use Verdict::{Fail, Ok, Warn};
    let mode = if h.privileged { "root" } else { "rootless" };
    vec![
        check("kernel", Ok, format!("{} ({mode})", h.kernel)),
        if h.sandbox_namespaces {
            check("namespaces", Ok, "mount, pid, net, ipc and uts namespaces can be created")
        } else if !h.user_namespaces && !h.privileged {
            check("namespaces", Fail, "unprivileged user namespaces are disabled; enable them or run as root")
        } else {
            check("namespaces", Fail, "sandbox namespaces cannot be created")
        },
        if h.seccomp_filter {
            check("seccomp", Ok, "filters available")
        } else {
            check(
                "seccomp",
                Fail,
                "seccomp filters are not available (kernel built without CONFIG_SECCOMP_FILTER?)",
            )
        },
        match h.landlock_abi {
            Some(abi) => check("landlock", Ok, format!("ABI {abi}")),
            None => check(
                "landlock",
                Warn,
                "not available: filesystem rules cannot be enforced (policies with hard_requirement fail)",
            ),
        },
    ]
}

async fn supervisor_checks(ctx: &Ctx<'_>) -> Vec<Check> {
    let Some(bin) = find_program(SUPERVISOR_BIN, ctx.env) else {
        return vec![check(
            "host",
            Verdict::Fail,
            format!("`{SUPERVISOR_BIN}` is found neither next to openshell nor in PATH"),
        )];
    };
    let run = tokio::process::Command::new(&bin)
        .args(["check", "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CHECK_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return vec![check("host", Verdict::Fail, format!("cannot run {}: {e}", bin.display()))];
        }
        Err(_) => {
            return vec![check("host", Verdict::Fail, format!("{} check did not finish", bin.display()))];
        }
    };
    // A non-zero exit still prints the report (it means "cannot sandbox"): the report says why.
    match serde_json::from_slice::<HostSupport>(&out.stdout) {
        Ok(h) => host_checks(&h),
        Err(e) => vec![check(
            "host",
            Verdict::Fail,
            format!("{} check --json printed no report ({e}; exit {})", bin.display(), out.status),
        )],
    }
}

async fn gateway_checks(ctx: &Ctx<'_>) -> Vec<Check> {
    let target = match ctx.target() {
        Ok(t) => t,
        Err(e) => return vec![check("config", Verdict::Fail, e.to_string())],
    };
    let mut checks = vec![];
    match query(ctx, &target).await {
        Ok(s) => {
            checks.push(check(
                "gateway",
                Verdict::Ok,
                format!("{} answers (version {}, pid {})", target.endpoint, sanitize(&s.version), s.pid),
            ));
            if s.drivers.is_empty() {
                checks.push(check("driver", Verdict::Fail, "the gateway reports no compute driver"));
            }
            for d in &s.drivers {
                let status = if d.ready { Verdict::Ok } else { Verdict::Fail };
                let state = if d.ready { "ready" } else { "not ready" };
                let detail =
                    if d.detail.is_empty() { String::new() } else { format!(": {}", sanitize(&d.detail)) };
                checks.push(check(
                    &format!("driver {}", sanitize(&d.name)),
                    status,
                    format!("{state}{detail}"),
                ));
            }
        }
        // The local gateway starts on demand, so its absence is only worth a warning.
        Err(CliError::Unreachable { why, .. }) if target.may_autostart() => {
            checks.push(check(
                "gateway",
                Verdict::Warn,
                format!("not running at {} ({why}); it starts on first use", target.endpoint),
            ));
        }
        Err(e) => checks.push(check("gateway", Verdict::Fail, e.to_string())),
    }
    if target.source == Source::LocalDefault {
        checks.push(check("state dir", Verdict::Ok, target.state_dir.display().to_string()));
    }
    checks
}

pub fn verdict(checks: &[Check]) -> Verdict {
    checks.iter().map(|c| c.status).max_by_key(|v| *v as u8).unwrap_or(Verdict::Ok)
}

fn render(v: &DoctorView) -> String {
    let mut out: String = v
        .checks
        .iter()
        .map(|c| {
            let tag = match c.status {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            format!("{tag}  {:<12} {}\n", c.name, c.detail)
        })
        .collect();
    let failed = v.checks.iter().filter(|c| c.status == Verdict::Fail).count();
    out.push_str(match v.verdict {
        Verdict::Ok => "\nready: this host can run sandboxes\n",
        Verdict::Warn => "\nready, with warnings (see above)\n",
        Verdict::Fail => "",
    });
    if failed > 0 {
        out.push_str(&format!("\nNOT ready: {failed} check(s) failed\n"));
    }
    out
}

pub async fn run(ctx: &Ctx<'_>) -> Result<u8, CliError> {
    let mut checks = supervisor_checks(ctx).await;
    checks.extend(gateway_checks(ctx).await);
    let view = DoctorView { verdict: verdict(&checks), checks };
    output::emit(ctx.format, &view, render)?;
    Ok(if view.verdict == Verdict::Fail { OTHER } else { OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support() -> HostSupport {
        HostSupport {
            kernel: "6.8.0".into(),
            landlock_abi: Some(6),
            seccomp_filter: true,
            user_namespaces: true,
            sandbox_namespaces: true,
            privileged: false,
        }
    }

    #[test]
    fn parses_the_supervisor_report() {
        let json = r#"{"kernel":"6.8.0","landlock_abi":6,"seccomp_filter":true,"user_namespaces":true,"sandbox_namespaces":true,"privileged":false,"later_field":1}"#;
        assert_eq!(serde_json::from_str::<HostSupport>(json).unwrap(), support());
    }

    #[test]
    fn capable_host_is_ok() {
        let checks = host_checks(&support());
        assert_eq!(verdict(&checks), Verdict::Ok);
        assert!(
            render(&DoctorView { verdict: Verdict::Ok, checks })
                .contains("ready: this host can run sandboxes")
        );
    }

    #[test]
    fn missing_landlock_warns_and_missing_namespaces_fail() {
        let mut h = support();
        h.landlock_abi = None;
        assert_eq!(verdict(&host_checks(&h)), Verdict::Warn);
        h.user_namespaces = false;
        h.sandbox_namespaces = false;
        let checks = host_checks(&h);
        assert_eq!(verdict(&checks), Verdict::Fail);
        let text = render(&DoctorView { verdict: Verdict::Fail, checks });
        assert!(text.contains("FAIL  namespaces   unprivileged user namespaces are disabled"), "{text}");
        assert!(text.contains("NOT ready: 1 check(s) failed"), "{text}");
    }
}
