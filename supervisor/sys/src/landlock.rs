//! Landlock: filesystem rights per path, TCP `bind` by port, signal and abstract-unix-socket scoping, at the
//! highest ABI the running kernel offers.
//!
//! Use in two steps: [`prepare`] opens the path descriptors while still privileged (a path readable only by
//! root can still be granted), [`enforce`] restricts the calling thread after the privilege drop.
//!
//! Threat handled: the agent reading or writing files outside its policy, listening on ports it was not
//! given, signalling processes outside its domain (sandbox init, the supervisor is already out of its pid
//! namespace) and connecting to abstract unix sockets created outside it. TCP `connect` is NOT handled:
//! Landlock filters by port only, which would defeat transparent capture; the network namespace polices
//! destinations instead. Residual risk: kernels older than the ABI that introduced a right (reported in
//! [`LandlockReport`], fatal with `hard_requirement`); rights Landlock cannot express (e.g. `stat` of
//! paths, `chmod`/`chown` on files the agent can reach through a granted hierarchy).

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// What the agent may touch. Paths are as seen inside the sandbox (after `pivot_root`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockSpec {
    /// Read (files, directory listings) and, unless `executable` is set, execute.
    pub read_only: Vec<PathBuf>,
    /// Every filesystem right the kernel knows (incl. refer, truncate, device ioctl), and execute unless
    /// `executable` is set.
    pub read_write: Vec<PathBuf>,
    /// When set, execution is only allowed beneath these paths (they also get read).
    pub executable: Option<Vec<PathBuf>>,
    /// Any gap (missing path, Landlock unavailable, a right the kernel cannot enforce) is fatal.
    pub hard_requirement: bool,
    /// TCP ports the agent may `bind`. Port 0 (an ephemeral port) is always allowed: listeners are only
    /// reachable from inside the sandbox's network namespace, and test runners, language servers and
    /// notebook kernels need them.
    pub bind_ports: Vec<u16>,
}

/// What was really enforced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LandlockReport {
    /// The ABI used (the kernel's, capped at what this build knows); 0 when Landlock is unavailable.
    pub abi: u32,
    /// Filesystem rights handled (denied unless granted by a rule), by kernel name.
    pub fs_rights: Vec<String>,
    /// TCP bind is handled (only `bind_ports` and 0 allowed).
    pub net_bind_tcp: bool,
    /// Scopes in force (`abstract_unix_socket`, `signal`).
    pub scoped: Vec<String>,
    /// The kernel enforces everything requested at `abi`.
    pub fully_enforced: bool,
    /// Paths of the spec that did not exist (best effort only) and therefore got no rule.
    pub skipped_paths: Vec<PathBuf>,
    /// Denials after `execve` are logged to the kernel's audit (ABI 7,
    /// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`); only asked for when someone reads the records.
    #[serde(default)]
    pub log_denials_after_exec: bool,
    /// Who restricts `connect()` to pathname unix sockets: Landlock (ABI 9+, `resolve_unix`) and the
    /// mount view, or the mount view only (the agent reaches only sockets inside the paths it was given).
    #[serde(default)]
    pub unix_socket_connect: String,
}

/// [`LandlockReport::unix_socket_connect`] for the handled filesystem rights at `abi`.
pub fn unix_socket_connect(fs: BitFlags<AccessFs>, abi: u32) -> String {
    if fs.contains(AccessFs::ResolveUnix) {
        "landlock (resolve_unix: only below read_write paths) and the mount view".into()
    } else {
        format!(
            "mount view only (Landlock ABI {abi} < 9 cannot restrict connect() to pathname unix sockets): \
             sockets below listed paths are reachable"
        )
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock path {path} cannot be opened")]
    OpenPath {
        path: PathBuf,
        #[source]
        source: landlock::PathFdError,
    },
    #[error("landlock path {path} cannot be inspected")]
    StatPath {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("landlock is required (hard_requirement) but the kernel does not offer it")]
    Unavailable,
    #[error("landlock ruleset could not be built ({step})")]
    Ruleset {
        step: &'static str,
        #[source]
        source: landlock::RulesetError,
    },
    #[error("landlock rule for {path} was rejected")]
    Rule {
        path: PathBuf,
        #[source]
        source: landlock::RulesetError,
    },
    #[error("landlock rule for TCP bind port {port} was rejected")]
    PortRule {
        port: u16,
        #[source]
        source: landlock::RulesetError,
    },
    #[error("landlock is only partially enforced at ABI {abi} and hard_requirement is set")]
    PartiallyEnforced { abi: u32 },
}

/// Kind of grant a path receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    ReadOnly,
    ReadWrite,
    Execute,
}

/// Rights granted to a path of kind `grant`, at `abi`, for a directory (`is_dir`) or a single file.
/// `exec_everywhere` is true when the spec has no `executable` list.
pub fn rights_for(grant: Grant, abi: ABI, is_dir: bool, exec_everywhere: bool) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut r = match grant {
        Grant::ReadOnly => read,
        Grant::ReadWrite => AccessFs::from_all(abi) & !AccessFs::Execute,
        Grant::Execute => read | AccessFs::Execute,
    };
    if exec_everywhere {
        r |= AccessFs::Execute;
    }
    r &= AccessFs::from_all(abi);
    if !is_dir {
        r &= AccessFs::from_file(abi);
    }
    r
}

/// Kernel names of filesystem rights, in bit order.
pub fn fs_right_names(rights: BitFlags<AccessFs>) -> Vec<String> {
    const NAMES: &[(AccessFs, &str)] = &[
        (AccessFs::Execute, "execute"),
        (AccessFs::WriteFile, "write_file"),
        (AccessFs::ReadFile, "read_file"),
        (AccessFs::ReadDir, "read_dir"),
        (AccessFs::RemoveDir, "remove_dir"),
        (AccessFs::RemoveFile, "remove_file"),
        (AccessFs::MakeChar, "make_char"),
        (AccessFs::MakeDir, "make_dir"),
        (AccessFs::MakeReg, "make_reg"),
        (AccessFs::MakeSock, "make_sock"),
        (AccessFs::MakeFifo, "make_fifo"),
        (AccessFs::MakeBlock, "make_block"),
        (AccessFs::MakeSym, "make_sym"),
        (AccessFs::Refer, "refer"),
        (AccessFs::Truncate, "truncate"),
        (AccessFs::IoctlDev, "ioctl_dev"),
        (AccessFs::ResolveUnix, "resolve_unix"),
    ];
    NAMES.iter().filter(|(r, _)| rights.contains(*r)).map(|(_, n)| (*n).to_string()).collect()
}

/// The kernel's Landlock ABI version (`<= 0`: not built in or disabled at boot).
pub fn kernel_abi_version() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag, the kernel reads no memory and
    // only returns the ABI version (or -1 and an errno).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    i32::try_from(v).unwrap_or(-1)
}

/// The highest ABI both the kernel and this build know (`Unsupported` when absent or disabled). The
/// landlock crate keeps this private to push callers towards a fixed, tested ABI; a sandbox manager wants
/// the kernel's best instead, and reports exactly what that was.
pub fn current_abi() -> ABI {
    ABI::from(kernel_abi_version())
}

struct PreparedPath {
    path: PathBuf,
    fd: PathFd,
    rights: BitFlags<AccessFs>,
}

/// Path descriptors opened while privileged, ready for [`enforce`].
pub struct PreparedLandlock {
    abi: ABI,
    paths: Vec<PreparedPath>,
    skipped: Vec<PathBuf>,
    bind_ports: Vec<u16>,
    hard: bool,
    log_after_exec: bool,
}

impl PreparedLandlock {
    /// Asks the kernel (ABI 7+) to log this domain's denials to the audit subsystem also after `execve`
    /// (`LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`): by default only denials of the program that called
    /// `landlock_restrict_self` are logged, and the agent's command runs after an `execve`. Records exist
    /// only while the kernel's audit is enabled; without the flag the domain never produces any after exec.
    pub fn log_denials_after_exec(&mut self, on: bool) {
        self.log_after_exec = on;
    }
}

/// Opens a descriptor for every path of `spec` (missing paths: error with `hard_requirement`, skipped and
/// reported otherwise) and computes its rights for the running kernel.
pub fn prepare(spec: &LandlockSpec) -> Result<PreparedLandlock, LandlockError> {
    let abi = current_abi();
    if abi == ABI::Unsupported && spec.hard_requirement {
        return Err(LandlockError::Unavailable);
    }
    let exec_everywhere = spec.executable.is_none();
    let mut wanted: Vec<(&PathBuf, Grant)> = Vec::new();
    wanted.extend(spec.read_only.iter().map(|p| (p, Grant::ReadOnly)));
    wanted.extend(spec.read_write.iter().map(|p| (p, Grant::ReadWrite)));
    if let Some(exec) = &spec.executable {
        wanted.extend(exec.iter().map(|p| (p, Grant::Execute)));
    }
    let mut paths = Vec::new();
    let mut skipped = Vec::new();
    for (path, grant) in wanted {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            Err(source) => {
                let missing = matches!(&source, landlock::PathFdError::OpenCall { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound);
                if missing && !spec.hard_requirement {
                    skipped.push(path.clone());
                    continue;
                }
                return Err(LandlockError::OpenPath { path: path.clone(), source });
            }
        };
        let st = nix::sys::stat::fstat(&fd)
            .map_err(|source| LandlockError::StatPath { path: path.clone(), source })?;
        let is_dir = (st.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        let rights = rights_for(grant, abi, is_dir, exec_everywhere);
        paths.push(PreparedPath { path: path.clone(), fd, rights });
    }
    let mut bind_ports = spec.bind_ports.clone();
    bind_ports.push(0);
    bind_ports.sort_unstable();
    bind_ports.dedup();
    Ok(PreparedLandlock {
        abi,
        paths,
        skipped,
        bind_ports,
        hard: spec.hard_requirement,
        log_after_exec: false,
    })
}

/// Restricts the calling thread (and everything it executes) with the prepared rules. Sets
/// `no_new_privs` if not already set.
pub fn enforce(prepared: PreparedLandlock) -> Result<LandlockReport, LandlockError> {
    let PreparedLandlock { abi, paths, skipped, bind_ports, hard, log_after_exec } = prepared;
    let abi_num = abi as u32;
    if abi == ABI::Unsupported {
        return Ok(LandlockReport {
            abi: 0,
            skipped_paths: skipped,
            unix_socket_connect: unix_socket_connect(BitFlags::empty(), 0),
            ..LandlockReport::default()
        });
    }
    let level = if hard { CompatLevel::HardRequirement } else { CompatLevel::BestEffort };
    let fs = AccessFs::from_all(abi);
    let net = AccessNet::from_all(abi) & AccessNet::BindTcp;
    let scopes = Scope::from_all(abi);
    let rs_err = |step| move |source| LandlockError::Ruleset { step, source };

    let mut ruleset =
        Ruleset::default().set_compatibility(level).handle_access(fs).map_err(rs_err("handle fs"))?;
    if !net.is_empty() {
        ruleset = ruleset.handle_access(net).map_err(rs_err("handle net"))?;
    }
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes).map_err(rs_err("scope"))?;
    }
    let mut created = ruleset.create().map_err(rs_err("create"))?;
    for p in paths {
        created = created
            .add_rule(PathBeneath::new(p.fd, p.rights))
            .map_err(|source| LandlockError::Rule { path: p.path.clone(), source })?;
    }
    if !net.is_empty() {
        for port in bind_ports {
            created = created
                .add_rule(NetPort::new(port, AccessNet::BindTcp))
                .map_err(|source| LandlockError::PortRule { port, source })?;
        }
    }
    if log_after_exec && abi >= ABI::V7 {
        created = created.log_new_exec(true).map_err(rs_err("log_new_exec"))?;
    }
    let status = created.restrict_self().map_err(rs_err("restrict_self"))?;
    let fully = status.ruleset == RulesetStatus::FullyEnforced;
    if hard && !fully {
        return Err(LandlockError::PartiallyEnforced { abi: abi_num });
    }
    let mut scoped = Vec::new();
    if scopes.contains(Scope::AbstractUnixSocket) {
        scoped.push("abstract_unix_socket".to_string());
    }
    if scopes.contains(Scope::Signal) {
        scoped.push("signal".to_string());
    }
    Ok(LandlockReport {
        abi: abi_num,
        fs_rights: fs_right_names(fs),
        net_bind_tcp: !net.is_empty(),
        scoped,
        fully_enforced: fully,
        skipped_paths: skipped,
        log_denials_after_exec: status.log_new_exec,
        unix_socket_connect: unix_socket_connect(fs, abi_num),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_directory_gets_read_and_execute_unless_restricted() {
        let r = rights_for(Grant::ReadOnly, ABI::V7, true, true);
        assert_eq!(r, AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute);
        let r = rights_for(Grant::ReadOnly, ABI::V7, true, false);
        assert_eq!(r, AccessFs::ReadFile | AccessFs::ReadDir);
    }

    #[test]
    fn read_write_directory_gets_everything_the_abi_knows() {
        let r = rights_for(Grant::ReadWrite, ABI::V7, true, true);
        assert_eq!(r, AccessFs::from_all(ABI::V7));
        for needed in
            [AccessFs::Refer, AccessFs::Truncate, AccessFs::IoctlDev, AccessFs::MakeReg, AccessFs::RemoveFile]
        {
            assert!(r.contains(needed), "{needed:?}");
        }
        let no_exec = rights_for(Grant::ReadWrite, ABI::V7, true, false);
        assert!(!no_exec.contains(AccessFs::Execute));
        // Older kernel: no rights it does not know.
        assert!(!rights_for(Grant::ReadWrite, ABI::V2, true, true).contains(AccessFs::Truncate));
    }

    #[test]
    fn file_rules_only_carry_file_rights() {
        let r = rights_for(Grant::ReadWrite, ABI::V7, false, true);
        assert_eq!(r, AccessFs::from_file(ABI::V7));
        assert!(!r.contains(AccessFs::ReadDir));
        assert!(!r.contains(AccessFs::MakeReg));
        assert!(r.contains(AccessFs::Truncate));
        let ro = rights_for(Grant::ReadOnly, ABI::V7, false, true);
        assert_eq!(ro, AccessFs::ReadFile | AccessFs::Execute);
    }

    #[test]
    fn executable_grant_reads_and_executes() {
        let r = rights_for(Grant::Execute, ABI::V7, true, false);
        assert_eq!(r, AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute);
    }

    #[test]
    fn right_names_are_kernel_names() {
        let names = fs_right_names(AccessFs::Execute | AccessFs::IoctlDev);
        assert_eq!(names, ["execute", "ioctl_dev"]);
        assert_eq!(fs_right_names(AccessFs::from_all(ABI::V7)).len(), 16);
    }

    #[test]
    fn missing_paths_are_skipped_in_best_effort_and_fatal_when_hard() {
        let mut spec = LandlockSpec {
            read_only: vec![PathBuf::from("/nonexistent/openshell-test"), PathBuf::from("/")],
            bind_ports: vec![8080],
            ..LandlockSpec::default()
        };
        let p = prepare(&spec).unwrap();
        assert_eq!(p.skipped, [PathBuf::from("/nonexistent/openshell-test")]);
        assert_eq!(p.paths.len(), 1);
        assert_eq!(p.bind_ports, [0, 8080]);
        spec.hard_requirement = true;
        assert!(matches!(prepare(&spec), Err(LandlockError::OpenPath { .. })));
    }
}
