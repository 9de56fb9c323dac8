//! SQLite implementation of [`Store`]: the embedded default, one file (`gateway.db`) in the state directory.
//!
//! Threat: the file holds every sandbox's secret hash, policies and logs. It is created 0600 before SQLite
//! opens it, so it is never readable by another user even for an instant; SQLite gives the `-wal` and
//! `-shm` files the database's mode. Residual risk: root and the gateway's own uid can read it.
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction. SQLite then takes the write lock up front, so a
//! version check and the write it guards are one atomic step, and a transaction never has to upgrade a
//! read lock to a write lock, which fails with `SQLITE_BUSY` at once instead of waiting out the busy timeout.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};

use super::{Store, StoreError};
use crate::model::{
    LogFilter, LogLevel, LogRecord, LogSource, NewLog, Phase, PhaseTransition, PolicyRevisionRecord,
    SandboxRecord, now_ms,
};

/// Log entries kept per sandbox; appending beyond it drops the oldest.
pub const LOG_RETENTION: u64 = 10_000;

/// Small on purpose: SQLite serialises writers anyway, and WAL lets the few readers proceed meanwhile.
const POOL_SIZE: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Extended result code `SQLITE_CONSTRAINT_UNIQUE`. A primary-key clash has its own code (1555), so on
/// `sandboxes` this can only be the name.
const SQLITE_CONSTRAINT_UNIQUE: &str = "2067";
const FILE_MODE: u32 = 0o600;
/// Every level, least severe first.
const LEVELS: [LogLevel; 4] = [LogLevel::Debug, LogLevel::Info, LogLevel::Warn, LogLevel::Error];

/// The columns [`sandbox_from_row`] reads, as a literal so that `concat!` can build static SQL with it.
macro_rules! sandbox_columns {
    () => {
        "id, name, spec_json, phase, phase_reason, resource_version, policy_revision, acked_policy_revision, \
         exit_code, created_at_ms, updated_at_ms, last_seen_ms, secret_hash, driver_state, enforcement_json"
    };
}

macro_rules! select_sandbox {
    ($tail:literal) => {
        concat!("SELECT ", sandbox_columns!(), " FROM sandboxes ", $tail)
    };
}

pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    log_retention: u64,
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) and migrates the database at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with_log_retention(path, LOG_RETENTION).await
    }

    /// As [`SqliteStore::open`], keeping `log_retention` log entries per sandbox (at least 1: with 0 every
    /// entry would be dropped as it is appended). Tests use a small bound to exercise trimming cheaply.
    pub async fn open_with_log_retention(path: &Path, log_retention: u64) -> Result<SqliteStore, StoreError> {
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable in WAL mode except for the last commits on power loss, never corrupting.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new().max_connections(POOL_SIZE).connect_with(options).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool, path: path.to_path_buf(), log_retention: log_retention.max(1) })
    }

    /// Closes every connection; the last one checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let create = || {
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).mode(FILE_MODE).open(path)?;
        // `mode` only applies on creation: a file left by an older run or by hand is tightened too.
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
    };
    create().map_err(|e| {
        let e = std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        StoreError::Database(sqlx::Error::Io(e))
    })
}

async fn begin_write(pool: &SqlitePool) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// A value the store writes: one that does not fit the column is refused rather than wrapped.
fn to_db(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("{what} {value} does not fit in a signed 64-bit column")))
}

/// A value the store only compares against: nothing stored exceeds `i64::MAX`, so saturating is exact.
fn comparand(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn get_u64(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{column} is negative ({value})")))
}

fn sandbox_from_row(row: &SqliteRow) -> Result<SandboxRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let corrupt = |what: String| StoreError::Corrupt(format!("sandbox `{id}`: {what}"));
    let spec_json: String = row.try_get("spec_json")?;
    let spec = serde_json::from_str(&spec_json).map_err(|e| corrupt(format!("spec_json: {e}")))?;
    let phase = parse_phase(&id, &row.try_get::<String, _>("phase")?)?;
    let exit_code: Option<i64> = row.try_get("exit_code")?;
    let exit_code =
        exit_code.map(i32::try_from).transpose().map_err(|e| corrupt(format!("exit_code: {e}")))?;
    Ok(SandboxRecord {
        name: row.try_get("name")?,
        spec,
        phase,
        phase_reason: row.try_get("phase_reason")?,
        resource_version: get_u64(row, "resource_version")?,
        policy_revision: get_u64(row, "policy_revision")?,
        acked_policy_revision: get_u64(row, "acked_policy_revision")?,
        exit_code,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        secret_hash: row.try_get("secret_hash")?,
        driver_state: row.try_get("driver_state")?,
        enforcement_json: row.try_get("enforcement_json")?,
        id,
    })
}

fn parse_phase(id: &str, name: &str) -> Result<Phase, StoreError> {
    Phase::parse(name).ok_or_else(|| StoreError::Corrupt(format!("sandbox `{id}`: unknown phase `{name}`")))
}

fn revision_from_row(row: &SqliteRow) -> Result<PolicyRevisionRecord, StoreError> {
    Ok(PolicyRevisionRecord {
        sandbox_id: row.try_get("sandbox_id")?,
        revision: get_u64(row, "revision")?,
        yaml: row.try_get("yaml")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn log_from_row(row: &SqliteRow) -> Result<LogRecord, StoreError> {
    let seq = get_u64(row, "seq")?;
    let (source, level): (String, String) = (row.try_get("source")?, row.try_get("level")?);
    let corrupt = || StoreError::Corrupt(format!("log {seq}: unknown source `{source}` or level `{level}`"));
    let (time_ms, text) = (row.try_get("time_ms")?, row.try_get("text")?);
    match (LogSource::parse(&source), LogLevel::parse(&level)) {
        (Some(source), Some(level)) => Ok(LogRecord { seq, time_ms, source, level, text }),
        _ => Err(corrupt()),
    }
}

async fn require(conn: &mut SqliteConnection, id: &str) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT 1 FROM sandboxes WHERE id = ?").bind(id).fetch_optional(conn).await?;
    row.map(|_| ()).ok_or_else(|| StoreError::NotFound(id.to_owned()))
}

/// Explains why a write conditional on `expected` matched no row.
async fn mismatch(conn: &mut SqliteConnection, id: &str, expected: u64) -> StoreError {
    let query = sqlx::query("SELECT resource_version FROM sandboxes WHERE id = ?").bind(id);
    match query.fetch_optional(&mut *conn).await {
        Ok(None) => StoreError::NotFound(id.to_owned()),
        Ok(Some(row)) => get_u64(&row, "resource_version")
            .map_or_else(|e| e, |found| StoreError::Conflict { id: id.to_owned(), expected, found }),
        Err(e) => e.into(),
    }
}

/// Records `s`'s phase and reason as its newest transition.
async fn append_transition(
    conn: &mut SqliteConnection,
    s: &SandboxRecord,
    at_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO phase_history (sandbox_id, seq, phase, reason, at_ms) \
         SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM phase_history WHERE sandbox_id = ?1",
    )
    .bind(&s.id)
    .bind(s.phase.as_str())
    .bind(&s.phase_reason)
    .bind(at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds what both create and update write, in the order both statements name the columns.
fn bind_state<'q>(
    query: SqliteQuery<'q>,
    s: &SandboxRecord,
    updated_at_ms: i64,
) -> Result<SqliteQuery<'q>, StoreError> {
    Ok(query
        .bind(s.phase.as_str())
        .bind(s.phase_reason.clone())
        .bind(to_db(s.acked_policy_revision, "acked_policy_revision")?)
        .bind(s.exit_code.map(i64::from))
        .bind(updated_at_ms)
        .bind(s.last_seen_ms)
        .bind(s.secret_hash.clone())
        .bind(s.driver_state.clone())
        .bind(s.enforcement_json.clone()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_sandbox(&self, sandbox: &SandboxRecord, policy_yaml: &str) -> Result<(), StoreError> {
        let spec_json = serde_json::to_string(&sandbox.spec).map_err(|e| {
            StoreError::Corrupt(format!("sandbox `{}`: spec not serialisable: {e}", sandbox.id))
        })?;
        let mut tx = begin_write(&self.pool).await?;
        // Version and revision are the store's to number: a new sandbox starts at 1 whatever it was given.
        let insert = sqlx::query(
            "INSERT INTO sandboxes (id, name, spec_json, created_at_ms, resource_version, policy_revision, \
             phase, phase_reason, acked_policy_revision, exit_code, updated_at_ms, last_seen_ms, secret_hash, \
             driver_state, enforcement_json) VALUES (?, ?, ?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&sandbox.id)
        .bind(&sandbox.name)
        .bind(&spec_json)
        .bind(sandbox.created_at_ms);
        bind_state(insert, sandbox, sandbox.updated_at_ms)?.execute(&mut *tx).await.map_err(|e| match e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some(SQLITE_CONSTRAINT_UNIQUE) => {
                StoreError::NameTaken(sandbox.name.clone())
            }
            e => e.into(),
        })?;
        sqlx::query(
            "INSERT INTO policy_revisions (sandbox_id, revision, yaml, created_at_ms) VALUES (?, 1, ?, ?)",
        )
        .bind(&sandbox.id)
        .bind(policy_yaml)
        .bind(sandbox.created_at_ms)
        .execute(&mut *tx)
        .await?;
        append_transition(&mut tx, sandbox, sandbox.created_at_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_sandbox(&self, name_or_id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        // One sandbox's id may be another's name: the id wins.
        let row = sqlx::query(select_sandbox!(
            "WHERE id = ?1 OR name = ?1 ORDER BY CASE WHEN id = ?1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sandbox_from_row).transpose()
    }

    async fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query(select_sandbox!("ORDER BY created_at_ms, name")).fetch_all(&self.pool).await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    async fn update_sandbox(
        &self,
        sandbox: &SandboxRecord,
        expected_version: u64,
    ) -> Result<SandboxRecord, StoreError> {
        let id = sandbox.id.as_str();
        let now = now_ms();
        let mut tx = begin_write(&self.pool).await?;
        let previous = sqlx::query(select_sandbox!("WHERE id = ?")).bind(id).fetch_optional(&mut *tx).await?;
        let previous = sandbox_from_row(&previous.ok_or_else(|| StoreError::NotFound(id.to_owned()))?)?;
        // policy_revision is left to add_policy_revision, which keeps it equal to the newest stored
        // revision. last_seen_ms never moves back: heartbeats do not bump the version, so a record read
        // before one would otherwise erase it.
        let update = sqlx::query(concat!(
            "UPDATE sandboxes SET resource_version = resource_version + 1, phase = ?, phase_reason = ?, \
             acked_policy_revision = ?, exit_code = ?, updated_at_ms = ?, last_seen_ms = MAX(last_seen_ms, ?), \
             secret_hash = ?, driver_state = ?, enforcement_json = ? \
             WHERE id = ? AND resource_version = ? RETURNING ",
            sandbox_columns!()
        ));
        let row = bind_state(update, sandbox, now)?
            .bind(id)
            .bind(comparand(expected_version))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Err(mismatch(&mut tx, id, expected_version).await) };
        let stored = sandbox_from_row(&row)?;
        if previous.phase != stored.phase || previous.phase_reason != stored.phase_reason {
            append_transition(&mut tx, &stored, now).await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn delete_sandbox(&self, id: &str, expected_version: u64) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        // Revisions, history and logs go with it through ON DELETE CASCADE.
        let done = sqlx::query("DELETE FROM sandboxes WHERE id = ? AND resource_version = ?")
            .bind(id)
            .bind(comparand(expected_version))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(mismatch(&mut tx, id, expected_version).await);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn phase_history(&self, id: &str) -> Result<Vec<PhaseTransition>, StoreError> {
        let query = "SELECT phase, reason, at_ms FROM phase_history WHERE sandbox_id = ? ORDER BY seq";
        let rows = sqlx::query(query).bind(id).fetch_all(&self.pool).await?;
        // Creation writes the first transition, so only an unknown sandbox has none.
        if rows.is_empty() {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        let transition = |row: &SqliteRow| {
            let phase = parse_phase(id, &row.try_get::<String, _>("phase")?)?;
            Ok(PhaseTransition { phase, reason: row.try_get("reason")?, at_ms: row.try_get("at_ms")? })
        };
        rows.iter().map(transition).collect()
    }

    async fn add_policy_revision(
        &self,
        id: &str,
        yaml: &str,
        expected_version: u64,
    ) -> Result<(PolicyRevisionRecord, SandboxRecord), StoreError> {
        let now = now_ms();
        let mut tx = begin_write(&self.pool).await?;
        let row = sqlx::query(concat!(
            "UPDATE sandboxes SET policy_revision = policy_revision + 1, \
             resource_version = resource_version + 1, updated_at_ms = ? \
             WHERE id = ? AND resource_version = ? RETURNING ",
            sandbox_columns!()
        ))
        .bind(now)
        .bind(id)
        .bind(comparand(expected_version))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(mismatch(&mut tx, id, expected_version).await) };
        let stored = sandbox_from_row(&row)?;
        let row = sqlx::query(
            "INSERT INTO policy_revisions (sandbox_id, revision, yaml, created_at_ms) VALUES (?, ?, ?, ?) \
             RETURNING sandbox_id, revision, yaml, created_at_ms",
        )
        .bind(id)
        .bind(to_db(stored.policy_revision, "policy revision")?)
        .bind(yaml)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let revision = revision_from_row(&row)?;
        tx.commit().await?;
        Ok((revision, stored))
    }

    async fn get_policy_revision(
        &self,
        id: &str,
        revision: u64,
    ) -> Result<Option<PolicyRevisionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT p.sandbox_id, p.revision, p.yaml, p.created_at_ms \
             FROM policy_revisions p JOIN sandboxes s ON s.id = p.sandbox_id \
             WHERE p.sandbox_id = ?1 AND p.revision = CASE WHEN ?2 = 0 THEN s.policy_revision ELSE ?2 END",
        )
        .bind(id)
        .bind(comparand(revision))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(revision_from_row).transpose()
    }

    async fn append_logs(&self, id: &str, entries: &[NewLog]) -> Result<Vec<LogRecord>, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        require(&mut tx, id).await?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE sandbox_id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let last =
            u64::try_from(last).map_err(|_| StoreError::Corrupt(format!("log seq {last} is negative")))?;
        let newest = last.saturating_add(u64::try_from(entries.len()).unwrap_or(u64::MAX));
        // Everything at or below `cut` is beyond retention, including any head of this batch, which is
        // therefore never written. Seqs have no gaps, so the rest is a range delete.
        let cut = newest.saturating_sub(self.log_retention);
        let mut stored = Vec::new();
        for (seq, entry) in (last + 1..).zip(entries).filter(|(seq, _)| *seq > cut) {
            let NewLog { time_ms, source, level, ref text } = *entry;
            let record = LogRecord { seq, time_ms, source, level, text: text.clone() };
            sqlx::query(
                "INSERT INTO logs (sandbox_id, seq, time_ms, source, level, text) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(id)
            .bind(to_db(seq, "log seq")?)
            .bind(record.time_ms)
            .bind(record.source.as_str())
            .bind(record.level.as_str())
            .bind(&record.text)
            .execute(&mut *tx)
            .await?;
            stored.push(record);
        }
        if cut > 0 {
            sqlx::query("DELETE FROM logs WHERE sandbox_id = ? AND seq <= ?")
                .bind(id)
                .bind(to_db(cut, "log seq")?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn read_logs(&self, id: &str, filter: &LogFilter) -> Result<Vec<LogRecord>, StoreError> {
        // Levels are stored by name and ranked in SQL by their position in LEVELS, the names bound as
        // parameters so that the order is defined once, in Rust. An unknown name ranks above every filter:
        // it is read, and reported as corrupt, instead of silently hidden.
        let min_rank: i64 =
            filter.min_level.map_or(0, |min| LEVELS.iter().filter(|level| **level < min).map(|_| 1).sum());
        let since_ms = if filter.since_ms == 0 { i64::MIN } else { filter.since_ms };
        // SQLite reads a negative LIMIT as "no limit".
        let limit = if filter.limit == 0 { -1 } else { i64::from(filter.limit) };
        let rows = sqlx::query(
            "SELECT seq, time_ms, source, level, text FROM logs \
             WHERE sandbox_id = ? AND seq > ? AND time_ms >= ? \
             AND CASE level WHEN ? THEN 0 WHEN ? THEN 1 WHEN ? THEN 2 WHEN ? THEN 3 ELSE 4 END >= ? \
             ORDER BY seq LIMIT ?",
        )
        .bind(id)
        .bind(comparand(filter.after_seq))
        .bind(since_ms)
        .bind(LEVELS[0].as_str())
        .bind(LEVELS[1].as_str())
        .bind(LEVELS[2].as_str())
        .bind(LEVELS[3].as_str())
        .bind(min_rank)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        // Only then tell an unknown sandbox from one without matching entries: the common case costs one query.
        if rows.is_empty() {
            require(&mut *self.pool.acquire().await?, id).await?;
        }
        rows.iter().map(log_from_row).collect()
    }

    async fn touch_last_seen(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE sandboxes SET last_seen_ms = ? WHERE id = ?")
            .bind(at_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound(id.to_owned())) } else { Ok(()) }
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tempfile::TempDir;

    use super::*;
    use crate::store::conformance::{Harness, log, sandbox};

    /// Small enough that the trimming case appends a few dozen rows, not ten thousand.
    const TEST_LOG_RETENTION: u64 = 16;

    async fn harness() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        let store = SqliteStore::open_with_log_retention(&path, TEST_LOG_RETENTION).await.unwrap();
        Harness::new(Arc::new(store), TEST_LOG_RETENTION, dir)
    }

    mod conformance {
        crate::store::conformance::store_conformance_tests!(super::harness);
    }

    /// A store holding one sandbox `sbx-1` with one log entry.
    async fn populated() -> (TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.db");
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_sandbox(&sandbox("sbx-1", "one", 1), "version: 1\n").await.unwrap();
        store.append_logs("sbx-1", &[log(5, LogSource::Stderr, LogLevel::Warn, "w")]).await.unwrap();
        (dir, path, store)
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn files_are_private() {
        let (dir, path, _store) = populated().await;
        assert_eq!(mode(&path), 0o600);
        // Both sidecars exist while a connection is open in WAL mode; check that, or the loop proves nothing.
        for suffix in ["-wal", "-shm"] {
            assert_eq!(mode(&dir.path().join(format!("gateway.db{suffix}"))), 0o600, "{suffix}");
        }

        let loose = dir.path().join("loose.db");
        std::fs::write(&loose, b"").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        SqliteStore::open(&loose).await.unwrap();
        assert_eq!(mode(&loose), 0o600);
    }

    #[tokio::test]
    async fn every_connection_uses_wal_and_foreign_keys() {
        let (_dir, _path, store) = populated().await;
        // Hold every pooled connection at once: each must have been configured, not just the first.
        let mut conns = Vec::new();
        for _ in 0..POOL_SIZE {
            conns.push(store.pool.acquire().await.unwrap());
        }
        for conn in &mut conns {
            let query = "SELECT * FROM pragma_journal_mode, pragma_synchronous, pragma_foreign_keys";
            let pragmas: (String, i64, i64) = sqlx::query_as(query).fetch_one(&mut **conn).await.unwrap();
            // (journal_mode, synchronous where 1 is NORMAL, foreign_keys)
            assert_eq!(pragmas, ("wal".to_owned(), 1, 1));
        }
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let (_dir, path, store) = populated().await;
        assert_eq!(store.describe(), format!("sqlite:{}", path.display()));
        let (revision, record) = store.add_policy_revision("sbx-1", "version: 2\n", 1).await.unwrap();
        let logs = store.read_logs("sbx-1", &LogFilter::default()).await.unwrap();
        let history = store.phase_history("sbx-1").await.unwrap();
        store.close().await;
        drop(store);

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.get_sandbox("one").await.unwrap(), Some(record));
        assert_eq!(store.get_policy_revision("sbx-1", 0).await.unwrap(), Some(revision));
        assert_eq!(store.read_logs("sbx-1", &LogFilter::default()).await.unwrap(), logs);
        assert_eq!(store.phase_history("sbx-1").await.unwrap(), history);
    }

    #[tokio::test]
    async fn unknown_stored_names_are_corrupt() {
        let (_dir, _path, store) = populated().await;
        sqlx::query("UPDATE sandboxes SET phase = 'paused'").execute(&store.pool).await.unwrap();
        sqlx::query("UPDATE logs SET level = 'loud'").execute(&store.pool).await.unwrap();
        assert!(matches!(store.get_sandbox("sbx-1").await, Err(StoreError::Corrupt(_))));
        assert!(matches!(store.list_sandboxes().await, Err(StoreError::Corrupt(_))));
        // A level filter must not hide the bad row.
        for min_level in [None, Some(LogLevel::Error)] {
            let filter = LogFilter { min_level, ..LogFilter::default() };
            assert!(matches!(store.read_logs("sbx-1", &filter).await, Err(StoreError::Corrupt(_))));
        }
    }
}
