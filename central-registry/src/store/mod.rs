//! The registry's store: one trait, an embedded SQLite backend and a
//! PostgreSQL backend that several registry nodes can share.
//!
//! Every write is a [`Change`] applied in one transaction together with its
//! audit record, so a refused change leaves nothing half-written. Reads
//! return plain domain values. The trait is synchronous; the gRPC layer
//! calls it from `spawn_blocking`. Its contract tests (`store/tests.rs`) are
//! written against the trait so another backend can run them unchanged.

mod backend;
mod changes;
mod postgres;
mod requests;
mod schema;
mod snapshot;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
pub mod to_postgres;

use std::path::Path;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{MemberId, ServerId};

use crate::model::{
    Alarm, Applied, AuditEntry, AuditFilter, Change, Enrollment, InstanceSettings, Operator,
    RequestState, Snapshot, StoredCert, StoredRequest, WitnessedCheckpoint,
};

use crate::witness::{History, Submitted, Verdict};

pub use postgres::{PgStore, PgTarget};
pub use schema::MIGRATIONS;
pub use sqlite::SqliteStore;
pub(crate) use sqlite::now_ms;

/// Where a registry keeps its store.
#[derive(Debug, Clone, Default)]
pub enum Database {
    /// `registry.db` (SQLite) in the registry's home directory: one node.
    #[default]
    Home,
    /// A PostgreSQL database, which several registry nodes can share.
    Postgres(Box<PgTarget>),
}

impl Database {
    /// The store in the PostgreSQL database at `url` ([`postgres_target`]).
    pub fn postgres(url: &str, password_file: Option<&Path>) -> Result<Self, StoreError> {
        Ok(Database::Postgres(Box::new(postgres_target(
            url,
            password_file,
        )?)))
    }

    /// Creates the store (SQLite: `registry.db` in `dir`).
    pub fn create(
        &self,
        dir: &Path,
        settings: &InstanceSettings,
    ) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Database::Home => Box::new(SqliteStore::create(&dir.join("registry.db"), settings)?),
            Database::Postgres(t) => Box::new(PgStore::create(t, settings)?),
        })
    }

    /// Opens the store, applying any pending migrations.
    pub fn open(&self, dir: &Path) -> Result<Box<dyn Store>, StoreError> {
        Ok(match self {
            Database::Home => match to_postgres::moved_away(dir) {
                Some(moved) => return Err(moved),
                None => Box::new(SqliteStore::open(&dir.join("registry.db"))?),
            },
            Database::Postgres(t) => Box::new(PgStore::open(t)?),
        })
    }
}

/// The PostgreSQL database at `url` (`postgres://...`), with the password
/// from `password_file` when given, else from `LIENTHONG_DATABASE_PASSWORD`
/// when set, else from the URL (or none: peer or certificate
/// authentication, or a `.pgpass`-less trust setup).
pub fn postgres_target(url: &str, password_file: Option<&Path>) -> Result<PgTarget, StoreError> {
    let target = PgTarget::parse(url)?;
    let password = match password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| {
                    StoreError::Internal(format!("database password file {}: {e}", f.display()))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => std::env::var("LIENTHONG_DATABASE_PASSWORD").ok(),
    };
    Ok(match password {
        Some(p) => target.with_password(&p),
        None => target,
    })
}

/// Why the store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The identifier is taken.
    #[error("{0} already exists")]
    Duplicate(String),
    /// Something the change refers to does not exist.
    #[error("{0}")]
    Missing(String),
    /// The change conflicts with the current state (e.g. deciding a request
    /// that is no longer pending, reusing a revoked key).
    #[error("{0}")]
    Conflict(String),
    /// The database failed or holds something this version cannot read.
    #[error("registry store: {0}")]
    Internal(String),
}

impl From<lienthong_database::DatabaseError> for StoreError {
    fn from(e: lienthong_database::DatabaseError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// A persisted configuration publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationRecord {
    pub version: u64,
    pub created_at_ms: i64,
    pub seq: u64,
}

/// A publication with the bytes every registry node distributes: the
/// encoded `SignedConfiguration`, exactly as the publishing node signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPublication {
    pub record: PublicationRecord,
    pub signed: Vec<u8>,
}

/// One of the registry's keys, named by what it is for, with the SHA-256
/// of its certificate. Every node sharing a store holds the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFingerprint {
    /// What the key does, e.g. `"instance CA"` (also the row's key).
    pub purpose: &'static str,
    /// The file an operator installs it from, for the refusal's message.
    pub file: &'static str,
    pub sha256: Fingerprint,
}

/// The refusal of a node whose key differs from the one recorded.
pub(crate) fn key_mismatch(key: &KeyFingerprint, recorded: &Fingerprint) -> StoreError {
    StoreError::Conflict(format!(
        "this node's {} certificate ({}) has SHA-256 {}, but the registry store records {}: every node of a registry holds the keys of the node that initialised it; install its {} (and the key beside it) on this node",
        key.purpose, key.file, key.sha256, recorded, key.file
    ))
}

/// The refusal of a publication by a node without the lease, or of a
/// version that does not follow the last one.
pub(crate) fn publication_refused(
    node: &str,
    version: u64,
    leads: bool,
    last: Option<u64>,
) -> Option<StoreError> {
    if !leads {
        return Some(StoreError::Conflict(format!(
            "node {node} does not hold the publisher lease; configuration version {version} is not recorded"
        )));
    }
    match last {
        Some(l) if version != l + 1 => Some(StoreError::Conflict(format!(
            "configuration version {version} does not follow the last one published ({l})"
        ))),
        None if version == 0 => Some(StoreError::Conflict(
            "configuration versions start at 1".into(),
        )),
        _ => None,
    }
}

/// Publications kept with their bytes below the newest (the newest is the
/// one distributed; a few more help an investigation).
pub(crate) const KEPT_WITH_BYTES: i64 = 3;
/// Publications kept at all below the newest.
pub(crate) const KEPT: i64 = 100;

/// The registry's persistent state.
pub trait Store: std::fmt::Debug + Send + Sync + 'static {
    /// The per-instance settings written at initialisation.
    fn settings(&self) -> Result<InstanceSettings, StoreError>;

    /// Applies one change and its audit record in one transaction.
    fn apply(&self, actor: &str, change: &Change) -> Result<Applied, StoreError> {
        self.apply_all(actor, std::slice::from_ref(change))
            .map(|mut v| v.remove(0))
    }

    /// Applies several changes in one transaction (bulk imports): all or
    /// nothing, one audit record each.
    fn apply_all(&self, actor: &str, changes: &[Change]) -> Result<Vec<Applied>, StoreError>;

    /// Records a refused action in the audit log (the refusal itself
    /// changed nothing else).
    fn record_refusal(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        error: &str,
    ) -> Result<u64, StoreError>;

    /// Everything a configuration is built from, consistently.
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// The change sequence number (increases with every applied change).
    fn seq(&self) -> Result<u64, StoreError>;

    fn request(&self, id: u64) -> Result<Option<StoredRequest>, StoreError>;
    fn requests(&self, state: Option<RequestState>) -> Result<Vec<StoredRequest>, StoreError>;
    fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;
    fn operator_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Operator>, StoreError>;
    fn enrollment(&self, token_hash: &[u8; 32]) -> Result<Option<Enrollment>, StoreError>;
    /// The enrollment tokens still usable at `now_ms` (unused, unexpired),
    /// soonest to expire first.
    fn usable_enrollments(&self, now_ms: i64) -> Result<Vec<Enrollment>, StoreError>;

    /// A certificate the registry issued, by fingerprint.
    fn certificate(&self, fingerprint: &Fingerprint) -> Result<Option<StoredCert>, StoreError>;
    /// Whether the member exists.
    fn member_exists(&self, id: &MemberId) -> Result<bool, StoreError>;
    /// Whether the server is registered.
    fn server_exists(&self, id: &ServerId) -> Result<bool, StoreError>;
    /// The catalogue's descriptor set with this SHA-256, if a service
    /// names it.
    fn descriptor_set(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The last configuration version published (none on a new registry).
    fn last_publication(&self) -> Result<Option<PublicationRecord>, StoreError>;
    /// The newest publication, with its signed bytes, when its version is
    /// above `version` (none when nothing newer was published, or the
    /// newest was published before the store kept bytes).
    fn publication_after(&self, version: u64) -> Result<Option<StoredPublication>, StoreError>;
    /// Records a publication and its signed bytes before any node
    /// distributes it, in one transaction that checks that `node` holds
    /// the publisher lease and that `record.version` follows the last
    /// version published. Refused with [`StoreError::Conflict`] otherwise
    /// (nothing is recorded): versions never repeat, skip or go back,
    /// whichever node publishes.
    fn record_publication(
        &self,
        node: &str,
        record: &PublicationRecord,
        signed: &[u8],
    ) -> Result<(), StoreError>;
    /// Refuses (naming both versions) when another node has migrated the
    /// store to a schema this program does not know: such a node may keep
    /// serving what the store holds, but must not publish.
    fn schema_is_known(&self) -> Result<(), StoreError>;
    /// Makes the next version published at least `next` (after a restore
    /// from a backup, security servers may hold versions published since,
    /// and refuse older ones): records `next - 1` as published, without a
    /// document, when it is above the last version, in one transaction
    /// with its audit record. Returns the next version.
    fn raise_version_floor(&self, actor: &str, next: u64) -> Result<u64, StoreError>;
    /// Takes the publisher lease for `node` until `ttl` from now when it is
    /// free or expired, or renews it when `node` holds it; returns whether
    /// `node` holds it now. Expiry is judged on the store's clock
    /// (PostgreSQL's, not each node's).
    fn take_lease(&self, node: &str, ttl: std::time::Duration) -> Result<bool, StoreError>;
    /// Gives the lease up if `node` holds it (a node stopping), so another
    /// node publishes without waiting for it to expire.
    fn release_lease(&self, node: &str) -> Result<(), StoreError>;
    /// Records the fingerprints of the registry's keys that the store does
    /// not hold yet, and refuses (with [`StoreError::Conflict`], naming
    /// both fingerprints and the file) any that differ from those recorded.
    fn check_keys(&self, keys: &[KeyFingerprint]) -> Result<(), StoreError>;

    /// The last checkpoint witnessed for `server`.
    fn last_checkpoint(&self, server: &ServerId)
    -> Result<Option<WitnessedCheckpoint>, StoreError>;
    /// Judges and records a submitted checkpoint in one transaction: reads
    /// the server's [`History`] (its latest witnessed checkpoint, and the
    /// one the proof starts from when older), asks `judge`, then keeps the
    /// checkpoint with the server's `signature` ([`Verdict::Accept`]) or
    /// raises an alarm ([`Verdict::Alarm`]). Returns the verdict and the
    /// history it was made on.
    fn witness(
        &self,
        server: &ServerId,
        submitted: &Submitted,
        signature: &[u8],
        judge: &mut dyn FnMut(&History) -> Verdict,
    ) -> Result<(Verdict, History), StoreError>;
    /// Raises an alarm about a refused checkpoint.
    fn record_alarm(&self, server: &ServerId, reason: &str) -> Result<(), StoreError>;
    /// Every alarm, newest first.
    fn alarms(&self) -> Result<Vec<Alarm>, StoreError>;
}
