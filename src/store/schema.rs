//! Tables and migrations. `PRAGMA user_version` holds the schema version; each migration
//! runs in its own transaction, so an interrupted upgrade leaves the previous version.

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// The schema version this build writes.
pub const VERSION: i64 = 11;

/// Migrations: entry `i` upgrades version `i` to `i + 1`.
const MIGRATIONS: [&str; VERSION as usize] = [
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per MO instance. cv_seq is the journal sequence of its last change and the
-- source of its cache validator.
CREATE TABLE instances (
    id        INTEGER PRIMARY KEY,
    moid      TEXT NOT NULL,
    miid      TEXT NOT NULL,
    root_name TEXT NOT NULL,
    owner     TEXT NOT NULL,
    cv_seq    INTEGER NOT NULL,
    UNIQUE (moid, miid)
);

-- Every node below an instance root; the root itself is the instance row. parent is the
-- path of the parent below the root ('' for the root's children).
CREATE TABLE nodes (
    inst   INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    parent TEXT NOT NULL,
    name   TEXT NOT NULL,
    format TEXT NOT NULL,
    value,
    writer TEXT NOT NULL,
    PRIMARY KEY (inst, parent, name)
) WITHOUT ROWID;

-- The change journal: one row per change target, in commit order.
CREATE TABLE journal (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    moid   TEXT NOT NULL,
    miid   TEXT NOT NULL,
    path   TEXT NOT NULL,
    change TEXT NOT NULL CHECK (change IN ('added', 'replaced', 'deleted')),
    writer TEXT NOT NULL,
    at     INTEGER NOT NULL
);
"#,
    r#"
-- Rights a principal holds on an instance besides its owner's (bit set, see
-- authority::Rights).
CREATE TABLE grants (
    inst      INTEGER NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    principal TEXT NOT NULL,
    rights    INTEGER NOT NULL,
    PRIMARY KEY (inst, principal)
) WITHOUT ROWID;
"#,
    r#"
-- Alerts waiting to be sent to a server in a later session (PROTOCOL.md §6).
CREATE TABLE pending_alerts (
    id     INTEGER PRIMARY KEY,
    srv_id TEXT NOT NULL,
    alert  TEXT NOT NULL,
    at     INTEGER NOT NULL
);

-- DEFAULT: where to fetch a missing MO of a MOID from.
CREATE TABLE defaults (
    moid       TEXT PRIMARY KEY,
    srv_id     TEXT NOT NULL,
    server_uri TEXT NOT NULL
) WITHOUT ROWID;

-- SUB: subtrees to PUT to a server whenever they change.
CREATE TABLE subscriptions (
    srv_id     TEXT NOT NULL,
    client_uri TEXT NOT NULL,
    server_uri TEXT NOT NULL,
    PRIMARY KEY (srv_id, client_uri)
) WITHOUT ROWID;

-- When each server last had a session (the first session with a server sends the MO list).
CREATE TABLE server_sessions (
    srv_id TEXT PRIMARY KEY,
    last   INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Per-owner quotas: each instance's size in bytes, kept exact by triggers on every node row
-- written: a row costs its parent path, name, value and writer plus 32 bytes of overhead
-- (store::ROW_OVERHEAD). An index sums an owner's instances.
ALTER TABLE instances ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
CREATE INDEX instances_owner ON instances (owner);
UPDATE instances SET bytes = (
    SELECT total(32 + length(CAST(parent AS BLOB)) + length(CAST(name AS BLOB))
                 + ifnull(length(CAST(value AS BLOB)), 0) + length(CAST(writer AS BLOB)))
    FROM nodes WHERE inst = instances.id);
CREATE TRIGGER nodes_bytes_insert AFTER INSERT ON nodes BEGIN
    UPDATE instances
    SET bytes = bytes + 32 + length(CAST(NEW.parent AS BLOB)) + length(CAST(NEW.name AS BLOB))
                + ifnull(length(CAST(NEW.value AS BLOB)), 0) + length(CAST(NEW.writer AS BLOB))
    WHERE id = NEW.inst;
END;
CREATE TRIGGER nodes_bytes_delete AFTER DELETE ON nodes BEGIN
    UPDATE instances
    SET bytes = bytes - 32 - length(CAST(OLD.parent AS BLOB)) - length(CAST(OLD.name AS BLOB))
                - ifnull(length(CAST(OLD.value AS BLOB)), 0) - length(CAST(OLD.writer AS BLOB))
    WHERE id = OLD.inst;
END;
CREATE TRIGGER nodes_bytes_update AFTER UPDATE ON nodes BEGIN
    UPDATE instances
    SET bytes = bytes + ifnull(length(CAST(NEW.value AS BLOB)), 0) + length(CAST(NEW.writer AS BLOB))
                - ifnull(length(CAST(OLD.value AS BLOB)), 0) - length(CAST(OLD.writer AS BLOB))
    WHERE id = NEW.inst;
END;
"#,
    r#"
-- When each polled server's next session is due (POSIX seconds), and the PollSeconds it was
-- scheduled with: kept across restarts so that a restart neither repeats nor loses a poll.
CREATE TABLE poll_due (
    srv_id TEXT PRIMARY KEY,
    due    INTEGER NOT NULL,
    every  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Asynchronous EXECs whose handler was started: recorded before the handler starts, removed
-- in the transaction that queues its result alert. A row found when the daemon starts is a
-- handler a stopped daemon never heard back from: its result is queued as interrupted.
CREATE TABLE async_execs (
    id         INTEGER PRIMARY KEY,
    srv_id     TEXT NOT NULL,
    client_uri TEXT NOT NULL,
    target_uri TEXT NOT NULL,
    started    INTEGER NOT NULL
);
"#,
    r#"
-- Factory bootstrap files applied (bootstrap.rs): each file by its path, with the SHA-256
-- (hex) of the content applied and when. A file whose digest differs is applied again; a
-- factory reset empties the table, so every file is applied again.
CREATE TABLE bootstrap_files (
    path    TEXT PRIMARY KEY,
    digest  TEXT NOT NULL,
    applied INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- For an instance's deletion: the principals that held Read on it then (its owner and the
-- grantees with Read, app:* and srv:* included), one per line, so that its end is news to
-- them when they ask for changes later (no rights are left to check by then).
ALTER TABLE journal ADD COLUMN readers TEXT;
"#,
    r#"
-- NOTIFICATION-IDs of verified server notifications (notification_state.rs), each kept
-- until `expires` (POSIX seconds: the timestamp window past the later of its arrival and its
-- TIMESTAMP), so that a replay is refused across restarts while the 2-byte ids may wrap.
CREATE TABLE notification_ids (
    srv_id  TEXT NOT NULL,
    id      INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (srv_id, id)
) WITHOUT ROWID;
"#,
    r#"
-- A subscription whose last delivery failed (the server or the network was unreachable):
-- the subtree's current state is owed to the server and sent when it can be.
ALTER TABLE subscriptions ADD COLUMN owed INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Large objects (store/objects.rs): a bin node whose cell is TEXT refers to a file
-- `<hex digest> <size>`; its size counts towards the owner's quota as if it were inline.
DROP TRIGGER nodes_bytes_insert;
DROP TRIGGER nodes_bytes_delete;
DROP TRIGGER nodes_bytes_update;
CREATE TRIGGER nodes_bytes_insert AFTER INSERT ON nodes BEGIN
    UPDATE instances
    SET bytes = bytes + 32 + length(CAST(NEW.parent AS BLOB)) + length(CAST(NEW.name AS BLOB))
                + ifnull(length(CAST(NEW.value AS BLOB)), 0) + length(CAST(NEW.writer AS BLOB))
                + CASE WHEN NEW.format = 'bin' AND typeof(NEW.value) = 'text' THEN CAST(substr(NEW.value, 66) AS INTEGER) ELSE 0 END
    WHERE id = NEW.inst;
END;
CREATE TRIGGER nodes_bytes_delete AFTER DELETE ON nodes BEGIN
    UPDATE instances
    SET bytes = bytes - 32 - length(CAST(OLD.parent AS BLOB)) - length(CAST(OLD.name AS BLOB))
                - ifnull(length(CAST(OLD.value AS BLOB)), 0) - length(CAST(OLD.writer AS BLOB))
                - CASE WHEN OLD.format = 'bin' AND typeof(OLD.value) = 'text' THEN CAST(substr(OLD.value, 66) AS INTEGER) ELSE 0 END
    WHERE id = OLD.inst;
END;
CREATE TRIGGER nodes_bytes_update AFTER UPDATE ON nodes BEGIN
    UPDATE instances
    SET bytes = bytes + ifnull(length(CAST(NEW.value AS BLOB)), 0) + length(CAST(NEW.writer AS BLOB))
                + CASE WHEN NEW.format = 'bin' AND typeof(NEW.value) = 'text' THEN CAST(substr(NEW.value, 66) AS INTEGER) ELSE 0 END
                - ifnull(length(CAST(OLD.value AS BLOB)), 0) - length(CAST(OLD.writer AS BLOB))
                - CASE WHEN OLD.format = 'bin' AND typeof(OLD.value) = 'text' THEN CAST(substr(OLD.value, 66) AS INTEGER) ELSE 0 END
    WHERE id = NEW.inst;
END;

-- Large-object transfers not yet reported (transfer/, session/large.rs). A download keeps
-- where it stands: the object's validator (ETag or Last-Modified), its size when known, the
-- bytes in the part file that are synced (`done`) and the SHA-256 state after them
-- (`digest`), the server-given digest; so it resumes with a Range request after a restart.
-- `reply` is set when the session answered 202: the result then goes out as an alert.
CREATE TABLE transfers (
    id         INTEGER PRIMARY KEY,
    srv_id     TEXT NOT NULL,
    direction  TEXT NOT NULL CHECK (direction IN ('download', 'upload')),
    post       INTEGER NOT NULL DEFAULT 0,
    server_uri TEXT NOT NULL,
    client_uri TEXT NOT NULL,
    suspended  INTEGER NOT NULL DEFAULT 0,
    validator  TEXT,
    total      INTEGER,
    done       INTEGER NOT NULL DEFAULT 0,
    digest     BLOB,
    expected   BLOB,
    reply      INTEGER NOT NULL DEFAULT 0,
    created    INTEGER NOT NULL
);
"#,
];

/// Brings the database to [`VERSION`] and returns its epoch (see [`super::Store`]).
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(StoreError::db("reading the schema version"))?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn
            .transaction()
            .map_err(StoreError::db("starting a migration"))?;
        tx.execute_batch(sql)
            .map_err(StoreError::db("migrating the schema"))?;
        if from == 0 {
            let mut bytes = [0u8; 4];
            getrandom::fill(&mut bytes)
                .map_err(|e| StoreError::Corrupt(format!("no randomness for the epoch: {e}")))?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('epoch', ?1), ('next_miid', 1)",
                [i64::from(u32::from_le_bytes(bytes))],
            )
            .map_err(StoreError::db("initialising metadata"))?;
        }
        tx.pragma_update(None, "user_version", from as i64 + 1)
            .map_err(StoreError::db("recording the schema version"))?;
        tx.commit()
            .map_err(StoreError::db("committing a migration"))?;
    }
    let epoch: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(StoreError::db("reading the epoch"))?;
    let epoch = epoch.ok_or_else(|| StoreError::Corrupt("meta has no epoch".into()))?;
    u32::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("epoch {epoch} out of range")))
}
