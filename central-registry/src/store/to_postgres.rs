//! Moving a registry that started on the embedded store (`registry.db`)
//! to PostgreSQL, where several nodes can share it: every row copied in
//! one transaction (audit log, published versions with their signed
//! bytes, operators, tokens, requests, checkpoints, alarms), then
//! `registry.db` renamed so that no node can serve the old copy by
//! mistake.

use std::path::{Path, PathBuf};

use lienthong_database::copy::{self, Copied};
use lienthong_database::{HomeLock, PgTarget};

use super::postgres::WRITE_LOCK;
use super::schema::{PLACE, SCHEMA};
use super::{SqliteStore, Store, StoreError};

/// What `registry.db` is renamed to once its rows are in PostgreSQL.
pub const MOVED: &str = "registry.db.moved";

/// What a move did.
#[derive(Debug)]
pub struct Moved {
    /// Each table with its rows, parents first.
    pub copied: Copied,
    /// The newest configuration version published (none yet: `None`).
    pub version: Option<u64>,
    /// Where the SQLite store now lies (kept as a backup).
    pub kept: PathBuf,
}

/// Why a registry home's store is missing, when it was moved (pure
/// enough: looks at the directory only).
pub fn moved_away(dir: &Path) -> Option<StoreError> {
    let kept = dir.join(MOVED);
    (!dir.join("registry.db").exists() && kept.exists()).then(|| {
        StoreError::Missing(format!(
            "the store of the registry in {} was moved to PostgreSQL ({} is the SQLite copy it was moved from); serve this node with --database-url (or LIENTHONG_DATABASE_URL)",
            dir.display(),
            kept.display()
        ))
    })
}

/// Copies the store of the registry in `dir` into `target` (a database,
/// or schema, that holds no registry yet) and renames `registry.db` to
/// [`MOVED`]. The registry must be stopped: the home's lock is taken for
/// the whole move. A failure leaves the target empty and `registry.db`
/// where it was.
pub fn move_to_postgres(dir: &Path, target: &PgTarget) -> Result<Moved, StoreError> {
    let _home = HomeLock::take(
        dir,
        "moving the store while it serves would lose what it writes meanwhile",
    )
    .map_err(|e| StoreError::Conflict(e.to_string()))?;
    let path = dir.join("registry.db");
    let (settings, version) = {
        // Brings the file to this program's schema version.
        let store = SqliteStore::open(&path)?;
        (
            store.settings()?,
            store.last_publication()?.map(|p| p.version),
        )
    };
    let mut from = rusqlite::Connection::open(&path)?;
    // Writers (an operator command on the registry host) wait until the
    // copy is committed and the file renamed.
    let read = from.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;

    let mut client = target.connect()?;
    loop {
        let mut tx = client.transaction()?;
        let done = SCHEMA.apply_postgres_step(&mut tx, PLACE)?;
        tx.commit()?;
        if done {
            break;
        }
    }
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
    if tx
        .query_opt("SELECT 1 FROM settings WHERE key = 'instance'", &[])?
        .is_some()
    {
        return Err(StoreError::Conflict(format!(
            "{} already holds a registry store; move into a database (or schema) that holds none",
            target.shown()
        )));
    }
    let copied = copy::sqlite_to_postgres(&read, &mut tx)
        .map_err(|e| StoreError::Internal(format!("moving to {}: {e}", target.shown())))?;
    tx.commit()?;
    drop(client);

    // What was committed is read back through the store itself.
    let moved = super::PgStore::open(target)?;
    let (there, there_version) = (
        moved.settings()?,
        moved.last_publication()?.map(|p| p.version),
    );
    if there.instance != settings.instance || there_version != version {
        return Err(StoreError::Internal(format!(
            "{} reads back instance {} at version {there_version:?} after the move, not {} at {version:?}; registry.db is left in place",
            target.shown(),
            there.instance,
            settings.instance
        )));
    }
    drop(moved);

    let kept = dir.join(MOVED);
    std::fs::rename(&path, &kept).map_err(|e| {
        StoreError::Internal(format!(
            "the rows are in {} but {} could not be renamed to {}: {e}; rename it by hand before serving with --database-url",
            target.shown(),
            path.display(),
            kept.display()
        ))
    })?;
    read.commit()?;
    drop(from);
    for f in ["registry.db-wal", "registry.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    Ok(Moved {
        copied,
        version,
        kept,
    })
}
