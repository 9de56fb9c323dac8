//! Just enough of `/proc/PID/stat` to tell whether a pid is still the process the driver started.
//!
//! A pid alone is not an identity: once a process is reaped its pid can be handed to an unrelated process.
//! The pair (pid, start time in clock ticks since boot) is unique for the life of the host, so every signal
//! the driver sends is gated on it. Residual risk: the check and `kill(2)` are two syscalls; a process that
//! exits AND whose pid is reused between them would be signalled. For supervisors this driver process
//! started, the signal goes through the wait task instead (see `local.rs`), which closes that window.

use std::path::Path;

/// What `/proc/PID/stat` says about a pid, as far as the driver cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead)...
    pub state: char,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    /// The very process (same start time) and not yet exited.
    Alive,
    /// It has exited and waits to be reaped: it holds no resources any more and cannot be signalled usefully.
    Exited,
    /// No such process, or the pid now belongs to another process.
    Gone,
}

/// Parses the content of `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself
/// contain spaces and parentheses, so the fixed fields are read after the LAST `)`.
pub(super) fn parse_stat(content: &str) -> Option<Stat> {
    let rest = &content[content.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `fields` starts at field 3 (state); field 22 is 19 further on.
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// Reads `/proc/PID/stat`; `None` when the process does not exist (or the file cannot be parsed).
pub(super) fn stat(pid: u32) -> Option<Stat> {
    let content = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&content)
}

/// Whether `pid` is still the process that started at `start_time`.
pub(super) fn liveness(pid: u32, start_time: u64) -> Liveness {
    match stat(pid) {
        Some(s) if s.start_time != start_time => Liveness::Gone,
        Some(s) if matches!(s.state, 'Z' | 'X' | 'x') => Liveness::Exited,
        Some(_) => Liveness::Alive,
        None => Liveness::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_the_last_parenthesis() {
        let line = "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(Stat { state: 'S', start_time: 987654 }));
        assert_eq!(parse_stat("12 (sh) Z 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert_eq!(liveness(me, s.start_time), Liveness::Alive);
        assert_eq!(liveness(me, s.start_time + 1), Liveness::Gone);
    }
}
