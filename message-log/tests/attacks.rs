//! A security review's attacks on the message log, as an operator of one
//! security server who controls its files (and, where a test says so, holds
//! its log keys) would try them, plus crash and consistency faults.
//!
//! Each test asserts the safe behaviour: the attack is refused, reported by
//! the self-audit, or makes the log stop rather than answer short.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lienthong_message_log::record::{SegmentKey, Stored};
use lienthong_message_log::retention::Marker;
use lienthong_message_log::segment::{self, FrameBuilder, Header, KIND_PRUNED};
use lienthong_message_log::writer::Options;
use lienthong_message_log::{
    LogKeys, LogReader, LogRecord, MessageLog, SegmentLog, StoredCheckpoint,
};
use lienthong_message_log::{index, locations};
use lienthong_proto::pb::trace::v1::LogLeaf;
use prost::Message;

const OWNER: &str = "VN/GOV/000102/ss1";
const CITIZEN: &str = "001099012345";
const OTHER: &str = "079099000001";
const OFFICIAL: &str = "officer-nguyen-van-a";
const PURPOSE: &str = "hồ sơ điều tra 2026/114";

fn keys() -> LogKeys {
    LogKeys::new(OWNER, b"subject key".to_vec(), [7; 32])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Record `i`: about the citizen when `i % 5 == 0`, dated now (so never
/// prunable by a retention period of any length).
fn record(i: usize) -> LogRecord {
    let subject = if i.is_multiple_of(5) { CITIZEN } else { OTHER };
    LogRecord {
        at_ms: now_ms(),
        message_id: format!("m-{i}"),
        client: "VN/GOV/000102/police".into(),
        service: "VN/GOV/000200/population/lienthong.population.v1.Citizens".into(),
        method: "Get".into(),
        data_subject: subject.into(),
        purpose: PURPOSE.into(),
        user_id: OFFICIAL.into(),
        envelope: format!("envelope naming {subject}").into_bytes(),
        ..Default::default()
    }
}

/// Writes records `0..n`, one commit (one frame) each, and closes the log.
async fn write(dir: &Path, n: usize, options: Options) {
    let log = SegmentLog::open_with(dir, keys(), options).unwrap();
    for i in 0..n {
        log.append(record(i)).await.unwrap();
    }
    log.close();
}

/// Writes records `0..40` dated 1000 + i Unix ms (prunable by any
/// retention period), `edit` changing each first, in segments of a few
/// records; the log is left open.
async fn old_records(dir: &Path, edit: impl Fn(&mut LogRecord)) -> SegmentLog {
    let log = SegmentLog::open_with(dir, keys(), small()).unwrap();
    for i in 0..40 {
        let mut r = record(i);
        r.at_ms = 1000 + i as i64;
        edit(&mut r);
        log.append(r).await.unwrap();
    }
    log
}

fn small() -> Options {
    Options {
        segment_bytes: 4096,
    }
}

fn reader(dir: &Path) -> LogReader {
    LogReader::open(dir, keys()).unwrap()
}

fn audit(dir: &Path) -> Vec<String> {
    reader(dir).audit(0, u64::MAX).unwrap().mismatches
}

fn citizen_records(dir: &Path) -> Vec<u64> {
    reader(dir)
        .about(CITIZEN, 0, i64::MAX, 0, 1000)
        .unwrap()
        .iter()
        .map(|r| r.leaf_index)
        .collect()
}

/// A witnessed checkpoint of the log as it is now (signatures are not
/// checked by the crate; the registry's are in `checkpoints.db`).
fn witness(dir: &Path) -> StoredCheckpoint {
    let r = reader(dir);
    let size = r.tree_size().unwrap();
    let c = StoredCheckpoint {
        tree_size: size,
        root: r.root(size).unwrap(),
        created_at_ms: now_ms(),
        signature: b"server".to_vec(),
        countersignature: b"registry".to_vec(),
        witnessed_at_ms: now_ms(),
    };
    r.record_checkpoint(&c).unwrap();
    c
}

/// The segment holding record `index`.
fn segment_of(dir: &Path, index: u64) -> PathBuf {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .rev()
        .find(|(f, _)| *f <= index)
        .unwrap()
        .1
}

/// (kind, bytes) of one entry.
type Entry = (u8, Vec<u8>);

/// A segment's header bytes and its frames: (first, [(kind, bytes)]), plus
/// where each frame starts.
struct Parsed {
    header: Header,
    header_bytes: Vec<u8>,
    frames: Vec<(u64, Vec<Entry>)>,
    offsets: Vec<(u64, u64)>,
}

fn parse(path: &Path) -> Parsed {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let (header, mut at) = Header::read(&f).unwrap();
    let mut header_bytes = vec![0; at as usize];
    f.read_exact_at(&mut header_bytes, 0).unwrap();
    let mut frames = Vec::new();
    let mut offsets = Vec::new();
    while let Some(fr) = segment::read_frame(&f, at, len).unwrap() {
        frames.push((
            fr.first,
            fr.entries.into_iter().map(|e| (e.kind, e.bytes)).collect(),
        ));
        offsets.push((fr.offset, fr.end));
        at = fr.end;
    }
    Parsed {
        header,
        header_bytes,
        frames,
        offsets,
    }
}

/// Writes a segment back with valid checksums (they are unkeyed CRC-32s).
fn unparse(path: &Path, p: &Parsed) {
    let mut out = p.header_bytes.clone();
    for (first, entries) in &p.frames {
        let mut b = FrameBuilder::new(*first);
        for (kind, bytes) in entries {
            b.push(*kind, |o| {
                o.extend_from_slice(bytes);
                Ok(())
            })
            .unwrap();
        }
        out.extend_from_slice(&b.finish());
    }
    std::fs::write(path, out).unwrap();
}

fn entry_mut(p: &mut Parsed, index: u64) -> &mut (u8, Vec<u8>) {
    for (first, entries) in &mut p.frames {
        if *first <= index && index < *first + entries.len() as u64 {
            return &mut entries[(index - *first) as usize];
        }
    }
    panic!("record {index} is not in this segment");
}

/// With the log keys: opens record `index`, lets `edit` change it, and
/// seals it again in place (same segment key, same position).
fn reseal(dir: &Path, index: u64, edit: impl FnOnce(&mut Stored)) {
    let path = segment_of(dir, index);
    let mut p = parse(&path);
    let key = SegmentKey::derive(&keys(), p.header.key_id, &p.header.salt).unwrap();
    let (_, bytes) = entry_mut(&mut p, index);
    let mut stored = key.open(index, bytes).unwrap();
    edit(&mut stored);
    let mut sealed = Vec::new();
    key.seal_into(index, &stored, &mut sealed).unwrap();
    *bytes = sealed;
    unparse(&path, &p);
}

/// The stored leaf hashes of records `[from, to)` (the tree's level-0
/// tile, no key needed).
fn leaf_hashes(dir: &Path, from: u64, to: u64) -> Vec<[u8; 32]> {
    let tile = std::fs::read(lienthong_message_log::tiles::path(dir, 0)).unwrap();
    (from..to)
        .map(|i| tile[i as usize * 32..][..32].try_into().unwrap())
        .collect()
}

/// A retention marker for records `[from, to)`, made from the tiles' leaf
/// hashes (no key needed), written into the log's directory.
fn forge_marker(dir: &Path, from: u64, to: u64) {
    Marker {
        from,
        to,
        pruned_at_ms: now_ms(),
        leaf_hashes: leaf_hashes(dir, from, to),
    }
    .write(dir)
    .unwrap();
}

/// Thirty records written by a log left open, a reader following it as a
/// server's does (it has indexed them all), and then the index's position
/// set to `size` behind their backs.
async fn served_with_position(dir: &Path, size: u64) -> (SegmentLog, LogReader) {
    let log = SegmentLog::open(dir, keys()).unwrap();
    for i in 0..30 {
        log.append(record(i)).await.unwrap();
    }
    let r = reader(dir).following(log.acknowledged());
    assert_eq!(r.tree_size().unwrap(), 30);
    let db = rusqlite::Connection::open(index::path(dir)).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db.execute("UPDATE position SET size = ?1", [size as i64])
        .unwrap();
    (log, r)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Attacks that are caught.
// ---------------------------------------------------------------------------

/// Two sealed records swapped between positions (no key needed): neither
/// opens at its new position, and the audit says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_swapped_between_positions_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let _ = reader(dir.path()).tree_size().unwrap();
    let path = segment_of(dir.path(), 1);
    let mut p = parse(&path);
    // Records 1 and 2 are about the same (other) subject: same length, so
    // every offset in the index stays right.
    let a = entry_mut(&mut p, 1).1.clone();
    let b = std::mem::replace(&mut entry_mut(&mut p, 2).1, a);
    assert_eq!(b.len(), entry_mut(&mut p, 2).1.len());
    entry_mut(&mut p, 1).1 = b;
    unparse(&path, &p);
    let found = audit(dir.path());
    assert!(
        found.iter().any(|m| m.starts_with("record 1:"))
            && found.iter().any(|m| m.starts_with("record 2:")),
        "{found:?}"
    );
}

/// With the keys, a record's leaf rewritten in place (its subject commitment)
/// while the index still holds the old tree: the record no longer hashes
/// to its tree leaf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_rewritten_with_the_keys_is_found_while_the_index_remembers_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let _ = reader(dir.path()).tree_size().unwrap();
    // Same length, so the index's offsets stay right: the record, leaf
    // and all, now names another citizen.
    let segment = segment_of(dir.path(), 5);
    let before = std::fs::metadata(&segment).unwrap().len();
    reseal(dir.path(), 5, |s| {
        let other = "001099012346";
        let mut leaf = LogLeaf::decode(s.leaf.as_slice()).unwrap();
        leaf.data_subject_commitment =
            lienthong_proto::canonical::subject_commitment(&s.subject_salt, other).to_vec();
        s.leaf = leaf.encode_to_vec();
        s.data_subject = other.into();
    });
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), before);
    let found = audit(dir.path());
    assert!(
        found
            .iter()
            .any(|m| m.contains("do not hash to the tree's leaf")),
        "{found:?}"
    );
}

/// Another server's segment (same seal key even) with its header's owner
/// rewritten to ours — the header checksum is unkeyed — still does not
/// open: the owner is in every record's associated data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_segment_relabelled_as_ours_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let _ = reader(dir.path()).tree_size().unwrap();
    let other = tempfile::tempdir().unwrap();
    let theirs = LogKeys::new("VN/GOV/000999/ss9", b"subject key".to_vec(), [7; 32]);
    {
        let log = SegmentLog::open(other.path(), theirs).unwrap();
        for i in 0..10 {
            log.append(record(i)).await.unwrap();
        }
        log.close();
    }
    let theirs_path = segment::list(other.path()).unwrap().remove(0).1;
    let mut p = parse(&theirs_path);
    p.header.owner = OWNER.into();
    p.header_bytes = p.header.encode();
    let ours = segment_of(dir.path(), 0);
    unparse(&ours, &p);
    index::remove(dir.path()).unwrap();
    let r = reader(dir.path());
    assert_eq!(r.tree_size().unwrap(), 0, "nothing of theirs is indexed");
    // With the index of our own records kept, the audit names them.
    let dir2 = tempfile::tempdir().unwrap();
    write(dir2.path(), 10, Options::default()).await;
    let _ = reader(dir2.path()).tree_size().unwrap();
    unparse(&segment_of(dir2.path(), 0), &p);
    let found = audit(dir2.path());
    assert!(
        found.iter().any(|m| m.contains("does not open")),
        "{found:?}"
    );
}

/// A torn commit cut back after a crash: the positions it held are sealed
/// again only in a new segment, under a key derived with a fresh salt
/// (no nonce is reused under one segment key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_cut_back_after_a_crash_is_sealed_again_under_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 5, Options::default()).await;
    // A whole commit for position 5 reached the disk but its checksum did
    // not (torn): recovery cuts it.
    let path = segment_of(dir.path(), 4);
    let before = std::fs::read(&path).unwrap();
    let p = parse(&path);
    let key = SegmentKey::derive(&keys(), p.header.key_id, &p.header.salt).unwrap();
    let mut b = FrameBuilder::new(5);
    b.push(0, |o| {
        key.seal_into(
            5,
            &Stored {
                leaf: b"torn".to_vec(),
                ..Default::default()
            },
            o,
        )
    })
    .unwrap();
    let mut torn = b.finish();
    let last = torn.len() - 1;
    torn[last] ^= 1;
    let mut bytes = before.clone();
    bytes.extend_from_slice(&torn);
    std::fs::write(&path, bytes).unwrap();
    let log = SegmentLog::open(dir.path(), keys()).unwrap();
    assert_eq!(log.recovered().size, 5);
    log.append(record(5)).await.unwrap();
    log.close();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the torn commit is cut"
    );
    let salts: Vec<[u8; 32]> = segment::list(dir.path())
        .unwrap()
        .iter()
        .map(|(_, p)| parse(p).header.salt)
        .collect();
    assert_eq!(salts.len(), 2, "one segment per start");
    let mut unique = salts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), salts.len(), "every segment has its own salt");
    assert!(
        segment::list(dir.path())
            .unwrap()
            .iter()
            .any(|(f, _)| *f == 5)
    );
    assert!(audit(dir.path()).is_empty());
}

/// Nothing personal in any file of the log's directory — segments, index,
/// checkpoints, retention markers, torn tails — nor an unkeyed hash of the
/// subject, also for withheld records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_the_log_directory_reveals_nothing_personal() {
    let dir = tempfile::tempdir().unwrap();
    let log = old_records(dir.path(), |r| {
        if r.message_id == "m-7" {
            r.withheld_until_ms = 2000;
        }
        r.body = Some(bytes::Bytes::from(format!("body naming {CITIZEN}")));
    })
    .await;
    let r = reader(dir.path());
    while let Some(plan) = r.plan_prune(10_000, 20_000).unwrap() {
        log.append(plan.record(20_000)).await.unwrap();
        r.prune(&plan.marker).unwrap();
    }
    witness(dir.path());
    drop(r);
    log.close();
    // A torn tail kept beside its segment.
    let (_, last) = segment::list(dir.path()).unwrap().pop().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, b"LTCF\x00\x00\x10\x00junk").unwrap();
    drop(f);
    SegmentLog::open(dir.path(), keys()).unwrap().close();
    let mut all = Vec::new();
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        names.push(e.file_name().to_string_lossy().into_owned());
        all.extend(std::fs::read(e.path()).unwrap());
    }
    assert!(names.iter().any(|n| n.contains(".torn-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("pruned-")), "{names:?}");
    for secret in [
        CITIZEN,
        OTHER,
        OFFICIAL,
        PURPOSE,
        "envelope naming",
        "body naming",
    ] {
        assert!(!contains(&all, secret.as_bytes()), "{secret:?} in clear");
    }
    for s in [CITIZEN, OTHER] {
        assert!(!contains(&all, &lienthong_proto::sha256(s.as_bytes())));
    }
}

/// An index entry edited to point a withheld record at an old, released
/// one does not get it pruned: retention decides on the record itself,
/// checked against the tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_ignores_index_edits_that_would_prune_a_withheld_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = old_records(dir.path(), |r| {
        if r.message_id == "m-3" {
            r.withheld_until_ms = 1_000_000;
        }
    })
    .await;
    log.close();
    let r = reader(dir.path());
    let _ = r.tree_size().unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(locations::path(dir.path()))
        .unwrap();
    let mut own = [0u8; locations::ENTRY as usize];
    f.read_exact_at(&mut own, 3 * locations::ENTRY).unwrap();
    let mut entry = [0u8; locations::ENTRY as usize];
    f.read_exact_at(&mut entry, 2 * locations::ENTRY).unwrap();
    f.write_all_at(&entry, 3 * locations::ENTRY).unwrap();
    let plan = r.plan_prune(10_000, 20_000);
    assert!(!matches!(plan, Ok(Some(_))), "{plan:?}");
    // Nor does flagging its own entry as a record pruned before migration
    // (whose time retention cannot read).
    let mut flagged = own;
    flagged[23] |= 1;
    f.write_all_at(&flagged, 3 * locations::ENTRY).unwrap();
    let plan = r.plan_prune(10_000, 20_000);
    assert!(!matches!(plan, Ok(Some(_))), "{plan:?}");
    // Nor, with the keys, sealing it again as such a record (its own leaf
    // hash, the tree intact) and rebuilding the index.
    drop(r);
    reseal_as_hash_only(dir.path(), 3);
    let plan = reader(dir.path()).plan_prune(10_000, 20_000);
    assert!(
        plan.as_ref()
            .is_err_and(|e| e.0.contains("record 3: only its hash is kept")),
        "{plan:?}"
    );
}

// ---------------------------------------------------------------------------
// Attacks once unseen (each test was written first, failing, then the
// hole closed).
// ---------------------------------------------------------------------------

/// With the keys: the sealed `data_subject` of the citizen's record is
/// changed (one digit), its leaf — and so the tree — left alone, and the
/// index rebuilt. The sealed subject no longer opens the leaf's
/// `data_subject_commitment`: the index stops at that record and the audit
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resealed_subject_is_found_by_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let cp = witness(dir.path());
    assert_eq!(citizen_records(dir.path()), vec![5, 0]);
    // (The sealed record grows: its commitment no longer matches its
    // subject, so it is kept instead of cut. The index is rebuilt below.)
    reseal(dir.path(), 5, |s| s.data_subject = "001099012346".into());
    index::remove(dir.path()).unwrap();
    let _ = cp;
    let found = audit(dir.path());
    assert!(
        found.iter().any(|m| m.contains("record 5")),
        "the rebuilt index stops at record 5 and says why: {found:?}"
    );
    assert!(
        !found.is_empty(),
        "record 5's sealed subject does not open its leaf's commitment: the audit must say so"
    );
}

/// With the keys: a record's leaf rewritten (withheld until 2100, so the
/// citizen sees only a count) and the index rebuilt from the segments. The
/// rebuilt tree is self-consistent, but the audit compares it with the
/// witnessed checkpoint kept in checkpoints.db and finds the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_leaf_contradicts_the_witnessed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let cp = witness(dir.path());
    reseal(dir.path(), 5, |s| {
        let mut leaf = LogLeaf::decode(s.leaf.as_slice()).unwrap();
        leaf.withheld_until_unix_ms = 4_102_444_800_000;
        s.leaf = leaf.encode_to_vec();
    });
    index::remove(dir.path()).unwrap();
    let r = reader(dir.path());
    assert_ne!(r.root(cp.tree_size).unwrap(), cp.root, "history rewritten");
    let found = audit(dir.path());
    assert!(
        found.iter().any(|m| m.contains("checkpoint")),
        "the root at the witnessed size differs from the witnessed root: {found:?}"
    );
}

/// No key needed: the last three acknowledged commits are cut off the last
/// segment at a frame boundary, and the index rebuilt. Recovery sees a
/// clean end (nothing "torn"), but a witnessed checkpoint covers ten
/// records and the segments hold seven: the audit says so, and the writer
/// refuses to open rather than seal new records at positions 7..10 (a fork).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_tail_cut_below_a_witnessed_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let cp = witness(dir.path());
    let path = segment_of(dir.path(), 9);
    let p = parse(&path);
    let cut_at = p.offsets[p.frames.iter().position(|(f, _)| *f == 7).unwrap()].0;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut_at).unwrap();
    drop(f);
    index::remove(dir.path()).unwrap();
    let tail = segment::recover_tail(dir.path(), false).unwrap();
    assert_eq!((tail.size, tail.cut), (7, 0));
    let r = reader(dir.path());
    assert_eq!(r.tree_size().unwrap(), 7);
    let found = audit(dir.path());
    let refused = SegmentLog::open(dir.path(), keys()).is_err();
    assert!(
        refused || !found.is_empty(),
        "a witnessed checkpoint of {} records but only 7 in the segments: the audit (or opening the log) must say so",
        cp.tree_size
    );
}

/// No key needed: the citizen's sealed record is replaced in its frame by a
/// "pruned before migration" entry (`KIND_PRUNED`) holding its leaf hash,
/// read from index.db; the frame's CRC recomputed and the index rebuilt.
/// Hash-only entries are sealed too, so this one does not open: the index
/// stops there and the audit says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_only_entry_put_in_without_the_keys_is_found() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let cp = witness(dir.path());
    let hash = leaf_hashes(dir.path(), 5, 6)[0];
    let path = segment_of(dir.path(), 5);
    let mut p = parse(&path);
    *entry_mut(&mut p, 5) = (KIND_PRUNED, hash.to_vec());
    unparse(&path, &p);
    index::remove(dir.path()).unwrap();
    let _ = cp;
    let found = audit(dir.path());
    assert!(
        !found.is_empty(),
        "a hash-only entry in a segment the server wrote itself (not by migration) must be reported"
    );
}

/// With the keys: record `x` sealed again as "pruned before migration",
/// holding its own leaf hash, and the index removed (rebuilt on the next
/// read).
fn reseal_as_hash_only(dir: &Path, x: u64) {
    let hash = leaf_hashes(dir, x, x + 1)[0];
    let path = segment_of(dir, x);
    let mut p = parse(&path);
    let key = SegmentKey::derive(&keys(), p.header.key_id, &p.header.salt).unwrap();
    let pruned = Stored {
        pruned_leaf_hash: hash.to_vec(),
        ..Default::default()
    };
    let mut sealed = Vec::new();
    key.seal_into(x, &pruned, &mut sealed).unwrap();
    *entry_mut(&mut p, x) = (KIND_PRUNED, sealed);
    unparse(&path, &p);
    index::remove(dir).unwrap();
}

/// With the keys (the server's own operator): one of the citizen's
/// records sealed again as "pruned before migration", holding its own leaf
/// hash — the tree, its checkpoints and every proof stay as they were —
/// and the index rebuilt, which then gives it no lookup entries. The
/// citizen's lookup no longer finds it; the audit says so, since only the
/// first segment of a log moved from the SQLite era holds such entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_resealed_as_hash_only_with_the_keys_is_found() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 10, Options::default()).await;
    let cp = witness(dir.path());
    let x = 5;
    assert!(citizen_records(dir.path()).contains(&x));
    reseal_as_hash_only(dir.path(), x);
    let r = reader(dir.path());
    assert_eq!(r.root(cp.tree_size).unwrap(), cp.root, "the tree is intact");
    assert!(
        !citizen_records(dir.path()).contains(&x),
        "hidden from the lookup"
    );
    let hidden = "record 5: only its hash is kept, outside a log moved from the SQLite era (a record hidden by someone with the keys)";
    let found = audit(dir.path());
    assert!(found.iter().any(|m| m == hidden), "{found:?}");
    // Nor does the segment's header rewritten to say a move from the
    // SQLite era made it (its time 0; nothing of the tree changes): the
    // move's own record, in the witnessed tree, is not there.
    let path = segment_of(dir.path(), x);
    let mut p = parse(&path);
    p.header_bytes = Header {
        created_ms: 0,
        ..p.header.clone()
    }
    .encode();
    unparse(&path, &p);
    index::remove(dir.path()).unwrap();
    assert!(!citizen_records(dir.path()).contains(&x));
    let found = audit(dir.path());
    assert!(found.iter().any(|m| m == hidden), "{found:?}");
}

/// No key needed: the oldest segment, whose records are minutes old (never
/// prunable), deleted, with a retention marker forged from the leaf hashes
/// in index.db and the index rebuilt. No retention record in the log names
/// the range, so the audit does not take the marker for pruning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_retention_marker_does_not_pass_for_pruning() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 40, small()).await;
    let cp = witness(dir.path());
    let list = segment::list(dir.path()).unwrap();
    assert!(list.len() >= 3);
    let (from, to) = (list[0].0, list[1].0);
    assert!(from == 0 && to > 5, "record 5 is in the first segment");
    forge_marker(dir.path(), from, to);
    std::fs::remove_file(&list[0].1).unwrap();
    index::remove(dir.path()).unwrap();
    let r = reader(dir.path());
    assert_eq!(r.root(cp.tree_size).unwrap(), cp.root, "the tree is intact");
    assert!(
        !citizen_records(dir.path()).contains(&5),
        "record 5 is gone"
    );
    let found = audit(dir.path());
    assert!(
        !found.is_empty(),
        "records pruned with no retention record naming them, minutes after they were written: the audit must say so"
    );
}

/// No key needed: one of the citizen's records made to look pruned in
/// the middle of a live segment — its lookup entries deleted, its entry in
/// `records.loc` marked pruned, and a marker forged for a range around it
/// from the tiles' leaf hashes. The audit does not take the marker for
/// pruning wherever the record lies in it: no retention record names the
/// range, and a segment still holds the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_marked_pruned_inside_a_live_segment_is_found() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 40, small()).await;
    let x = 15;
    assert!(citizen_records(dir.path()).contains(&x));
    let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
    db.execute("DELETE FROM runs WHERE leaf_index = ?1", [x as i64])
        .unwrap();
    drop(db);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(locations::path(dir.path()))
        .unwrap();
    f.write_all_at(&u64::MAX.to_be_bytes(), x * locations::ENTRY)
        .unwrap();
    // The record is not the marker's first: the audit must not check the
    // retention record only there.
    forge_marker(dir.path(), x - 1, x + 1);
    assert!(
        !citizen_records(dir.path()).contains(&x),
        "hidden from lookups"
    );
    let found = audit(dir.path());
    assert!(
        found
            .iter()
            .any(|m| m.contains("the log holds no retention record")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|m| m == &format!("record {x}: marked pruned, but a segment still holds it")),
        "{found:?}"
    );
}

/// Retention in its second period takes the segments holding the first
/// period's retention records too: the markers those records vouched for
/// stay vouched for, by the receipts the audit left beside them, and the
/// audit stays clean. A receipt edited is not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_records_pruned_in_their_turn_still_vouch_for_their_markers() {
    let dir = tempfile::tempdir().unwrap();
    let log = old_records(dir.path(), |_| {}).await;
    let r = reader(dir.path()).following(log.acknowledged());
    let mut first = Vec::new();
    while let Some(plan) = r.plan_prune(10_000, 20_000).unwrap() {
        log.append(plan.record(20_000)).await.unwrap();
        r.prune(&plan.marker).unwrap();
        first.push(plan.marker);
    }
    assert!(!first.is_empty());
    // The audit, which runs all along on a server, leaves the receipts.
    assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
    // More records, so the retention records' segments are not the newest.
    for i in 0..40 {
        let mut rec = record(100 + i);
        rec.at_ms = 25_000;
        log.append(rec).await.unwrap();
    }
    let mut second = 0;
    while let Some(plan) = r.plan_prune(30_000, 40_000).unwrap() {
        log.append(plan.record(40_000)).await.unwrap();
        r.prune(&plan.marker).unwrap();
        second += 1;
    }
    assert!(second > 0);
    let retention_pruned = first.iter().any(|m| {
        r.by_message(&format!("retention-{}-{}", m.from, m.to))
            .unwrap()
            .is_empty()
    });
    assert!(
        retention_pruned,
        "some first-period retention record was pruned"
    );
    let found = r.audit(0, u64::MAX).unwrap().mismatches;
    assert!(found.is_empty(), "{found:?}");
    // A receipt edited: the marker it vouched for is no longer vouched for.
    let m = first
        .iter()
        .find(|m| {
            r.by_message(&format!("retention-{}-{}", m.from, m.to))
                .unwrap()
                .is_empty()
        })
        .unwrap();
    let path = dir
        .path()
        .join(lienthong_message_log::retention::Receipt::file_name(
            m.from, m.to,
        ));
    let mut receipt =
        lienthong_message_log::retention::Receipt::decode(&std::fs::read(&path).unwrap()).unwrap();
    receipt.index += 1;
    std::fs::write(&path, receipt.encode()).unwrap();
    let found = r.audit(0, u64::MAX).unwrap().mismatches;
    assert!(
        found.iter().any(|f| f.contains(&format!(
            "records {} to {}: pruned, but the log holds no retention record",
            m.from, m.to
        ))),
        "{found:?}"
    );
    drop(r);
    log.close();
}

/// No key needed: after a real prune of the first segment, the next one
/// deleted too, its records marked pruned and their lookup entries gone,
/// under a marker forged from the tiles that starts where the real one
/// does. It does not borrow the real marker's retention record: the
/// markers overlap, and none is recorded for the forged range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_marker_does_not_borrow_a_real_ones_retention_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = old_records(dir.path(), |_| {}).await;
    let r = reader(dir.path());
    let plan = r.plan_prune(10_000, 20_000).unwrap().unwrap();
    log.append(plan.record(20_000)).await.unwrap();
    r.prune(&plan.marker).unwrap();
    log.close();
    assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
    drop(r);
    let (a, b) = (plan.marker.from, plan.marker.to);
    let list = segment::list(dir.path()).unwrap();
    let (first, next) = (list[0].0, list[1].0);
    assert_eq!(first, b);
    std::fs::remove_file(&list[0].1).unwrap();
    locations::Locations::open(dir.path())
        .mark_pruned(b, next)
        .unwrap();
    let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
    db.execute(
        "DELETE FROM runs WHERE leaf_index >= ?1 AND leaf_index < ?2",
        [b as i64, next as i64],
    )
    .unwrap();
    drop(db);
    forge_marker(dir.path(), a, next);
    let found = audit(dir.path());
    assert!(found.iter().any(|m| m.contains("overlap")), "{found:?}");
    assert!(
        found.iter().any(|m| m
            == &format!(
                "records {a} to {next}: pruned, but the log holds no retention record for them"
            )),
        "{found:?}"
    );
}

/// No key needed: the first segment's entries marked pruned and a marker
/// for it forged from the tiles, as a prune cut short would leave them —
/// but with no retention record in the log. Retention does not finish
/// that "prune": the segment stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_does_not_finish_a_prune_the_log_never_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let log = old_records(dir.path(), |_| {}).await;
    log.close();
    let list = segment::list(dir.path()).unwrap();
    let (from, to) = (list[0].0, list[1].0);
    forge_marker(dir.path(), from, to);
    locations::Locations::open(dir.path())
        .mark_pruned(from, from + 1)
        .unwrap();
    let plan = reader(dir.path()).plan_prune(10_000, 20_000);
    assert!(plan.is_err(), "{plan:?}");
    assert!(list[0].1.exists(), "the segment is still there");
}

/// No key needed: the index's position moved back under a running reader
/// (records after it would no longer be found): the reader's audit says
/// so — as a position that went back when it no longer reads the index
/// (a server's reader, which knows the writer's acknowledged end), as an
/// index that cannot follow when it indexes the records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_moved_back_under_a_running_reader_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (log, r) = served_with_position(dir.path(), 20).await;
    let found = r.audit(0, u64::MAX).unwrap().mismatches;
    assert!(
        found
            .iter()
            .any(|m| m.contains("position went back from 30 to 20")),
        "{found:?}"
    );
    // A reader that indexes again finds it cannot follow.
    let found = reader(dir.path()).audit(0, u64::MAX).unwrap().mismatches;
    assert!(!found.is_empty());
    drop(r);
    log.close();
}

/// No key needed: the index's position set far past what its files hold,
/// under a running server: the audit says so once, and reads (and
/// allocates) no more than the files hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_past_the_index_files_is_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, r) = served_with_position(dir.path(), 1_000_000_000_000).await;
    let found = r.audit(0, u64::MAX).unwrap().mismatches;
    assert!(
        found.iter().any(|m| m
            == "the index's position says 1000000000000 records, and its files hold 30 (an edited index, or its files cut)"),
        "{found:?}"
    );
    // What follows from it is reported per record held, never per
    // record the position claims.
    assert!(found.len() <= 2 * 30 + 2, "{}", found.len());
    // A citizen's lookup and an exchange's fail at once with the reason,
    // rather than probe a run per 2^18 records claimed (about four
    // million here) or come back short.
    let started = std::time::Instant::now();
    let why =
        "the index's position says 1000000000000 records, and records.loc holds entries for 30";
    let about = r.about(CITIZEN, 0, i64::MAX, 0, 1000).unwrap_err();
    assert!(about.0.contains(why), "{about}");
    let exchange = r.by_message("m-3").unwrap_err();
    assert!(exchange.0.contains(why), "{exchange}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(r);
    log.close();
}

/// No key needed: a retention marker claiming a range far larger than the
/// hashes it holds is refused, never taken for a huge pruned range (nor
/// does it make the audit panic).
#[test]
fn a_marker_claiming_more_records_than_it_holds_is_refused() {
    let m = Marker {
        from: 3,
        to: 4,
        pruned_at_ms: 0,
        leaf_hashes: vec![[1; 32]],
    };
    let mut bytes = m.encode();
    // `to` = 3 + 2^59: 32 × 2^59 wraps to 0 in 64 bits.
    bytes[16..24].copy_from_slice(&(3u64 + (1 << 59)).to_be_bytes());
    bytes.truncate(32);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    assert!(Marker::decode(&bytes).is_err());
}

/// No key needed: a middle segment deleted (or one record in it made
/// unopenable) and the index rebuilt. The index stops at the gap, keeping
/// what came before, and the audit reports why it cannot follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_rebuilt_past_a_gap_stops_there_and_the_audit_says_why() {
    // A middle segment deleted.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 40, small()).await;
    let list = segment::list(dir.path()).unwrap();
    assert!(list.len() >= 3);
    std::fs::remove_file(&list[1].1).unwrap();
    index::remove(dir.path()).unwrap();
    let size = reader(dir.path()).tree_size().unwrap();
    assert_eq!(
        size, list[1].0,
        "the index stops at the gap, keeping what came before"
    );
    let deleted = audit(dir.path());

    // A record made unopenable (one byte), index rebuilt.
    let dir2 = tempfile::tempdir().unwrap();
    write(dir2.path(), 10, Options::default()).await;
    let path = segment_of(dir2.path(), 3);
    let mut p = parse(&path);
    entry_mut(&mut p, 3).1[0] ^= 1;
    unparse(&path, &p);
    index::remove(dir2.path()).unwrap();
    let size2 = reader(dir2.path()).tree_size().unwrap();
    assert!(size2 < 10, "{size2}");
    let unopenable = audit(dir2.path());

    assert!(
        !deleted.is_empty() && !unopenable.is_empty(),
        "segments hold records past the index: deleted {deleted:?}, unopenable {unopenable:?}"
    );
}

/// Recovery never cuts acknowledged commits: a flipped byte in the magic of
/// a middle frame of the last segment, or two damaged frames at the end
/// (only the last commit can ever be torn: one writer, write then fdatasync
/// before the next), make it refuse instead of cutting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_cuts_more_than_the_last_commit() {
    let base = tempfile::tempdir().unwrap();
    write(base.path(), 6, Options::default()).await;
    let path0 = segment_of(base.path(), 5);
    let whole = std::fs::read(&path0).unwrap();
    let p = parse(&path0);
    assert_eq!(p.frames.len(), 6);
    let name = path0.file_name().unwrap().to_owned();
    let mut outcomes = Vec::new();
    // (a) The magic of frame 2 of 6; (b) the bodies of the last two frames.
    let damage: Vec<(&str, Vec<usize>)> = vec![
        ("middle frame magic", vec![p.offsets[2].0 as usize]),
        (
            "last two frames",
            vec![p.offsets[4].1 as usize - 1, p.offsets[5].1 as usize - 1],
        ),
    ];
    for (what, at) in damage {
        let d = tempfile::tempdir().unwrap();
        let mut bytes = whole.clone();
        for a in at {
            bytes[a] ^= 1;
        }
        std::fs::write(d.path().join(&name), bytes).unwrap();
        let outcome = match SegmentLog::open(d.path(), keys()) {
            Err(e) => format!("refused: {e}"),
            Ok(log) => {
                let size = log.recovered().size;
                log.close();
                format!("recovered {size}")
            }
        };
        outcomes.push((what, outcome));
    }
    // Safe: a bad frame that is not the last is never cut silently.
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| o.starts_with("refused") || o == "recovered 6" || o == "recovered 5"),
        "{outcomes:?}"
    );
}

/// Two writers on one directory (a restart overlapping the old process, or
/// a CLI opening the log beside the server): the directory is locked by
/// its writer, so the second waits and then refuses; nothing acknowledged
/// is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_directory_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = SegmentLog::open(dir.path(), keys()).unwrap();
    let second = match SegmentLog::open(dir.path(), keys()) {
        Err(_) => return, // Safe: refused.
        Ok(l) => l,
    };
    let mut a = record(0);
    a.message_id = "first-writer".into();
    first.append(a).await.unwrap();
    let mut b = record(5);
    b.message_id = "second-writer".into();
    second.append(b).await.unwrap();
    first.close();
    second.close();
    let r = reader(dir.path());
    assert!(
        !r.by_message("first-writer").unwrap().is_empty()
            && !r.by_message("second-writer").unwrap().is_empty(),
        "both appends were acknowledged; the log holds {} record(s)",
        r.tree_size().unwrap()
    );
}

/// A crash while a new segment's header was being written, with an owner
/// id longer than 62 bytes: recovery judges the header torn by its own
/// length and the log opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_long_header_does_not_block_recovery() {
    let owner = format!("VN/GOV/{}/security-server-of-the-ministry", "0".repeat(60));
    let k = LogKeys::new(owner.clone(), b"subject key".to_vec(), [7; 32]);
    let dir = tempfile::tempdir().unwrap();
    {
        let log = SegmentLog::open(dir.path(), k.clone()).unwrap();
        for i in 0..3 {
            log.append(record(i)).await.unwrap();
        }
        log.close();
    }
    let header = Header {
        key_id: 1,
        first_index: 3,
        created_ms: now_ms(),
        salt: [1; 32],
        owner,
    }
    .encode();
    assert!(header.len() > 140);
    std::fs::write(dir.path().join(segment::file_name(3)), &header[..140]).unwrap();
    let log = SegmentLog::open(dir.path(), k);
    assert!(log.is_ok(), "{:?}", log.err());
    let log = log.unwrap();
    assert_eq!(log.recovered().size, 3);
    log.close();
}

/// The writer acknowledges a commit only after its fdatasync and cuts the
/// frame back if that fails. Here a whole frame for position 3 stands in
/// the live writer's segment, as between its `write` and its `fdatasync`;
/// a reader following the writer does not count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_counts_a_commit_the_writer_has_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), keys()).unwrap();
    for i in 0..3 {
        log.append(record(i)).await.unwrap();
    }
    let path = segment_of(dir.path(), 2);
    let p = parse(&path);
    let key = SegmentKey::derive(&keys(), p.header.key_id, &p.header.salt).unwrap();
    let mut b = FrameBuilder::new(3);
    b.push(0, |o| {
        key.seal_into(
            3,
            &Stored {
                leaf: lienthong_message_log::leaf::leaf_bytes(&record(3), None, None),
                ..Default::default()
            },
            o,
        )
    })
    .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, &b.finish()).unwrap();
    drop(f);
    // A reader in the writer's process follows what the writer acknowledged.
    let r = reader(dir.path()).following(log.acknowledged());
    let size = r.tree_size().unwrap();
    drop(r);
    drop(log);
    assert_eq!(size, 3, "only acknowledged records are served");
}

/// A crash inside `LogReader::prune`, after it marked the segment's rows
/// pruned in the index but before it removed the segment file: the next
/// retention pass finishes the removal and carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_resumes_after_a_crash_inside_prune() {
    let dir = tempfile::tempdir().unwrap();
    let log = old_records(dir.path(), |_| {}).await;
    let r = reader(dir.path());
    let plan = r.plan_prune(10_000, 20_000).unwrap().unwrap();
    log.append(plan.record(20_000)).await.unwrap();
    let m = plan.marker;
    log.close();
    // What prune did before the crash: half its marking of the entries
    // (a write torn by a power loss), not the rest, nor the remove_file.
    locations::Locations::open(dir.path())
        .mark_pruned(m.from, m.from + (m.to - m.from) / 2)
        .unwrap();
    drop(r);
    let r = reader(dir.path());
    let next = r.plan_prune(10_000, 30_000);
    assert!(
        next.is_ok(),
        "retention must finish or skip the half-pruned segment: {:?}",
        next.err()
    );
}

/// No key needed: the citizen's subject lookup key is copied from one of
/// their entries in index.db onto the newest records of other people.
/// A short page would end `FindUsage`'s paging and leave the citizen's real
/// records out: `about` fails instead (the trace is then incomplete, never
/// silently short), and the audit flags the edited rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_dropped_by_about_do_not_end_the_answer_early() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 30, Options::default()).await;
    assert_eq!(citizen_records(dir.path()).len(), 6);
    let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
    let n = db
        .execute(
            "INSERT INTO runs SELECT run,
                 (SELECT key FROM runs WHERE leaf_index = 0 AND key >= 0), leaf_index
             FROM runs WHERE leaf_index >= 26 AND key < 0",
            [],
        )
        .unwrap();
    assert_eq!(n, 4);
    drop(db);
    // A page of 3 as FindUsage asks for it (page + 1 = 4 would do the same).
    let page = reader(dir.path()).about(CITIZEN, 0, i64::MAX, 0, 3);
    assert!(
        page.is_err() || matches!(&page, Ok(v) if v.len() == 3),
        "a short page while more records match: {:?}",
        page.map(|v| v.len())
    );
}

/// A log is never written to with keys that cannot read it: a replaced
/// sealing key, a sealing key gone, another subject key, or another
/// server's keys are each refused when the log opens, with what to do —
/// and the log is left as it was, so the right keys still open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_opened_with_keys_that_cannot_read_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 3, Options::default()).await;
    let before = segment::list(dir.path()).unwrap();
    let mut rotated_away = keys();
    rotated_away.seal = vec![(2, [7; 32])];
    let tries = [
        (
            "a replaced sealing key",
            LogKeys::new(OWNER, b"subject key".to_vec(), [8; 32]),
            "does not open under log key 1",
        ),
        (
            "the sealing key gone",
            rotated_away,
            "log key 1 is not in the log key directory",
        ),
        (
            "another subject key",
            LogKeys::new(OWNER, b"another".to_vec(), [7; 32]),
            "the subject key is not the one",
        ),
        (
            "another server",
            LogKeys::new("VN/GOV/000103/ss1", b"subject key".to_vec(), [7; 32]),
            "does not open under log key 1",
        ),
    ];
    for (what, keys, says) in tries {
        let refused = SegmentLog::open(dir.path(), keys)
            .err()
            .unwrap_or_else(|| panic!("{what}: opened"));
        assert!(refused.0.contains(says), "{what}: {refused}");
        assert!(
            refused.0.contains("restore the key directory"),
            "{what}: {refused}"
        );
        assert_eq!(
            segment::list(dir.path()).unwrap(),
            before,
            "{what}: no segment started"
        );
    }
    // A reader indexes too: it is refused another subject key as well.
    let refused = LogReader::open(
        dir.path(),
        LogKeys::new(OWNER, b"another".to_vec(), [7; 32]),
    )
    .expect_err("a reader under another subject key");
    assert!(
        refused.0.contains("the subject key is not the one"),
        "{refused}"
    );

    // Rotated: new segments sealed under key 2. The older key replaced is
    // refused too, though the newest segment opens.
    let mut rotated = keys();
    rotated.seal.push((2, [11; 32]));
    let log = SegmentLog::open(dir.path(), rotated.clone()).unwrap();
    log.append(record(3)).await.unwrap();
    log.close();
    let mut older_replaced = rotated.clone();
    older_replaced.seal[0].1 = [8; 32];
    let refused = SegmentLog::open(dir.path(), older_replaced).expect_err("refused");
    assert!(
        refused
            .0
            .contains("(segment 0) does not open under log key 1"),
        "{refused}"
    );
    let log = SegmentLog::open(dir.path(), rotated.clone()).unwrap();
    log.append(record(4)).await.unwrap();
    log.close();
    let r = LogReader::open(dir.path(), rotated).unwrap();
    assert_eq!(r.tree_size().unwrap(), 5);
    assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
}

/// The index's files deleted under a running log — `index.db` and its
/// write-ahead log, `records.loc`, the tree's tiles — lose nothing and
/// hide nothing: the running server keeps appending and answering (its
/// open files live on until it stops), and the next start rebuilds the
/// index from the segments, every record found again and the audit clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_files_deleted_under_a_running_log_are_rebuilt_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = SegmentLog::open(dir.path(), keys()).unwrap();
    for i in 0..20 {
        log.append(record(i)).await.unwrap();
    }
    let r = reader(dir.path()).following(log.acknowledged());
    assert_eq!(r.tree_size().unwrap(), 20);
    let mut deleted = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("index.db") || name == "records.loc" || name.ends_with(".tile") {
            std::fs::remove_file(&path).unwrap();
            deleted += 1;
        }
    }
    assert!(deleted >= 3, "{deleted}");
    for i in 20..30 {
        log.append(record(i)).await.unwrap();
    }
    assert_eq!(r.tree_size().unwrap(), 30, "the running log goes on");
    assert_eq!(
        r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap().len(),
        6,
        "and answers"
    );
    drop(r);
    log.close();

    let log = SegmentLog::open(dir.path(), keys()).unwrap();
    log.append(record(30)).await.unwrap();
    log.close();
    assert_eq!(reader(dir.path()).tree_size().unwrap(), 31);
    assert_eq!(
        citizen_records(dir.path()),
        vec![30, 25, 20, 15, 10, 5, 0],
        "every record found again"
    );
    assert!(audit(dir.path()).is_empty(), "{:?}", audit(dir.path()));
}
