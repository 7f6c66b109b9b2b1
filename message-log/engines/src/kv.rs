//! fjall and redb as the log's engine: the same group commit as our writer
//! (a thread takes whatever has queued, up to 1024 records, commits it
//! durably, then acknowledges each), each record sealed exactly as a
//! segment seals it and stored under its big-endian position, and — in the
//! same durable batch, since there is no indexer behind — what a reader
//! needs: the keyed subject hash and position, the message id's position,
//! and the Merkle tree's completed nodes (about two a record).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use lienthong_message_log::keys::SubjectHasher;
use lienthong_message_log::leaf::leaf_bytes_with;
use lienthong_message_log::record::{Made, SegmentKey, Stored};
use lienthong_message_log::{Appended, LogError, LogKeys, LogRecord, MessageLog};
use lienthong_proto::canonical::subject_commitment;
use lienthong_proto::merkle::{Hash, leaf_hash, node_hash};
use lienthong_proto::pb::trace::v1::LogLeaf;
use prost::Message;
use tokio::sync::oneshot;

use crate::common::{self, Reopen, Run, SUBJECT};

/// Most records in one commit (as our writer).
const MAX_BATCH: usize = 1024;

/// One record, ready to store.
pub struct Prepared {
    pub position: [u8; 8],
    pub sealed: Vec<u8>,
    /// HMAC-SHA256 of the data subject under the subject key, then the
    /// position: a prefix scan finds a subject's records in order.
    pub subject: [u8; 40],
    pub message_id: String,
}

/// A tree node's key: level, then index (big-endian).
pub type NodeKey = [u8; 9];

pub fn node_key(level: u8, index: u64) -> NodeKey {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// A key-value engine holding the log.
pub trait Store: Clone + Send + Sync + 'static {
    const NAME: &'static str;
    fn open(dir: &Path) -> Self;
    /// Stores one group commit atomically and durably.
    fn commit(&self, records: &[Prepared], nodes: &[(NodeKey, Hash)]);
    /// The newest `limit` positions under `subject` (a 32-byte keyed hash),
    /// newest first, each with its sealed record.
    fn about(&self, subject: &[u8; 32], limit: usize) -> Vec<(u64, Vec<u8>)>;
    /// The number of records, and a node by key (to rebuild the frontier).
    fn size(&self) -> u64;
    fn node(&self, key: &NodeKey) -> Option<Hash>;
    /// Closes cleanly.
    fn close(self);
    /// How the bytes on disk split, per record.
    fn parts(dir: &Path, n: u64) -> String;
}

/// The tree's right edge: `frontier[l]` is the completed subtree of level
/// `l` still waiting for its right sibling (when bit `l` of the size is
/// set).
#[derive(Default)]
pub struct Frontier {
    size: u64,
    pending: Vec<Hash>,
}

impl Frontier {
    /// Adds a leaf; pushes every node it completes (the leaf included).
    pub fn push(&mut self, leaf: Hash, nodes: &mut Vec<(NodeKey, Hash)>) {
        let (mut level, mut index, mut hash) = (0usize, self.size, leaf);
        nodes.push((node_key(0, index), hash));
        while index & 1 == 1 {
            hash = node_hash(&self.pending[level], &hash);
            level += 1;
            index >>= 1;
            nodes.push((node_key(level as u8, index), hash));
        }
        if self.pending.len() <= level {
            self.pending.resize(level + 1, [0; 32]);
        }
        self.pending[level] = hash;
        self.size += 1;
    }

    /// The frontier of a tree of `size` leaves, from its stored nodes.
    pub fn load(size: u64, node: impl Fn(&NodeKey) -> Option<Hash>) -> Frontier {
        let mut pending = vec![[0; 32]; 64 - size.leading_zeros() as usize];
        for (level, slot) in pending.iter_mut().enumerate() {
            if size >> level & 1 == 1 {
                *slot = node(&node_key(level as u8, (size >> level) - 1)).expect("frontier node");
            }
        }
        Frontier { size, pending }
    }

    /// The root (RFC 6962) of the tree so far.
    pub fn root(&self) -> Hash {
        let mut root: Option<Hash> = None;
        for (level, h) in self.pending.iter().enumerate() {
            if self.size >> level & 1 == 1 {
                root = Some(match root {
                    None => *h,
                    Some(r) => node_hash(h, &r),
                });
            }
        }
        root.unwrap_or_else(|| lienthong_proto::sha256(&[]))
    }
}

/// A record, its keyed subject hash, and who waits for it.
type Job = (LogRecord, [u8; 32], oneshot::Sender<Result<(), LogError>>);

/// A log over a [`Store`], with our writer's group commit.
pub struct KvLog {
    tx: mpsc::Sender<Job>,
    subjects: SubjectHasher,
    commits: Arc<AtomicU64>,
}

impl MessageLog for KvLog {
    fn append(&self, record: LogRecord) -> Appended {
        let (done, wait) = oneshot::channel();
        // As our writer: the keyed subject hash is made on the appender's
        // thread, its key prepared once.
        let subject = self.subjects.hash(&record.data_subject);
        let sent = self.tx.send((record, subject, done));
        Box::pin(async move {
            sent.map_err(|_| LogError("the committer has stopped".into()))?;
            wait.await
                .map_err(|_| LogError("the committer has stopped".into()))?
        })
    }
}

/// The sealing key: one fixed segment key (a real log would draw a salt
/// per file or per restart; the cost per record is the same).
fn sealing_key(keys: &LogKeys) -> SegmentKey {
    SegmentKey::derive(keys, 1, &[5; 32]).expect("segment key")
}

/// What our writer keeps of a record (`writer::stored`, for a record that
/// is not withheld, as all of log_scale's are).
fn stored(
    r: &LogRecord,
    subject_salt: &[u8],
    envelope_digest: Option<[u8; 32]>,
) -> (Stored, [u8; 32]) {
    let subject = subject_commitment(subject_salt, &r.data_subject);
    let stored = Stored {
        leaf: leaf_bytes_with(r, Some(subject), None, envelope_digest),
        envelope: r.envelope.clone(),
        data_subject: r.data_subject.clone(),
        subject_salt: subject_salt.to_vec(),
        ..Default::default()
    };
    (stored, subject)
}

impl KvLog {
    pub fn start<S: Store>(store: S, keys: LogKeys) -> KvLog {
        let (tx, rx) = mpsc::channel::<Job>();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let subjects = keys.subject_hasher();
        std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || {
                let key = sealing_key(&keys);
                let mut frontier = Frontier::load(store.size(), |k| store.node(k));
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    // As our writer: one draw of withheld-commitment salts
                    // per commit (log_scale withholds nothing).
                    let mut salts = vec![0u8; 32 * batch.len()];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salts)
                        .expect("randomness");
                    let mut records = Vec::with_capacity(batch.len());
                    let mut nodes = Vec::with_capacity(2 * batch.len() + 16);
                    for (r, subject_hash, _) in &batch {
                        // As our writer: the subject's salt and the
                        // envelope's digest made once for leaf and seal.
                        let position = frontier.size;
                        let salt = key.subject_salt(position);
                        let digest =
                            (!r.envelope.is_empty()).then(|| lienthong_proto::sha256(&r.envelope));
                        let (s, subject) = stored(r, &salt, digest);
                        let mut sealed = Vec::with_capacity(s.leaf.len() + s.envelope.len() + 64);
                        let hash = leaf_hash(&s.leaf);
                        let made = Made {
                            subject_salt: &salt,
                            envelope_digest: digest.as_ref(),
                            subject_commitment: Some(&subject),
                        };
                        key.seal_with(position, s, made, &mut sealed).expect("seal");
                        frontier.push(hash, &mut nodes);
                        let mut subject = [0u8; 40];
                        subject[..32].copy_from_slice(subject_hash);
                        subject[32..].copy_from_slice(&position.to_be_bytes());
                        records.push(Prepared {
                            position: position.to_be_bytes(),
                            sealed,
                            subject,
                            message_id: r.message_id.clone(),
                        });
                    }
                    store.commit(&records, &nodes);
                    counted.fetch_add(1, Ordering::Relaxed);
                    for (_, _, done) in batch {
                        let _ = done.send(Ok(()));
                    }
                }
            })
            .expect("committer thread");
        KvLog {
            tx,
            subjects,
            commits,
        }
    }
}

/// A lookup as our reader answers it: the subject's newest `limit`
/// records, each opened and checked against its own leaf (the keyed
/// subject hash and the commitment of the sealed subject).
fn about<S: Store>(store: &S, keys: &LogKeys, key: &SegmentKey, limit: usize) -> usize {
    let subject = keys.subject_hash(SUBJECT);
    let mut found = 0;
    for (position, sealed) in store.about(&subject, limit) {
        let s = key.open(position, &sealed).expect("a record that opens");
        let leaf = LogLeaf::decode(s.leaf.as_slice()).expect("leaf");
        assert_eq!(keys.subject_hash(&s.data_subject), subject);
        s.check(&leaf, keys)
            .expect("sealed subject matches its leaf");
        found += 1;
    }
    found
}

pub async fn run<S: Store>(dir: &Path, n: u64, appenders: usize) -> Run {
    let keys = common::keys();
    std::fs::create_dir_all(dir).expect("dir");
    let store = S::open(dir);
    let log = Arc::new(KvLog::start(store.clone(), keys.clone()));
    let commits = log.commits.clone();

    let written_before = common::written();
    let cpu_before = common::cpu();
    let took = common::drive(log.clone(), n, appenders).await;
    let cpu = common::cpu() - cpu_before;
    let later = common::settle(Duration::from_secs(60));
    let written_after = common::written();
    let written = (written_after.0 - written_before.0) / n;
    let dirtied = (written_after.1 - written_before.1) / n;
    assert_eq!(store.size(), n);

    let key = sealing_key(&keys);
    let mut lookups = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let found = about(&store, &keys, &key, 10);
        lookups.push(t.elapsed());
        assert_eq!(found as u64, 10.min(n / 1000));
    }
    let (bytes, allocated) = common::bytes_under(dir, "");
    Run {
        engine: S::NAME.into(),
        n,
        rate: n as f64 / took.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
        later_cpu_us: later.as_secs_f64() * 1e6 / n as f64,
        bytes,
        allocated,
        parts: S::parts(dir, n),
        lookup_us: common::median(lookups).as_secs_f64() * 1e6,
        written,
        dirtied,
        rss_mib: common::peak_rss_mib(),
        per_commit: n as f64 / commits.load(Ordering::Relaxed).max(1) as f64,
    }
}

/// Opens the store again as a restarted server would before its first
/// commit: the engine's own recovery, the size, and the tree's frontier.
pub fn reopen<S: Store>(dir: &Path, n: u64) -> Reopen {
    let t = Instant::now();
    let store = S::open(dir);
    let size = store.size();
    let frontier = Frontier::load(size, |k| store.node(k));
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let _ = frontier.root();
    let keys = common::keys();
    assert_eq!(
        about(&store, &keys, &sealing_key(&keys), 10) as u64,
        10.min(n / 1000)
    );
    store.close();
    Reopen { ms, records: size }
}

// ---- fjall -----------------------------------------------------------------

/// fjall 3 (an LSM tree): one `Database`, a keyspace (fjall 2's
/// "partition") each for records, subjects, message ids and nodes; one
/// `WriteBatch` per group commit, committed with `PersistMode::SyncData`
/// (the journal written and fdatasync'd before `commit` returns). Its
/// defaults, or with `SMALL_JOURNAL` its journals capped at the least it
/// allows (64 MiB, against 512 MiB): memtables are flushed sooner, so
/// there is less journal to replay when it opens.
#[derive(Clone)]
pub struct Fjall<const SMALL_JOURNAL: bool> {
    db: fjall::Database,
    records: fjall::Keyspace,
    subjects: fjall::Keyspace,
    messages: fjall::Keyspace,
    nodes: fjall::Keyspace,
}

impl<const SMALL_JOURNAL: bool> Store for Fjall<SMALL_JOURNAL> {
    const NAME: &'static str = if SMALL_JOURNAL {
        "fjall-64mib-journal"
    } else {
        "fjall"
    };

    fn open(dir: &Path) -> Self {
        let mut builder = fjall::Database::builder(dir);
        if SMALL_JOURNAL {
            builder = builder.max_journaling_size(64 << 20);
        }
        let db = builder.open().expect("fjall open");
        let ks = |name| {
            db.keyspace(name, fjall::KeyspaceCreateOptions::default)
                .expect("keyspace")
        };
        Fjall {
            records: ks("records"),
            subjects: ks("subjects"),
            messages: ks("messages"),
            nodes: ks("nodes"),
            db,
        }
    }

    fn commit(&self, records: &[Prepared], nodes: &[(NodeKey, Hash)]) {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for r in records {
            batch.insert(&self.records, r.position, r.sealed.as_slice());
            batch.insert(&self.subjects, r.subject, []);
            batch.insert(&self.messages, r.message_id.as_bytes(), r.position);
        }
        for (k, h) in nodes {
            batch.insert(&self.nodes, *k, *h);
        }
        batch.commit().expect("fjall commit");
    }

    fn about(&self, subject: &[u8; 32], limit: usize) -> Vec<(u64, Vec<u8>)> {
        self.subjects
            .prefix(subject)
            .rev()
            .take(limit)
            .map(|g| {
                let k = g.key().expect("subject key");
                let position: [u8; 8] = k[32..40].try_into().expect("position");
                let sealed = self
                    .records
                    .get(position)
                    .expect("get")
                    .expect("the record of an index entry");
                (u64::from_be_bytes(position), sealed.to_vec())
            })
            .collect()
    }

    fn size(&self) -> u64 {
        self.records.last_key_value().map_or(0, |g| {
            let k = g.key().expect("last key");
            u64::from_be_bytes(k[..8].try_into().expect("position")) + 1
        })
    }

    fn node(&self, key: &NodeKey) -> Option<Hash> {
        self.nodes
            .get(key)
            .expect("node")
            .map(|v| v[..].try_into().expect("32 bytes"))
    }

    fn parts(dir: &Path, n: u64) -> String {
        format!(
            "journals:{},keyspaces:{}",
            common::bytes_under(dir, ".jnl").1 / n,
            common::bytes_under(&dir.join("keyspaces"), "").1 / n
        )
    }

    fn close(self) {
        // Dropping the last handle persists the journal and stops the
        // background threads.
    }
}

// ---- redb ------------------------------------------------------------------

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const RECORDS: TableDefinition<&[u8; 8], &[u8]> = TableDefinition::new("records");
const SUBJECTS: TableDefinition<&[u8; 40], ()> = TableDefinition::new("subjects");
const MESSAGES: TableDefinition<&str, &[u8; 8]> = TableDefinition::new("messages");
const NODES: TableDefinition<&[u8; 9], &[u8; 32]> = TableDefinition::new("nodes");

/// redb 4 (a copy-on-write B-tree in one file), with its defaults (1 GiB
/// cache, 1-phase commit with checksums, no quick-repair: a full repair
/// after a crash): one write transaction per group commit with
/// `Durability::Immediate`. With `QUICK_REPAIR`, each commit also saves
/// the allocator state (and commits in two phases) so that opening after a
/// crash need not walk the file.
#[derive(Clone)]
pub struct Redb<const QUICK_REPAIR: bool> {
    db: Arc<redb::Database>,
}

impl<const QUICK_REPAIR: bool> Store for Redb<QUICK_REPAIR> {
    const NAME: &'static str = if QUICK_REPAIR {
        "redb-quick-repair"
    } else {
        "redb"
    };

    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("log.redb")).expect("redb open");
        let tx = db.begin_write().expect("write");
        tx.open_table(RECORDS).expect("table");
        tx.open_table(SUBJECTS).expect("table");
        tx.open_table(MESSAGES).expect("table");
        tx.open_table(NODES).expect("table");
        tx.commit().expect("commit");
        Redb { db: Arc::new(db) }
    }

    fn commit(&self, records: &[Prepared], nodes: &[(NodeKey, Hash)]) {
        let mut tx = self.db.begin_write().expect("begin");
        tx.set_durability(redb::Durability::Immediate)
            .expect("durability");
        tx.set_quick_repair(QUICK_REPAIR);
        {
            let mut t = tx.open_table(RECORDS).expect("records");
            for r in records {
                t.insert(&r.position, r.sealed.as_slice()).expect("insert");
            }
            let mut t = tx.open_table(SUBJECTS).expect("subjects");
            for r in records {
                t.insert(&r.subject, ()).expect("insert");
            }
            let mut t = tx.open_table(MESSAGES).expect("messages");
            for r in records {
                t.insert(r.message_id.as_str(), &r.position)
                    .expect("insert");
            }
            let mut t = tx.open_table(NODES).expect("nodes");
            for (k, h) in nodes {
                t.insert(k, h).expect("insert");
            }
        }
        tx.commit().expect("redb commit");
    }

    fn about(&self, subject: &[u8; 32], limit: usize) -> Vec<(u64, Vec<u8>)> {
        let tx = self.db.begin_read().expect("read");
        let subjects = tx.open_table(SUBJECTS).expect("subjects");
        let records = tx.open_table(RECORDS).expect("records");
        let (mut lo, mut hi) = ([0u8; 40], [0xffu8; 40]);
        lo[..32].copy_from_slice(subject);
        hi[..32].copy_from_slice(subject);
        subjects
            .range::<&[u8; 40]>(&lo..=&hi)
            .expect("range")
            .rev()
            .take(limit)
            .map(|e| {
                let (k, _) = e.expect("subject entry");
                let position: [u8; 8] = k.value()[32..40].try_into().expect("position");
                let sealed = records
                    .get(&position)
                    .expect("get")
                    .expect("the record of an index entry");
                (u64::from_be_bytes(position), sealed.value().to_vec())
            })
            .collect()
    }

    fn size(&self) -> u64 {
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(RECORDS).expect("records");
        t.last()
            .expect("last")
            .map_or(0, |(k, _)| u64::from_be_bytes(*k.value()) + 1)
    }

    fn node(&self, key: &NodeKey) -> Option<Hash> {
        let tx = self.db.begin_read().expect("read");
        let t = tx.open_table(NODES).expect("nodes");
        t.get(key).expect("node").map(|v| *v.value())
    }

    fn parts(dir: &Path, n: u64) -> String {
        format!("file:{}", common::bytes_under(dir, "").1 / n)
    }

    fn close(self) {
        if let Ok(db) = Arc::try_unwrap(self.db) {
            db.close().expect("redb close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The nodes the frontier stores are RFC 6962's: every complete
    /// subtree's hash, and the root folds from the frontier.
    #[test]
    fn the_frontier_stores_every_complete_subtree() {
        let leaves: Vec<Hash> = (0..300u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut f = Frontier::default();
        let mut nodes = Vec::new();
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l, &mut nodes);
            let n = i + 1;
            assert_eq!(f.root(), lienthong_proto::merkle::root(&leaves[..n]));
            let stored: HashMap<NodeKey, Hash> = nodes.iter().copied().collect();
            let loaded = Frontier::load(n as u64, |k| stored.get(k).copied());
            assert_eq!(loaded.root(), f.root());
        }
        let stored: HashMap<NodeKey, Hash> = nodes.iter().copied().collect();
        for level in 0..9u8 {
            let width = 1usize << level;
            for index in 0..leaves.len() / width {
                let expected =
                    lienthong_proto::merkle::root(&leaves[index * width..(index + 1) * width]);
                assert_eq!(stored[&node_key(level, index as u64)], expected);
            }
        }
        // About two nodes a record.
        assert_eq!(
            nodes.len(),
            2 * leaves.len() - leaves.len().count_ones() as usize
        );
    }
}
