//! How the message log grows: append rate with group commit, file size per
//! record, inclusion-proof size and time, and lookup time by data subject,
//! at 10⁴, 10⁵ and 10⁶ records (more with `-- --sizes 10000,10000000`).
//!
//! Run: `cargo run --release -p lienthong-security-server --example log_scale`

use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_security_server::message_log::{
    LogKeys, LogReader, LogRecord, MessageLog, SqliteLog,
};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn record(i: u64) -> LogRecord {
    LogRecord {
        at_ms: 1_700_000_000_000 + i as i64,
        message_id: format!("m-{i:012}"),
        client: "VN/GOV/000305/business".into(),
        service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
        method: "GetPerson".into(),
        user_id: "officer-7".into(),
        purpose: "business registration 2026-114".into(),
        // Every thousandth record is about the traced citizen.
        data_subject: if i.is_multiple_of(1000) {
            "001190012345".into()
        } else {
            format!("{:012}", 79_000_000_000 + i)
        },
        peer: "VN/GOV/000102/ss1".into(),
        request_digest: vec![1; 32],
        payload_digest: vec![2; 32],
        payload_size: 4096,
        envelope: vec![3; 300],
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip_while(|a| a != "--sizes")
        .nth(1)
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let keys = LogKeys {
        subject_hash: vec![7; 32],
        seal: [9; 32],
    };
    println!(
        "| records | append rate (records/s, 256 in flight) | file bytes per record | proof hashes | proof time (median) | lookup of 10 records by subject (median) | self-audit of up to 100,000 records |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = Arc::new(SqliteLog::open(&path, keys.clone()).unwrap());
        let started = Instant::now();
        let mut next = 0u64;
        let mut inflight = tokio::task::JoinSet::new();
        while next < n || !inflight.is_empty() {
            while next < n && inflight.len() < 256 {
                let log = log.clone();
                let r = record(next);
                inflight.spawn(async move { log.append(r).await });
                next += 1;
            }
            if let Some(done) = inflight.join_next().await {
                done.unwrap().unwrap();
            }
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        drop(log);
        let reader = LogReader::open(&path, keys.clone()).unwrap();
        let size = reader.tree_size().unwrap();
        assert_eq!(size, n);
        let bytes = std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
        let mut proof_times = Vec::new();
        let mut hashes = 0;
        for k in 0..200u64 {
            let index = (k * 7919) % n;
            let t = Instant::now();
            let proof = reader.inclusion_proof(index, n).unwrap();
            proof_times.push(t.elapsed());
            hashes = proof.len();
        }
        let mut lookups = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let found = reader.about("001190012345", 0, i64::MAX, 0, 10).unwrap();
            lookups.push(t.elapsed());
            assert_eq!(found.len() as u64, 10.min(n / 1000));
        }
        // The self-audit's batch, from the middle of the log.
        let (from, to) = (n / 2, (n / 2 + 100_000).min(n));
        let t = Instant::now();
        let audit = reader.audit(from, to).unwrap();
        let audit_time = t.elapsed();
        assert!(audit.mismatches.is_empty());
        println!(
            "| {n} | {rate:.0} | {} | {hashes} ({} bytes) | {:.0?} | {:.0?} | {} records in {:.0?} |",
            bytes / n,
            hashes * 32,
            median(proof_times),
            median(lookups),
            to - from,
            audit_time
        );
    }
}
