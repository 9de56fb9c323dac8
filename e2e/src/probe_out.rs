//! The probe's one-line JSON report, shared by the probe (writer) and the suites (reader).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Exit status of the probe when the action succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit status when the action was refused or failed.
pub const EXIT_REFUSED: i32 = 1;
/// Exit status on a usage error (a test bug, never "blocked").
pub const EXIT_USAGE: i32 = 2;

/// `{"action":..,"ok":bool,"errno":N|null,"detail":"..", "pid":N, "uid":N, "extra":{..}}`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeOutput {
    pub action: String,
    pub ok: bool,
    pub errno: Option<i32>,
    pub detail: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub extra: Value,
}

impl ProbeOutput {
    /// Finds the probe's report among the lines of a captured stdout (the last line that parses).
    pub fn find_in(stdout: &str) -> Option<ProbeOutput> {
        stdout.lines().rev().find_map(|l| {
            let l = l.trim();
            if !l.starts_with('{') {
                return None;
            }
            serde_json::from_str::<ProbeOutput>(l).ok()
        })
    }

    /// `errno` as the symbolic name, for messages.
    pub fn errno_name(&self) -> &'static str {
        self.errno.map(errno_name).unwrap_or("none")
    }

    /// A field of `extra` as u64, if present.
    pub fn extra_u64(&self, key: &str) -> Option<u64> {
        self.extra.get(key).and_then(Value::as_u64)
    }

    /// A field of `extra` as a string, if present.
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }
}

/// Symbolic names of the errno values the suites reason about.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EAGAIN => "EAGAIN",
        libc::EPIPE => "EPIPE",
        _ => "other",
    }
}

/// Result of one action.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub errno: Option<i32>,
    pub detail: String,
    pub extra: Value,
}

impl Outcome {
    pub fn ok(detail: impl Into<String>) -> Self {
        Outcome { ok: true, errno: None, detail: detail.into(), extra: Value::Null }
    }
    pub fn fail(errno: Option<i32>, detail: impl Into<String>) -> Self {
        Outcome { ok: false, errno, detail: detail.into(), extra: Value::Null }
    }
    pub fn from_io(step: &str, e: &std::io::Error) -> Self {
        Outcome::fail(e.raw_os_error(), format!("{step}: {e}"))
    }
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = extra;
        self
    }
}
