//! The CLI's error type and the exit code each error maps to.
//!
//! Exit codes (also printed by `openshell --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error (including refused credentials and permission errors) |
//! | 2 | invalid input: a bad flag or argument (same as clap's usage errors), a name already taken, a request the gateway rejected as invalid |
//! | 3 | not found: no such sandbox or policy revision |
//! | 4 | conflict: the sandbox changed concurrently (optimistic concurrency); run the command again |
//! | 5 | the gateway cannot be reached |
//! | 6 | the sandbox failed (or stopped or vanished before it became ready) |
//!
//! `sandbox create` in the foreground exits with the agent's own exit status instead, so a wrapper script
//! sees exactly what the agent returned.
//!
//! Messages from the gateway are printed as they come (the gateway sanitises them), with control
//! characters replaced so that a message cannot drive the terminal.

use std::fmt;

use tonic::{Code, Status};

/// Success.
pub const OK: u8 = 0;
/// Any error without a more specific code.
pub const OTHER: u8 = 1;
/// Invalid input (clap uses the same code for usage errors).
pub const INVALID: u8 = 2;
/// The sandbox (or revision) does not exist.
pub const NOT_FOUND: u8 = 3;
/// Concurrent change detected through `resource_version`.
pub const CONFLICT: u8 = 4;
/// The gateway cannot be reached.
pub const UNREACHABLE: u8 = 5;
/// The sandbox failed.
pub const SANDBOX_FAILED: u8 = 6;

/// Text for `openshell --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error (refused credentials, permission denied, ...)
  2  invalid input (bad arguments, name taken, rejected request)
  3  not found
  4  conflict: the sandbox changed concurrently; run the command again
  5  the gateway cannot be reached
  6  the sandbox failed
`sandbox create` in the foreground exits with the agent's own exit status.";

/// Every way a command can fail, each carrying the user-facing message.
#[derive(Debug)]
pub enum CliError {
    Invalid(String),
    NotFound(String),
    Conflict(String),
    Unreachable { endpoint: String, why: String, hint: String },
    SandboxFailed(String),
    Other(anyhow::Error),
}

impl CliError {
    pub fn other(msg: impl fmt::Display) -> Self {
        Self::Other(anyhow::anyhow!("{msg}"))
    }

    /// The process exit code for this error.
    pub fn code(&self) -> u8 {
        match self {
            Self::Invalid(_) => INVALID,
            Self::NotFound(_) => NOT_FOUND,
            Self::Conflict(_) => CONFLICT,
            Self::Unreachable { .. } => UNREACHABLE,
            Self::SandboxFailed(_) => SANDBOX_FAILED,
            Self::Other(_) => OTHER,
        }
    }

    /// A second line telling the user what to do, when there is one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Unreachable { hint, .. } if !hint.is_empty() => Some(hint),
            _ => None,
        }
    }

    /// Maps a gateway status to an error; `endpoint` names the gateway in "unreachable" messages.
    pub fn from_status(status: &Status, endpoint: &str) -> Self {
        let msg = sanitize(status.message());
        match status.code() {
            Code::NotFound => Self::NotFound(msg),
            Code::AlreadyExists | Code::InvalidArgument | Code::OutOfRange => Self::Invalid(msg),
            Code::Aborted => Self::Conflict(conflict_message(&msg)),
            Code::FailedPrecondition if looks_like_conflict(&msg) => Self::Conflict(conflict_message(&msg)),
            Code::Unavailable => Self::Unreachable {
                endpoint: endpoint.to_string(),
                why: if msg.is_empty() { "unavailable".into() } else { msg },
                hint: "check that the gateway is running: openshell status".into(),
            },
            // tonic reports a connection that broke before any gRPC status as Unknown.
            Code::Unknown if is_transport_message(&msg) => Self::Unreachable {
                endpoint: endpoint.to_string(),
                why: msg,
                hint: "check that the gateway is running: openshell status".into(),
            },
            Code::Unauthenticated => Self::other(format!(
                "the gateway did not accept the credentials: {msg} (check `token_file` in the config file)"
            )),
            Code::PermissionDenied => Self::other(format!("permission denied by the gateway: {msg}")),
            Code::DeadlineExceeded => Self::other(format!("the gateway did not answer in time: {msg}")),
            _ if msg.is_empty() => Self::other(format!("the gateway returned {:?}", status.code())),
            _ => Self::other(msg),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) | Self::NotFound(m) | Self::Conflict(m) | Self::SandboxFailed(m) => {
                f.write_str(m)
            }
            Self::Unreachable { endpoint, why, .. } => {
                write!(f, "cannot reach the gateway at {endpoint}: {why}")
            }
            Self::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        Self::Other(e)
    }
}

fn conflict_message(msg: &str) -> String {
    if msg.is_empty() {
        "the sandbox changed concurrently; run the command again".into()
    } else {
        format!("the sandbox changed concurrently ({msg}); run the command again")
    }
}

/// FailedPrecondition also means "wrong phase"; only a version mismatch is a conflict.
fn looks_like_conflict(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    ["conflict", "resource_version", "resource version", "changed concurrently", "modified concurrently"]
        .iter()
        .any(|k| m.contains(k))
}

fn is_transport_message(msg: &str) -> bool {
    msg.contains("transport error") || msg.starts_with("Service was not ready")
}

/// Replaces control characters (escape sequences) so that text from the gateway or from an agent's
/// events cannot drive the user's terminal.
pub fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\t' { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(code: Code, msg: &str) -> u8 {
        CliError::from_status(&Status::new(code, msg), "unix:///x").code()
    }

    #[test]
    fn status_codes_map_to_exit_codes() {
        assert_eq!(code_of(Code::NotFound, "no sandbox `a`"), NOT_FOUND);
        assert_eq!(code_of(Code::Aborted, "resource_version 3 != 4"), CONFLICT);
        assert_eq!(code_of(Code::FailedPrecondition, "resource_version mismatch"), CONFLICT);
        assert_eq!(code_of(Code::FailedPrecondition, "sandbox is deleting"), OTHER);
        assert_eq!(code_of(Code::AlreadyExists, "name `a` is taken"), INVALID);
        assert_eq!(code_of(Code::InvalidArgument, "bad policy"), INVALID);
        assert_eq!(code_of(Code::Unavailable, "connection refused"), UNREACHABLE);
        assert_eq!(code_of(Code::Unknown, "transport error"), UNREACHABLE);
        assert_eq!(code_of(Code::Unknown, "something"), OTHER);
        assert_eq!(code_of(Code::Unauthenticated, "bad token"), OTHER);
        assert_eq!(code_of(Code::PermissionDenied, "no"), OTHER);
        assert_eq!(code_of(Code::Internal, "boom"), OTHER);
    }

    #[test]
    fn messages_are_clear() {
        let e = CliError::from_status(&Status::aborted("version 3 is stale"), "unix:///x");
        assert_eq!(
            e.to_string(),
            "the sandbox changed concurrently (version 3 is stale); run the command again"
        );
        let e = CliError::from_status(&Status::unavailable("connection refused"), "unix:///s.sock");
        assert_eq!(e.to_string(), "cannot reach the gateway at unix:///s.sock: connection refused");
        assert!(e.hint().is_some());
        let e = CliError::from_status(&Status::unauthenticated("bad token"), "https://g:1");
        assert!(e.to_string().contains("did not accept the credentials: bad token"));
        let e = CliError::from_status(&Status::already_exists("name `a` is taken"), "https://g:1");
        assert_eq!(e.to_string(), "name `a` is taken");
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(sanitize("a\x1b[31mb\nc\td"), "a?[31mb?c\td");
    }
}
