//! The PostgreSQL storage the nodes of a security-server cluster share.
//!
//! As the registry's store: the synchronous `postgres` crate with an
//! `r2d2` pool (the store is synchronous; its callers on an async runtime
//! are moved off it, see [`off_runtime`]), TLS with rustls and ring, the
//! password kept apart from the URL and out of every message. What parses
//! the URL and makes the TLS connector is copied from the registry's
//! `PgTarget` (the two crates import nothing from each other).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::{Config, IsolationLevel};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;
use super::schema::{MIGRATIONS, too_new};
use super::sql::Pg;
use super::storage::{Kind, Op, Storage, off_runtime};

/// The advisory lock held while the schema is migrated ("LtSrvMig"; not
/// the registry's, should both share a database).
const MIGRATION_LOCK: i64 = 0x4c74_5372_764d_6967;
/// Connections each node keeps at most.
pub const POOL_SIZE: u32 = 8;
/// How long opening the store keeps retrying an unreachable database.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the password comes from when no file names it.
pub const ENV_DATABASE_PASSWORD: &str = "LIENTHONG_DATABASE_PASSWORD";

type Manager = PostgresConnectionManager<MakeRustlsConnect>;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError(match e.as_db_error() {
            Some(db) => format!("database: {}: {}", db.severity(), db.message()),
            None => e.to_string(),
        })
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
        if target.config.get_password().is_some() {
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
    let Some(password) = target.config.get_password() else {
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

/// A parsed URL and the CA certificates its TLS trusts.
#[derive(Clone)]
struct PgTarget {
    config: Config,
    root_certs: Option<PathBuf>,
}

impl PgTarget {
    /// As the registry's: `sslrootcert=FILE` names the CAs (PEM) that the
    /// database server's certificate must chain to; without it the
    /// connection is not encrypted, and `sslmode=require` is refused.
    fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError(format!("database URL: {why}"));
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

    fn with_password(mut self, password: &str) -> Self {
        self.config.password(password);
        self
    }

    /// The URL without its password or options.
    fn shown(&self) -> String {
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

    fn tls(&self) -> Result<MakeRustlsConnect, StoreError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &self.root_certs {
            let unreadable = |e: String| StoreError(format!("sslrootcert {}: {e}", path.display()));
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
        .map_err(|e| StoreError(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
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
        // The database's refusal (a wrong password, no such database or
        // role) will not change by waiting: say it at once. Only a
        // database that cannot be reached is waited for, below.
        if let Err(e) = target.tls().and_then(|tls| Ok(target.config.connect(tls)?))
            && e.0.starts_with("database: ")
        {
            return Err(StoreError(format!(
                "the cluster's database {shown} refused this node: {}",
                e.0
            )));
        }
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
                    Err(e) => e.0,
                    Ok(_) => e.to_string(),
                };
                StoreError(format!(
                    "cannot reach the cluster's database {shown}: {why}"
                ))
            })?;
        let storage = PgStorage {
            pool: Some(pool),
            shown,
        };
        storage.migrate()?;
        Ok(storage)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let shown = self.shown.clone();
        loop {
            let done =
                self.transaction(Kind::Write, &mut |tx: &mut postgres::Transaction<'_>| {
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
                        return Err(StoreError(too_new(
                            &format!("the cluster's database {shown}"),
                            found,
                        )));
                    }
                    let Some(m) = MIGRATIONS.get(applied) else {
                        return Ok(true);
                    };
                    tx.batch_execute(m.postgres)?;
                    tx.execute("UPDATE schema_version SET version = $1", &[&(found + 1)])?;
                    tracing::info!(version = found + 1, "cluster store migrated");
                    Ok(false)
                })?;
            if done {
                return Ok(());
            }
        }
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
