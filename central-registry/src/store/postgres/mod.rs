//! The PostgreSQL backend: several registry nodes can share one database.
//!
//! The driver is the synchronous `postgres` crate with an `r2d2` pool: the
//! [`Store`] trait is synchronous and the gRPC layer already calls it from
//! `spawn_blocking`, so the embedded and the shared store keep one trait
//! and one contract. (A `postgres` client must not be used on an async
//! runtime's own threads; every caller here is on a blocking thread.)
//!
//! Writes take one transaction-scoped advisory lock ([`WRITE_LOCK`]) before
//! they read anything: changes from all nodes are applied one at a time,
//! as SQLite applies them, so checks such as "the request is still
//! pending" or "the token is unused" hold when the write commits. Reads
//! that must be consistent run in one `REPEATABLE READ` transaction.
//! Nothing is half-written: a lost connection rolls the transaction back.

use std::time::Duration;

use lienthong_database::postgres::Manager;
use postgres::{IsolationLevel, Transaction};

use super::StoreError;
use super::backend::{Backend, write_settings};
use super::schema::{PLACE, SCHEMA};
use super::sql::{PgTx, Sql};
use crate::model::InstanceSettings;

/// The advisory lock every write holds while it runs ("Lienthon").
pub const WRITE_LOCK: i64 = 0x4c69_656e_7468_6f6e;
/// The database's clock in milliseconds since the epoch: the publisher
/// lease is judged on it, so nodes' clocks need not agree.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

type Tx<'a> = Transaction<'a>;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        lienthong_database::DatabaseError::from(e).into()
    }
}

/// Where the PostgreSQL store is (the URL and TLS, shared with the
/// security server's cluster store).
pub use lienthong_database::PgTarget;

/// The registry store in a PostgreSQL database, shared by any number of
/// registry nodes.
pub struct PgStore {
    /// `None` only while dropped.
    pool: Option<r2d2::Pool<Manager>>,
    shown: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing a `postgres` client blocks on its own runtime, which
        // panics on an async runtime's thread (where a registry shutting
        // down drops its store): close the pool on a thread of its own.
        if let Some(pool) = self.pool.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(pool));
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStore({})", self.shown)
    }
}

/// Connections each node keeps at most.
pub const POOL_SIZE: u32 = 8;
/// How long opening the store keeps retrying (with back-off) an
/// unreachable database before it gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

enum Mode {
    /// A consistent read.
    Read,
    /// A write that needs nothing else to run meanwhile.
    Locked,
    /// A write that checks nothing (an insert into a log).
    Append,
}

impl PgStore {
    /// Creates the store in an empty database (or one that holds no
    /// registry yet) with the instance's settings; refuses a database that
    /// already holds a registry.
    pub fn create(target: &PgTarget, settings: &InstanceSettings) -> Result<Self, StoreError> {
        let store = Self::connect(target)?;
        store.with_tx(Mode::Locked, |tx| {
            if tx
                .query_opt("SELECT 1 FROM settings WHERE key = 'instance'", &[])?
                .is_some()
            {
                return Err(StoreError::Conflict(format!(
                    "{} already holds a registry store; refusing to overwrite it",
                    target.shown()
                )));
            }
            write_settings(&mut PgTx::new(tx), settings)
        })?;
        Ok(store)
    }

    /// Opens an initialised store, applying any pending migrations.
    pub fn open(target: &PgTarget) -> Result<Self, StoreError> {
        let store = Self::connect(target)?;
        let initialised = store.with_tx(Mode::Read, |tx| {
            Ok(tx
                .query_opt("SELECT 1 FROM settings WHERE key = 'instance'", &[])?
                .is_some())
        })?;
        if !initialised {
            return Err(StoreError::Missing(format!(
                "{} holds no registry store; run `lienthong registry init --database-url ...` first",
                target.shown()
            )));
        }
        Ok(store)
    }

    fn connect(target: &PgTarget) -> Result<Self, StoreError> {
        let shown = target.shown();
        // A refusal (a wrong password, no such database or role) is said
        // at once; only a database that cannot be reached is waited for.
        let pool = target
            .pool(POOL_SIZE, CONNECT_TIMEOUT)
            .map_err(|e| match e {
                lienthong_database::DatabaseError::Postgres(_) => StoreError::Internal(format!(
                    "the registry database {shown} refused this node: {e}"
                )),
                e => {
                    StoreError::Internal(format!("cannot reach the registry database {shown}: {e}"))
                }
            })?;
        let store = PgStore {
            pool: Some(pool),
            shown,
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn migrate(&self) -> Result<(), StoreError> {
        while !self.with_tx(
            Mode::Append,
            |tx| Ok(SCHEMA.apply_postgres_step(tx, PLACE)?),
        )? {}
        Ok(())
    }

    fn with_tx<T>(
        &self,
        mode: Mode,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pool = self
            .pool
            .as_ref()
            .expect("the pool lives as long as the store");
        let mut conn = pool.get().map_err(|e| {
            StoreError::Internal(format!(
                "cannot reach the registry database {}: {e}",
                self.shown
            ))
        })?;
        let (level, read_only) = match mode {
            Mode::Read => (IsolationLevel::RepeatableRead, true),
            Mode::Locked | Mode::Append => (IsolationLevel::ReadCommitted, false),
        };
        let mut tx = conn
            .build_transaction()
            .isolation_level(level)
            .read_only(read_only)
            .start()?;
        if let Mode::Locked = mode {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        }
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

// === impl Backend ===

impl Backend for PgStore {
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_tx(Mode::Read, |tx| f(&mut PgTx::new(tx)))
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_tx(Mode::Locked, |tx| f(&mut PgTx::new(tx)))
    }

    fn append<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_tx(Mode::Append, |tx| f(&mut PgTx::new(tx)))
    }

    fn now_ms(&self, tx: &mut dyn Sql) -> Result<i64, StoreError> {
        tx.query_one(&format!("SELECT {DB_NOW_MS}"), &[])?.int(0)
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|tx| {
            tx.query_one("SELECT version FROM schema_version", &[])?
                .int(0)
        })
    }
}

#[cfg(test)]
/// Scratch schemas for the contract tests (each test gets its own store
/// in one test database).
#[cfg(test)]
pub(in crate::store) trait TestDatabase {
    /// A new, empty schema of this database, and the target that uses it.
    fn scratch(&self) -> Result<PgTarget, StoreError>;
    /// Runs `sql` on the target's schema outside any store (tests that
    /// tamper with the database).
    fn execute(&self, sql: &str) -> Result<(), StoreError>;
}

#[cfg(test)]
impl TestDatabase for PgTarget {
    fn scratch(&self) -> Result<PgTarget, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "scratch_{}_{}_{}",
            std::process::id(),
            super::now_ms(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.connect()?
            .batch_execute(&format!("CREATE SCHEMA {name}"))?;
        Ok(self.clone().with_options(&format!("-c search_path={name}")))
    }

    fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.connect()?.batch_execute(sql)?;
        Ok(())
    }
}
