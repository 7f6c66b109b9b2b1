//! How the message log grows: append rate with group commit while the
//! indexer and the self-audit run, CPU per record (the process's, and the
//! log's own threads': its writer and indexer), the index lag
//! at the end, bytes on disk per record (segments, the tree's tiles, and
//! the index — `index.db` and `records.loc` — apart),
//! subject lookup with inclusion proof, the time to open again (tail
//! recovery) after a clean stop, and to serve again after a `kill -9`
//! under load (a child process appending) — at 10⁴, 10⁵ and 10⁶ records (more with
//! `-- --sizes 10000,10000000`; `--appenders N` concurrent appenders, each
//! waiting for its own durable record, default 256).
//!
//! Run: `cargo run --release -p lienthong-message-log --example log_scale`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lienthong_message_log::audit::AuditStatus;
use lienthong_message_log::cpu;
use lienthong_message_log::{LogKeys, LogReader, LogRecord, MessageLog, SegmentLog};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A provider's request record: the fields a provider takes from the
/// signed request envelope, and that envelope, encoded as it travels
/// (an Ed25519 signature, no batch path).
fn record(i: u64) -> LogRecord {
    let mut r = LogRecord {
        at_ms: 1_700_000_000_000 + i as i64,
        message_id: format!("{i:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
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
        ..Default::default()
    };
    r.envelope = envelope(&r);
    r
}

/// The signed request envelope `r` was made from.
fn envelope(r: &LogRecord) -> Vec<u8> {
    use lienthong_proto::pb::exchange::v1 as ex;
    use lienthong_proto::pb::identifiers::v1 as id;
    use prost::Message;
    let member = |code: &str| id::MemberId {
        instance: "VN".into(),
        member_class: "GOV".into(),
        member_code: code.into(),
    };
    let header = ex::RequestHeader {
        message_id: r.message_id.clone(),
        client: Some(id::SubsystemId {
            member: Some(member("000305")),
            subsystem_code: "business".into(),
        }),
        service: Some(id::ServiceId {
            provider: Some(id::SubsystemId {
                member: Some(member("000102")),
                subsystem_code: "population".into(),
            }),
            service_code: "population.v1.PersonRegistry".into(),
            version: String::new(),
        }),
        method: r.method.clone(),
        user_id: r.user_id.clone(),
        purpose: r.purpose.clone(),
        data_subject: r.data_subject.clone(),
        created_at_unix_ms: r.at_ms,
        payload_digest: r.payload_digest.clone(),
        payload_size: r.payload_size,
        traceparent: format!("00-{}-{:016x}-01", r.message_id, r.at_ms),
        target_server: Some(id::SecurityServerId {
            owner: Some(member("000102")),
            server_code: "ss1".into(),
        }),
        ..Default::default()
    };
    ex::RequestEnvelope {
        header: Some(header),
        signature: Some(ex::Signature {
            algorithm: ex::SignatureAlgorithm::Ed25519 as i32,
            value: vec![3; 64],
            signer_certificate_sha256: vec![4; 32],
            batch: None,
        }),
    }
    .encode_to_vec()
}

fn dir_bytes(dir: &std::path::Path, suffix: &str) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(suffix))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let sizes: Vec<u64> = arg("--sizes")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    let appenders: usize = arg("--appenders")
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let keys = LogKeys::new("VN/GOV/000102/ss1", vec![7; 32], [9; 32]);
    if let Some(dir) = arg("--append-until-killed") {
        return append_until_killed(std::path::Path::new(&dir), keys, appenders).await;
    }
    println!(
        "| records | appenders | append rate (records/s) | process CPU per record | the log's CPU per record: its threads (writer and indexer; the indexer's in brackets) + its commits on appenders' threads | records per commit (share of commits made by appenders) | index lag at the end | segment bytes per record | tree (tiles) bytes per record | index bytes per record | lookup of 10 records by subject, with proofs (median) | open again (tail recovery) | serve again after kill -9 under load: open and one append acknowledged (tail read; torn bytes cut); index caught up after | self-audit while appending | a whole self-audit pass (records/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = Arc::new(SegmentLog::open(&path, keys.clone()).unwrap());
        // Read as the server reads: following the writer in this process.
        let reader = Arc::new(
            LogReader::open(&path, keys.clone())
                .unwrap()
                .following(log.acknowledged()),
        );
        // The self-audit runs all along, as on a server.
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(AuditStatus::default());
        let auditor = {
            let (stop, status, reader) = (stop.clone(), status.clone(), reader.clone());
            std::thread::spawn(move || {
                use lienthong_message_log::audit::{AUDIT_INTERVAL, batch_for};
                while !stop.load(Ordering::Relaxed) {
                    let batch = batch_for(reader.tree_size().unwrap(), AUDIT_INTERVAL);
                    status.step(&reader, batch).unwrap();
                    std::thread::sleep(AUDIT_INTERVAL);
                }
            })
        };
        let me = std::process::id();
        let cpu_before = (
            cpu::process_seconds(me),
            cpu::threads_seconds(me, cpu::THREADS),
            log.stats().appender_cpu(),
            cpu::threads_seconds(me, cpu::INDEXER),
        );
        let started = Instant::now();
        let mut next = 0u64;
        let mut inflight = tokio::task::JoinSet::new();
        while next < n || !inflight.is_empty() {
            while next < n && inflight.len() < appenders {
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
        let lag_records = log.index_lag();
        let lag_started = Instant::now();
        while log.index_lag() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lag = lag_started.elapsed();
        // Per record, in µs: the whole process's (the benchmark's own tasks
        // that make the records and await them included), and the log's
        // own threads' (the writer and the indexer, until the index caught
        // up; not the self-audit, which runs on a thread of its own).
        let stats = log.stats();
        let cpu_per_record = (
            (cpu::process_seconds(me) - cpu_before.0) * 1e6 / n as f64,
            (cpu::threads_seconds(me, cpu::THREADS) - cpu_before.1) * 1e6 / n as f64,
            (stats.appender_cpu() - cpu_before.2).as_secs_f64() * 1e6 / n as f64,
            (cpu::threads_seconds(me, cpu::INDEXER) - cpu_before.3) * 1e6 / n as f64,
        );
        // One log per size: its statistics are this size's alone.
        let commits = stats.commits.load(Ordering::Relaxed);
        let batching = (
            n as f64 / commits as f64,
            100 * stats.by_appenders.load(Ordering::Relaxed) / commits.max(1),
        );
        stop.store(true, Ordering::Relaxed);
        auditor.join().unwrap();
        let audited = status.report();
        assert_eq!(audited.found, 0, "{:?}", audited.mismatches);
        assert_eq!(reader.tree_size().unwrap(), n);

        let root = reader.root(n).unwrap();
        let mut lookups = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let found = reader.about("001190012345", 0, i64::MAX, 0, 10).unwrap();
            for f in &found {
                let proof = reader.inclusion_proof(f.leaf_index, n).unwrap();
                assert!(lienthong_proto::merkle::verify_inclusion(
                    &lienthong_proto::merkle::leaf_hash(&f.leaf),
                    f.leaf_index,
                    n,
                    &proof,
                    &root
                ));
            }
            lookups.push(t.elapsed());
            assert_eq!(found.len() as u64, 10.min(n / 1000));
        }
        // A whole pass of the self-audit, in the server's batches, without
        // the pauses between them: what a cycle costs at this size.
        let t = Instant::now();
        let batch = lienthong_message_log::audit::batch_for(
            n,
            lienthong_message_log::audit::AUDIT_INTERVAL,
        );
        let mut from = 0;
        while from < n {
            let to = n.min(from + batch);
            let audit = reader.audit(from, to).unwrap();
            assert!(audit.mismatches.is_empty(), "{:?}", audit.mismatches);
            from = to;
        }
        let pass = t.elapsed();
        // Stopped and its indexer joined: nothing of it runs on into the
        // reopening, or into the next size's figures.
        Arc::into_inner(log)
            .expect("the appenders are done")
            .close();
        let t = Instant::now();
        let reopened = SegmentLog::open(&path, keys.clone()).unwrap();
        let reopen = t.elapsed();
        let read = reopened.recovered().bytes_read;
        reopened.close();
        let bytes = (
            dir_bytes(&path, ".seg") / n,
            dir_bytes(&path, ".tile") / n,
            (dir_bytes(&path, "index.db") + dir_bytes(&path, "records.loc")) / n,
        );
        // Last: the killed child appends on past `n`.
        let crash = serve_again_after_a_kill(&path, &keys, appenders).await;
        println!(
            "| {n} | {appenders} | {rate:.0} | {:.1} µs | {:.1} ({:.1}) + {:.1} µs | {:.1} ({} %) | {lag_records} records, caught up in {:.0?} | {} | {} | {} | {:.0?} | {:.0?} ({} KiB read) | {crash} | {} records checked | {:.1?} ({:.0}) |",
            cpu_per_record.0,
            cpu_per_record.1,
            cpu_per_record.3,
            cpu_per_record.2,
            batching.0,
            batching.1,
            lag,
            bytes.0,
            bytes.1,
            bytes.2,
            median(lookups),
            reopen,
            read / 1024,
            audited.checked,
            pass,
            n as f64 / pass.as_secs_f64(),
        );
    }
}

/// The log in `dir` killed (SIGKILL) while `appenders` append to it in a
/// child process, then opened again here: how long until it serves again
/// (open, tail recovery included, and one append acknowledged), what the
/// recovery read and cut, and how long the index then takes to catch up.
async fn serve_again_after_a_kill(
    dir: &std::path::Path,
    keys: &LogKeys,
    appenders: usize,
) -> String {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--append-until-killed", dir.to_str().unwrap()])
        .args(["--appenders", &appenders.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once it has appended for a while, in the middle of commits.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "appending");
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    let log = SegmentLog::open(dir, keys.clone()).unwrap();
    log.append(record(u64::MAX / 2)).await.unwrap();
    let serving = t.elapsed();
    let tail = log.recovered().clone();
    let t = Instant::now();
    while log.index_lag() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught_up = t.elapsed();
    log.close();
    format!(
        "{serving:.0?} ({} KiB read; {} B cut); {caught_up:.0?}",
        tail.bytes_read / 1024,
        tail.cut
    )
}

/// The child of [`serve_again_after_a_kill`]: appends to the log in `dir`
/// with `appenders` until it is killed, saying "appending" once it is.
async fn append_until_killed(dir: &std::path::Path, keys: LogKeys, appenders: usize) {
    let log = Arc::new(SegmentLog::open(dir, keys).unwrap());
    let mut inflight = tokio::task::JoinSet::new();
    for next in 0u64.. {
        while inflight.len() < appenders {
            let log = log.clone();
            let r = record(next);
            inflight.spawn(async move { log.append(r).await });
        }
        inflight.join_next().await.unwrap().unwrap().unwrap();
        if next == 1000 {
            println!("appending");
        }
    }
}
