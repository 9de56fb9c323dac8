//! Flood control for refusal events: one event per (protocol, destination address, destination port) per
//! window, at most [`MAX_KEYS`] such events per window; what is held back is counted and reported in one
//! summary per key (and one per protocol for the overflow) when the window closes.
//!
//! Threat handled: an agent looping on a refused destination (retry loops, port scans, UDP floods) turning
//! the event log into a flood and the supervisor's CPU into its victim. The key has no binary: the
//! decision to report is taken before the (best-effort) attribution, so that repeats cost no `/proc` work.
//! Residual risk: within a window, two binaries refused on the same destination share one event (and its
//! attribution); the summary counts the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Length of one window. A window opens with the first refusal after a quiet period.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);
/// Distinct destinations reported individually per window.
pub(crate) const MAX_KEYS: usize = 64;

/// Transport of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn index(self) -> usize {
        match self {
            Self::Tcp => 0,
            Self::Udp => 1,
            Self::Icmp => 2,
        }
    }
}

/// What the flood control groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub proto: Proto,
    pub ip: IpAddr,
    /// 0 for ICMP.
    pub port: u16,
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// First of its key in this window: report it now.
    Report,
    /// Counted; reported in the window's summary.
    Held,
}

/// Reported when a window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Summary {
    /// `count` more refusals of a key already reported in the window.
    Repeats { key: Key, count: u64 },
    /// `count` refusals of `proto` to destinations beyond [`MAX_KEYS`] in the window.
    Overflow { proto: Proto, count: u64 },
}

/// The flood control state (one per sandbox).
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    opened: Option<Instant>,
    /// Held repeats per key reported in the open window.
    keys: HashMap<Key, u64>,
    overflow: [u64; 3],
}

impl Limiter {
    /// Decides for one refusal of `key` at `now`. Call [`Limiter::close_due`] first: an expired window is
    /// not closed here.
    pub(crate) fn admit(&mut self, key: Key, now: Instant) -> Verdict {
        if self.opened.is_none() {
            self.opened = Some(now);
        }
        if let Some(held) = self.keys.get_mut(&key) {
            *held += 1;
            return Verdict::Held;
        }
        if self.keys.len() >= MAX_KEYS {
            self.overflow[key.proto.index()] += 1;
            return Verdict::Held;
        }
        self.keys.insert(key, 0);
        Verdict::Report
    }

    /// When the open window closes (`None`: no window open, nothing to wake up for).
    pub(crate) fn due(&self) -> Option<Instant> {
        self.opened.map(|t| t + WINDOW)
    }

    /// Closes the window if it is due at `now` (or unconditionally with `force`) and returns its
    /// summaries, in a stable order.
    pub(crate) fn close_due(&mut self, now: Instant, force: bool) -> Vec<Summary> {
        match self.due() {
            Some(due) if force || now >= due => {}
            _ => return Vec::new(),
        }
        self.opened = None;
        let mut out: Vec<Summary> = self
            .keys
            .drain()
            .filter(|&(_, count)| count > 0)
            .map(|(key, count)| Summary::Repeats { key, count })
            .collect();
        out.sort_by_key(|s| match s {
            Summary::Repeats { key, .. } => Some(*key),
            Summary::Overflow { .. } => None,
        });
        for (proto, slot) in [Proto::Tcp, Proto::Udp, Proto::Icmp].into_iter().zip(&mut self.overflow) {
            if *slot > 0 {
                out.push(Summary::Overflow { proto, count: *slot });
                *slot = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(proto: Proto, last: u8, port: u16) -> Key {
        Key { proto, ip: IpAddr::from([10, 0, 0, last]), port }
    }

    #[test]
    fn one_event_per_key_per_window_then_a_summary() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        assert_eq!(l.due(), None);
        let a = key(Proto::Tcp, 1, 9);
        assert_eq!(l.admit(a, t0), Verdict::Report);
        assert_eq!(l.due(), Some(t0 + WINDOW));
        for _ in 0..5 {
            assert_eq!(l.admit(a, t0 + Duration::from_millis(10)), Verdict::Held);
        }
        // Another port, another protocol: separate keys.
        assert_eq!(l.admit(key(Proto::Tcp, 1, 10), t0), Verdict::Report);
        assert_eq!(l.admit(key(Proto::Udp, 1, 9), t0), Verdict::Report);
        assert!(l.close_due(t0 + Duration::from_millis(999), false).is_empty(), "not due yet");
        assert_eq!(l.close_due(t0 + WINDOW, false), vec![Summary::Repeats { key: a, count: 5 }]);
        assert_eq!(l.due(), None);
        // A new window reports the key again.
        assert_eq!(l.admit(a, t0 + WINDOW), Verdict::Report);
        assert!(l.close_due(t0 + WINDOW, true).is_empty(), "no repeats, nothing to summarise");
    }

    #[test]
    fn a_scan_is_bounded_per_window() {
        let t0 = Instant::now();
        let mut l = Limiter::default();
        let reported = (0..1000u16)
            .map(|p| l.admit(key(Proto::Tcp, 2, p), t0))
            .filter(|v| *v == Verdict::Report)
            .count();
        assert_eq!(reported, MAX_KEYS);
        l.admit(key(Proto::Udp, 3, 1), t0);
        l.admit(key(Proto::Icmp, 3, 0), t0);
        let s = l.close_due(t0 + WINDOW, false);
        assert_eq!(
            s,
            vec![
                Summary::Overflow { proto: Proto::Tcp, count: 1000 - MAX_KEYS as u64 },
                Summary::Overflow { proto: Proto::Udp, count: 1 },
                Summary::Overflow { proto: Proto::Icmp, count: 1 },
            ]
        );
        assert!(l.keys.is_empty() && l.overflow == [0; 3]);
    }
}
