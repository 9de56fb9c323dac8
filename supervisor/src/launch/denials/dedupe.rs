//! Flood control for denial events: at most one event per key per window; the rest are counted and
//! reported as one `repeated` event when the window ends (or when the sandbox stops). Memory is bounded:
//! at most `cap` keys are tracked; beyond that, denials are only counted (and reported as `overflow`).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What to report.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Out<V> {
    /// The first denial of its key in this window.
    First(V),
    /// `count` more denials of this key (the last one given) were not reported one by one.
    Repeated(V, u64),
    /// Denials of keys that could not be tracked (more than `cap` keys in one window).
    Overflow(u64),
}

struct Slot<V> {
    since: Instant,
    suppressed: u64,
    last: V,
}

pub(crate) struct Dedupe<K, V> {
    window: Duration,
    cap: usize,
    slots: HashMap<K, Slot<V>>,
    overflow: u64,
    last_sweep: Instant,
}

impl<K: Hash + Eq, V: Clone> Dedupe<K, V> {
    pub(crate) fn new(window: Duration, cap: usize, now: Instant) -> Self {
        Self { window, cap, slots: HashMap::new(), overflow: 0, last_sweep: now }
    }

    /// Records one denial; returns what to report now.
    pub(crate) fn admit(&mut self, key: K, sample: V, now: Instant) -> Vec<Out<V>> {
        let mut out = self.sweep(now);
        let (window, full) = (self.window, self.slots.len() >= self.cap);
        match self.slots.get_mut(&key) {
            Some(slot) if now.duration_since(slot.since) < window => {
                slot.suppressed += 1;
                slot.last = sample;
            }
            Some(slot) => {
                if slot.suppressed > 0 {
                    out.push(Out::Repeated(slot.last.clone(), slot.suppressed));
                }
                *slot = Slot { since: now, suppressed: 0, last: sample.clone() };
                out.push(Out::First(sample));
            }
            None if full => self.overflow += 1,
            None => {
                self.slots.insert(key, Slot { since: now, suppressed: 0, last: sample.clone() });
                out.push(Out::First(sample));
            }
        }
        out
    }

    /// Ends the windows that are over (at most once per window): their counts, and the overflow count.
    pub(crate) fn sweep(&mut self, now: Instant) -> Vec<Out<V>> {
        if now.duration_since(self.last_sweep) < self.window {
            return Vec::new();
        }
        self.last_sweep = now;
        let window = self.window;
        let mut out = Vec::new();
        self.slots.retain(|_, slot| {
            let open = now.duration_since(slot.since) < window;
            if !open && slot.suppressed > 0 {
                out.push(Out::Repeated(slot.last.clone(), slot.suppressed));
            }
            open
        });
        if self.overflow > 0 {
            out.push(Out::Overflow(std::mem::take(&mut self.overflow)));
        }
        out
    }

    /// Nothing is waiting to be reported by [`Dedupe::sweep`] (a caller may sleep until the next denial).
    pub(crate) fn is_quiet(&self) -> bool {
        self.overflow == 0 && self.slots.values().all(|s| s.suppressed == 0)
    }

    /// Everything still counted (when the sandbox stops).
    pub(crate) fn drain(&mut self) -> Vec<Out<V>> {
        let mut out: Vec<Out<V>> = self
            .slots
            .drain()
            .filter(|(_, s)| s.suppressed > 0)
            .map(|(_, s)| Out::Repeated(s.last, s.suppressed))
            .collect();
        if self.overflow > 0 {
            out.push(Out::Overflow(std::mem::take(&mut self.overflow)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_key_and_window_the_rest_counted() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Dedupe::new(s, 2, t0);
        assert_eq!(d.admit("ptrace", 1, t0), [Out::First(1)]);
        for i in 2..=100 {
            assert!(d.admit("ptrace", i, t0 + Duration::from_millis(i)).is_empty());
        }
        assert_eq!(d.admit("mount", 7, t0 + Duration::from_millis(200)), [Out::First(7)]);
        // Window over: the count of the suppressed ones comes first, then the new event.
        assert_eq!(
            d.admit("ptrace", 101, t0 + s + Duration::from_millis(1)),
            [Out::Repeated(100, 99), Out::First(101)]
        );
        assert!(d.admit("ptrace", 102, t0 + s + Duration::from_millis(2)).is_empty());
        assert!(!d.is_quiet());
        assert_eq!(d.drain(), [Out::Repeated(102, 1)]);
        assert!(d.is_quiet());
    }

    #[test]
    fn keys_are_bounded_and_overflow_is_counted() {
        let t0 = Instant::now();
        let mut d = Dedupe::new(Duration::from_secs(1), 2, t0);
        assert_eq!(d.admit(1, 'a', t0).len(), 1);
        assert_eq!(d.admit(2, 'b', t0).len(), 1);
        assert!(d.admit(3, 'c', t0).is_empty());
        assert!(d.admit(4, 'd', t0).is_empty());
        assert!(d.admit(1, 'a', t0).is_empty());
        let later = t0 + Duration::from_secs(2);
        let swept = d.sweep(later);
        assert_eq!(swept, [Out::Repeated('a', 1), Out::Overflow(2)]);
        assert_eq!(d.admit(3, 'c', later), [Out::First('c')], "room again once windows ended");
    }
}
