//! The sandbox secret: read once from the descriptor the driver handed over, then only ever put into the
//! `authorization` metadata of the gateway session.
//!
//! Threat handled: the secret leaking to the agent or to logs. It never is in argv, the environment or a
//! file; the descriptor is closed right after reading (fd 0 is replaced by `/dev/null`, so nothing
//! inherits it); [`Secret`]'s `Debug` is redacted and it has no `Display`. The agent cannot read the
//! supervisor's memory (other pid namespace, no ptrace) and the launch stage is spawned with an empty
//! environment and closes every inherited descriptor. Residual risk: root on the host reads it anyway.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;

use openshell_supervisor_sys::process::{self, ProcessError};

/// A secret longer than this is a mistake (wrong descriptor, a file instead of a token).
const MAX_SECRET: u64 = 4096;

/// The sandbox secret. Redacted in `Debug`; read it only with [`Secret::expose`].
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub fn for_test(s: &str) -> Self {
        Secret(s.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("--secret-fd {fd}: use 0 (stdin) or a descriptor >= 3; 1 and 2 are the supervisor's log")]
    Reserved { fd: i32 },
    #[error("--secret-fd {fd}: not an open descriptor")]
    NotOpen {
        fd: i32,
        #[source]
        source: ProcessError,
    },
    #[error("--secret-fd {fd}: cannot read the secret")]
    Read {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("--secret-fd {fd}: the secret is empty")]
    Empty { fd: i32 },
    #[error("--secret-fd {fd}: the secret is longer than {MAX_SECRET} bytes")]
    TooLong { fd: i32 },
    #[error("--secret-fd {fd}: the secret must be visible ASCII (it is sent as a bearer token)")]
    NotAscii { fd: i32 },
    #[error("cannot replace stdin with /dev/null")]
    DevNull(#[source] std::io::Error),
}

/// Reads the secret from descriptor `fd` to end of file, trims surrounding whitespace and closes the
/// descriptor. For fd 0, stdin becomes `/dev/null`: the descriptor number stays valid for whatever
/// expects a stdin, but no longer leads to the driver's pipe.
pub fn read(fd: i32) -> Result<Secret, SecretError> {
    let mut raw = Vec::new();
    match fd {
        0 => {
            read_bounded(std::io::stdin().lock(), &mut raw, fd)?;
            let null = File::open("/dev/null").map_err(SecretError::DevNull)?;
            openshell_supervisor_sys::nix::unistd::dup2_stdin(&null)
                .map_err(|e| SecretError::DevNull(e.into()))?;
        }
        1 | 2 => return Err(SecretError::Reserved { fd }),
        _ => {
            let owned: OwnedFd =
                process::adopt_inherited_fd(fd).map_err(|source| SecretError::NotOpen { fd, source })?;
            // Dropped (closed) at the end of this block.
            read_bounded(File::from(owned), &mut raw, fd)?;
        }
    }
    parse(raw, fd)
}

fn read_bounded(from: impl Read, into: &mut Vec<u8>, fd: i32) -> Result<(), SecretError> {
    from.take(MAX_SECRET + 1).read_to_end(into).map_err(|source| SecretError::Read { fd, source })?;
    Ok(())
}

fn parse(raw: Vec<u8>, fd: i32) -> Result<Secret, SecretError> {
    if raw.len() as u64 > MAX_SECRET {
        return Err(SecretError::TooLong { fd });
    }
    let text = String::from_utf8(raw).map_err(|_| SecretError::NotAscii { fd })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SecretError::Empty { fd });
    }
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecretError::NotAscii { fd });
    }
    Ok(Secret(trimmed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_validates() {
        assert_eq!(parse(b"  s3cr3t-token\n".to_vec(), 0).unwrap().expose(), "s3cr3t-token");
        assert!(matches!(parse(b"\n".to_vec(), 0), Err(SecretError::Empty { .. })));
        assert!(matches!(parse(b"a b".to_vec(), 0), Err(SecretError::NotAscii { .. })));
        assert!(matches!(parse("é".as_bytes().to_vec(), 0), Err(SecretError::NotAscii { .. })));
        assert!(matches!(parse(vec![b'a'; 5000], 0), Err(SecretError::TooLong { .. })));
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::for_test("hunter2")), "Secret(<redacted>)");
    }

    #[test]
    fn refuses_the_log_descriptors() {
        assert!(matches!(read(2), Err(SecretError::Reserved { fd: 2 })));
    }

    #[test]
    fn reads_a_pipe_to_the_end() {
        use std::io::Write;
        use std::os::fd::IntoRawFd;
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(b"tok3n\n").unwrap();
        drop(writer);
        // Ownership moves to `read`, which closes it (not checked here: other tests' threads may reuse the
        // number at once).
        let fd = reader.into_raw_fd();
        assert_eq!(read(fd).unwrap().expose(), "tok3n");
    }
}
