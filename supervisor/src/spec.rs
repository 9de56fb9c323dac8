//! From a validated policy and the command line to the launch stage's `SandboxSpec`.
//!
//! This is where the supervisor adds what every sandbox needs to run ordinary tools (device nodes, its own
//! `/proc`, the generated resolver configuration) and builds the agent's environment from scratch: nothing
//! of the supervisor's own environment leaks into the sandbox except the few variables named here.

use std::path::{Path, PathBuf};

use openshell_policy::{LandlockCompatibility, Policy, UserSpec};
use openshell_supervisor_sys::landlock::LandlockSpec;

use crate::launch::SandboxSpec;
use crate::passwd;

/// Where the sandbox's explicit proxy listens inside the agent's network namespace.
pub const PROXY_PORT: u16 = 3128;
/// Where the sandbox DNS listens inside the agent's network namespace.
pub const DNS_PORT: u16 = 53;
/// uid/gid used for `sandbox` when the root filesystem has no such account. Chosen outside the range
/// that distributions give to people (1000..) so that it is never mistaken for a real user on the host.
pub const FALLBACK_SANDBOX_ID: u32 = 10001;

/// Paths every agent may read and write whatever the policy says: device nodes that ordinary programs
/// open, and the terminal.
const IMPLICIT_READ_WRITE: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts", "/dev/ptmx", "/dev/shm"];
/// Paths every agent may read: randomness, its own `/proc` (a fresh one, showing only the sandbox's
/// processes), the resolver files the supervisor generates, and the CPU topology `nproc` reads.
const IMPLICIT_READ_ONLY: &[&str] = &[
    // The sandbox's own small /dev tmpfs: listing it is how ttyname() finds the terminal.
    "/dev",
    "/dev/random",
    "/dev/urandom",
    "/proc",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/sys/devices/system/cpu",
];

/// Environment variables copied from the supervisor's environment when set: terminal and locale only.
const PASSTHROUGH_ENV: &[&str] = &["TERM", "COLORTERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Inputs from the command line that shape the sandbox.
pub struct RunInputs<'a> {
    pub sandbox_id: &'a str,
    pub root: &'a Path,
    pub workdir: &'a Path,
    pub argv: &'a [String],
    pub extra_env: &'a [(String, String)],
    pub lookup_env: &'a dyn Fn(&str) -> Option<String>,
    /// Host paths hidden from the agent (see `SandboxSpec::hidden`).
    pub hidden: &'a [PathBuf],
    /// Whether the workdir was created for this sandbox and should be given to the agent.
    pub chown_workdir: bool,
    /// stdin is a terminal that becomes the agent's controlling terminal (`tty` launches).
    pub controlling_tty: bool,
}

/// Builds the launch spec. Pure apart from reading the root filesystem's account files.
pub fn sandbox_spec(policy: &Policy, inputs: &RunInputs<'_>) -> SandboxSpec {
    let (uid, gid) = agent_ids(policy, inputs.root);
    let fs = &policy.filesystem;
    let mut read_only: Vec<PathBuf> = fs.read_only.clone();
    let mut read_write: Vec<PathBuf> = fs.read_write.clone();
    if fs.include_workdir {
        read_write.push(inputs.workdir.to_path_buf());
    }
    read_only.extend(IMPLICIT_READ_ONLY.iter().map(PathBuf::from));
    read_write.extend(IMPLICIT_READ_WRITE.iter().map(PathBuf::from));

    SandboxSpec {
        sandbox_id: inputs.sandbox_id.to_string(),
        root: inputs.root.to_path_buf(),
        workdir: inputs.workdir.to_path_buf(),
        argv: inputs.argv.to_vec(),
        env: agent_env(inputs),
        uid,
        gid,
        landlock: LandlockSpec {
            read_only,
            read_write,
            executable: fs.executable.clone(),
            hard_requirement: policy.landlock.compatibility == LandlockCompatibility::HardRequirement,
            bind_ports: Vec::new(),
        },
        proxy_port: PROXY_PORT,
        dns_port: DNS_PORT,
        capture_ports: policy.network_ports().into_iter().collect(),
        hostname: hostname_for(inputs.sandbox_id),
        hidden: inputs.hidden.to_vec(),
        chown_workdir: inputs.chown_workdir,
        controlling_tty: inputs.controlling_tty,
    }
}

/// The agent's uid and gid: numeric ids as given, `sandbox` looked up in the root filesystem.
fn agent_ids(policy: &Policy, root: &Path) -> (u32, u32) {
    let account = passwd::lookup_user(root, "sandbox");
    let uid = match policy.process.run_as_user {
        Some(UserSpec::Id(id)) => id,
        Some(UserSpec::Sandbox) | None => account.map_or(FALLBACK_SANDBOX_ID, |a| a.uid),
    };
    let gid = match policy.process.run_as_group {
        Some(UserSpec::Id(id)) => id,
        Some(UserSpec::Sandbox) | None => {
            passwd::lookup_group(root, "sandbox").or(account.map(|a| a.gid)).unwrap_or(FALLBACK_SANDBOX_ID)
        }
    };
    (uid, gid)
}

/// The agent's environment, built from nothing: proxy variables for clients that honour them (the
/// others are captured transparently), a home in the workdir, terminal and locale from the caller, then
/// the caller's `--env` values, which win.
fn agent_env(inputs: &RunInputs<'_>) -> Vec<(String, String)> {
    let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
    let workdir = inputs.workdir.display().to_string();
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), workdir.clone()),
        ("PWD".into(), workdir),
        ("USER".into(), "sandbox".into()),
        ("LOGNAME".into(), "sandbox".into()),
        ("OPENSHELL_SANDBOX".into(), inputs.sandbox_id.to_string()),
    ];
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        env.push((name.into(), proxy.clone()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        env.push((name.into(), "localhost,127.0.0.1,::1".into()));
    }
    for name in PASSTHROUGH_ENV {
        if let Some(v) = (inputs.lookup_env)(name) {
            env.push(((*name).into(), v));
        }
    }
    for (k, v) in inputs.extra_env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// The sandbox's hostname: `sandbox-` and the start of its id, within the 64-byte limit.
fn hostname_for(sandbox_id: &str) -> String {
    let short: String =
        sandbox_id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    format!("sandbox-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml).expect("valid policy")
    }

    #[test]
    fn environment_is_built_from_scratch_and_env_flags_win() {
        let p = policy("version: 1\n");
        let extra = vec![("FOO".to_string(), "bar".to_string()), ("HOME".to_string(), "/h".to_string())];
        let lookup = |name: &str| match name {
            "TERM" => Some("xterm".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("leak".to_string()),
            _ => None,
        };
        let inputs = RunInputs {
            sandbox_id: "abc",
            root: Path::new("/nonexistent-root"),
            workdir: Path::new("/work/w"),
            argv: &["true".to_string()],
            extra_env: &extra,
            lookup_env: &lookup,
            hidden: &[],
            chown_workdir: false,
            controlling_tty: false,
        };
        let spec = sandbox_spec(&p, &inputs);
        let get = |k: &str| spec.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
        assert_eq!(get("TERM"), Some("xterm"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("HOME"), Some("/h"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None);
        assert_eq!((spec.uid, spec.gid), (FALLBACK_SANDBOX_ID, FALLBACK_SANDBOX_ID));
        assert!(spec.landlock.read_write.contains(&PathBuf::from("/work/w")));
    }

    #[test]
    fn numeric_ids_and_workdir_exclusion() {
        let p = policy(
            "version: 1\nfilesystem_policy:\n  include_workdir: false\nprocess:\n  run_as_user: 2000\n  run_as_group: 3000\n",
        );
        let lookup = |_: &str| None;
        let inputs = RunInputs {
            sandbox_id: "x",
            root: Path::new("/"),
            workdir: Path::new("/work/w"),
            argv: &[],
            extra_env: &[],
            lookup_env: &lookup,
            hidden: &[],
            chown_workdir: false,
            controlling_tty: false,
        };
        let spec = sandbox_spec(&p, &inputs);
        assert_eq!((spec.uid, spec.gid), (2000, 3000));
        assert!(!spec.landlock.read_write.contains(&PathBuf::from("/work/w")));
    }
}
