//! Logs of the SQLite era (`messagelog.db`: one table of records, one of
//! tree nodes, one of checkpoints) move into segments when the server
//! starts ([`migrate`]): every record keeps its exact leaf bytes and its
//! position, so the tree, its root at every size and the registry's
//! witnessed checkpoints stay valid — the first checkpoint after the move
//! is consistent with the last one before it. Records retention had
//! already pruned keep their leaf hash only. Once the moved log is read
//! back and gives the old tree's root, the old file is deleted: its first
//! version kept officials and purposes in clear in its leaves, and no file
//! a server keeps may.

use std::io::Write;
use std::path::{Path, PathBuf};

use lienthong_proto::merkle::{self, Hash};
use ring::aead;
use rusqlite::{Connection, OpenFlags};

use crate::record::{SegmentKey, Stored};
use crate::segment::{self, FrameBuilder, Header, KIND_PRUNED, KIND_SEALED};
use crate::tree::Frontier;
use crate::{LogError, LogKeys, checkpoints};

/// Records per frame written by the migration.
const FRAME_RECORDS: usize = 1024;

/// The sealing key of the SQLite era (it is the log key with id 1).
fn old_key(keys: &LogKeys) -> Result<aead::LessSafeKey, LogError> {
    let k = keys
        .seal_key(1)
        .ok_or_else(|| LogError("log key 1 (the key of the SQLite-era log) is missing".into()))?;
    Ok(aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, k)
            .map_err(|_| LogError("bad sealing key".into()))?,
    ))
}

/// Opens a field sealed in the SQLite era (random nonce first, the
/// position as associated data).
fn unseal(key: &aead::LessSafeKey, leaf_index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
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

/// The message id of the record a move from the SQLite era appends when
/// retention had pruned `pruned` of the `moved` records it moved (never a
/// retention's own `retention-FROM-TO`).
pub fn moved_id(moved: u64, pruned: u64) -> String {
    format!("moved-from-sqlite-{moved}-pruned-{pruned}")
}

/// (moved, pruned) of [`moved_id`].
pub fn parse_moved_id(id: &str) -> Option<(u64, u64)> {
    let (moved, pruned) = id
        .strip_prefix("moved-from-sqlite-")?
        .split_once("-pruned-")?;
    Some((moved.parse().ok()?, pruned.parse().ok()?))
}

/// What the migration moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    pub records: u64,
    /// Of which retention had pruned (leaf hash only).
    pub pruned: u64,
    pub checkpoints: u64,
}

/// Moves the SQLite-era log at `old` (if there is one) into segments in
/// `dir` (which must hold none yet). Written beside `dir` first and renamed
/// into place, so a crash during the move leaves the old log as it was.
pub fn migrate(old: &Path, dir: &Path, keys: &LogKeys) -> Result<Option<Migrated>, LogError> {
    if !old.exists() {
        return Ok(None);
    }
    if dir.exists() && !segment::list(dir)?.is_empty() {
        return Err(LogError(format!(
            "both {} and {} hold a message log; move one away",
            old.display(),
            dir.display()
        )));
    }
    let staging = PathBuf::from(format!("{}.migrating", dir.display()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    let conn = Connection::open_with_flags(old, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let sealed_leaves = version >= 1;
    let has_hidden: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('records') WHERE name = 'hidden_sealed'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    let old_key = old_key(keys)?;

    let mut salt = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| LogError("no randomness for a segment key".into()))?;
    let (key_id, _) = keys
        .current()
        .ok_or_else(|| LogError("no log key to seal with".into()))?;
    let header = Header {
        key_id,
        first_index: 0,
        created_ms: 0,
        salt,
        owner: keys.owner.clone(),
    };
    let seg_key = SegmentKey::derive(keys, key_id, &salt)?;
    let seg_path = staging.join(segment::file_name(0));
    let mut file = std::fs::File::create(&seg_path)?;
    file.write_all(&header.encode())?;

    let mut moved = Migrated::default();
    let mut frame = FrameBuilder::new(0);
    // The old tree, from the old leaves: what the moved log must give.
    let mut old_tree = Frontier::default();
    // What retention had pruned before the move: the leaf hashes of those
    // records, digested in order, and the time of the newest.
    let mut pruned_hashes = ring::digest::Context::new(&ring::digest::SHA256);
    let mut pruned_through = 0i64;
    let mut stmt = conn.prepare(&format!(
        "SELECT r.leaf_index, r.leaf, r.envelope, r.subject_sealed, r.body_sealed, {}, n.hash, r.at
         FROM records r LEFT JOIN nodes n ON n.level = 0 AND n.idx = r.leaf_index
         ORDER BY r.leaf_index",
        if has_hidden {
            "r.hidden_sealed"
        } else {
            "NULL"
        }
    ))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let index = r.get::<_, i64>(0)? as u64;
        if index != frame.next_index() {
            return Err(LogError(format!(
                "{}: record {} is missing (the old log has a gap)",
                old.display(),
                frame.next_index()
            )));
        }
        let open = |v: Option<Vec<u8>>, sealed: bool| -> Result<Vec<u8>, LogError> {
            match v {
                None => Ok(Vec::new()),
                Some(v) if v.is_empty() || !sealed => Ok(v),
                Some(v) => unseal(&old_key, index, &v).ok_or_else(|| {
                    LogError(format!("{}: record {index} does not open", old.display()))
                }),
            }
        };
        let leaf: Option<Vec<u8>> = r.get(1)?;
        match leaf {
            None => {
                let hash: Option<Vec<u8>> = r.get(6)?;
                let hash: Hash = hash
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| LogError(format!("record {index}: no tree leaf")))?;
                let pruned = Stored {
                    pruned_leaf_hash: hash.to_vec(),
                    ..Default::default()
                };
                frame.push(KIND_PRUNED, |out| seg_key.seal_into(index, &pruned, out))?;
                old_tree.push(hash, |_, _, _| {});
                pruned_hashes.update(&hash);
                pruned_through = pruned_through.max(r.get(7)?);
                moved.pruned += 1;
            }
            Some(leaf) => {
                let stored = Stored {
                    leaf: open(Some(leaf), sealed_leaves)?,
                    envelope: open(r.get(2)?, sealed_leaves)?,
                    data_subject: String::from_utf8(open(r.get(3)?, true)?)
                        .map_err(|_| LogError(format!("record {index}: subject is not UTF-8")))?,
                    subject_salt: Vec::new(),
                    body: r
                        .get::<_, Option<Vec<u8>>>(4)?
                        .map(|b| open(Some(b), true))
                        .transpose()?,
                    hidden_opening: open(r.get(5)?, true)?,
                    pruned_leaf_hash: Vec::new(),
                };
                frame.push(KIND_SEALED, |out| seg_key.seal_into(index, &stored, out))?;
                old_tree.push(merkle::leaf_hash(&stored.leaf), |_, _, _| {});
            }
        }
        moved.records += 1;
        if frame.count() as usize >= FRAME_RECORDS {
            let next = frame.next_index();
            file.write_all(&std::mem::replace(&mut frame, FrameBuilder::new(next)).finish())?;
        }
    }
    // Records retention had pruned are kept as their leaf hash alone: the
    // move says which in a record of its own, the segment's last, inside
    // the tree the registry witnesses (see `LogReader::moved`).
    if moved.pruned > 0 {
        let index = frame.next_index();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(pruned_hashes.finish().as_ref());
        let record = crate::LogRecord {
            phase: crate::Phase::Retention,
            at_ms: lienthong_proto::time::now_ms(),
            message_id: moved_id(index, moved.pruned),
            pruned: Some(crate::Pruned {
                from: 0,
                to: index,
                digest,
                through_ms: pruned_through,
            }),
            ..Default::default()
        };
        let salt = seg_key.subject_salt(index);
        let (stored, _) = crate::writer::stored(record, &salt, &[], None);
        frame.push(KIND_SEALED, |out| seg_key.seal_into(index, &stored, out))?;
    }
    if frame.count() > 0 {
        file.write_all(&frame.finish())?;
    }
    file.sync_all()?;
    drop(file);
    let written = moved.records + u64::from(moved.pruned > 0);

    let cps = checkpoints::open(&staging)?;
    for c in checkpoints::all(&conn)? {
        checkpoints::record(&cps, &c)?;
        moved.checkpoints += 1;
    }
    drop(cps);
    // Read back as the server will read it: every record opens, and the
    // tree is the old one.
    let moved_root = {
        let reader = crate::LogReader::open(&staging, keys.clone())?;
        (reader.tree_size()?, reader.root(moved.records)?)
    };
    if moved_root != (written, old_tree.root()) {
        return Err(LogError(format!(
            "the log moved from {} does not read back as the old tree ({} records); the old file is left as it was",
            old.display(),
            moved.records
        )));
    }
    segment::sync_dir(&staging)?;
    if dir.exists() {
        // An empty directory (no segments, checked above).
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&staging, dir)?;
    if let Some(parent) = dir.parent() {
        segment::sync_dir(parent)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", old.display()));
        if from.exists() {
            std::fs::remove_file(&from)?;
        }
    }
    if let Some(parent) = dir.parent() {
        segment::sync_dir(parent)?;
    }
    tracing::info!(
        records = moved.records,
        pruned = moved.pruned,
        checkpoints = moved.checkpoints,
        "message log moved from messagelog.db into segments (same leaves, same positions)"
    );
    Ok(Some(moved))
}

/// Logs as the SQLite era wrote them, for tests of the move (the crate's,
/// and with the feature `fixtures` other crates'): nothing a server runs.
#[cfg(any(test, feature = "fixtures"))]
pub mod fixture {
    use std::path::Path;

    use lienthong_proto::merkle;
    use ring::aead;
    use rusqlite::{Connection, params};

    use crate::checkpoints::StoredCheckpoint;
    use crate::leaf::leaf_bytes;
    use crate::{LogKeys, LogRecord};

    /// The SQLite era's tables.
    pub const SCHEMA: &str = r#"
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

    /// Seals `plain` as the SQLite era did: under log key 1, a nonce first,
    /// the position as associated data.
    pub fn seal(keys: &LogKeys, index: u64, plain: &[u8]) -> Vec<u8> {
        let key = super::old_key(keys).expect("log key 1");
        let nonce = [index as u8; 12];
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(index.to_be_bytes()),
            &mut data,
        )
        .expect("sealed");
        [nonce.as_slice(), &data].concat()
    }

    /// Writes `records` at positions 0.. into a new `messagelog.db` at
    /// `path` as the SQLite era did — each leaf naming its subject by the
    /// keyed hash, the tree's leaves in its nodes table — those at the
    /// positions `pruned` says already pruned by retention (leaf hash
    /// only). Returns each record's leaf bytes.
    pub fn write(
        path: &Path,
        keys: &LogKeys,
        records: &[LogRecord],
        pruned: impl Fn(u64) -> bool,
    ) -> Vec<Vec<u8>> {
        let conn = Connection::open(path).expect("a new messagelog.db");
        conn.execute_batch(SCHEMA).expect("the SQLite era's tables");
        conn.pragma_update(None, "user_version", 1)
            .expect("its version");
        let mut leaves = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let i = i as u64;
            let hash = keys.subject_hash(&r.data_subject);
            let mut leaf: lienthong_proto::pb::trace::v1::LogLeaf =
                prost::Message::decode(leaf_bytes(r, None, None).as_slice()).expect("a leaf");
            leaf.data_subject_hash = hash.to_vec();
            let leaf = prost::Message::encode_to_vec(&leaf);
            conn.execute(
                "INSERT INTO nodes (level, idx, hash) VALUES (0, ?1, ?2)",
                params![i as i64, merkle::leaf_hash(&leaf).to_vec()],
            )
            .expect("a node");
            let kept = !pruned(i);
            let envelope: &[u8] = if r.envelope.is_empty() {
                b"envelope"
            } else {
                &r.envelope
            };
            conn.execute(
                "INSERT INTO records (leaf_index, at, message_id, subject_hash, withheld_until,
                    leaf, envelope, subject_sealed, body_sealed, hidden_sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, NULL)",
                params![
                    i as i64,
                    r.at_ms,
                    r.message_id,
                    kept.then_some(hash.to_vec()),
                    r.withheld_until_ms,
                    kept.then(|| seal(keys, i, &leaf)),
                    kept.then(|| seal(keys, i, envelope)),
                    kept.then(|| seal(keys, i, r.data_subject.as_bytes())),
                ],
            )
            .expect("a record");
            leaves.push(leaf);
        }
        leaves
    }

    /// Adds a witnessed checkpoint to the `messagelog.db` at `path`.
    pub fn add_checkpoint(path: &Path, c: &StoredCheckpoint) {
        Connection::open(path)
            .expect("messagelog.db")
            .execute(
                "INSERT INTO checkpoints VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    c.tree_size as i64,
                    c.root.to_vec(),
                    c.created_at_ms,
                    c.signature,
                    c.countersignature,
                    c.witnessed_at_ms
                ],
            )
            .expect("a checkpoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogReader, LogRecord, MessageLog, SegmentLog};
    use lienthong_proto::merkle;

    fn keys() -> LogKeys {
        LogKeys::new("VN/GOV/000102/ss1", b"subject key".to_vec(), [7; 32])
    }

    /// A log as the SQLite era wrote it: 40 records (the first 5 and the
    /// ninth pruned by retention: its clock order is not the log's),
    /// every tenth about the citizen, and a witnessed checkpoint at 30.
    fn legacy_log(path: &Path, keys: &LogKeys) -> (Vec<Vec<u8>>, Hash) {
        let records: Vec<LogRecord> = (0..40u64)
            .map(|i| LogRecord {
                at_ms: 1000 + i as i64,
                message_id: format!("m-{i}"),
                data_subject: if i % 10 == 0 {
                    "001099012345"
                } else {
                    "079099000001"
                }
                .into(),
                purpose: "purpose".into(),
                ..Default::default()
            })
            .collect();
        let leaves = fixture::write(path, keys, &records, |i| i < 5 || i == 8);
        let root_at_30 = merkle::root(
            &leaves[..30]
                .iter()
                .map(|l| merkle::leaf_hash(l))
                .collect::<Vec<_>>(),
        );
        fixture::add_checkpoint(
            path,
            &checkpoints::StoredCheckpoint {
                tree_size: 30,
                root: root_at_30,
                created_at_ms: 5,
                signature: vec![1],
                countersignature: vec![2],
                witnessed_at_ms: 6,
            },
        );
        (leaves, root_at_30)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sqlite_era_log_moves_into_segments_with_the_same_tree() {
        let home = tempfile::tempdir().unwrap();
        let old = home.path().join("messagelog.db");
        let dir = home.path().join("messagelog");
        let (leaves, root_at_30) = legacy_log(&old, &keys());
        let moved = migrate(&old, &dir, &keys()).unwrap().unwrap();
        assert_eq!(
            moved,
            Migrated {
                records: 40,
                pruned: 6,
                checkpoints: 1
            }
        );
        // Read back and found to be the old tree, the old file is gone
        // (its first version kept officials and purposes in clear).
        let left: Vec<_> = std::fs::read_dir(home.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["messagelog".to_string()], "{left:?}");
        assert_eq!(migrate(&old, &dir, &keys()).unwrap(), None, "once");

        // The server goes on writing where the old log stopped.
        let log = SegmentLog::open(&dir, keys()).unwrap();
        log.append(LogRecord {
            at_ms: 2000,
            message_id: "after".into(),
            data_subject: "001099012345".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        log.close();
        let r = LogReader::open(&dir, keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 42, "40 moved, the move's record, 1");
        for (i, leaf) in leaves.iter().enumerate().skip(5).filter(|(i, _)| *i != 8) {
            assert_eq!(r.leaf(i as u64).unwrap().as_ref(), Some(leaf), "leaf {i}");
        }
        assert_eq!(r.leaf(2).unwrap(), None, "pruned stays pruned");
        assert_eq!(r.leaf(8).unwrap(), None);
        // The move says what it found pruned, in the tree: 6 of the 40
        // records before it, the newest at 1008, their leaf hashes'
        // digest; the citizen's trace shows it.
        let (at, bytes) = r.latest_retention(42).unwrap().unwrap();
        let said: lienthong_proto::pb::trace::v1::LogLeaf =
            prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(at, 40);
        assert_eq!(
            (
                said.message_id.as_str(),
                said.pruned_from,
                said.pruned_to,
                said.pruned_through_unix_ms
            ),
            ("moved-from-sqlite-40-pruned-6", 0, 40, 1008)
        );
        let hashes: Vec<u8> = [0, 1, 2, 3, 4, 8]
            .iter()
            .flat_map(|&i| merkle::leaf_hash(&leaves[i]))
            .collect();
        assert_eq!(
            said.pruned_leaves_digest,
            lienthong_proto::sha256(&hashes).to_vec()
        );
        // What the registry's witness checks: the first checkpoint after
        // the move is consistent with the last one before it.
        let cp = r.latest_checkpoint().unwrap().unwrap();
        assert_eq!((cp.tree_size, cp.root), (30, root_at_30));
        assert_eq!(r.root(30).unwrap(), root_at_30);
        let proof = r.consistency_proof(30, 42).unwrap();
        assert!(merkle::verify_consistency(
            30,
            42,
            &root_at_30,
            &r.root(42).unwrap(),
            &proof
        ));
        // Old and new records of the citizen are found (old ones by their
        // keyed hash, new ones by commitment).
        let found = r.about("001099012345", 0, i64::MAX, 0, 100).unwrap();
        let at: Vec<u64> = found.iter().map(|f| f.leaf_index).collect();
        assert_eq!(at, vec![41, 30, 20, 10]);
        assert_eq!(r.subject_of(10).unwrap().as_deref(), Some("001099012345"));
        assert_eq!(
            r.audit(0, u64::MAX).unwrap().mismatches,
            Vec::<String>::new()
        );
        // Only those the move named: another record of the moved segment
        // marked as kept by its hash alone (below the move's record, among
        // pruned ones) is reported, in a copy of the log.
        let copy = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
        }
        {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(crate::locations::path(copy.path()))
                .unwrap();
            let mut flags = [0u8; 1];
            f.read_exact_at(&mut flags, 7 * crate::locations::ENTRY + 23)
                .unwrap();
            f.write_all_at(&[flags[0] | 1], 7 * crate::locations::ENTRY + 23)
                .unwrap();
        }
        let found = LogReader::open(copy.path(), keys())
            .unwrap()
            .audit(0, u64::MAX)
            .unwrap()
            .mismatches;
        assert!(
            found
                .iter()
                .any(|m| m.starts_with("record 7: only its hash is kept")),
            "{found:?}"
        );

        // Retention takes the moved segment in its turn, the records
        // pruned before the move with it, and the audit stays clean.
        let plan = r
            .plan_prune(i64::MAX, 3000)
            .unwrap()
            .expect("the moved segment");
        assert_eq!((plan.marker.from, plan.marker.to), (0, 41));
        let log = SegmentLog::open(&dir, keys()).unwrap();
        log.append(plan.record(3000)).await.unwrap();
        log.close();
        assert_eq!(r.prune(&plan.marker).unwrap(), 41);
        assert_eq!(
            r.audit(0, u64::MAX).unwrap().mismatches,
            Vec::<String>::new()
        );
        let found = r.about("001099012345", 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(
            found.iter().map(|f| f.leaf_index).collect::<Vec<_>>(),
            vec![41]
        );
    }
}
