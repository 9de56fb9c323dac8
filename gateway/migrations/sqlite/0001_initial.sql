-- Initial schema of the SQLite store. PostgreSQL will keep a twin of this schema in its own directory:
-- only portable constructs are relied upon (no rowid, no INSERT OR REPLACE). STRICT makes SQLite reject a
-- value of the wrong type instead of silently coercing it, so a bug cannot store text in a version column.
--
-- Timestamps are milliseconds since the Unix epoch; versions, revisions and sequence numbers are unsigned
-- in the domain and stored as INTEGER (i64). JSON columns are opaque TEXT: SQL never looks inside them.

CREATE TABLE sandboxes (
    id                    TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL UNIQUE,
    spec_json             TEXT    NOT NULL,
    phase                 TEXT    NOT NULL,
    phase_reason          TEXT    NOT NULL,
    resource_version      INTEGER NOT NULL,
    policy_revision       INTEGER NOT NULL,
    acked_policy_revision INTEGER NOT NULL,
    exit_code             INTEGER,
    created_at_ms         INTEGER NOT NULL,
    updated_at_ms         INTEGER NOT NULL,
    last_seen_ms          INTEGER NOT NULL,
    secret_hash           TEXT    NOT NULL,
    driver_state          TEXT    NOT NULL,
    enforcement_json      TEXT    NOT NULL
) STRICT;

-- seq is per sandbox, from 1; the store numbers it (MAX(seq) + 1) inside the writing transaction.
CREATE TABLE phase_history (
    sandbox_id TEXT    NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    phase      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    at_ms      INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, seq)
) STRICT;

CREATE TABLE policy_revisions (
    sandbox_id    TEXT    NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    revision      INTEGER NOT NULL,
    yaml          TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, revision)
) STRICT;

-- Every read is "one sandbox, a seq range, oldest first", which the primary key serves; the time and level
-- filters scan within it, bounded by the per-sandbox retention.
CREATE TABLE logs (
    sandbox_id TEXT    NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    time_ms    INTEGER NOT NULL,
    source     TEXT    NOT NULL,
    level      TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    PRIMARY KEY (sandbox_id, seq)
) STRICT;
