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

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{MemberId, ServerId};
use postgres::config::{Host, SslMode};
use postgres::{Config, IsolationLevel, Transaction};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::changes::apply_one;
use super::requests::load_request;
use super::schema::{MIGRATIONS, too_new};
use super::snapshot::{read_snapshot, setting};
use super::sqlite::{fingerprint, now_ms, parse};
use super::{KeyFingerprint, PublicationRecord, Store, StoreError, StoredPublication};
use crate::model::*;
use crate::witness::{History, Submitted, Verdict};

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
            write_settings(tx, settings)
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

fn write_settings(tx: &mut Tx<'_>, s: &InstanceSettings) -> Result<(), StoreError> {
    let rows = [
        ("instance", s.instance.to_string()),
        ("addresses", s.addresses.join(",")),
        (
            "configuration_validity_secs",
            s.configuration_validity_secs.to_string(),
        ),
        ("poll_interval_secs", s.poll_interval_secs.to_string()),
        ("auto_approve", s.auto_approve.to_string()),
    ];
    for (k, v) in rows {
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&k, &v],
        )?;
    }
    Ok(())
}

fn exists(tx: &mut Tx<'_>, sql: &str, key: &str) -> Result<bool, StoreError> {
    Ok(tx.query_opt(sql, &[&key])?.is_some())
}

fn insert_audit(
    tx: &mut Tx<'_>,
    actor: &str,
    action: &str,
    detail: &str,
    result: &str,
) -> Result<u64, StoreError> {
    let id: i64 = tx
        .query_one(
            "INSERT INTO audit (at, actor, action, detail, result) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
            &[&now_ms(), &actor, &action, &detail, &result],
        )?
        .get(0);
    Ok(id as u64)
}

fn insert_alarm(tx: &mut Tx<'_>, server: &str, reason: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO alarms (server, at, reason) VALUES ($1, $2, $3)",
        &[&server, &now_ms(), &reason],
    )?;
    Ok(())
}

fn read_checkpoint(
    tx: &mut Tx<'_>,
    server: &str,
    size: Option<u64>,
) -> Result<Option<(WitnessedCheckpoint, Vec<u8>)>, StoreError> {
    let row = match size.map(i64::try_from) {
        Some(Err(_)) => return Ok(None),
        Some(Ok(size)) => tx.query_opt(
            "SELECT tree_size, root, created_at, signature FROM checkpoints
             WHERE server = $1 AND tree_size = $2",
            &[&server, &size],
        )?,
        None => tx.query_opt(
            "SELECT tree_size, root, created_at, signature FROM checkpoints
             WHERE server = $1 ORDER BY tree_size DESC LIMIT 1",
            &[&server],
        )?,
    };
    row.map(|r| {
        let root: Vec<u8> = r.get(1);
        Ok((
            WitnessedCheckpoint {
                tree_size: u64::try_from(r.get::<_, i64>(0))
                    .map_err(|_| StoreError::Internal("stored tree size is negative".into()))?,
                root: root
                    .try_into()
                    .map_err(|_| StoreError::Internal("stored root is not 32 bytes".into()))?,
                created_at_ms: r.get(2),
            },
            r.get(3),
        ))
    })
    .transpose()
}

// === impl Store ===

impl Store for PgStore {
    fn settings(&self) -> Result<InstanceSettings, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            let mut get = |k: &str| -> Result<String, StoreError> {
                setting(tx, k)?.ok_or_else(|| {
                    StoreError::Internal(format!(
                        "setting {k} is missing; was the store initialised?"
                    ))
                })
            };
            Ok(InstanceSettings {
                instance: parse("instance", &get("instance")?)?,
                addresses: get("addresses")?
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect(),
                configuration_validity_secs: parse(
                    "configuration validity",
                    &get("configuration_validity_secs")?,
                )?,
                poll_interval_secs: parse("poll interval", &get("poll_interval_secs")?)?,
                auto_approve: parse("auto-approve flag", &get("auto_approve")?)?,
            })
        })
    }

    fn apply_all(&self, actor: &str, changes: &[Change]) -> Result<Vec<Applied>, StoreError> {
        self.with_tx(Mode::Locked, |tx| {
            let mut out = Vec::with_capacity(changes.len());
            for change in changes {
                let request_id = apply_one(tx, change)?;
                let seq: i64 = tx
                    .query_one(
                        "UPDATE meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value",
                        &[],
                    )?
                    .get(0);
                let audit_id = insert_audit(tx, actor, change.action(), &change.to_string(), "ok")?;
                out.push(Applied {
                    audit_id,
                    seq: seq as u64,
                    request_id,
                });
            }
            Ok(out)
        })
    }

    fn record_refusal(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        error: &str,
    ) -> Result<u64, StoreError> {
        self.with_tx(Mode::Append, |tx| {
            insert_audit(tx, actor, action, detail, error)
        })
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.with_tx(Mode::Read, |tx| read_snapshot(tx))
    }

    fn seq(&self) -> Result<u64, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            let v: i64 = tx
                .query_one("SELECT value FROM meta WHERE key = 'change_seq'", &[])?
                .get(0);
            Ok(v as u64)
        })
    }

    fn request(&self, id: u64) -> Result<Option<StoredRequest>, StoreError> {
        self.with_tx(Mode::Read, |tx| load_request(tx, id))
    }

    fn requests(&self, state: Option<RequestState>) -> Result<Vec<StoredRequest>, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            let ids: Vec<i64> = tx
                .query(
                    "SELECT id FROM requests WHERE $1::BIGINT IS NULL OR state = $1
                     ORDER BY id LIMIT 10000",
                    &[&state.map(RequestState::code)],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(r) = load_request(tx, id as u64)? {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            let rows = tx.query(
                "SELECT id, at, actor, action, detail, result FROM audit
                 WHERE at >= $1 AND at < $2 AND ($3::TEXT IS NULL OR actor = $3)
                 ORDER BY id LIMIT $4",
                &[
                    &f.since_ms.unwrap_or(0),
                    &f.until_ms.unwrap_or(i64::MAX),
                    &f.actor,
                    &(f.limit as i64),
                ],
            )?;
            Ok(rows
                .iter()
                .map(|r| AuditEntry {
                    id: r.get::<_, i64>(0) as u64,
                    at_ms: r.get(1),
                    actor: r.get(2),
                    action: r.get(3),
                    detail: r.get(4),
                    result: r.get(5),
                })
                .collect())
        })
    }

    fn operator_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Operator>, StoreError> {
        let row = self.with_tx(Mode::Read, |tx| {
            Ok(tx.query_opt(
                "SELECT name, role FROM operators WHERE token_hash = $1",
                &[&token_hash.as_slice()],
            )?)
        })?;
        row.map(|r| {
            Ok(Operator {
                name: r.get(0),
                role: r
                    .get::<_, String>(1)
                    .parse()
                    .map_err(StoreError::Internal)?,
            })
        })
        .transpose()
    }

    fn enrollment(&self, token_hash: &[u8; 32]) -> Result<Option<Enrollment>, StoreError> {
        let row = self.with_tx(Mode::Read, |tx| {
            Ok(tx.query_opt(
                "SELECT server, expires_at, used_by_request FROM enrollment_tokens WHERE hash = $1",
                &[&token_hash.as_slice()],
            )?)
        })?;
        row.map(|r| {
            Ok(Enrollment {
                server: parse("server id", &r.get::<_, String>(0))?,
                expires_at_ms: r.get(1),
                used_by_request: r.get::<_, Option<i64>>(2).map(|u| u as u64),
            })
        })
        .transpose()
    }

    fn certificate(&self, fp: &Fingerprint) -> Result<Option<StoredCert>, StoreError> {
        let row = self.with_tx(Mode::Read, |tx| {
            Ok(tx.query_opt(
                "SELECT der, auth_server, signing_member, revoked_at IS NOT NULL
                 FROM certificates WHERE fingerprint = $1",
                &[&fp.0.as_slice()],
            )?)
        })?;
        row.map(|r| {
            Ok(StoredCert {
                fingerprint: *fp,
                der: r.get(0),
                auth_server: r
                    .get::<_, Option<String>>(1)
                    .map(|s| parse("server id", &s))
                    .transpose()?,
                signing_member: r
                    .get::<_, Option<String>>(2)
                    .map(|m| parse("member id", &m))
                    .transpose()?,
                revoked: r.get(3),
            })
        })
        .transpose()
    }

    fn member_exists(&self, id: &MemberId) -> Result<bool, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            exists(tx, "SELECT 1 FROM members WHERE id = $1", &id.to_string())
        })
    }

    fn server_exists(&self, id: &ServerId) -> Result<bool, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            exists(tx, "SELECT 1 FROM servers WHERE id = $1", &id.to_string())
        })
    }

    fn last_publication(&self) -> Result<Option<PublicationRecord>, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            Ok(tx
                .query_opt(
                    "SELECT version, created_at, seq FROM publications ORDER BY version DESC LIMIT 1",
                    &[],
                )?
                .map(|r| PublicationRecord {
                    version: r.get::<_, i64>(0) as u64,
                    created_at_ms: r.get(1),
                    seq: r.get::<_, i64>(2) as u64,
                }))
        })
    }

    fn publication_after(&self, version: u64) -> Result<Option<StoredPublication>, StoreError> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        self.with_tx(Mode::Read, |tx| {
            // The newest only: a node that fell behind skips to it.
            Ok(tx
                .query_opt(
                    "SELECT version, created_at, seq, signed FROM publications
                     WHERE version = (SELECT max(version) FROM publications)
                       AND version > $1 AND signed IS NOT NULL",
                    &[&version],
                )?
                .map(|r| StoredPublication {
                    record: PublicationRecord {
                        version: r.get::<_, i64>(0) as u64,
                        created_at_ms: r.get(1),
                        seq: r.get::<_, i64>(2) as u64,
                    },
                    signed: r.get(3),
                }))
        })
    }

    fn record_publication(
        &self,
        node: &str,
        p: &PublicationRecord,
        signed: &[u8],
    ) -> Result<(), StoreError> {
        self.with_tx(Mode::Locked, |tx| {
            // The lease row stays locked until the version is committed: no
            // node takes the lease over in between.
            let leads = tx
                .query_opt(
                    &format!(
                        "SELECT 1 FROM publisher_lease
                         WHERE id = 1 AND node = $1 AND expires_at > {DB_NOW_MS} FOR UPDATE"
                    ),
                    &[&node],
                )?
                .is_some();
            let last: Option<i64> = tx
                .query_one("SELECT max(version) FROM publications", &[])?
                .get(0);
            if let Some(refused) =
                super::publication_refused(node, p.version, leads, last.map(|l| l as u64))
            {
                return Err(refused);
            }
            let version = i64::try_from(p.version).map_err(|_| {
                StoreError::Conflict(format!("version {} is beyond the store", p.version))
            })?;
            tx.execute(
                "INSERT INTO publications (version, created_at, seq, signed) VALUES ($1, $2, $3, $4)",
                &[&version, &p.created_at_ms, &(p.seq as i64), &signed],
            )?;
            tx.execute(
                "UPDATE publications SET signed = NULL WHERE version < $1 AND signed IS NOT NULL",
                &[&(version - super::KEPT_WITH_BYTES)],
            )?;
            tx.execute(
                "DELETE FROM publications WHERE version < $1",
                &[&(version - super::KEPT)],
            )?;
            Ok(())
        })
    }

    fn take_lease(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        self.with_tx(Mode::Append, |tx| {
            Ok(tx
                .query_opt(
                    &format!(
                        "INSERT INTO publisher_lease (id, node, expires_at)
                         VALUES (1, $1, {DB_NOW_MS} + $2::BIGINT)
                         ON CONFLICT (id) DO UPDATE
                            SET node = excluded.node, expires_at = excluded.expires_at
                         WHERE publisher_lease.node = excluded.node
                            OR publisher_lease.expires_at <= {DB_NOW_MS}
                         RETURNING node"
                    ),
                    &[&node, &ttl],
                )?
                .is_some())
        })
    }

    fn release_lease(&self, node: &str) -> Result<(), StoreError> {
        self.with_tx(Mode::Append, |tx| {
            tx.execute("DELETE FROM publisher_lease WHERE node = $1", &[&node])?;
            Ok(())
        })
    }

    fn check_keys(&self, keys: &[KeyFingerprint]) -> Result<(), StoreError> {
        self.with_tx(Mode::Locked, |tx| {
            for key in keys {
                let recorded: Option<Vec<u8>> = tx
                    .query_opt(
                        "SELECT sha256 FROM registry_keys WHERE purpose = $1",
                        &[&key.purpose],
                    )?
                    .map(|r| r.get(0));
                match recorded {
                    Some(r) if r != key.sha256.0 => {
                        return Err(super::key_mismatch(key, &fingerprint(&r)?));
                    }
                    Some(_) => {}
                    None => {
                        tx.execute(
                            "INSERT INTO registry_keys (purpose, sha256, recorded_at)
                             VALUES ($1, $2, $3)",
                            &[&key.purpose, &key.sha256.0.as_slice(), &now_ms()],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    fn last_checkpoint(
        &self,
        server: &ServerId,
    ) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            Ok(read_checkpoint(tx, &server.to_string(), None)?.map(|(c, _)| c))
        })
    }

    fn witness(
        &self,
        server: &ServerId,
        submitted: &Submitted,
        signature: &[u8],
        judge: &mut dyn FnMut(&History) -> Verdict,
    ) -> Result<(Verdict, History), StoreError> {
        self.with_tx(Mode::Locked, |tx| {
            let key = server.to_string();
            let last = read_checkpoint(tx, &key, None)?;
            let base = match &last {
                Some((l, _)) if l.tree_size != submitted.proof_from => {
                    read_checkpoint(tx, &key, Some(submitted.proof_from))?.map(|(c, _)| c)
                }
                _ => None,
            };
            let history = History { last, base };
            let verdict = judge(&history);
            match &verdict {
                Verdict::Accept => {
                    let c = &submitted.checkpoint;
                    let size = i64::try_from(c.tree_size).map_err(|_| {
                        StoreError::Conflict(format!(
                            "tree size {} is beyond the store",
                            c.tree_size
                        ))
                    })?;
                    // The same tree again, later: its date moves forward.
                    let n = tx.execute(
                        "INSERT INTO checkpoints (server, tree_size, root, created_at, signature, witnessed_at)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (server, tree_size) DO UPDATE SET
                            created_at = excluded.created_at, signature = excluded.signature,
                            witnessed_at = excluded.witnessed_at
                         WHERE checkpoints.root = excluded.root
                           AND checkpoints.created_at < excluded.created_at",
                        &[&key, &size, &c.root.as_slice(), &c.created_at_ms, &signature, &now_ms()],
                    )?;
                    if n != 1 {
                        return Err(StoreError::Conflict(format!(
                            "a different checkpoint of {} records is already witnessed",
                            c.tree_size
                        )));
                    }
                }
                Verdict::Alarm(reason) => insert_alarm(tx, &key, reason)?,
                Verdict::Repeat | Verdict::Stale => {}
            }
            Ok((verdict, history))
        })
    }

    fn record_alarm(&self, server: &ServerId, reason: &str) -> Result<(), StoreError> {
        self.with_tx(Mode::Append, |tx| {
            insert_alarm(tx, &server.to_string(), reason)
        })
    }

    fn alarms(&self) -> Result<Vec<Alarm>, StoreError> {
        self.with_tx(Mode::Read, |tx| {
            tx.query(
                "SELECT server, at, reason FROM alarms ORDER BY id DESC LIMIT 1000",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Alarm {
                    server: parse("server id", &r.get::<_, String>(0))?,
                    at_ms: r.get(1),
                    reason: r.get(2),
                })
            })
            .collect()
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
            now_ms(),
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
