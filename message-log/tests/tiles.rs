//! The tree's tiles, and the records' entries beside them, after crashes
//! and edits: a torn tail (a file longer or shorter than the index's
//! position, a garbage tail), tiles lost in a power loss, a deleted file,
//! an index of the older layout, and nodes edited on disk.

use std::path::Path;

use lienthong_message_log::tiles::{self, Pending, Tiles};
use lienthong_message_log::tree::Frontier;
use lienthong_message_log::{
    LogKeys, LogReader, LogRecord, MessageLog, SegmentLog, StoredCheckpoint,
};
use lienthong_message_log::{index, locations};
use lienthong_proto::merkle;

/// Records written by [`write`].
const N: u64 = 100;

fn keys() -> LogKeys {
    LogKeys::new("VN/GOV/000102/ss1", b"subject key".to_vec(), [7; 32])
}

fn record(i: u64) -> LogRecord {
    LogRecord {
        at_ms: 1000 + i as i64,
        message_id: format!("m-{i}"),
        data_subject: if i.is_multiple_of(10) {
            "001099012345".into()
        } else {
            "079099000001".into()
        },
        envelope: b"envelope".to_vec(),
        ..Default::default()
    }
}

/// Writes records `0..n` (commits of up to ten) and closes the log.
async fn write(dir: &Path, range: std::ops::Range<u64>) {
    let log = SegmentLog::open(dir, keys()).unwrap();
    let mut waits = Vec::new();
    for i in range {
        waits.push(log.append(record(i)));
        if waits.len() == 10 {
            for w in waits.drain(..) {
                w.await.unwrap();
            }
        }
    }
    for w in waits {
        w.await.unwrap();
    }
    log.close();
}

/// A log of [`N`] records, and its root.
async fn log() -> (tempfile::TempDir, merkle::Hash) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 0..N).await;
    let root = LogReader::open(dir.path(), keys())
        .unwrap()
        .root(N)
        .unwrap();
    (dir, root)
}

/// The levels kept in files: 0, 4, 8, …
fn stored_levels() -> impl Iterator<Item = u32> {
    (0..64).step_by(tiles::STRIDE as usize)
}

/// Bytes of each stored level's tile, level 0 first, up to the first that
/// is missing or empty.
fn tile_lengths(dir: &Path) -> Vec<u64> {
    stored_levels()
        .map_while(|l| {
            let bytes = std::fs::metadata(tiles::path(dir, l)).ok()?.len();
            (bytes > 0).then_some(bytes)
        })
        .collect()
}

/// The lengths a tree of `size` leaves needs.
fn lengths_of(size: u64) -> Vec<u64> {
    stored_levels()
        .map(|l| (size >> l) * 32)
        .take_while(|b| *b > 0)
        .collect()
}

/// Bytes of the records' entries (`records.loc`).
fn entries_length(dir: &Path) -> u64 {
    std::fs::metadata(locations::path(dir)).map_or(0, |m| m.len())
}

fn edit_entries(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = locations::path(dir);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

fn edit_tile(dir: &Path, level: u32, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = tiles::path(dir, level);
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

fn set_position(dir: &Path, sql: &str) {
    let db = rusqlite::Connection::open(index::path(dir)).unwrap();
    assert_eq!(db.execute(sql, []).unwrap(), 1, "{sql}");
}

/// The log in `dir` holds the tree of `root` again, with tiles of exactly
/// the right length, an audit with nothing to report, and takes more
/// records on the same tree.
async fn recovered(dir: &Path, root: merkle::Hash, case: &str) {
    let r = LogReader::open(dir, keys()).unwrap();
    assert_eq!(r.tree_size().unwrap(), N, "{case}");
    assert_eq!(r.root(N).unwrap(), root, "{case}");
    assert_eq!(tile_lengths(dir), lengths_of(N), "{case}");
    assert_eq!(entries_length(dir), N * locations::ENTRY, "{case}");
    assert_eq!(
        r.audit(0, u64::MAX).unwrap().mismatches,
        Vec::<String>::new(),
        "{case}"
    );
    let proof = r.inclusion_proof(37, N).unwrap();
    let leaf = r.leaf(37).unwrap().unwrap();
    assert!(
        merkle::verify_inclusion(&merkle::leaf_hash(&leaf), 37, N, &proof, &root),
        "{case}"
    );
    drop(r);
    write(dir, N..N + 5).await;
    let r = LogReader::open(dir, keys()).unwrap();
    let proof = r.consistency_proof(N, N + 5).unwrap();
    let new_root = r.root(N + 5).unwrap();
    assert!(
        merkle::verify_consistency(N, N + 5, &root, &new_root, &proof),
        "{case}"
    );
    assert_eq!(tile_lengths(dir), lengths_of(N + 5), "{case}");
    assert_eq!(entries_length(dir), (N + 5) * locations::ENTRY, "{case}");
    assert_eq!(
        r.about("001099012345", 0, i64::MAX, 0, 100).unwrap().len(),
        11,
        "{case}"
    );
    assert!(
        r.audit(0, u64::MAX).unwrap().mismatches.is_empty(),
        "{case}"
    );
}

/// A level file or the records' entries longer than the index's position
/// (a batch written and never committed, a garbage tail) is cut; one
/// shorter (torn, cut, or deleted) makes the index forget what the files
/// do not hold and index it again from the segments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tile_tail_recovers_to_the_same_tree() {
    type Edit = fn(&Path);
    let cases: [(&str, Edit); 11] = [
        ("garbage after the leaves", |d| {
            edit_tile(d, 0, |b| b.extend_from_slice(&[0xa5; 45]))
        }),
        ("whole garbage nodes after level 4", |d| {
            edit_tile(d, 4, |b| b.extend_from_slice(&[0x5a; 64]))
        }),
        ("a level that does not exist yet", |d| {
            std::fs::write(tiles::path(d, 8), [1u8; 32]).unwrap()
        }),
        ("leaves cut to 60", |d| {
            edit_tile(d, 0, |b| b.truncate(60 * 32))
        }),
        ("half a node cut from level 4", |d| {
            edit_tile(d, 4, |b| b.truncate(b.len() - 5))
        }),
        ("level 4 deleted", |d| {
            std::fs::remove_file(tiles::path(d, 4)).unwrap()
        }),
        ("every tile deleted", |d| tiles::remove(d).unwrap()),
        ("garbage after the entries", |d| {
            edit_entries(d, |b| b.extend_from_slice(&[0xa5; 45]))
        }),
        ("entries cut to 60", |d| {
            edit_entries(d, |b| b.truncate(60 * locations::ENTRY as usize))
        }),
        ("half an entry cut", |d| {
            edit_entries(d, |b| b.truncate(b.len() - 5))
        }),
        ("the entries deleted", |d| locations::remove(d).unwrap()),
    ];
    for (case, edit) in cases {
        let (dir, root) = log().await;
        let lengths = |d: &Path| (tile_lengths(d), entries_length(d));
        assert_eq!(
            lengths(dir.path()),
            (lengths_of(N), N * locations::ENTRY),
            "{case}"
        );
        edit(dir.path());
        assert_ne!(
            lengths(dir.path()),
            (lengths_of(N), N * locations::ENTRY),
            "{case}: edited"
        );
        recovered(dir.path(), root, case).await;
    }
}

/// The writer's start cuts the index and the tiles back together (tail
/// recovery, `index::cut_back`); after a crash between a batch's nodes and
/// its position, the tiles hold nodes past the position, here garbage: the
/// next batch cuts them and the records are indexed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_the_index_never_committed_are_cut_and_written_again() {
    let (dir, root) = log().await;
    // The index forgets its last 30 records (the tail cut after a crash).
    let mut db = index::open(dir.path()).unwrap();
    index::cut_back(&mut db, dir.path(), 70).unwrap();
    assert_eq!(tile_lengths(dir.path()), lengths_of(70));
    drop(db);
    // A batch that never committed wrote nodes past the position: garbled.
    for (level, bytes) in stored_levels().zip(lengths_of(N)) {
        edit_tile(dir.path(), level, |b| b.resize(bytes as usize, 0x77));
    }
    assert_eq!(tile_lengths(dir.path()), lengths_of(N));
    recovered(dir.path(), root, "nodes past the position").await;
}

/// After a power loss, tiles written since their last `fdatasync` may
/// hold anything, at the right length. Under another boot only what was
/// synced is believed; under the same boot (a process crash: the page
/// cache survived) the same bytes are an edit, and the audit finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_power_loss_only_synced_tiles_are_believed() {
    let garbage = |d: &Path| {
        edit_tile(d, 0, |b| b[40 * 32..].fill(0));
        edit_tile(d, 4, |b| b[2 * 32..].fill(0x33));
    };
    let (dir, _) = log().await;
    let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
    let (synced, boot): (i64, String) = db
        .query_row("SELECT tiles_synced, boot FROM position", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(synced as u64, N, "a clean close syncs the tiles");
    assert_eq!(boot, tiles::boot());
    drop(db);

    // The same boot: an edit, found.
    set_position(dir.path(), "UPDATE position SET tiles_synced = 40");
    garbage(dir.path());
    let found = LogReader::open(dir.path(), keys())
        .unwrap()
        .audit(0, u64::MAX)
        .unwrap()
        .mismatches;
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("record 40: its bytes do not hash to the tree's leaf"))
            && found
                .iter()
                .any(|m| m.contains("is not the hash of the nodes below it")),
        "{found:?}"
    );

    // Another boot: indexed again from record 40.
    // (Another log: the subject commitments' salts differ, so the root.)
    let (dir, root) = log().await;
    set_position(
        dir.path(),
        "UPDATE position SET tiles_synced = 40, boot = 'an earlier boot'",
    );
    garbage(dir.path());
    recovered(dir.path(), root, "power loss").await;
}

/// Tiles of the layout that stored every level: the files of the levels
/// no longer stored are deleted when the log is next indexed, and the
/// tree and its proofs are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_of_every_level_lose_the_levels_no_longer_stored() {
    let (dir, root) = log().await;
    // What a release storing every level left: levels 1, 2, 3, 5, 6.
    let leaves = Tiles::open(dir.path()).leaf_hashes(0, N).unwrap();
    let mut level: Vec<merkle::Hash> = (0..N).map(|i| leaves[&i]).collect();
    for l in 1..7u32 {
        level = level
            .chunks_exact(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
        if l % tiles::STRIDE != 0 {
            std::fs::write(tiles::path(dir.path(), l), level.concat()).unwrap();
        }
    }
    let (position, files): (i64, Vec<u32>) = (
        rusqlite::Connection::open(index::path(dir.path()))
            .unwrap()
            .query_row("SELECT size FROM position", [], |r| r.get(0))
            .unwrap(),
        (0..8)
            .filter(|l| tiles::path(dir.path(), *l).exists())
            .collect(),
    );
    assert_eq!((position as u64, files), (N, vec![0, 1, 2, 3, 4, 5, 6]));
    recovered(dir.path(), root, "every level stored").await;
    let files: Vec<u32> = (0..8)
        .filter(|l| tiles::path(dir.path(), *l).exists())
        .collect();
    assert_eq!(files, [0, 4]);
}

/// An index of a layout from a later release (one rolled back) is rebuilt,
/// never read in a layout this release does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_a_newer_layout_is_rebuilt() {
    let (dir, root) = log().await;
    let layout = |dir: &Path| -> i64 {
        rusqlite::Connection::open(index::path(dir))
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    let ours = layout(dir.path());
    {
        let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
        db.execute_batch(
            "DELETE FROM runs; UPDATE position SET size = 7; PRAGMA user_version = 99;",
        )
        .unwrap();
    }
    recovered(dir.path(), root, "newer layout").await;
    assert_eq!(layout(dir.path()), ours);
}

/// An index of the layout that kept nodes in SQLite is rebuilt, tiles and
/// all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_the_older_layout_is_rebuilt() {
    let (dir, root) = log().await;
    {
        let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
        db.execute_batch(
            "CREATE TABLE nodes (level INTEGER, idx INTEGER, hash BLOB,
                PRIMARY KEY (level, idx)) WITHOUT ROWID;
             PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    edit_tile(dir.path(), 0, |b| b[0] ^= 1);
    recovered(dir.path(), root, "older layout").await;
    let db = rusqlite::Connection::open(index::path(dir.path())).unwrap();
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'nodes'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "rebuilt in the new layout");
}

/// A byte flipped in a tile is found by the audit, wherever it lies: a
/// leaf no longer matches its record, an inner node its children, a top
/// node the witnessed checkpoint. A tree rewritten whole to match an
/// edited leaf passes every node check, and disagrees with the checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_edited_in_their_tiles_are_found() {
    let (dir, root) = log().await;
    let r = LogReader::open(dir.path(), keys()).unwrap();
    r.record_checkpoint(&StoredCheckpoint {
        tree_size: N,
        root,
        created_at_ms: 1,
        signature: b"server".to_vec(),
        countersignature: b"registry".to_vec(),
        witnessed_at_ms: 2,
    })
    .unwrap();
    drop(r);
    let audit = |d: &Path| {
        LogReader::open(d, keys())
            .unwrap()
            .audit(0, u64::MAX)
            .unwrap()
            .mismatches
    };
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    let fresh = || {
        for e in std::fs::read_dir(copy.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        assert!(audit(dir.path()).is_empty());
    };

    fresh();
    edit_tile(dir.path(), 0, |b| b[7 * 32 + 3] ^= 1);
    let found = audit(dir.path());
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("record 7: its bytes do not hash"))
            && found.contains(
                &"tree node 4/0 is not the hash of the nodes below it (rewritten)".into()
            ),
        "{found:?}"
    );

    // Node 4/5 (records 80 to 95): no stored node lies above it, only
    // the checkpoint.
    fresh();
    edit_tile(dir.path(), 4, |b| b[5 * 32] ^= 0x80);
    let found = audit(dir.path());
    assert!(
        found.contains(&"tree node 4/5 is not the hash of the nodes below it (rewritten)".into())
            && found.iter().any(|m| m.contains("history rewritten")),
        "{found:?}"
    );

    // Every tile rewritten for a tree whose leaf 7 is another record's.
    fresh();
    let mut leaves = Tiles::open(dir.path()).leaf_hashes(0, N).unwrap();
    leaves.insert(7, merkle::leaf_hash(b"another record"));
    tiles::remove(dir.path()).unwrap();
    let (mut f, mut pending) = (Frontier::default(), Pending::default());
    for i in 0..N {
        f.push(leaves[&i], |l, i, h| pending.add(l, i, h));
    }
    pending.write(&mut Tiles::open(dir.path())).unwrap();
    let found = audit(dir.path());
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("record 7: its bytes do not hash"))
            && found.iter().any(|m| m.contains("history rewritten"))
            && !found.iter().any(|m| m.contains("tree node")),
        "{found:?}"
    );
}
