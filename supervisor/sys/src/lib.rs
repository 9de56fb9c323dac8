//! `openshell-supervisor-sys`: every system call the supervisor makes to isolate an agent, and the only
//! crate of the workspace that contains `unsafe`.
//!
//! Threat handled: an untrusted agent process trying to leave its sandbox (read or write files outside its
//! policy, reach the network other than through the supervisor, gain privileges, tamper with the
//! supervisor or the host). The modules build the layers that stop it: namespaces ([`ns`]), a filesystem
//! view holding only the policy's paths ([`mounts`], [`inroot`]), a loopback-only network whose every
//! address is local ([`net`]), Landlock ([`landlock`]), a seccomp deny table ([`seccomp`]) and a
//! privilege drop ([`privs`]).
//!
//! Residual risk: kernel bugs reachable through the syscalls the seccomp table allows; anything the policy
//! itself grants; in rootless mode the agent keeps the caller's supplementary groups (`setgroups` is denied
//! in the user namespace and cannot be used to drop them).
//!
//! Every `unsafe` block carries a `// SAFETY:` comment naming the invariant it relies on. Functions that
//! fork check that the calling process is single-threaded first (see [`process::fork_single_threaded`]).

pub mod audit;
pub mod fdpass;
pub mod inroot;
pub mod landlock;
pub mod mounts;
pub mod net;
pub mod ns;
pub mod observer;
pub mod privs;
pub mod probe;
pub mod process;
pub mod pty;
pub mod seccomp;
pub mod seccomp_notify;

/// Re-exported for the capability names used in reports and in `privs::clear_caps_except`.
pub use caps;
/// Re-exported so that safe callers (the supervisor's launch stage) can use the same version of the
/// safe `nix` wrappers without a second dependency line.
pub use nix;
