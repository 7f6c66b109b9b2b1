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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Config, IsolationLevel, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;
use super::backend::{Backend, write_settings};
use super::schema::{MIGRATIONS, too_new};
use super::sql::{PgTx, Sql};
use crate::model::InstanceSettings;

/// The advisory lock every write holds while it runs ("Lienthon").
pub const WRITE_LOCK: i64 = 0x4c69_656e_7468_6f6e;
/// The advisory lock held while the schema is migrated.
pub const MIGRATION_LOCK: i64 = WRITE_LOCK + 1;
/// The database's clock in milliseconds since the epoch: the publisher
/// lease is judged on it, so nodes' clocks need not agree.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

type Manager = PostgresConnectionManager<MakeRustlsConnect>;
type Tx<'a> = Transaction<'a>;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Internal(match e.as_db_error() {
            Some(db) => format!("database: {}: {}", db.severity(), db.message()),
            None => e.to_string(),
        })
    }
}

/// Where the PostgreSQL store is: a `postgres://` URL (libpq's form, with
/// several hosts and `target_session_attrs=read-write` when a standby may
/// be promoted) and the password, kept apart from it.
#[derive(Clone)]
pub struct PgTarget {
    config: Config,
    root_certs: Option<PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl PgTarget {
    /// Parses a `postgres://` or `postgresql://` URL. Besides the options
    /// of the `postgres` crate (`sslmode=disable|prefer|require`,
    /// `target_session_attrs`, `connect_timeout`, ...), `sslrootcert=FILE`
    /// names the PEM certificates of the CAs the database server's
    /// certificate must chain to (its host name is checked too). Without
    /// `sslrootcert` the connection is not encrypted, and `sslmode=require`
    /// is refused.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::Internal(format!("database URL: {why}"));
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "expected postgres://user@host[:port][,host2...]/database[?options]".into(),
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut root_certs = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", file)) => root_certs = Some(PathBuf::from(file)),
                _ => kept.push(pair),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        // The parser's messages never quote the URL (it may hold a password).
        let mut config: Config = rebuilt
            .parse()
            .map_err(|e: postgres::Error| bad(e.to_string()))?;
        if root_certs.is_none() {
            if config.get_ssl_mode() == SslMode::Require {
                return Err(bad(
                    "sslmode=require needs sslrootcert=FILE: the CA certificates (PEM) that the database server's certificate chains to".into(),
                ));
            }
            config.ssl_mode(SslMode::Disable);
        }
        if config.get_user().is_none() {
            return Err(bad(
                "name the database user: postgres://USER@host/database".into()
            ));
        }
        Ok(PgTarget { config, root_certs })
    }

    /// Sets the password (from a file or the environment, never the
    /// command line).
    pub fn with_password(mut self, password: &str) -> Self {
        self.config.password(password);
        self
    }

    /// Sets the server's `options` (e.g. `-c search_path=...`).
    pub fn with_options(mut self, options: &str) -> Self {
        self.config.options(options);
        self
    }

    /// The URL without its password, for logs and errors.
    pub fn shown(&self) -> String {
        let c = &self.config;
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let host = match h {
                    Host::Tcp(h) => h.clone(),
                    Host::Unix(p) => p.display().to_string(),
                };
                match c.get_ports().get(i).or(c.get_ports().first()) {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        format!(
            "postgres://{}@{}/{}",
            c.get_user().unwrap_or(""),
            hosts.join(","),
            c.get_dbname().unwrap_or("")
        )
    }

    pub(in crate::store) fn tls(&self) -> Result<MakeRustlsConnect, StoreError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &self.root_certs {
            let unreadable =
                |e: String| StoreError::Internal(format!("sslrootcert {}: {e}", path.display()));
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))?
            {
                roots
                    .add(cert.map_err(|e| unreadable(e.to_string()))?)
                    .map_err(|e| unreadable(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(unreadable("holds no certificate".into()));
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Internal(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

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
        let manager = Manager::new(target.config.clone(), target.tls()?);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .build(manager)
            .map_err(|e| {
                // The pool's error says only "db error": ask once more for
                // the server's words (a wrong password, a missing database).
                let direct = target.tls().and_then(|tls| Ok(target.config.connect(tls)?));
                let why = match direct {
                    Err(StoreError::Internal(m)) => m,
                    Err(other) => other.to_string(),
                    Ok(_) => e.to_string(),
                };
                StoreError::Internal(format!("cannot reach the registry database {shown}: {why}"))
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
        loop {
            let done = self.with_tx(Mode::Append, |tx| {
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
                     INSERT INTO schema_version (version)
                        SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
                )?;
                let found: i64 = tx
                    .query_one("SELECT version FROM schema_version", &[])?
                    .get(0);
                let applied = usize::try_from(found).unwrap_or(usize::MAX);
                if applied > MIGRATIONS.len() {
                    return Err(StoreError::Internal(too_new(found)));
                }
                let Some(m) = MIGRATIONS.get(applied) else {
                    return Ok(true);
                };
                tx.batch_execute(m.postgres)?;
                tx.execute("UPDATE schema_version SET version = $1", &[&(found + 1)])?;
                tracing::info!(version = found + 1, "registry store migrated");
                Ok(false)
            })?;
            if done {
                return Ok(());
            }
        }
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
impl PgTarget {
    /// A new, empty schema of this database, and the target that uses it
    /// (each contract test gets its own store in one test database).
    pub(in crate::store) fn scratch(&self) -> Result<PgTarget, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "scratch_{}_{}_{}",
            std::process::id(),
            super::now_ms(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut client = self.config.connect(self.tls()?)?;
        client.batch_execute(&format!("CREATE SCHEMA {name}"))?;
        Ok(self.clone().with_options(&format!("-c search_path={name}")))
    }

    /// Runs `sql` on the target's schema outside any store (tests that
    /// tamper with the database).
    pub(in crate::store) fn execute(&self, sql: &str) -> Result<(), StoreError> {
        let mut client = self.config.connect(self.tls()?)?;
        client.batch_execute(sql)?;
        Ok(())
    }
}
