//! Durable state behind one trait. SQLite is the embedded default ([`sqlite::SqliteStore`]); PostgreSQL
//! will implement the same trait, so nothing here may assume SQLite (no rowid tricks, no `INSERT OR
//! REPLACE`, timestamps are integers in ms, versions are checked in the `WHERE` clause).
//!
//! Concurrency: every update and delete names the `resource_version` it read; a mismatch is
//! [`StoreError::Conflict`] and changes nothing. Heartbeats (`touch_last_seen`) are the one write that does
//! not bump the version, so that a live session does not make every user's conditional update fail.

pub mod sqlite;

#[cfg(test)]
pub mod conformance;

use async_trait::async_trait;

use crate::model::{LogFilter, LogRecord, NewLog, PhaseTransition, PolicyRevisionRecord, SandboxRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a sandbox named `{0}` already exists")]
    NameTaken(String),
    #[error("sandbox `{0}` not found")]
    NotFound(String),
    #[error("sandbox `{id}` changed concurrently (expected version {expected}, found {found})")]
    Conflict { id: String, expected: u64, found: u64 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new sandbox (its `resource_version` must be 1), its policy revision 1 with `policy_yaml`,
    /// and the first phase transition. `NameTaken` if the name is in use.
    async fn create_sandbox(&self, sandbox: &SandboxRecord, policy_yaml: &str) -> Result<(), StoreError>;

    /// By id, or else by name.
    async fn get_sandbox(&self, name_or_id: &str) -> Result<Option<SandboxRecord>, StoreError>;

    /// All sandboxes, ordered by creation time then name.
    async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError>;

    /// Writes every mutable field of `sandbox` if the stored version is `expected_version`; returns the
    /// record as stored (version + 1, `updated_at_ms` set). Appends a phase transition when the phase or the
    /// reason changed. `NotFound` or `Conflict` otherwise. `id`, `name`, `spec` and `created_at_ms` are
    /// immutable and not written; `secret_hash` is written (it rotates on every start).
    async fn update_sandbox(
        &self,
        sandbox: &SandboxRecord,
        expected_version: u64,
    ) -> Result<SandboxRecord, StoreError>;

    /// Deletes the sandbox and everything of it (revisions, history, logs) if the stored version is
    /// `expected_version`.
    async fn delete_sandbox(&self, id: &str, expected_version: u64) -> Result<(), StoreError>;

    /// Oldest first.
    async fn phase_history(&self, id: &str) -> Result<Vec<PhaseTransition>, StoreError>;

    /// Stores a new revision (current + 1) and makes it the sandbox's desired one, bumping the version,
    /// atomically, if the stored version is `expected_version`. Returns the new revision and the record.
    async fn add_policy_revision(
        &self,
        id: &str,
        yaml: &str,
        expected_version: u64,
    ) -> Result<(PolicyRevisionRecord, SandboxRecord), StoreError>;

    /// `revision` 0: the sandbox's current (desired) revision.
    async fn get_policy_revision(
        &self,
        id: &str,
        revision: u64,
    ) -> Result<Option<PolicyRevisionRecord>, StoreError>;

    /// Appends entries, numbering them after the sandbox's last `seq`, and drops the oldest beyond the
    /// retention bound. Returns the stored entries.
    async fn append_logs(&self, id: &str, entries: &[NewLog]) -> Result<Vec<LogRecord>, StoreError>;

    async fn read_logs(&self, id: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError>;

    /// Records when the supervisor was last heard from. Does not change the resource version.
    async fn touch_last_seen(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;

    /// Short description for status output, e.g. `sqlite:/path/gateway.db`.
    fn describe(&self) -> String;
}
