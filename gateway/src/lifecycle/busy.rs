//! Sandboxes with a user operation (create, start, stop, delete) in progress in this gateway. The
//! reconciler leaves them alone: a create has stored its record but not yet its instance, a delete has
//! marked the record but not yet removed it, and judging either half-way would be wrong.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Default)]
pub struct Busy {
    ids: Arc<Mutex<HashSet<String>>>,
}

/// Held for the length of an operation; the sandbox is no longer busy when it is dropped.
pub struct Claim {
    ids: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Busy {
    #[must_use]
    pub fn claim(&self, id: &str) -> Claim {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).insert(id.to_string());
        Claim { ids: Arc::clone(&self.ids), id: id.to_string() }
    }

    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).contains(id)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}
