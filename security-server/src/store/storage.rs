//! Where the store's tables are: [`Storage`] gives transactions on one
//! SQLite file (one node) or on a PostgreSQL database (the nodes of a
//! cluster); every operation is the same SQL on either (`sql.rs`).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;
use super::schema::SCHEMA;
use super::sql::{Lite, Sql};

/// What a transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A consistent read.
    Read,
    /// A write, all or nothing.
    Write,
    /// One statement on its own (no transaction around it: one round trip
    /// less on the replay check's path).
    Single,
}

/// An operation on the store, run once inside what [`Storage::run`] opens.
pub(crate) type Op<'a> = dyn FnMut(&mut dyn Sql) -> Result<(), StoreError> + Send + 'a;

/// Transactions on the store's tables.
pub(crate) trait Storage: std::fmt::Debug + Send + Sync + 'static {
    /// Runs `f` in a transaction of `kind`; commits when it succeeds.
    fn run(&self, kind: Kind, f: &mut Op<'_>) -> Result<(), StoreError>;
    /// Whether other nodes may share these tables (a cluster's database).
    fn shared(&self) -> bool;
    /// Where the tables are, for messages (never with a password).
    fn shown(&self) -> String;
}

/// Runs `f` once in a transaction of `kind` on `storage`; returns its value.
pub(crate) fn with<T: Send>(
    storage: &dyn Storage,
    kind: Kind,
    f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError> + Send,
) -> Result<T, StoreError> {
    let mut f = Some(f);
    let mut out = None;
    storage.run(kind, &mut |tx| {
        let f = f
            .take()
            .ok_or_else(|| StoreError("a store operation was run twice".into()))?;
        out = Some(f(tx)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError("a store operation did not run".into()))
}

thread_local! {
    /// Set on a thread the server handed to blocking work on purpose.
    static BLOCKING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` marked as blocking work: the PostgreSQL client then runs on
/// this thread (the caller is already off the runtime's own threads).
pub(crate) fn on_blocking_thread<T>(f: impl FnOnce() -> T) -> T {
    BLOCKING.with(|b| b.set(true));
    let out = f();
    BLOCKING.with(|b| b.set(false));
    out
}

/// Runs `f` where a synchronous PostgreSQL client may block: here, unless
/// this thread belongs to an async runtime (the client would panic there:
/// it drives a runtime of its own), then on a thread of its own.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() || BLOCKING.with(Cell::get) {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

// === impl Storage for SQLite ===

/// The store in one SQLite file: WAL journal, `synchronous=FULL`.
pub(crate) struct SqliteStorage {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteStorage({})", self.path.display())
    }
}

impl SqliteStorage {
    /// Opens (creating if needed) the file, applying pending migrations.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        SCHEMA.apply_sqlite(&mut conn, &path.display().to_string())?;
        Ok(SqliteStorage {
            conn: Mutex::new(conn),
            path: path.to_owned(),
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
}

impl Storage for SqliteStorage {
    fn run(&self, kind: Kind, f: &mut Op<'_>) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let behavior = match kind {
            Kind::Single => return f(&mut Lite(&conn)),
            Kind::Read => TransactionBehavior::Deferred,
            Kind::Write => TransactionBehavior::Immediate,
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        f(&mut Lite(&tx))?;
        tx.commit()?;
        Ok(())
    }

    fn shared(&self) -> bool {
        false
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}
