//! The embedded message-log writer: SQLite in WAL mode with
//! `synchronous=FULL`, written by one thread that appends every queued
//! record — leaf, tree nodes, sealed subject — in one transaction (group
//! commit) and only then acknowledges them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use lienthong_proto::merkle;
use ring::aead;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::leaf::leaf_bytes;
use super::tree::{Frontier, store_nodes};
use super::{Appended, LogError, LogKeys, LogRecord, MessageLog};

/// Most records committed in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the writer reports its group-commit statistics (when busy).
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The schema of a log file (created on first open).
pub(super) const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS records (
        leaf_index     INTEGER PRIMARY KEY,
        at             INTEGER NOT NULL,
        message_id     TEXT NOT NULL,
        subject_hash   BLOB,
        withheld_until INTEGER NOT NULL,
        leaf           BLOB,
        envelope       BLOB,
        subject_sealed BLOB,
        body_sealed    BLOB,
        hidden_sealed  BLOB
    ) STRICT;
    CREATE INDEX IF NOT EXISTS records_subject ON records (subject_hash, leaf_index);
    CREATE INDEX IF NOT EXISTS records_message ON records (message_id);
    CREATE TABLE IF NOT EXISTS nodes (
        level INTEGER NOT NULL,
        idx   INTEGER NOT NULL,
        hash  BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS checkpoints (
        tree_size        INTEGER PRIMARY KEY,
        root             BLOB NOT NULL,
        created_at       INTEGER NOT NULL,
        signature        BLOB NOT NULL,
        countersignature BLOB NOT NULL,
        witnessed_at     INTEGER NOT NULL
    ) STRICT;
"#;

type Job = (LogRecord, oneshot::Sender<Result<(), LogError>>);

/// How group commit is doing.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Where each commit's time and size are also reported, once the
    /// server's metrics are attached ([`CommitStats::report_to`]).
    histograms: std::sync::OnceLock<CommitHistograms>,
}

/// The histograms a commit's time (seconds) and size (records) go to.
#[derive(Debug)]
pub struct CommitHistograms {
    pub seconds: metrics::Histogram,
    pub records: metrics::Histogram,
}

impl CommitStats {
    /// Reports every later commit to `histograms` too (the first call wins).
    pub fn report_to(&self, histograms: CommitHistograms) {
        let _ = self.histograms.set(histograms);
    }

    fn committed(&self, records: usize, took: std::time::Duration) {
        let n = records as u64;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(n, Ordering::Relaxed);
        self.largest_batch.fetch_max(n, Ordering::Relaxed);
        if let Some(h) = self.histograms.get() {
            h.seconds.record(took.as_secs_f64());
            h.records.record(records as f64);
        }
    }
}

/// WAL pages after which the writer copies them into the database file.
/// Pages written again and again between two checkpoints (the tree's and
/// the indexes' right edges) are copied once; SQLite's default is 1,000.
const WAL_CHECKPOINT_PAGES: i64 = 8_000;

/// The message-log writer for one SQLite file.
pub struct SqliteLog {
    tx: mpsc::Sender<Job>,
    stats: Arc<CommitStats>,
}

impl std::fmt::Debug for SqliteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteLog")
    }
}

pub(super) fn open_conn(path: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path).map_err(|e| LogError(format!("{}: {e}", path.display())))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(SCHEMA)?;
    // Logs created before withheld exchanges' fields were hidden.
    let has_hidden: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('records') WHERE name = 'hidden_sealed'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_hidden
        && let Err(e) = conn.execute_batch("ALTER TABLE records ADD COLUMN hidden_sealed BLOB")
        && !e.to_string().contains("duplicate column")
    {
        return Err(e.into());
    }
    Ok(conn)
}

pub(super) fn tree_size(conn: &Connection) -> Result<u64, LogError> {
    Ok(conn.query_row(
        "SELECT coalesce(max(leaf_index) + 1, 0) FROM records",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path` and starts its writer.
    pub fn open(path: &Path, keys: LogKeys) -> Result<Self, LogError> {
        let mut conn = open_conn(path)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        let sealed = seal_legacy(&mut conn, &keys)?;
        if sealed > 0 {
            // The pages that held them in clear go too.
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")?;
            tracing::info!(
                records = sealed,
                "message log: records written in clear are now sealed"
            );
        }
        let frontier = Frontier::load(&conn, tree_size(&conn)?)?;
        let stats = Arc::new(CommitStats::default());
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_stats = stats.clone();
        thread::Builder::new()
            .name("message-log".into())
            .spawn(move || writer(conn, keys, frontier, rx, writer_stats))
            .map_err(|e| LogError(format!("cannot start the log writer: {e}")))?;
        Ok(SqliteLog { tx, stats })
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// The statistics, shared (for the admin port).
    pub fn stats_handle(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }

    /// Number of records in the log at `path` (for status and tests).
    pub fn count(path: &Path) -> Result<u64, LogError> {
        tree_size(&open_conn(path)?)
    }
}

/// Commits queued records in batches until every sender is gone.
fn writer(
    mut conn: Connection,
    keys: LogKeys,
    mut frontier: Frontier,
    rx: mpsc::Receiver<Job>,
    stats: Arc<CommitStats>,
) {
    let mut reported = std::time::Instant::now();
    while let Ok(first) = rx.recv() {
        if reported.elapsed() >= STATS_EVERY {
            reported = std::time::Instant::now();
            tracing::info!(
                "message log group commit: {} records in {} commits, largest batch {}",
                stats.records.load(Ordering::Relaxed),
                stats.commits.load(Ordering::Relaxed),
                stats.largest_batch.load(Ordering::Relaxed)
            );
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let before = frontier.clone();
        let started = std::time::Instant::now();
        let result = commit(&mut conn, &keys, &mut frontier, &batch).map_err(|e| {
            // Nothing of the batch was written: the tree stays as it was.
            frontier = before;
            tracing::error!(error = %e, records = batch.len(), "message log commit failed");
            e
        });
        if result.is_ok() {
            stats.committed(batch.len(), started.elapsed());
        }
        for (_, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

fn seal(keys: &LogKeys, leaf_index: u64, plain: &[u8]) -> Result<Vec<u8>, LogError> {
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &keys.seal)
            .map_err(|_| LogError("bad sealing key".into()))?,
    );
    let mut nonce = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| LogError("no randomness for sealing".into()))?;
    let mut data = plain.to_vec();
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(leaf_index.to_be_bytes()),
        &mut data,
    )
    .map_err(|_| LogError("sealing failed".into()))?;
    Ok([nonce.as_slice(), &data].concat())
}

/// A record's leaf as stored: sealed since schema version 1. A leaf that
/// does not open is returned as stored — its hash then fails against the
/// tree, which is how an edit shows (and how a leaf written before sealing
/// reads, if one were left).
pub(super) fn open_leaf(keys: &LogKeys, leaf_index: u64, stored: Vec<u8>) -> Vec<u8> {
    if stored.is_empty() {
        return stored;
    }
    unseal(keys, leaf_index, &stored).unwrap_or(stored)
}

/// (position, leaf, envelope) as a log written before sealing holds them.
type LegacyRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

/// The schema version whose leaves and envelopes are sealed.
const SEALED_VERSION: i64 = 1;

/// Seals, in one transaction, the leaves and envelopes a log written before
/// sealing holds in clear, and marks the log sealed. Positions and leaf
/// bytes stay exactly as they were, so every proof and the registry's
/// witnessed checkpoints stay valid.
fn seal_legacy(conn: &mut Connection, keys: &LogKeys) -> Result<u64, LogError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SEALED_VERSION {
        return Ok(0);
    }
    let tx = conn.transaction()?;
    let mut sealed = 0;
    {
        let mut read = tx.prepare(
            "SELECT leaf_index, leaf, envelope FROM records
             WHERE leaf IS NOT NULL OR envelope IS NOT NULL",
        )?;
        let mut write =
            tx.prepare("UPDATE records SET leaf = ?2, envelope = ?3 WHERE leaf_index = ?1")?;
        let rows: Vec<LegacyRow> = read
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        for (index, leaf, envelope) in rows {
            let seal_opt = |v: Option<Vec<u8>>| -> Result<Option<Vec<u8>>, LogError> {
                v.filter(|v| !v.is_empty())
                    .map(|v| seal(keys, index as u64, &v))
                    .transpose()
            };
            write.execute(params![index, seal_opt(leaf)?, seal_opt(envelope)?])?;
            sealed += 1;
        }
    }
    tx.pragma_update(None, "user_version", SEALED_VERSION)?;
    tx.commit()?;
    Ok(sealed)
}

/// Opens a sealed field (for the server's own operator).
pub(super) fn unseal(keys: &LogKeys, leaf_index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
    let key =
        aead::LessSafeKey::new(aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &keys.seal).ok()?);
    let (nonce, data) = sealed.split_at_checked(12)?;
    let mut data = data.to_vec();
    let plain = key
        .open_in_place(
            aead::Nonce::try_assume_unique_for_key(nonce).ok()?,
            aead::Aad::from(leaf_index.to_be_bytes()),
            &mut data,
        )
        .ok()?;
    Some(plain.to_vec())
}

fn commit(
    conn: &mut Connection,
    keys: &LogKeys,
    frontier: &mut Frontier,
    batch: &[Job],
) -> Result<(), LogError> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO records (leaf_index, at, message_id, subject_hash, withheld_until, leaf,
                envelope, subject_sealed, body_sealed, hidden_sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for (r, _) in batch {
            let index = frontier.size();
            let subject = (!r.data_subject.is_empty()).then(|| keys.subject_hash(&r.data_subject));
            let sealed = match subject {
                Some(_) => Some(seal(keys, index, r.data_subject.as_bytes())?),
                None => None,
            };
            let body = match &r.body {
                Some(b) => Some(seal(keys, index, b)?),
                None => None,
            };
            // A withheld exchange's official and purpose stay out of the
            // leaf until its release: a salted commitment stands in, and
            // its opening is kept sealed beside it.
            let hidden = if r.withheld_until_ms > 0 {
                let mut salt = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
                    .map_err(|_| LogError("no randomness for a commitment".into()))?;
                let opening = lienthong_proto::pb::trace::v1::HiddenOpening {
                    salt: salt.to_vec(),
                    user_id: r.user_id.clone(),
                    purpose: r.purpose.clone(),
                };
                let commitment =
                    lienthong_proto::canonical::hidden_commitment(&salt, &r.user_id, &r.purpose);
                Some((
                    commitment,
                    seal(keys, index, &prost::Message::encode_to_vec(&opening))?,
                ))
            } else {
                None
            };
            let leaf = leaf_bytes(r, subject, hidden.as_ref().map(|(c, _)| *c));
            let nodes = frontier.push(merkle::leaf_hash(&leaf));
            // At rest nothing is in clear: the leaf names the official and
            // the purpose, the envelope the data subject too.
            let leaf = seal(keys, index, &leaf)?;
            let envelope = match r.envelope.is_empty() {
                true => None,
                false => Some(seal(keys, index, &r.envelope)?),
            };
            insert.execute(params![
                index as i64,
                r.at_ms,
                r.message_id,
                subject.as_ref().map(|s| s.as_slice()),
                r.withheld_until_ms,
                leaf,
                envelope,
                sealed,
                body,
                hidden.map(|(_, sealed)| sealed),
            ])?;
            store_nodes(&tx, &nodes)?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl MessageLog for SqliteLog {
    fn append(&self, record: LogRecord) -> Appended {
        let (done, wait) = oneshot::channel();
        let sent = self.tx.send((record, done));
        Box::pin(async move {
            sent.map_err(|_| LogError("the log writer has stopped".into()))?;
            wait.await
                .map_err(|_| LogError("the log writer has stopped".into()))?
        })
    }
}
