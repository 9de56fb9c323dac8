//! The launch stage: from a [`SandboxSpec`] to a running, restricted agent (architecture/supervisor.md,
//! steps 3-7).
//!
//! [`launch`] runs in the (possibly multi-threaded) supervisor: it re-executes this binary as
//! `__launch --control-fd N` with no `pre_exec` code and an empty environment, sends the spec over a
//! `SOCK_SEQPACKET` channel and receives the listeners and the enforcement report. Everything that needs
//! privileges or `fork` happens in the fresh single-threaded process ([`stage_main`]): the launch stage
//! ([`stage`]), sandbox init ([`init`]) and the agent's last steps before `execve` ([`agent`]).
//!
//! Threat handled: the agent escaping its namespaces, filesystem view, network, privileges, Landlock
//! domain or seccomp filter, and the sandbox outliving the supervisor. Residual risk: what the spec grants;
//! the kernel; see the sys crate's module docs for each layer.

mod agent;
mod control;
pub mod denials;
mod init;
mod protocol;
mod stage;

use std::net::{TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use openshell_supervisor_sys::landlock::{LandlockReport, LandlockSpec};
use openshell_supervisor_sys::seccomp::SeccompSummary;
use serde::{Deserialize, Serialize};

pub use control::Control;
pub use stage::stage_main;

/// Everything the launch stage needs, as plain data (the policy is mapped to this by the caller).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    pub sandbox_id: String,
    /// Host path of the root: `/` (read-only view of the host) or a root filesystem directory.
    pub root: PathBuf,
    /// Host path of the workdir; bound read-write at the same path inside; the agent's cwd.
    pub workdir: PathBuf,
    /// Command; `argv[0]` without `/` is looked up in the `PATH` of `env`.
    pub argv: Vec<String>,
    /// The agent's complete environment.
    pub env: Vec<(String, String)>,
    /// The agent's uid/gid inside the sandbox (never 0). Rootless: mapped to the caller's ids outside.
    pub uid: u32,
    pub gid: u32,
    pub landlock: LandlockSpec,
    /// Explicit proxy listener port on 127.0.0.1 and ::1.
    pub proxy_port: u16,
    /// DNS listener port (UDP and TCP) on 0.0.0.0 and [::].
    pub dns_port: u16,
    /// TCP ports captured on 0.0.0.0 and [::].
    pub capture_ports: Vec<u16>,
    pub hostname: String,
    /// Host paths the agent must not see even where the policy covers them (the gateway's state
    /// directory): each appears as an empty, read-only directory (an empty file when it is not a
    /// directory), so nothing below it can be read or connected to; policy paths below it are neither
    /// bound nor given Landlock rules. The workdir stays visible (and writable) when it lies inside one,
    /// its parents as empty directories. Absolute, without `..`, not `/`. A path that does not exist or
    /// that no policy path covers is skipped (nothing to hide). With a rootfs `root`, only paths below
    /// `root` (hidden at the same place inside) or below the workdir are in the view; others are skipped.
    /// The report's `filesystem_view.hidden` says what happened to each.
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// The workdir was created for this sandbox: give it to `uid`/`gid` before the agent starts (the
    /// directory itself, not its content; never through a symlink; while still privileged). Nothing to do
    /// when it is theirs already (rootless: the agent's ids map to the caller's); a failure stops the
    /// sandbox. The workdir must not be a top-level directory such as `/tmp`.
    #[serde(default)]
    pub chown_workdir: bool,
    /// stdin is a terminal the agent must have as its controlling terminal: the agent starts a new
    /// session and takes it (Ctrl-C, job control and SIGWINCH reach it). Set for `tty` launches, whose
    /// stdio is a pseudo-terminal held by the supervisor.
    #[serde(default)]
    pub controlling_tty: bool,
}

/// How the supervisor will observe the sandbox, decided before the launch (not part of the policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchOptions {
    /// The supervisor reads the kernel's Landlock audit records: the agent's domain asks Landlock to log
    /// its denials after `execve` too (they would not be logged at all otherwise).
    pub landlock_audit: bool,
}

/// Listeners created inside the sandbox's network namespace, served by the supervisor. Blocking; set
/// them non-blocking before handing them to an async runtime.
#[derive(Debug, Default)]
pub struct Listeners {
    /// `127.0.0.1:proxy_port` (and `[::1]:proxy_port` when the kernel has IPv6).
    pub proxy: Vec<TcpListener>,
    /// `(port, listener)` on `0.0.0.0:port` and `[::]:port`.
    pub capture: Vec<(u16, TcpListener)>,
    pub dns_udp: Vec<UdpSocket>,
    pub dns_tcp: Vec<TcpListener>,
    /// `NETLINK_SOCK_DIAG` socket created in the agent's netns (binary identity lookups).
    pub sock_diag: Option<std::os::fd::OwnedFd>,
    /// The refusal observer (`AF_PACKET` on the agent netns's `lo`), if it could be created.
    pub observer: Option<std::os::fd::OwnedFd>,
}

/// What is enforced, as reported by the agent process just before `execve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcementReport {
    pub landlock: LandlockReport,
    pub seccomp: SeccompSummary,
    /// Namespaces the agent is in (besides `user` when `user_namespace`).
    pub namespaces: Vec<String>,
    /// The agent's ids inside the sandbox.
    pub uid: u32,
    pub gid: u32,
    /// Rootless mode: a user namespace maps uid/gid to the caller's ids.
    pub user_namespace: bool,
    /// Supplementary groups were cleared (not possible in a user namespace: the caller's stay).
    pub groups_cleared: bool,
    /// Every capability set is empty and `no_new_privs` is set (verified, also `setuid(0)` fails).
    pub no_new_privs: bool,
    pub capabilities: Vec<String>,
    /// How connections are captured.
    pub capture: String,
    pub ipv6: bool,
    /// Capture ports not opened, with the reason (e.g. the proxy's own port).
    pub skipped_capture_ports: Vec<String>,
    /// `/etc/resolv.conf` handling.
    pub resolv_conf: String,
    /// The agent's filesystem view: what is bound where, recreated symlinks, skipped paths, `noexec`
    /// places, protected git files, memfd execution.
    #[serde(default)]
    pub filesystem_view: openshell_supervisor_sys::mounts::ViewReport,
    /// Sandbox init keeps only these capabilities (to signal the agent).
    pub init_capabilities: Vec<String>,
    /// How refused syscalls become `process` events: `seccomp-notify` (the supervisor answers them and
    /// reports each) or `unavailable: <why>` (plain errno filter, not reported).
    #[serde(default)]
    pub process_events: String,
    /// How Landlock denials become `filesystem` (and signal-scope `process`) events: `landlock-audit`
    /// (kernel audit records of this sandbox's domain) or `unavailable: <why>`. Set by the supervisor.
    #[serde(default)]
    pub filesystem_events: String,
    /// How the sandbox kernel's own refusals (connections to ports no policy names, UDP, ICMP) become
    /// `network` events: the refusal observer's mechanism, or `unavailable: <why>`.
    #[serde(default)]
    pub refusal_events: String,
}

/// A running sandbox.
#[derive(Debug)]
pub struct Launched {
    /// Host pid of sandbox init (pid 1 of the sandbox).
    pub init_pid: i32,
    /// Host pid of the agent (0 if it could not be determined; use `init_pid` then).
    pub agent_pid: i32,
    pub listeners: Listeners,
    pub report: EnforcementReport,
    pub control: Control,
    /// The listener of the agent's seccomp filter (notify mode): every refused syscall of the sandbox
    /// waits for an answer on it. Keep it open for the sandbox's lifetime and answer from a dedicated
    /// thread ([`denials`]); closed, refused calls fail with `ENOSYS`.
    pub seccomp_listener: Option<OwnedFd>,
}

/// Why the sandbox could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("invalid sandbox spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    #[error("cannot start the launch stage (/proc/self/exe __launch)")]
    Spawn(#[source] std::io::Error),
    #[error("cannot create the control channel")]
    Channel(#[source] openshell_supervisor_sys::fdpass::FdPassError),
    #[error("{step}")]
    Protocol {
        step: &'static str,
        #[source]
        source: protocol::ChannelError,
    },
    #[error("unexpected message from the sandbox during {step}: {message}")]
    Unexpected { step: &'static str, message: String },
    #[error("sandbox setup failed at {stage}: {message}")]
    Setup { stage: String, message: String },
    #[error("the launch stage ended before the sandbox was ready (exit status {status})")]
    StageExited { status: String },
    #[error("sandbox init refused the request: {message}")]
    Request { message: String },
    #[error("the sandbox is gone (agent exited)")]
    Gone,
    #[error("waiting for the launch stage failed")]
    Wait(#[source] std::io::Error),
    #[error("wait() was already called on another handle of this sandbox")]
    AlreadyWaited,
}

fn validate(spec: &SandboxSpec) -> Result<(), LaunchError> {
    let bad = |field, reason: &str| Err(LaunchError::InvalidSpec { field, reason: reason.to_string() });
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return bad("argv", "no command");
    }
    if spec.uid == 0 || spec.gid == 0 {
        return bad("uid/gid", "the agent never runs as root");
    }
    for (field, p) in [("root", &spec.root), ("workdir", &spec.workdir)] {
        if !p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir) {
            return bad(field, "must be an absolute path without '..'");
        }
    }
    if spec.workdir == std::path::Path::new("/") {
        return bad("workdir", "/ cannot be the writable workdir");
    }
    if spec.chown_workdir && spec.workdir.components().count() < 3 {
        return bad(
            "chown_workdir",
            "the workdir must be a directory made for this sandbox, not a top-level one like /tmp",
        );
    }
    for p in &spec.hidden {
        let normalised = p.is_absolute()
            && !p.components().any(|c| c == std::path::Component::ParentDir)
            && p.components().count() > 1;
        if !normalised {
            return Err(LaunchError::InvalidSpec {
                field: "hidden",
                reason: format!("{}: must be an absolute path other than /, without '..'", p.display()),
            });
        }
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 {
        return bad("hostname", "must be 1 to 64 bytes");
    }
    if spec.proxy_port == 0 || spec.dns_port == 0 || spec.proxy_port == spec.dns_port {
        return bad("proxy_port/dns_port", "must be two different, non-zero ports");
    }
    if spec.capture_ports.contains(&0) {
        return bad("capture_ports", "port 0 cannot be captured");
    }
    if spec.env.iter().any(|(k, _)| k.is_empty() || k.contains('=')) {
        return bad("env", "variable names must be non-empty and contain no '='");
    }
    Ok(())
}

/// Starts the sandbox described by `spec` and returns once the agent is executing its command (or
/// failed to). Blocking. The launch stage inherits stdin/stdout/stderr: the agent talks to the caller's
/// terminal directly. `options` say how the supervisor will observe the sandbox.
pub fn launch(spec: &SandboxSpec, options: LaunchOptions) -> Result<Launched, LaunchError> {
    validate(spec)?;
    control::start(spec, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn spec() -> SandboxSpec {
        SandboxSpec {
            sandbox_id: "t".into(),
            root: "/".into(),
            workdir: "/tmp".into(),
            argv: vec!["true".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            uid: 1000,
            gid: 1000,
            landlock: LandlockSpec::default(),
            proxy_port: 3128,
            dns_port: 53,
            capture_ports: vec![443],
            hostname: "sandbox-t".into(),
            hidden: vec![],
            chown_workdir: false,
            controlling_tty: false,
        }
    }

    #[test]
    fn validation_rejects_root_and_bad_paths() {
        assert!(validate(&spec()).is_ok());
        assert!(validate(&SandboxSpec { uid: 0, ..spec() }).is_err());
        assert!(validate(&SandboxSpec { argv: vec![], ..spec() }).is_err());
        assert!(validate(&SandboxSpec { workdir: "/".into(), ..spec() }).is_err());
        assert!(validate(&SandboxSpec { workdir: "rel".into(), ..spec() }).is_err());
        assert!(validate(&SandboxSpec { root: "/a/../b".into(), ..spec() }).is_err());
        assert!(validate(&SandboxSpec { env: vec![("A=B".into(), "c".into())], ..spec() }).is_err());
        assert!(validate(&SandboxSpec { dns_port: 3128, ..spec() }).is_err());
        assert!(validate(&SandboxSpec { capture_ports: vec![443, 0], ..spec() }).is_err());
    }

    #[test]
    fn validation_of_hidden_paths_and_chown_workdir() {
        let hidden = |p: &str| SandboxSpec { hidden: vec!["/var/lib/openshell".into(), p.into()], ..spec() };
        assert!(validate(&hidden("/root/.local/state/openshell")).is_ok());
        assert!(validate(&hidden("/root/./x/")).is_ok(), "`.` and trailing slashes are harmless");
        for bad in ["relative/state", "/var/lib/../../etc", "/", "//", ""] {
            let err = validate(&hidden(bad)).unwrap_err().to_string();
            assert!(err.contains("hidden") && err.contains("absolute path other than /"), "{bad:?}: {err}");
        }
        let chown = |w: &str| SandboxSpec { workdir: w.into(), chown_workdir: true, ..spec() };
        assert!(validate(&chown("/var/lib/openshell/sandboxes/x/workdir")).is_ok());
        assert!(validate(&chown("/home/alice")).is_ok());
        let err = validate(&chown("/tmp")).unwrap_err().to_string();
        assert!(err.contains("chown_workdir") && err.contains("top-level"), "{err}");
        assert!(validate(&SandboxSpec { workdir: "/tmp".into(), chown_workdir: false, ..spec() }).is_ok());
    }

    #[test]
    fn spec_round_trips_as_json() {
        let s = spec();
        let back: SandboxSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
