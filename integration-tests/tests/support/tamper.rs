//! What an operator holding a server's files — and its log keys — could do
//! to its message log behind its back: the edits the self-audit and the
//! citizens' trace must show. (Each test file uses some of them.)
#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use lienthong_integration_tests::federation::Agency;
use lienthong_security_server::keys::{ServerDir, log_keys};
use lienthong_security_server::message_log::record::Stored;
use lienthong_security_server::message_log::{LogReader, index, locations, segment};

pub fn log_dir(agency: &Agency) -> PathBuf {
    ServerDir(agency.dir.path().to_owned()).message_log()
}

/// The log's index, opened as `sqlite3` would.
pub fn index_db(agency: &Agency) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(index::path(&log_dir(agency))).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    db
}

fn row(agency: &Agency, leaf_index: u64) -> index::Row {
    let mut entries = locations::Locations::open(&log_dir(agency));
    index::row(&index_db(agency), &mut entries, leaf_index)
        .unwrap()
        .unwrap()
}

/// Marks every record's entry in the server's index (`records.loc`) as
/// pruned by retention. Returns how many entries it marked.
pub fn mark_every_record_pruned(agency: &Agency) -> u64 {
    // In place, as the running server has the file open.
    let path = locations::path(&log_dir(agency));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let entries = f.metadata().unwrap().len() / locations::ENTRY;
    for i in 0..entries {
        f.write_all_at(&u64::MAX.to_be_bytes(), i * locations::ENTRY)
            .unwrap();
    }
    entries
}

/// Deletes every lookup entry (by subject, by message id) of the records
/// of exchange `message_id` from the server's index, as `sqlite3` would:
/// lookups no longer find them. Returns how many records lost theirs.
pub fn delete_exchange_from_index(agency: &Agency, message_id: &str) -> usize {
    let dir = ServerDir(agency.dir.path().to_owned());
    let keys = log_keys(&dir, None, &agency.id.to_string()).unwrap();
    let leaves = LogReader::open(&log_dir(agency), keys)
        .unwrap()
        .by_message(message_id)
        .unwrap();
    let db = index_db(agency);
    for leaf in &leaves {
        db.execute("DELETE FROM runs WHERE leaf_index = ?1", [*leaf as i64])
            .unwrap();
    }
    leaves.len()
}

/// Flips one bit of record `leaf_index` as it lies in its segment.
pub fn flip_record_byte(agency: &Agency, leaf_index: u64) {
    let r = row(agency, leaf_index);
    let path = log_dir(agency).join(segment::file_name(r.segment as u64));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    let at = r.offset + r.len - 1;
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

/// Rewrites record `leaf_index` in place with the server's own keys, as
/// `edit` changes it (an edit that keeps its length, so it fits).
pub fn reseal(agency: &Agency, leaf_index: u64, edit: impl FnOnce(&mut Stored)) {
    let dir = ServerDir(agency.dir.path().to_owned());
    let keys = log_keys(&dir, None, &agency.id.to_string()).unwrap();
    let r = row(agency, leaf_index);
    let path = log_dir(agency).join(segment::file_name(r.segment as u64));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut segments = index::Segments::default();
    let (_, key, _) = segments
        .get(&log_dir(agency), &keys, r.segment as u64)
        .unwrap();
    let mut sealed = vec![0u8; r.len as usize];
    f.read_exact_at(&mut sealed, r.offset).unwrap();
    let mut stored = key.open(leaf_index, &sealed).unwrap();
    edit(&mut stored);
    let mut out = Vec::new();
    key.seal_into(leaf_index, &stored, &mut out).unwrap();
    assert_eq!(
        out.len(),
        sealed.len(),
        "the edit must keep the record's length"
    );
    f.write_all_at(&out, r.offset).unwrap();
}

/// Cuts the log of a stopped server back to the start of the commit that
/// holds record `keep` (and drops its index, which is rebuilt): history
/// rewritten from there. Returns the records left.
pub fn cut_tail(agency: &Agency, keep: u64) -> u64 {
    let dir = log_dir(agency);
    let mut left = keep;
    for (first, path) in segment::list(&dir).unwrap() {
        if first >= keep {
            std::fs::remove_file(&path).unwrap();
            continue;
        }
        let f = std::fs::File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let (_, mut at) = segment::Header::read(&f).unwrap();
        while let Some(frame) = segment::read_frame(&f, at, len).unwrap() {
            if frame.first + frame.entries.len() as u64 > keep {
                left = frame.first;
                drop(f);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(frame.offset)
                    .unwrap();
                break;
            }
            at = frame.end;
        }
    }
    index::remove(&dir).unwrap();
    left
}
