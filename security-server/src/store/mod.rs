//! The security server's own store: its settings, the access rights its
//! operator granted, where each served service's backend is, which
//! information systems are pinned and whose bodies are logged.
//!
//! One node keeps everything in `server.db` (SQLite). The nodes of a
//! cluster — several servers of one member — keep their own settings
//! there and share the rest through PostgreSQL ([`ClusterDatabase`]);
//! each keeps its own keys and message log. Every operation is written
//! once against the [`sql`] layer, and the contract tests (`tests.rs`)
//! run on both backends. The message log lives apart (see `message_log`).

mod carry;
mod postgres;
mod schema;
mod sql;
mod storage;
#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::SubsystemId;

use crate::access::{AccessRule, Subject};
use sql::{Param, Sql};
pub(crate) use storage::on_blocking_thread;
use storage::{Kind, SqliteStorage, Storage, with};

pub use carry::JoinReport;
pub use lienthong_database::Migration;
pub use postgres::{CONNECT_TIMEOUT, ClusterDatabase, ENV_DATABASE_PASSWORD, without_password};
pub use schema::MIGRATIONS;

/// Default time a backend may take to answer.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Node setting: the cluster database's URL (never with a password).
pub const SETTING_DATABASE_URL: &str = "database_url";
/// Node setting: the file holding the cluster database's password.
pub const SETTING_DATABASE_PASSWORD_FILE: &str = "database_password_file";
/// Replay ids claimed between two sweeps of the expired ones.
const CLAIMS_PER_SWEEP: u64 = 1024;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("security server store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<lienthong_database::DatabaseError> for StoreError {
    fn from(e: lienthong_database::DatabaseError) -> Self {
        StoreError(e.to_string())
    }
}

/// Where a served service's backend is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub provider: SubsystemId,
    pub service: String,
    /// `http://host:port` (h2c).
    pub url: String,
    pub timeout: Duration,
}

/// Why a backend URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum BackendUrlError {
    #[error("backend URL {url:?}: {source}")]
    Unreadable {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("backend URL {0:?} must be http://host:port (h2c); TLS backends are not supported yet")]
    NotHttpHostPort(String),
    #[error("backend URL {0:?} must not have a path")]
    HasPath(String),
}

/// Checks a backend URL: `http://host:port` (h2c on a trusted network).
pub fn check_backend_url(url: &str) -> Result<(), BackendUrlError> {
    let uri: http::Uri = url.parse().map_err(|source| BackendUrlError::Unreadable {
        url: url.to_owned(),
        source,
    })?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.port_u16().is_none() {
        return Err(BackendUrlError::NotHttpHostPort(url.to_owned()));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(BackendUrlError::HasPath(url.to_owned()));
    }
    Ok(())
}

/// The security server's store: the node's own settings (its identity,
/// its registration requests) in `server.db`, and the operator's policy —
/// access rights, backends, pinned information systems, body logging,
/// and the cluster's replay ids — in `server.db` too (one node) or in the
/// PostgreSQL database a cluster's nodes share (recorded in the node's
/// settings by `server init` / `serve --database-url`).
#[derive(Debug)]
pub struct ServerStore {
    node: Arc<SqliteStorage>,
    shared: Arc<dyn Storage>,
    claims: AtomicU64,
}

impl ServerStore {
    /// Opens (creating if needed) the store at `path`, and the cluster's
    /// database when the node's settings name one.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let node = Arc::new(SqliteStorage::open(path)?);
        let recorded = with(&*node, Kind::Read, |tx| {
            Ok((
                get_setting(tx, SETTING_DATABASE_URL)?,
                get_setting(tx, SETTING_DATABASE_PASSWORD_FILE)?,
            ))
        })?;
        let shared: Arc<dyn Storage> = match recorded {
            (Some(url), file) => {
                let db = ClusterDatabase::new(&url, file.as_deref().map(Path::new))?;
                let pg = Arc::new(postgres::PgStorage::open(&db)?);
                warn_unused_local_policy(&node, &pg.shown())?;
                pg
            }
            (None, _) => node.clone(),
        };
        Ok(ServerStore {
            node,
            shared,
            claims: AtomicU64::new(0),
        })
    }

    /// Makes the node at `path` keep its policy in the cluster's database
    /// `db` from now on (recorded in its settings, so every later command
    /// uses it), after checking that the database is reachable and its
    /// schema known; then opens the store.
    ///
    /// The node's own policy in `server.db` is not lost: when the cluster
    /// has none yet, it is carried over in one transaction (and removed
    /// from `server.db`); when the cluster has one, the cluster's stays in
    /// force and the node's entries that differ are reported, logged and
    /// kept in `server.db`.
    pub fn join_cluster(
        path: &Path,
        db: &ClusterDatabase,
    ) -> Result<(Self, JoinReport), StoreError> {
        let cluster = postgres::PgStorage::open(db)?;
        let node = SqliteStorage::open(path)?;
        let local = with(&node, Kind::Read, carry::Policy::read)?;
        let report = if local.is_empty() {
            JoinReport::default()
        } else {
            with(&cluster, Kind::Write, |tx| carry::carry_over(tx, &local))?
        };
        drop(cluster);
        log_join(&report, &db.shown());
        with(&node, Kind::Write, |tx| {
            if report.differing.is_empty() {
                // Every entry is in the cluster's database now.
                carry::Policy::clear(tx)?;
            }
            put_setting(tx, SETTING_DATABASE_URL, db.url())?;
            match db.password_file() {
                Some(f) => {
                    put_setting(tx, SETTING_DATABASE_PASSWORD_FILE, &f.display().to_string())
                }
                None => {
                    tx.execute(
                        "DELETE FROM settings WHERE key = $1",
                        &[SETTING_DATABASE_PASSWORD_FILE.into()],
                    )?;
                    Ok(())
                }
            }
        })?;
        drop(node);
        Ok((Self::open(path)?, report))
    }

    /// Connects to `db` and brings its schema up to date (refusing one
    /// newer than this program): what `server init --database-url` checks
    /// before it asks the registry for anything.
    pub fn check_database(db: &ClusterDatabase) -> Result<(), StoreError> {
        postgres::PgStorage::open(db).map(drop)
    }

    /// Whether the policy is in a cluster's shared database.
    pub fn is_clustered(&self) -> bool {
        self.shared.shared()
    }

    /// Where the policy is: `server.db`'s path or the database (never with
    /// its password).
    pub fn policy_location(&self) -> String {
        self.shared.shown()
    }

    /// A setting of this node (its own, never shared).
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        with(&*self.node, Kind::Read, |tx| get_setting(tx, key))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        with(&*self.node, Kind::Write, |tx| put_setting(tx, key, value))
    }

    /// Increases with every change of rules or backends, so a running
    /// server notices changes made by another process (the CLI) or, in a
    /// cluster, by another node.
    pub fn rules_version(&self) -> Result<u64, StoreError> {
        with(&*self.shared, Kind::Read, |tx| {
            Ok(tx
                .query_one("SELECT value FROM meta WHERE key = 'rules_version'", &[])?
                .int(0)? as u64)
        })
    }

    /// Runs one change; when it changed a row, moves the rules version on
    /// in the same transaction.
    fn changed(&self, sql: &str, params: &[Param<'_>]) -> Result<bool, StoreError> {
        with(&*self.shared, Kind::Write, |tx| {
            let n = tx.execute(sql, params)?;
            if n > 0 {
                tx.execute(
                    "UPDATE meta SET value = value + 1 WHERE key = 'rules_version'",
                    &[],
                )?;
            }
            Ok(n > 0)
        })
    }

    /// Grants a rule; false if it already existed.
    pub fn grant(&self, rule: &AccessRule) -> Result<bool, StoreError> {
        let (subject, provider) = (subject_text(&rule.subject), rule.provider.to_string());
        self.changed(
            "INSERT INTO access_rules (subject, provider, service, method) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[
                (&subject).into(),
                (&provider).into(),
                (&rule.service).into(),
                rule.method.as_deref().unwrap_or("").into(),
            ],
        )
    }

    /// Revokes a rule; false if there was none.
    pub fn revoke(&self, rule: &AccessRule) -> Result<bool, StoreError> {
        let (subject, provider) = (subject_text(&rule.subject), rule.provider.to_string());
        self.changed(
            "DELETE FROM access_rules WHERE subject = $1 AND provider = $2 AND service = $3 AND method = $4",
            &[
                (&subject).into(),
                (&provider).into(),
                (&rule.service).into(),
                rule.method.as_deref().unwrap_or("").into(),
            ],
        )
    }

    pub fn rules(&self) -> Result<Vec<AccessRule>, StoreError> {
        let rows = with(&*self.shared, Kind::Read, |tx| {
            tx.query(
                "SELECT subject, provider, service, method FROM access_rules ORDER BY provider, service, method, subject",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                let (subject, provider, method) = (r.text(0)?, r.text(1)?, r.text(3)?);
                Ok(AccessRule {
                    subject: parse("subject", &subject)?,
                    provider: parse("provider", &provider)?,
                    service: r.text(2)?,
                    method: (!method.is_empty()).then_some(method),
                })
            })
            .collect()
    }

    /// Pins an information system's certificate for `subsystem` (mutual
    /// TLS on the consumer side); false if already pinned.
    pub fn pin_client(
        &self,
        subsystem: &SubsystemId,
        fp: &Fingerprint,
    ) -> Result<bool, StoreError> {
        let s = subsystem.to_string();
        self.changed(
            "INSERT INTO client_pins (subsystem, fingerprint) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[(&s).into(), fp.0.as_slice().into()],
        )
    }

    /// Removes a pin; false if there was none.
    pub fn unpin_client(
        &self,
        subsystem: &SubsystemId,
        fp: &Fingerprint,
    ) -> Result<bool, StoreError> {
        let s = subsystem.to_string();
        self.changed(
            "DELETE FROM client_pins WHERE subsystem = $1 AND fingerprint = $2",
            &[(&s).into(), fp.0.as_slice().into()],
        )
    }

    /// Every pin: subsystem and certificate fingerprint.
    pub fn client_pins(&self) -> Result<Vec<(SubsystemId, Fingerprint)>, StoreError> {
        let rows = with(&*self.shared, Kind::Read, |tx| {
            tx.query(
                "SELECT subsystem, fingerprint FROM client_pins ORDER BY subsystem, fingerprint",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse("subsystem", &r.text(0)?)?,
                    Fingerprint::from_slice(&r.bytes(1)?)
                        .ok_or_else(|| StoreError("stored fingerprint is not 32 bytes".into()))?,
                ))
            })
            .collect()
    }

    /// Logs (or stops logging) the bodies of `subsystem`'s exchanges on
    /// this server (on every node of a cluster); false if nothing changed.
    pub fn set_body_logging(&self, subsystem: &SubsystemId, on: bool) -> Result<bool, StoreError> {
        let s = subsystem.to_string();
        if on {
            self.changed(
                "INSERT INTO body_logging (subsystem) VALUES ($1) ON CONFLICT DO NOTHING",
                &[(&s).into()],
            )
        } else {
            self.changed(
                "DELETE FROM body_logging WHERE subsystem = $1",
                &[(&s).into()],
            )
        }
    }

    /// The subsystems whose bodies are logged.
    pub fn body_logging(&self) -> Result<Vec<SubsystemId>, StoreError> {
        let rows = with(&*self.shared, Kind::Read, |tx| {
            tx.query("SELECT subsystem FROM body_logging ORDER BY subsystem", &[])
        })?;
        rows.iter()
            .map(|r| parse("subsystem", &r.text(0)?))
            .collect()
    }

    /// Sets where a served service's backend is.
    pub fn set_backend(&self, b: &Backend) -> Result<(), StoreError> {
        check_backend_url(&b.url).map_err(|e| StoreError(e.to_string()))?;
        let provider = b.provider.to_string();
        let timeout_ms = i64::try_from(b.timeout.as_millis()).unwrap_or(i64::MAX);
        self.changed(
            "INSERT INTO backends (provider, service, url, timeout_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (provider, service) DO UPDATE SET url = excluded.url, timeout_ms = excluded.timeout_ms",
            &[
                (&provider).into(),
                (&b.service).into(),
                (&b.url).into(),
                timeout_ms.into(),
            ],
        )?;
        Ok(())
    }

    pub fn backends(&self) -> Result<Vec<Backend>, StoreError> {
        let rows = with(&*self.shared, Kind::Read, |tx| {
            tx.query(
                "SELECT provider, service, url, timeout_ms FROM backends ORDER BY provider, service",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(Backend {
                    provider: parse("provider", &r.text(0)?)?,
                    service: r.text(1)?,
                    url: r.text(2)?,
                    timeout: Duration::from_millis(r.int(3)?.max(1) as u64),
                })
            })
            .collect()
    }

    /// Claims a message id's `key` for the cluster until `expires_ms`:
    /// true when no node holds it unexpired (this call now does), false
    /// when one does — a replay. Concurrent claims of one key on several
    /// nodes: exactly one is true. Expired keys are swept now and then.
    pub fn claim_message_id(
        &self,
        key: &[u8],
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        let sweep = self
            .claims
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(CLAIMS_PER_SWEEP);
        with(&*self.shared, Kind::Single, |tx| {
            if sweep {
                tx.execute(
                    "DELETE FROM replay_ids WHERE expires_at < $1",
                    &[now_ms.into()],
                )?;
            }
            let n = tx.execute(
                "INSERT INTO replay_ids (key, expires_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
                 WHERE replay_ids.expires_at < $3",
                &[key.into(), expires_ms.into(), now_ms.into()],
            )?;
            Ok(n == 1)
        })
    }
}

#[cfg(test)]
impl ServerStore {
    /// How many message ids the store holds (expired ones too).
    fn held_message_ids(&self) -> Result<i64, StoreError> {
        with(&*self.shared, Kind::Read, |tx| {
            tx.query_one("SELECT count(*) FROM replay_ids", &[])?.int(0)
        })
    }
}

fn get_setting(tx: &mut dyn Sql, key: &str) -> Result<Option<String>, StoreError> {
    tx.query("SELECT value FROM settings WHERE key = $1", &[key.into()])?
        .first()
        .map(|r| r.text(0))
        .transpose()
}

fn put_setting(tx: &mut dyn Sql, key: &str, value: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO settings (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[key.into(), value.into()],
    )?;
    Ok(())
}

/// Says, once at opening, that rules left in `server.db` from before the
/// node joined a cluster are not the ones in force.
fn warn_unused_local_policy(node: &SqliteStorage, cluster: &str) -> Result<(), StoreError> {
    let rows = with(node, Kind::Read, |tx| {
        tx.query_one(
            "SELECT (SELECT count(*) FROM access_rules) + (SELECT count(*) FROM backends)
                  + (SELECT count(*) FROM client_pins) + (SELECT count(*) FROM body_logging)",
            &[],
        )?
        .int(0)
    })?;
    if rows > 0 {
        tracing::warn!(
            rows,
            cluster,
            "server.db still holds access rights, backends, pins or body-logging choices from before this node joined a cluster that differ from the cluster's policy; they are not in force: the cluster's database is (`serve --database-url` lists them; set them with `lienthong server acl|backend|clients` if the cluster should have them)"
        );
    }
    Ok(())
}

/// Says what became of a joining node's own policy.
fn log_join(report: &JoinReport, cluster: &str) {
    for entry in &report.imported {
        tracing::info!(
            cluster,
            entry,
            "carried over from server.db into the cluster's database"
        );
    }
    for entry in &report.differing {
        tracing::warn!(
            cluster,
            entry,
            "server.db's entry differs from the cluster's policy, which stays in force; set it with `lienthong server acl|backend|clients` if the cluster should have it"
        );
    }
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| StoreError(format!("stored {what} {s:?}: {e}")))
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Subsystem(s) => s.to_string(),
        Subject::Group(g) => format!("group:{g}"),
    }
}
