//! The PostgreSQL storage the nodes of a security-server cluster share.
//!
//! As the registry's store: the synchronous `postgres` crate with an
//! `r2d2` pool (the store is synchronous; its callers on an async runtime
//! are moved off it, see [`off_runtime`]), TLS with rustls and ring, the
//! password kept apart from the URL and out of every message. The URL and
//! the TLS connector are [`lienthong_database::PgTarget`], as the
//! registry's; the migrations are [`lienthong_database::Schema`]'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lienthong_database::PgTarget;
use lienthong_database::postgres::Manager;
use postgres::IsolationLevel;

use super::StoreError;
use super::schema::SCHEMA;
use super::sql::Pg;
use super::storage::{Kind, Op, Storage, off_runtime};

/// Connections each node keeps at most.
pub const POOL_SIZE: u32 = 8;
/// How long opening the store keeps retrying an unreachable database.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the password comes from when no file names it.
pub const ENV_DATABASE_PASSWORD: &str = "LIENTHONG_DATABASE_PASSWORD";

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        lienthong_database::DatabaseError::from(e).into()
    }
}

/// The database a cluster's nodes share: its URL, which holds no
/// password, and the file holding the password, if any (else
/// [`ENV_DATABASE_PASSWORD`], else none: peer, certificate or trust
/// authentication). Both are recorded in each node's own settings, so
/// every command on the node (`serve`, `acl`, `backend`, `clients`) uses
/// the cluster's store without being told again.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterDatabase {
    url: String,
    password_file: Option<PathBuf>,
}

impl std::fmt::Debug for ClusterDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl ClusterDatabase {
    /// `url` is `postgres://USER@HOST[:PORT][,HOST2...]/DATABASE[?OPTIONS]`
    /// (libpq's form; `sslmode`, `sslrootcert=FILE`,
    /// `target_session_attrs=read-write`, `options`, ...). A URL that
    /// carries a password is refused (without quoting it): it would be
    /// recorded, and show in process lists and shell histories.
    pub fn new(url: &str, password_file: Option<&Path>) -> Result<Self, StoreError> {
        let target = PgTarget::parse(url)?;
        if target.password().is_some() {
            return Err(StoreError(format!(
                "the database URL for {} carries a password; put none in it (it would be recorded and shown in process lists) and give the password with --database-password-file or {ENV_DATABASE_PASSWORD}",
                target.shown()
            )));
        }
        Ok(ClusterDatabase {
            url: url.to_owned(),
            password_file: password_file.map(Path::to_owned),
        })
    }

    /// The URL, without any password (there is none in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn password_file(&self) -> Option<&Path> {
        self.password_file.as_deref()
    }

    /// `postgres://user@host:port/database`, for messages.
    pub fn shown(&self) -> String {
        PgTarget::parse(&self.url)
            .map(|t| t.shown())
            .unwrap_or_else(|_| "an unreadable database URL".into())
    }

    /// The target with its password.
    fn target(&self) -> Result<PgTarget, StoreError> {
        let target = PgTarget::parse(&self.url)?;
        let password = match &self.password_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        StoreError(format!("database password file {}: {e}", f.display()))
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned(),
            ),
            None => std::env::var(ENV_DATABASE_PASSWORD).ok(),
        };
        Ok(match password {
            Some(p) => target.with_password(&p),
            None => target,
        })
    }
}

/// Splits the password out of a `postgres://` URL (tests and tools that
/// hold one URL with everything in it): the URL without it, and it.
pub fn without_password(url: &str) -> Result<(String, Option<String>), StoreError> {
    let target = PgTarget::parse(url)?;
    let Some(password) = target.password() else {
        return Ok((url.to_owned(), None));
    };
    let password = String::from_utf8_lossy(password).into_owned();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| StoreError("database URL: no scheme".into()))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let stripped = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{hosts}{tail}")
        }
        None => url.to_owned(),
    };
    Ok((stripped, Some(password)))
}

// === impl Storage for PostgreSQL ===

/// The shared tables in a PostgreSQL database.
pub(crate) struct PgStorage {
    /// `None` only while dropped.
    pool: Option<r2d2::Pool<Manager>>,
    shown: String,
}

impl std::fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgStorage({})", self.shown)
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        // Closing a `postgres` client blocks on its own runtime, which
        // panics on an async runtime's thread: close it on one of its own.
        if let Some(pool) = self.pool.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            std::thread::spawn(move || drop(pool));
        }
    }
}

impl PgStorage {
    /// Connects (retrying for up to [`CONNECT_TIMEOUT`]) and migrates.
    pub(crate) fn open(db: &ClusterDatabase) -> Result<Self, StoreError> {
        let target = db.target()?;
        off_runtime(|| Self::connect(&target))
    }

    fn connect(target: &PgTarget) -> Result<Self, StoreError> {
        let shown = target.shown();
        // A refusal (a wrong password, no such database or role) is said
        // at once; only a database that cannot be reached is waited for.
        let pool = target
            .pool(POOL_SIZE, CONNECT_TIMEOUT)
            .map_err(|e| match e {
                lienthong_database::DatabaseError::Postgres(_) => StoreError(format!(
                    "the cluster's database {shown} refused this node: {e}"
                )),
                e => StoreError(format!("cannot reach the cluster's database {shown}: {e}")),
            })?;
        let storage = PgStorage {
            pool: Some(pool),
            shown,
        };
        storage.migrate()?;
        Ok(storage)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let place = format!("the cluster's database {}", self.shown);
        while !self.transaction(Kind::Write, &mut |tx| {
            Ok(SCHEMA.apply_postgres_step(tx, &place)?)
        })? {}
        Ok(())
    }

    fn pool(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool
            .as_ref()
            .expect("the pool lives as long as the storage")
            .get()
            .map_err(|e| {
                StoreError(format!(
                    "cannot reach the cluster's database {}: {e}",
                    self.shown
                ))
            })
    }

    fn transaction<T>(
        &self,
        kind: Kind,
        f: &mut dyn FnMut(&mut postgres::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool()?;
        let (level, read_only) = match kind {
            Kind::Read => (IsolationLevel::RepeatableRead, true),
            Kind::Write | Kind::Single => (IsolationLevel::ReadCommitted, false),
        };
        let mut tx = conn
            .build_transaction()
            .isolation_level(level)
            .read_only(read_only)
            .start()?;
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

impl Storage for PgStorage {
    fn run(&self, kind: Kind, f: &mut Op<'_>) -> Result<(), StoreError> {
        off_runtime(|| {
            if kind == Kind::Single {
                let mut conn = self.pool()?;
                return f(&mut Pg(&mut *conn));
            }
            self.transaction(kind, &mut |tx| f(&mut Pg(tx)))
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn shown(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_refused_in_urls_and_never_quoted() {
        let e = ClusterDatabase::new("postgres://lt:s3cret-pw@db1:5432/lt", None).unwrap_err();
        assert!(!e.to_string().contains("s3cret-pw"), "{e}");
        assert!(e.to_string().contains("postgres://lt@db1:5432/lt"), "{e}");
        let e = ClusterDatabase::new("postgres://lt:s3cret-pw@db1:notaport/lt", None).unwrap_err();
        assert!(!e.to_string().contains("s3cret-pw"), "{e}");
        let ok = ClusterDatabase::new(
            "postgres://lt@db1:5432,db2:5432/lt?target_session_attrs=read-write",
            None,
        )
        .unwrap();
        assert_eq!(ok.shown(), "postgres://lt@db1:5432,db2:5432/lt");
        assert!(
            ClusterDatabase::new("postgres://db1/lt", None).is_err(),
            "no user"
        );
        assert!(
            ClusterDatabase::new("postgres://lt@db1/lt?sslmode=require", None).is_err(),
            "TLS without the CA to check the server by"
        );
    }

    #[test]
    fn a_password_is_split_out_of_a_url() {
        let (url, pw) =
            without_password("postgres://lt:pw@127.0.0.1:5432/lt?options=-c%20search_path%3Ds")
                .unwrap();
        assert_eq!(
            url,
            "postgres://lt@127.0.0.1:5432/lt?options=-c%20search_path%3Ds"
        );
        assert_eq!(pw.as_deref(), Some("pw"));
        let (url, pw) = without_password("postgres://lt@h/lt").unwrap();
        assert_eq!((url.as_str(), pw), ("postgres://lt@h/lt", None));
        assert!(
            ClusterDatabase::new(&without_password("postgres://a:b@h/d").unwrap().0, None).is_ok()
        );
    }
}
