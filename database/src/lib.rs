//! What the registry's store and the security server's store share about
//! their databases: one numbered-SQL migration scheme applied alike to
//! SQLite and PostgreSQL ([`migrations`]), and the PostgreSQL target —
//! a libpq-style URL with several hosts, TLS by rustls, the password
//! kept apart from the URL and out of every message ([`postgres`]).
//! Each store keeps its own tables, transactions and errors. The lock
//! that keeps one process per home directory ([`home_lock`]) is shared too.

pub mod copy;
pub mod home_lock;
pub mod migrations;
pub mod postgres;

pub use home_lock::{HomeLock, HomeLockError, LOCK_FILE};
pub use migrations::{Migration, Schema};
pub use postgres::PgTarget;

/// What went wrong with a database, in words an operator can act on.
/// Never holds a password: URLs are shown without theirs.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The `postgres://` URL is malformed or asks for what cannot be given.
    #[error("database URL: {0}")]
    Url(String),
    /// The CA certificates of `sslrootcert=FILE` cannot be used.
    #[error("sslrootcert {file}: {why}")]
    RootCertificates { file: String, why: String },
    /// The TLS client cannot be built.
    #[error("TLS to the database: {0}")]
    Tls(String),
    /// The PostgreSQL server refused, or the connection failed.
    #[error("{}", postgres_words(.0))]
    Postgres(#[from] ::postgres::Error),
    /// No connection within the pool's patience: the server's own words
    /// when it refused (a wrong password, no such database), else the
    /// pool's.
    #[error("{0}")]
    Unreachable(String),
    /// SQLite failed.
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store was migrated by a newer program.
    #[error(
        "{place} has schema version {found}, newer than this program's {known}; upgrade lienthong on this node (every node sharing a store must run a version that knows its schema)"
    )]
    TooNew {
        place: String,
        found: i64,
        known: usize,
    },
}

/// The server's own words when it refused (`database: FATAL: password
/// authentication failed …`), else the driver's.
fn postgres_words(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("database: {}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}
