//! The checkpoints the registry witnessed, kept in their own small SQLite
//! file (`checkpoints.db`, `synchronous=FULL`): unlike the index they are
//! not derived from the segments, and they are written once a minute.

use std::path::Path;

use lienthong_proto::merkle::Hash;
use rusqlite::{Connection, OptionalExtension, params};

use crate::LogError;

/// A checkpoint the registry witnessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: u64,
    pub root: Hash,
    pub created_at_ms: i64,
    /// The server's signature (encoded `exchange.v1.Signature`).
    pub signature: Vec<u8>,
    /// The registry's countersignature (encoded `exchange.v1.Signature`).
    pub countersignature: Vec<u8>,
    pub witnessed_at_ms: i64,
}

const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS checkpoints (
        tree_size        INTEGER PRIMARY KEY,
        root             BLOB NOT NULL,
        created_at       INTEGER NOT NULL,
        signature        BLOB NOT NULL,
        countersignature BLOB NOT NULL,
        witnessed_at     INTEGER NOT NULL
    ) STRICT;
"#;

/// Opens (creating) the checkpoint file of the log in `dir`.
pub fn open(dir: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(dir.join("checkpoints.db"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

const COLUMNS: &str = "tree_size, root, created_at, signature, countersignature, witnessed_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredCheckpoint, LogError>> {
    let root: Vec<u8> = r.get(1)?;
    Ok(match <Hash>::try_from(root.as_slice()) {
        Err(_) => Err(LogError("stored root is not 32 bytes".into())),
        Ok(root) => Ok(StoredCheckpoint {
            tree_size: r.get::<_, i64>(0)? as u64,
            root,
            created_at_ms: r.get(2)?,
            signature: r.get(3)?,
            countersignature: r.get(4)?,
            witnessed_at_ms: r.get(5)?,
        }),
    })
}

/// The newest witnessed checkpoint.
pub fn latest(conn: &Connection) -> Result<Option<StoredCheckpoint>, LogError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1"),
        [],
        from_row,
    )
    .optional()?
    .transpose()
}

/// Keeps a witnessed checkpoint.
pub fn record(conn: &Connection, c: &StoredCheckpoint) -> Result<(), LogError> {
    conn.execute(
        "INSERT INTO checkpoints (tree_size, root, created_at, signature, countersignature, witnessed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (tree_size) DO UPDATE SET witnessed_at = excluded.witnessed_at,
            countersignature = excluded.countersignature",
        params![
            c.tree_size as i64,
            c.root.as_slice(),
            c.created_at_ms,
            c.signature,
            c.countersignature,
            c.witnessed_at_ms
        ],
    )?;
    Ok(())
}

/// The newest `limit` checkpoints, newest first.
pub fn recent(conn: &Connection, limit: usize) -> Result<Vec<StoredCheckpoint>, LogError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT ?1"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map([limit], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// Every checkpoint, oldest first (also of a log of the SQLite era, whose
/// table is the same).
pub fn all(conn: &Connection) -> Result<Vec<StoredCheckpoint>, LogError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM checkpoints ORDER BY tree_size"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}
