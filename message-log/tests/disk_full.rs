//! A full disk during commits, on a real file system: the log's directory
//! is a small tmpfs filled up by another file. The writer must refuse new
//! appends with an error that says the disk is full, lose nothing it had
//! acknowledged, and take appends again once space returns — without a
//! restart.
//!
//! Mounting needs root; elsewhere (or where mounting is not allowed, e.g.
//! in an unprivileged container) the test says why and does nothing —
//! unless `LIENTHONG_REQUIRE_TMPFS` is set, as CI sets it when it runs as
//! root: then it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use lienthong_message_log::{LogKeys, LogReader, LogRecord, MessageLog, SegmentLog};

const OWNER: &str = "VN/GOV/000102/ss1";
/// Appends made while the disk is full before the test gives up on seeing
/// one refused (a commit takes at least a page, so a few hundred do).
const MOST_APPENDS: usize = 100_000;

fn keys() -> LogKeys {
    LogKeys::new(OWNER, b"subject key".to_vec(), [7; 32])
}

fn record(i: usize) -> LogRecord {
    LogRecord {
        at_ms: 1_700_000_000_000 + i as i64,
        message_id: format!("m-{i}"),
        client: "VN/GOV/000102/police".into(),
        service: "VN/GOV/000200/population/lienthong.population.v1.Citizens".into(),
        method: "Get".into(),
        data_subject: "001099012345".into(),
        envelope: vec![b'e'; 400],
        ..Default::default()
    }
}

/// A tmpfs mounted for the test, unmounted when dropped (also when the
/// test fails half-way).
struct Tmpfs {
    at: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes, or says why it cannot.
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let at = dir.path().join("mnt");
        std::fs::create_dir(&at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("lienthong-disk-full")
            .arg(&at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { at, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file the failed test left open must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// A 4 MiB tmpfs, the log's directory on it and a file to fill it with;
/// `None` (the test says why and does nothing) where it cannot be mounted.
fn small_disk() -> Option<(Tmpfs, PathBuf, PathBuf)> {
    match Tmpfs::mount(4 << 20) {
        Ok(fs) => {
            let (dir, filler) = (fs.at.join("messagelog"), fs.at.join("filler"));
            Some((fs, dir, filler))
        }
        // CI runs as root and sets this: there the test must run.
        Err(why) if std::env::var_os("LIENTHONG_REQUIRE_TMPFS").is_some() => {
            panic!("LIENTHONG_REQUIRE_TMPFS is set and {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Writes `path` until the file system refuses more.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 << 10];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // What fits in less than a chunk too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

#[tokio::test]
async fn a_full_disk_refuses_appends_loses_nothing_and_recovers() {
    let Some((_fs, dir, filler)) = small_disk() else {
        return;
    };
    let log = SegmentLog::open(&dir, keys()).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..100 {
        log.append(record(i)).await.unwrap();
        acknowledged.push(i);
    }

    fill(&filler);
    let mut next = 100;
    let refused = loop {
        assert!(
            next < 100 + MOST_APPENDS,
            "{MOST_APPENDS} appends succeeded on a full disk"
        );
        match log.append(record(next)).await {
            Ok(()) => acknowledged.push(next),
            Err(e) => break e,
        }
        next += 1;
    };
    let said = refused.to_string();
    assert!(
        said.contains("no space left"),
        "the refusal should say the disk is full: {said}"
    );
    // It stays refused while the disk is full (each try starts a new
    // segment, which does not fit either).
    for _ in 0..3 {
        next += 1;
        assert!(log.append(record(next)).await.is_err());
    }

    std::fs::remove_file(&filler).unwrap();
    for _ in 0..50 {
        next += 1;
        log.append(record(next))
            .await
            .expect("appends succeed again once space returns, without a restart");
        acknowledged.push(next);
    }
    // The running log's index follows into the segments started after
    // the disk was full (one of them may have replaced, under the same
    // name, a segment the indexer had opened).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.index_lag() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the index is stuck {} records behind after the disk was full",
            log.index_lag()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    log.close();

    // Opened again: every acknowledged record is there, in order, and
    // nothing else (the refused ones were cut back).
    let log = SegmentLog::open(&dir, keys()).unwrap();
    drop(log);
    let reader = LogReader::open(&dir, keys()).unwrap();
    assert_eq!(reader.tree_size().unwrap(), acknowledged.len() as u64);
    for (position, i) in acknowledged.iter().enumerate() {
        assert_eq!(
            reader.by_message(&format!("m-{i}")).unwrap(),
            vec![position as u64],
            "acknowledged record m-{i}"
        );
    }
    let audit = reader.audit(0, acknowledged.len() as u64).unwrap();
    assert!(audit.mismatches.is_empty(), "{:?}", audit.mismatches);
}

/// The disk fills up under 64 concurrent appenders, so commits fail while
/// records keep queueing behind them and segments are started again and
/// again: every acknowledged record is in the log once, in a position of
/// its own, and no refused one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_under_concurrent_appends_keeps_exactly_what_was_acknowledged() {
    const APPENDERS: usize = 64;
    let Some((_fs, dir, filler)) = small_disk() else {
        return;
    };
    let log = std::sync::Arc::new(SegmentLog::open(&dir, keys()).unwrap());
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|a| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for k in 0..MOST_APPENDS {
                    let id = a * MOST_APPENDS + k;
                    match log.append(record(id)).await {
                        Ok(()) => acknowledged.push(id),
                        Err(e) => return (acknowledged, id, e.to_string()),
                    }
                }
                panic!("appender {a}: {MOST_APPENDS} appends and none refused");
            })
        })
        .collect();
    // Let them commit for a while, then fill the disk under them.
    while log.acknowledged().acknowledged() < 2_000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let fill_at = filler.clone();
    tokio::task::spawn_blocking(move || fill(&fill_at))
        .await
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for a in appenders {
        let (mut acked, id, said) = a.await.unwrap();
        assert!(said.contains("no space left"), "{said}");
        acknowledged.append(&mut acked);
        refused.push(id);
    }

    std::fs::remove_file(&filler).unwrap();
    for k in 0..20 {
        let id = APPENDERS * MOST_APPENDS + k;
        log.append(record(id))
            .await
            .expect("appends succeed again once space returns");
        acknowledged.push(id);
    }
    std::sync::Arc::try_unwrap(log).unwrap().close();

    let reader = LogReader::open(&dir, keys()).unwrap();
    assert_eq!(reader.tree_size().unwrap(), acknowledged.len() as u64);
    let mut positions = std::collections::HashSet::new();
    for id in &acknowledged {
        let found = reader.by_message(&format!("m-{id}")).unwrap();
        assert_eq!(found.len(), 1, "acknowledged record m-{id}: {found:?}");
        assert!(positions.insert(found[0]), "m-{id} shares a position");
    }
    for id in &refused {
        assert!(
            reader.by_message(&format!("m-{id}")).unwrap().is_empty(),
            "refused record m-{id} is in the log"
        );
    }
    let audit = reader.audit(0, acknowledged.len() as u64).unwrap();
    assert!(audit.mismatches.is_empty(), "{:?}", audit.mismatches);
}
