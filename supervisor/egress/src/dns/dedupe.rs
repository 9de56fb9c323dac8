//! Suppression of repeated DNS denial events.
//!
//! Threat handled: event floods. Resolvers ask A and AAAA and retry, and an
//! agent may loop on a denied name; one `dns` deny event per name and reason
//! per window is enough to explain it. Suppressed denials are still counted in
//! the `denied` statistic and logged at DEBUG.
//! Residual risk: within the window, repeated denials of the same name are not
//! individually recorded.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// One event per (name, reason) per this window.
const WINDOW: Duration = Duration::from_secs(10);
/// Names remembered; the map is cleared when full.
const MAX_NAMES: usize = 1024;

/// Remembers recent DNS denials.
#[derive(Debug, Default)]
pub(crate) struct DenialDedupe {
    seen: Mutex<HashMap<(String, &'static str), Instant>>,
}

impl DenialDedupe {
    /// `true` when an event should be emitted for this denial now.
    pub(crate) fn first_in_window(&self, name: &str, reason: &'static str) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = seen.get(&(name.to_owned(), reason))
            && now.duration_since(*t) < WINDOW
        {
            return false;
        }
        if seen.len() >= MAX_NAMES {
            seen.retain(|_, t| now.duration_since(*t) < WINDOW);
            if seen.len() >= MAX_NAMES {
                seen.clear();
            }
        }
        seen.insert((name.to_owned(), reason), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_window() {
        let d = DenialDedupe::default();
        assert!(d.first_in_window("a.test", "no_endpoint"));
        assert!(!d.first_in_window("a.test", "no_endpoint"));
        assert!(d.first_in_window("a.test", "rebinding"));
        assert!(d.first_in_window("b.test", "no_endpoint"));
        for i in 0..(MAX_NAMES + 5) {
            d.first_in_window(&format!("n{i}.test"), "no_endpoint");
        }
        assert!(d.seen.lock().unwrap().len() <= MAX_NAMES);
    }
}
