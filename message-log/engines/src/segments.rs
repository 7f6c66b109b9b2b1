//! Our engine, as log_scale runs it: `SegmentLog` (seal, one write and one
//! fdatasync per group commit) with the index built behind by its indexer
//! thread, read through a `LogReader` that follows the writer.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lienthong_message_log::audit::AuditStatus;
use lienthong_message_log::{LogReader, SegmentLog};

use crate::common::{self, Reopen, Run, SUBJECT};

/// Fills a new log in `dir` with `n` records and measures it; with
/// `audit`, the self-audit runs all along as in log_scale (no other engine
/// has one, so it is off by default).
pub async fn run(dir: &Path, n: u64, appenders: usize, audit: bool) -> Run {
    let keys = common::keys();
    let log = Arc::new(SegmentLog::open(dir, keys.clone()).expect("open"));
    let reader = Arc::new(
        LogReader::open(dir, keys.clone())
            .expect("reader")
            .following(log.acknowledged()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let auditor = audit.then(|| {
        let (stop, reader) = (stop.clone(), reader.clone());
        std::thread::spawn(move || {
            let status = AuditStatus::default();
            use lienthong_message_log::audit::{AUDIT_INTERVAL, batch_for};
            while !stop.load(Ordering::Relaxed) {
                let batch = batch_for(reader.tree_size().expect("size"), AUDIT_INTERVAL);
                status.step(&reader, batch).expect("audit");
                std::thread::sleep(AUDIT_INTERVAL);
            }
            assert_eq!(status.report().found, 0);
        })
    });

    let written_before = common::written();
    let cpu_before = common::cpu();
    let took = common::drive(log.clone(), n, appenders).await;
    // As log_scale: the indexer's work is inside the CPU measured.
    while log.index_lag() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = common::cpu() - cpu_before;
    stop.store(true, Ordering::Relaxed);
    if let Some(a) = auditor {
        a.join().expect("auditor");
    }
    let later = common::settle(Duration::from_secs(60));
    let written_after = common::written();
    let written = (written_after.0 - written_before.0) / n;
    let dirtied = (written_after.1 - written_before.1) / n;
    assert_eq!(reader.tree_size().expect("size"), n);

    let mut lookups = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let found = reader.about(SUBJECT, 0, i64::MAX, 0, 10).expect("about");
        lookups.push(t.elapsed());
        assert_eq!(found.len() as u64, 10.min(n / 1000));
    }
    let (bytes, allocated) = common::bytes_under(dir, "");
    let per = |part| common::bytes_under(dir, part).1 / n;
    let stats = log.stats();
    let commits = stats.commits.load(Ordering::Relaxed).max(1);
    Run {
        engine: "segments".into(),
        n,
        rate: n as f64 / took.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n as f64,
        later_cpu_us: later.as_secs_f64() * 1e6 / n as f64,
        bytes,
        allocated,
        parts: format!(
            "segments:{},tiles:{},index.db:{}",
            per(".seg"),
            per(".tile"),
            per("index.db")
        ),
        lookup_us: common::median(lookups).as_secs_f64() * 1e6,
        written,
        dirtied,
        rss_mib: common::peak_rss_mib(),
        per_commit: n as f64 / commits as f64,
    }
}

/// Opens the log in `dir` again: tail recovery (and the index's check of
/// its position), as a server does when it starts.
pub fn reopen(dir: &Path, n: u64) -> Reopen {
    let keys = common::keys();
    let t = Instant::now();
    let log = SegmentLog::open(dir, keys.clone()).expect("reopen");
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let records = log.recovered().size;
    let reader = LogReader::open(dir, keys)
        .expect("reader")
        .following(log.acknowledged());
    assert_eq!(
        reader
            .about(SUBJECT, 0, i64::MAX, 0, 10)
            .expect("about")
            .len() as u64,
        10.min(n / 1000)
    );
    drop(reader);
    log.close();
    Reopen { ms, records }
}
