//! Denial events through the real binary: `openshell-supervisor run --events F -- sh -c '...'` with a
//! command the seccomp table refuses (`unshare -U`), as root and rootless. The agent gets `EPERM`, the
//! events file holds a `process` deny event naming the syscall and the binary, floods are summarised
//! without losing the count, and the enforcement report says how denials are reported.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_openshell-supervisor");
/// How many refused calls the flood makes.
const FLOOD: usize = 40;

fn minimal_policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/minimal.yaml")
}

fn is_root() -> bool {
    openshell_supervisor_sys::nix::unistd::geteuid().is_root()
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// Runs `script` in a sandbox; `rootless` drops to nobody first when running as root.
fn run_sandboxed(script: &str, rootless: bool) -> Option<(Output, Vec<Value>)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let events = dir.path().join("events.jsonl");
    let mut cmd = if rootless && is_root() {
        let setpriv = which("setpriv")?;
        let mut c = Command::new(setpriv);
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", SUPERVISOR]);
        c
    } else {
        Command::new(SUPERVISOR)
    };
    cmd.arg("run")
        .arg("--policy")
        .arg(minimal_policy())
        .arg("--workdir")
        .arg(dir.path())
        .arg("--events")
        .arg(&events)
        .args(["--", "/bin/sh", "-c", script]);
    let out = cmd.output().unwrap();
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let parsed = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).collect();
    Some((out, parsed))
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(v, |v, k| &v[*k]).as_str().unwrap_or("")
}

fn process_denials<'a>(events: &'a [Value], syscall: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            str_of(e, &["kind"]) == "process"
                && str_of(e, &["decision"]) == "deny"
                && str_of(e, &["detail", "syscall"]) == syscall
        })
        .collect()
}

fn check_refused_syscall_is_reported(rootless: bool) {
    let label = if rootless { "rootless" } else { "root" };
    if which("unshare").is_none() {
        eprintln!("SKIPPED [{label}]: no unshare(1) to trigger a refused syscall");
        return;
    }
    let script = format!(
        "unshare -U true; echo \"status=$?\"; i=0; while [ $i -lt {FLOOD} ]; do unshare -U true 2>/dev/null; \
         i=$((i+1)); done"
    );
    let Some((out, events)) = run_sandboxed(&script, rootless) else {
        eprintln!("SKIPPED [{label}]: no setpriv(1) to drop to an unprivileged user");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "[{label}] supervisor failed: {stderr}");
    assert!(stdout.contains("status=1"), "[{label}] unshare must fail: {stdout}");
    assert!(stderr.contains("Operation not permitted"), "[{label}] the agent sees EPERM: {stderr}");

    let started = events.iter().find(|e| str_of(e, &["reason"]) == "started").expect("started event");
    let enforcement = &started["detail"]["enforcement"];
    assert_eq!(str_of(enforcement, &["process_events"]), "seccomp-notify", "[{label}] {enforcement}");
    let fs_events = str_of(enforcement, &["filesystem_events"]);
    assert!(fs_events == "landlock-audit" || fs_events.starts_with("unavailable: "), "{fs_events}");
    if fs_events != "landlock-audit" {
        let said = events.iter().any(|e| str_of(e, &["reason"]) == "filesystem_events_unavailable");
        assert!(said, "[{label}] missing filesystem events must be said in a lifecycle event");
    }

    let denials = process_denials(&events, "unshare");
    let first = denials.first().unwrap_or_else(|| panic!("[{label}] no process event: {events:#?}"));
    assert_eq!(str_of(first, &["reason"]), "syscall_denied");
    assert_eq!(str_of(first, &["detail", "errno"]), "EPERM");
    assert!(str_of(first, &["binary"]).ends_with("/unshare"), "{first}");
    assert!(first["pid"].as_i64().is_some_and(|p| p > 1), "{first}");
    // Every refused call is accounted for: one event each, or a count in a `repeated` summary.
    let total: u64 = denials.iter().map(|e| e["detail"]["repeated"].as_u64().unwrap_or(1)).sum();
    assert_eq!(total, FLOOD as u64 + 1, "[{label}] {denials:#?}");
    assert!(denials.len() < FLOOD / 2, "[{label}] the flood must be summarised: {} events", denials.len());
}

#[test]
fn refused_syscall_is_a_process_event_as_root() {
    if !is_root() {
        eprintln!("SKIPPED: not root");
        return;
    }
    check_refused_syscall_is_reported(false);
}

#[test]
fn refused_syscall_is_a_process_event_rootless() {
    check_refused_syscall_is_reported(true);
}

#[test]
fn allowed_programs_produce_no_denials() {
    let Some((out, events)) = run_sandboxed("echo hi; ls / >/dev/null; true", !is_root()) else { return };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let denials: Vec<_> = events.iter().filter(|e| str_of(e, &["kind"]) == "process").collect();
    assert!(denials.is_empty(), "{denials:#?}");
}

/// Switches the kernel's audit on for the duration of a test and puts back the previous state on drop
/// (also when the test panics), so the host is left as it was found.
struct AuditEnabled;

impl AuditEnabled {
    /// `Ok(None)`: audit was already on, nothing to do or undo.
    fn ensure() -> Result<Option<Self>, String> {
        use openshell_supervisor_sys::audit;
        let before = audit::status().map_err(|e| format!("cannot read the audit status: {e}"))?;
        if before.failure == 2 {
            return Err("the host's audit is in panic-on-loss mode; not touching it".into());
        }
        if before.enabled != 0 {
            return Ok(None);
        }
        audit::set_audit_enabled(true).map_err(|e| format!("cannot enable audit: {e}"))?;
        let guard = Self;
        match audit::status() {
            Ok(s) if s.enabled == 1 => Ok(Some(guard)),
            other => Err(format!("audit did not switch on: {other:?}")),
        }
    }
}

impl Drop for AuditEnabled {
    fn drop(&mut self) {
        if let Err(e) = openshell_supervisor_sys::audit::set_audit_enabled(false) {
            eprintln!("WARNING: could not switch the host's audit back off (`auditctl -e 0`): {e}");
        }
    }
}

/// Landlock denials as `filesystem` events. Needs root; when the host's audit is off, the test switches
/// it on for its own duration (restored on drop, even on panic) and prints SKIPPED if it cannot.
#[test]
fn landlock_denial_is_a_filesystem_event_when_the_host_audits() {
    if !is_root() {
        eprintln!("SKIPPED: not root (the kernel's audit log needs CAP_AUDIT_READ)");
        return;
    }
    let _audit = match AuditEnabled::ensure() {
        Ok(guard) => guard,
        Err(why) => {
            eprintln!("SKIPPED: the host's audit is off or unusable and could not be enabled: {why}");
            return;
        }
    };
    // /sys exists in the agent's view (an empty directory of the tmpfs skeleton, holding the bound
    // /sys/devices/system/cpu) but the minimal policy does not grant it: Landlock refuses listing it. (A
    // path outside the view, such as /var, fails with ENOENT before Landlock is asked.)
    let script = format!(
        "ls /sys >/dev/null; echo \"status=$?\"; i=0; while [ $i -lt {FLOOD} ]; do ls /sys >/dev/null 2>&1; \
         i=$((i+1)); done"
    );
    let (out, events) = run_sandboxed(&script, false).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("status=2"), "ls /sys must fail: {stdout}");
    assert!(stderr.contains("Permission denied"), "Landlock answers EACCES: {stderr}");
    let started = events.iter().find(|e| str_of(e, &["reason"]) == "started").expect("started event");
    assert_eq!(str_of(&started["detail"]["enforcement"], &["filesystem_events"]), "landlock-audit");
    let denials: Vec<_> = events
        .iter()
        .filter(|e| {
            str_of(e, &["kind"]) == "filesystem"
                && str_of(e, &["decision"]) == "deny"
                && str_of(e, &["detail", "path"]) == "/sys"
        })
        .collect();
    let first = denials.first().unwrap_or_else(|| panic!("no filesystem event: {events:#?}"));
    eprintln!("landlock filesystem event: {first}");
    assert_eq!(str_of(first, &["reason"]), "landlock_denied");
    assert!(str_of(first, &["detail", "access"]).contains("fs.read_dir"), "{first}");
    let total: u64 = denials.iter().map(|e| e["detail"]["repeated"].as_u64().unwrap_or(1)).sum();
    assert_eq!(total, FLOOD as u64 + 1, "{denials:#?}");
}
