//! Reading the log: records about a data subject, the tree head, proofs,
//! and the witnessed checkpoints. Readers use their own connection (WAL
//! lets them run beside the writer).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::trace::v1::LogLeaf;
use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite::{open_conn, open_leaf, tree_size, unseal};
use super::tree::Nodes;
use super::{LogError, LogKeys};

/// A record about a data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRecord {
    pub leaf_index: u64,
    /// The leaf bytes (`LogLeaf`); empty once past retention.
    pub leaf: Vec<u8>,
    pub withheld_until_ms: i64,
    /// For a withheld exchange: the encoded `HiddenOpening` its leaf
    /// commits to (official and purpose), unsealed.
    pub hidden: Option<Vec<u8>>,
}

/// A checkpoint the registry witnessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: u64,
    pub root: Hash,
    pub created_at_ms: i64,
    /// The server's signature (encoded `exchange.v1.Signature`).
    pub signature: Vec<u8>,
    /// The registry's countersignature (encoded `exchange.v1.Signature`).
    pub countersignature: Vec<u8>,
    pub witnessed_at_ms: i64,
}

/// Queries over one log file.
pub struct LogReader {
    conn: Mutex<Connection>,
    keys: LogKeys,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogReader")
    }
}

impl LogReader {
    pub fn open(path: &Path, keys: LogKeys) -> Result<Self, LogError> {
        Ok(LogReader {
            conn: Mutex::new(open_conn(path)?),
            keys,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Number of records.
    pub fn tree_size(&self) -> Result<u64, LogError> {
        tree_size(&self.lock())
    }

    /// Checks records `[from, to)` against the stored tree
    /// ([`super::tree::audit`]).
    pub fn audit(&self, from: u64, to: u64) -> Result<super::tree::Audit, LogError> {
        super::tree::audit(&self.lock(), from, to, |index, stored| {
            open_leaf(&self.keys, index, stored)
        })
    }

    /// The root of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        merkle::root_from(&mut Nodes(&self.lock()), size)
    }

    /// Inclusion proof of record `index` in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        merkle::inclusion_proof_from(&mut Nodes(&self.lock()), index, size)?
            .ok_or_else(|| LogError(format!("record {index} is not in a tree of {size}")))
    }

    /// Consistency proof from the tree of `old` records to that of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        merkle::consistency_proof_from(&mut Nodes(&self.lock()), old, new)?
            .ok_or_else(|| LogError(format!("no consistency proof from {old} to {new}")))
    }

    /// Records about `subject` in `[since, until)`, newest first, skipping
    /// `offset` and returning at most `limit`.
    pub fn about(
        &self,
        subject: &str,
        since_ms: i64,
        until_ms: i64,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<SubjectRecord>, LogError> {
        let hash = self.keys.subject_hash(subject);
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT leaf_index, coalesce(leaf, x''), withheld_until, hidden_sealed FROM records
             WHERE subject_hash = ?1 AND at >= ?2 AND at < ?3
             ORDER BY leaf_index DESC LIMIT ?4 OFFSET ?5",
        )?;
        let rows = stmt.query_map(
            params![
                hash.as_slice(),
                since_ms,
                until_ms,
                limit as i64,
                offset as i64
            ],
            |r| {
                let leaf_index = r.get::<_, i64>(0)? as u64;
                let hidden: Option<Vec<u8>> = r.get(3)?;
                Ok(SubjectRecord {
                    leaf_index,
                    leaf: open_leaf(&self.keys, leaf_index, r.get(1)?),
                    withheld_until_ms: r.get(2)?,
                    hidden: hidden.and_then(|h| unseal(&self.keys, leaf_index, &h)),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The data subject of record `index`, unsealed (for this server's
    /// operator only; never sent over the bus).
    pub fn subject_of(&self, index: u64) -> Result<Option<String>, LogError> {
        let sealed: Option<Option<Vec<u8>>> = self
            .lock()
            .query_row(
                "SELECT subject_sealed FROM records WHERE leaf_index = ?1",
                [index as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(sealed
            .flatten()
            .and_then(|s| unseal(&self.keys, index, &s))
            .and_then(|b| String::from_utf8(b).ok()))
    }

    /// The logged body of record `index`, unsealed, if its subsystem opted
    /// in (for this server's operator only).
    pub fn body_of(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        let sealed: Option<Option<Vec<u8>>> = self
            .lock()
            .query_row(
                "SELECT body_sealed FROM records WHERE leaf_index = ?1",
                [index as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(sealed.flatten().and_then(|s| unseal(&self.keys, index, &s)))
    }

    /// The records of one exchange (both phases), oldest first.
    pub fn by_message(&self, message_id: &str) -> Result<Vec<u64>, LogError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached("SELECT leaf_index FROM records WHERE message_id = ?1 ORDER BY 1")?;
        let rows = stmt.query_map([message_id], |r| r.get::<_, i64>(0))?;
        Ok(rows
            .map(|r| r.map(|v| v as u64))
            .collect::<Result<_, _>>()?)
    }

    /// (client, message id, time) of the requests this server accepted as
    /// provider since `since_ms`: what the replay protection must remember
    /// across a restart.
    pub fn provider_requests_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, String, i64)>, LogError> {
        use lienthong_proto::pb::trace::v1::{LogLeaf, Phase, Side};
        use prost::Message;
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT leaf_index, leaf FROM records WHERE at >= ?1 AND leaf IS NOT NULL
             ORDER BY leaf_index",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok(open_leaf(
                &self.keys,
                r.get::<_, i64>(0)? as u64,
                r.get::<_, Vec<u8>>(1)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let Ok(leaf) = LogLeaf::decode(row?.as_slice()) else {
                continue;
            };
            if leaf.side == Side::Provider as i32 && leaf.phase == Phase::Request as i32 {
                out.push((leaf.client, leaf.message_id, leaf.at_unix_ms));
            }
        }
        Ok(out)
    }

    /// Operational data: the decoded records of `selection` that
    /// `visible` lets through, newest first, and whether more matched than
    /// its limit. Records are in time order, so the scan stops a minute
    /// (concurrent writers' clock order) past the selection's start.
    pub fn operational(
        &self,
        selection: &crate::operational::Selection,
        visible: impl Fn(&LogLeaf) -> bool,
    ) -> Result<(Vec<(u64, LogLeaf)>, bool), LogError> {
        use prost::Message;
        const SLACK_MS: i64 = 60_000;
        let limit = selection.limit as usize;
        let mut found = Vec::new();
        let keys = &self.keys;
        let mut keep = |index: i64, at: i64, stored: Vec<u8>| -> bool {
            if at >= selection.since_ms
                && at < selection.until_ms
                && let Ok(l) = LogLeaf::decode(open_leaf(keys, index as u64, stored).as_slice())
                && visible(&l)
            {
                found.push((index as u64, l));
            }
            found.len() <= limit
        };
        let conn = self.lock();
        match &selection.message_id {
            Some(id) => {
                let mut stmt = conn.prepare_cached(
                    "SELECT leaf_index, at, leaf FROM records
                     WHERE message_id = ?1 AND leaf IS NOT NULL ORDER BY leaf_index DESC",
                )?;
                let mut rows = stmt.query([id])?;
                while let Some(r) = rows.next()? {
                    if !keep(r.get(0)?, r.get(1)?, r.get::<_, Vec<u8>>(2)?) {
                        break;
                    }
                }
            }
            None => {
                let mut stmt = conn.prepare_cached(
                    "SELECT leaf_index, at, leaf FROM records
                     WHERE leaf IS NOT NULL ORDER BY leaf_index DESC",
                )?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let at: i64 = r.get(1)?;
                    if at < selection.since_ms.saturating_sub(SLACK_MS)
                        || !keep(r.get(0)?, at, r.get::<_, Vec<u8>>(2)?)
                    {
                        break;
                    }
                }
            }
        }
        let truncated = found.len() > limit;
        found.truncate(limit);
        Ok((found, truncated))
    }

    /// The leaf bytes of record `index` (opened).
    pub fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT leaf FROM records WHERE leaf_index = ?1",
                [index as i64],
                |r| r.get::<_, Option<Vec<u8>>>(0),
            )
            .optional()?
            .flatten()
            .map(|stored| open_leaf(&self.keys, index, stored)))
    }

    /// The newest witnessed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LogError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT tree_size, root, created_at, signature, countersignature, witnessed_at
                 FROM checkpoints ORDER BY tree_size DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(size, root, created, sig, counter, witnessed)| {
            Ok(StoredCheckpoint {
                tree_size: size as u64,
                root: root
                    .try_into()
                    .map_err(|_| LogError("stored root is not 32 bytes".into()))?,
                created_at_ms: created,
                signature: sig,
                countersignature: counter,
                witnessed_at_ms: witnessed,
            })
        })
        .transpose()
    }

    /// Keeps a witnessed checkpoint.
    pub fn record_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), LogError> {
        self.lock().execute(
            "INSERT INTO checkpoints (tree_size, root, created_at, signature, countersignature, witnessed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (tree_size) DO UPDATE SET witnessed_at = excluded.witnessed_at,
                countersignature = excluded.countersignature",
            params![
                c.tree_size as i64,
                c.root.as_slice(),
                c.created_at_ms,
                c.signature,
                c.countersignature,
                c.witnessed_at_ms
            ],
        )?;
        Ok(())
    }

    /// Forgets the contents of records older than `before_ms` (retention):
    /// leaf bytes, envelopes and sealed subjects go; the tree's nodes stay,
    /// so checkpoints and the proofs of every retained record stay valid.
    /// Returns how many records were pruned.
    pub fn prune_before(&self, before_ms: i64) -> Result<u64, LogError> {
        let n = self.lock().execute(
            "UPDATE records SET leaf = NULL, envelope = NULL, subject_sealed = NULL,
                subject_hash = NULL, body_sealed = NULL, hidden_sealed = NULL
             WHERE at < ?1 AND leaf IS NOT NULL",
            [before_ms],
        )?;
        Ok(n as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LogRecord, MessageLog, SqliteLog};
    use super::*;
    use lienthong_proto::pb::trace::v1::LogLeaf;
    use prost::Message;

    fn keys() -> LogKeys {
        LogKeys {
            subject_hash: b"subject key".to_vec(),
            seal: [7; 32],
        }
    }

    fn record(i: usize, subject: &str) -> LogRecord {
        LogRecord {
            at_ms: 1000 + i as i64,
            message_id: format!("m-{i}"),
            data_subject: subject.into(),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_audit_finds_records_and_nodes_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = SqliteLog::open(&path, keys()).unwrap();
        for i in 0..100 {
            log.append(record(i, "001099012345")).await.unwrap();
        }
        drop(log);
        let r = LogReader::open(&path, keys()).unwrap();
        // Untouched: every record and node checks out, in any slicing.
        let whole = r.audit(0, 100).unwrap();
        assert_eq!(whole.mismatches, Vec::<String>::new());
        assert_eq!(whole.leaves, 100);
        assert_eq!(whole.nodes, 100 - 3, "a node per record but the edge's");
        let mut nodes = 0;
        for from in (0..100).step_by(7) {
            let part = r.audit(from, (from + 7).min(100)).unwrap();
            assert!(part.mismatches.is_empty(), "{from}: {:?}", part.mismatches);
            nodes += part.nodes;
        }
        assert_eq!(nodes, whole.nodes, "slices check each node once");

        let tamper = rusqlite::Connection::open(&path).unwrap();
        // A record's bytes edited, the tree left alone.
        let mut leaf: Vec<u8> = tamper
            .query_row("SELECT leaf FROM records WHERE leaf_index = 37", [], |x| {
                x.get(0)
            })
            .unwrap();
        leaf[3] ^= 1;
        tamper
            .execute(
                "UPDATE records SET leaf = ?1 WHERE leaf_index = 37",
                [&leaf],
            )
            .unwrap();
        let found = r.audit(30, 40).unwrap().mismatches;
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("record 37:"), "{found:?}");
        // ... and its leaf node rewritten to match: the parent says so.
        tamper
            .execute(
                "UPDATE nodes SET hash = ?1 WHERE level = 0 AND idx = 37",
                [merkle::leaf_hash(&leaf).to_vec()],
            )
            .unwrap();
        let found = r.audit(0, 100).unwrap().mismatches;
        assert_eq!(
            found,
            vec!["tree node 1/18 is not the hash of its children (rewritten)"]
        );
        assert!(
            r.audit(38, 100).unwrap().mismatches.is_empty(),
            "outside the range"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_durable_proven_and_found_by_subject() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = std::sync::Arc::new(SqliteLog::open(&path, keys()).unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            let subject = if i % 10 == 0 { "001099012345" } else { "other" };
            tasks.push(tokio::spawn(
                async move { log.append(record(i, subject)).await },
            ));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let stats = log.stats();
        assert_eq!(
            stats.records.load(std::sync::atomic::Ordering::Relaxed),
            200
        );
        assert!(stats.commits.load(std::sync::atomic::Ordering::Relaxed) <= 200);

        let r = LogReader::open(&path, keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 200);
        let root = r.root(200).unwrap();
        let found = r.about("001099012345", 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(found.len(), 20);
        assert!(
            found.windows(2).all(|w| w[0].leaf_index > w[1].leaf_index),
            "newest first"
        );
        for rec in &found {
            let leaf = LogLeaf::decode(rec.leaf.as_slice()).unwrap();
            assert!(leaf.data_subject_hash.len() == 32);
            let proof = r.inclusion_proof(rec.leaf_index, 200).unwrap();
            assert!(merkle::verify_inclusion(
                &merkle::leaf_hash(&rec.leaf),
                rec.leaf_index,
                200,
                &proof,
                &root
            ));
            assert_eq!(
                r.subject_of(rec.leaf_index).unwrap().as_deref(),
                Some("001099012345")
            );
        }
        let page2 = r.about("001099012345", 0, i64::MAX, 15, 100).unwrap();
        assert_eq!(page2.len(), 5);

        // The plain subject is nowhere in the file.
        drop(r);
        drop(log);
        let bytes = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
        for b in [bytes, wal] {
            assert!(!b.windows(12).any(|w| w == b"001099012345"));
        }
    }

    #[tokio::test]
    async fn reopening_continues_the_same_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        {
            let log = SqliteLog::open(&path, keys()).unwrap();
            for i in 0..5 {
                log.append(record(i, "x")).await.unwrap();
            }
        }
        let r = LogReader::open(&path, keys()).unwrap();
        let old_root = r.root(5).unwrap();
        let log = SqliteLog::open(&path, keys()).unwrap();
        for i in 5..9 {
            log.append(record(i, "x")).await.unwrap();
        }
        assert_eq!(r.tree_size().unwrap(), 9);
        let proof = r.consistency_proof(5, 9).unwrap();
        assert!(merkle::verify_consistency(
            5,
            9,
            &old_root,
            &r.root(9).unwrap(),
            &proof
        ));
    }

    #[tokio::test]
    async fn pruning_keeps_proofs_of_retained_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = SqliteLog::open(&path, keys()).unwrap();
        for i in 0..10 {
            log.append(record(i, "x")).await.unwrap();
        }
        let r = LogReader::open(&path, keys()).unwrap();
        let root = r.root(10).unwrap();
        assert_eq!(r.prune_before(1005).unwrap(), 5);
        assert_eq!(r.root(10).unwrap(), root, "the tree is untouched");
        let kept = r.about("x", 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(kept.len(), 5);
        for rec in kept {
            let proof = r.inclusion_proof(rec.leaf_index, 10).unwrap();
            assert!(merkle::verify_inclusion(
                &merkle::leaf_hash(&rec.leaf),
                rec.leaf_index,
                10,
                &proof,
                &root
            ));
        }
    }

    /// Every file of a log (the database and its write-ahead log).
    fn files_of(path: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for suffix in ["", "-wal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            if let Ok(bytes) = std::fs::read(&p) {
                all.extend(bytes);
            }
        }
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_personal_is_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = SqliteLog::open(&path, keys()).unwrap();
        for i in 0..20 {
            let mut r = record(i, "001099012345");
            r.purpose = "hồ sơ điều tra 2026/114".into();
            r.user_id = "officer-nguyen-van-a".into();
            r.envelope = b"envelope naming 001099012345".to_vec();
            log.append(r).await.unwrap();
        }
        let bytes = files_of(&path);
        for secret in [
            "001099012345",
            "hồ sơ điều tra",
            "officer-nguyen-van-a",
            "envelope naming",
        ] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{secret:?} is in the log's files in clear"
            );
        }
        // ... and every record still reads and proves.
        let r = LogReader::open(&path, keys()).unwrap();
        let found = r.about("001099012345", 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(found.len(), 20);
        let leaf = LogLeaf::decode(found[0].leaf.as_slice()).unwrap();
        assert_eq!(leaf.purpose, "hồ sơ điều tra 2026/114");
        assert!(r.audit(0, 20).unwrap().mismatches.is_empty());
        drop(log);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_written_in_clear_is_sealed_in_place_with_the_same_tree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = SqliteLog::open(&path, keys()).unwrap();
        for i in 0..30 {
            let mut r = record(i, "001099012345");
            r.purpose = "legacy purpose".into();
            log.append(r).await.unwrap();
        }
        drop(log);
        // Turn it into a log as an earlier version wrote it: leaves in clear.
        let reader = LogReader::open(&path, keys()).unwrap();
        let root = reader.root(30).unwrap();
        let clear: Vec<Vec<u8>> = (0..30).map(|i| reader.leaf(i).unwrap().unwrap()).collect();
        drop(reader);
        {
            let db = rusqlite::Connection::open(&path).unwrap();
            for (i, leaf) in clear.iter().enumerate() {
                db.execute(
                    "UPDATE records SET leaf = ?1 WHERE leaf_index = ?2",
                    params![leaf, i as i64],
                )
                .unwrap();
            }
            db.pragma_update(None, "user_version", 0).unwrap();
        }
        assert!(contains(&files_of(&path), b"legacy purpose"));

        let log = SqliteLog::open(&path, keys()).unwrap();
        log.append(record(30, "001099012345")).await.unwrap();
        drop(log);
        {
            // Checkpoint the WAL so the old pages are gone from the files.
            let db = rusqlite::Connection::open(&path).unwrap();
            db.pragma_update(None, "wal_checkpoint", "TRUNCATE")
                .unwrap();
            db.execute_batch("VACUUM").unwrap();
        }
        assert!(!contains(&files_of(&path), b"legacy purpose"));
        let r = LogReader::open(&path, keys()).unwrap();
        assert_eq!(r.root(30).unwrap(), root, "positions and leaf bytes kept");
        for (i, leaf) in clear.iter().enumerate() {
            assert_eq!(&r.leaf(i as u64).unwrap().unwrap(), leaf);
        }
        assert!(r.audit(0, 31).unwrap().mismatches.is_empty());
    }
}
