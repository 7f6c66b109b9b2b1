//! The embedded SQLite backend: one file, WAL journal, `synchronous=FULL`
//! (a registry write is rare and must survive a power cut), foreign keys on.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use lienthong_certs::Fingerprint;
use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;
use super::backend::{Backend, write_settings};
use super::schema::{PLACE, SCHEMA};
use super::sql::Sql;
use crate::model::InstanceSettings;

/// The registry store in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

pub(crate) use lienthong_proto::time::now_ms;

pub(super) fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| StoreError::Internal(format!("stored {what} {s:?} is unreadable: {e}")))
}

pub(super) fn fingerprint(b: &[u8]) -> Result<Fingerprint, StoreError> {
    Fingerprint::from_slice(b)
        .ok_or_else(|| StoreError::Internal("stored fingerprint is not 32 bytes".into()))
}

impl SqliteStore {
    /// Creates a new store at `path` with the instance's settings; refuses
    /// to touch an existing file.
    pub fn create(path: &Path, settings: &InstanceSettings) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::Conflict(format!(
                "{} already exists; refusing to overwrite a registry store",
                path.display()
            )));
        }
        let store = Self::open_any(Connection::open(path)?)?;
        store.write_settings(settings)?;
        Ok(store)
    }

    /// Opens an existing store, applying any pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(format!(
                "registry store {} does not exist; run `lienthong registry init` first",
                path.display()
            )));
        }
        Self::open_any(Connection::open(path)?)
    }

    /// A store in memory (tests, benchmarks).
    pub fn in_memory(settings: &InstanceSettings) -> Result<Self, StoreError> {
        let store = Self::open_any(Connection::open_in_memory()?)?;
        store.write_settings(settings)?;
        Ok(store)
    }

    fn open_any(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back
        // (rusqlite's Transaction rolls back on drop); the connection is intact.
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write_settings(&self, s: &InstanceSettings) -> Result<(), StoreError> {
        self.write(|tx| write_settings(tx, s))
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    Ok(SCHEMA.apply_sqlite(conn, PLACE)?)
}

// === impl Backend ===

impl SqliteStore {
    fn transaction<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let mut tx = conn.transaction_with_behavior(behavior)?;
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

impl Backend for SqliteStore {
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Deferred, f)
    }

    /// Immediate: another process on the same file (`registry operator
    /// add` beside a serving registry) waits for the write lock instead of
    /// failing when a read transaction would have to become a write.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    fn append<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(TransactionBehavior::Immediate, f)
    }

    fn now_ms(&self, _tx: &mut dyn Sql) -> Result<i64, StoreError> {
        Ok(now_ms())
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}
