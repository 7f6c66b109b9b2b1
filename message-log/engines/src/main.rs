//! The message log's engine against fjall and redb, on log_scale's workload
//! (docs/message-log.md, "Engines compared").
//!
//! For each engine and size: N records of log_scale's shape, appended by
//! 256 concurrent tokio tasks each waiting until its own record is durable
//! (group commit, up to 1024 records a commit); every record sealed the
//! same way (ChaCha20-Poly1305 under a segment key, its position as nonce).
//!
//! * `segments`: `SegmentLog` + `LogReader` as log_scale runs them, the
//!   index built behind by the indexer (the CPU measured runs until the
//!   index has caught up). `--audit` runs the self-audit too, as log_scale
//!   does; it is off by default because no other engine has one.
//! * `fjall`, `redb`: the record under its big-endian position and, in the
//!   same durable commit, its keyed subject hash + position, its message id
//!   and the tree's completed nodes (see `kv.rs`).
//!
//! Measured: append rate, process CPU per record (utime + stime), CPU the
//! process goes on using afterwards until idle (an LSM's flushes and
//! compactions), bytes handed to write calls per record (/proc/self/io
//! `wchar`), bytes on disk per record (allocated blocks: fjall's
//! journals and redb's file are preallocated or sparse, so their length is
//! shown apart), a lookup of 10 records by
//! subject (each opened and checked; median of 50), peak RSS, and the time
//! to open again after a crash (the filling process exits without closing
//! anything) and after a clean close. Each run is its own process.
//!
//! ```text
//! cargo run --release --manifest-path message-log/engines/Cargo.toml -- \
//!     --sizes 100000,1000000 --rounds 2 --dir /path/on/the/same/disk
//! ```
//!
//! Options: `--engines segments,fjall,redb` (also `fjall-64mib-journal` and
//! `redb-quick-repair`: see `kv.rs`), `--rounds N` (each round runs
//! every engine, in an order rotated by one each round), `--appenders N`
//! (256), `--audit`, `--dir DIR` (the data, deleted after each run).

mod common;
mod kv;
mod segments;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Reopen, Report, Run};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => child(&args[2..]),
        Some("--reopen") => reopen(&args[2..]),
        _ => parent(),
    }
}

/// One filling run, in its own process; exits without closing anything
/// (the crash the next process recovers from).
fn child(args: &[String]) {
    let engine = args[0].as_str();
    let n: u64 = args[1].parse().expect("n");
    let dir = PathBuf::from(&args[2]);
    let appenders: usize = args[3].parse().expect("appenders");
    let audit = args[4] == "1";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run = rt.block_on(async {
        match engine {
            "segments" => segments::run(&dir, n, appenders, audit).await,
            "fjall" => kv::run::<kv::Fjall<false>>(&dir, n, appenders).await,
            "fjall-64mib-journal" => kv::run::<kv::Fjall<true>>(&dir, n, appenders).await,
            "redb" => kv::run::<kv::Redb<false>>(&dir, n, appenders).await,
            "redb-quick-repair" => kv::run::<kv::Redb<true>>(&dir, n, appenders).await,
            other => panic!("unknown engine {other}"),
        }
    });
    println!("{}", run.line());
    std::io::stdout().flush().expect("stdout");
    std::process::exit(0);
}

fn reopen(args: &[String]) {
    let engine = args[0].as_str();
    let n: u64 = args[1].parse().expect("n");
    let dir = PathBuf::from(&args[2]);
    let r = match engine {
        "segments" => segments::reopen(&dir, n),
        "fjall" => kv::reopen::<kv::Fjall<false>>(&dir, n),
        "fjall-64mib-journal" => kv::reopen::<kv::Fjall<true>>(&dir, n),
        "redb" => kv::reopen::<kv::Redb<false>>(&dir, n),
        "redb-quick-repair" => kv::reopen::<kv::Redb<true>>(&dir, n),
        other => panic!("unknown engine {other}"),
    };
    assert_eq!(r.records, n, "records after reopening");
    println!("{}", r.line());
}

/// The one-minute load average.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn spawn(args: &[&str]) -> String {
    let exe = std::env::current_exe().expect("exe");
    let out = Command::new(exe).args(args).output().expect("spawn");
    if !out.status.success() {
        panic!(
            "{args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Measured {
    run: Run,
    crash: Reopen,
    clean: Reopen,
    load: (f64, f64),
}

fn parent() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().skip_while(|a| *a != name).nth(1).cloned();
    let sizes: Vec<u64> = arg("--sizes")
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    let engines: Vec<String> = arg("--engines")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_else(|| vec!["segments".into(), "fjall".into(), "redb".into()]);
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(2);
    let appenders = arg("--appenders").unwrap_or_else(|| "256".into());
    let audit = if args.iter().any(|a| a == "--audit") {
        "1"
    } else {
        "0"
    };
    let base = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("lienthong-engines-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("data dir");

    for &n in &sizes {
        let mut measured: Vec<Measured> = Vec::new();
        for round in 0..rounds {
            let mut order = engines.clone();
            order.rotate_left(round % engines.len());
            for engine in &order {
                let dir = base.join(format!("{engine}-{n}-{round}"));
                let _ = std::fs::remove_dir_all(&dir);
                let d = dir.to_str().expect("utf-8 path");
                let before = load();
                let ns = n.to_string();
                let out = spawn(&["--child", engine, &ns, d, &appenders, audit]);
                let run = Run::parse(&out).expect("a run's figures");
                let crash = Reopen::parse(&spawn(&["--reopen", engine, &ns, d])).expect("reopen");
                let clean = Reopen::parse(&spawn(&["--reopen", engine, &ns, d])).expect("reopen");
                let after = load();
                remove(&dir);
                eprintln!(
                    "{} crash_reopen_ms={:.1} clean_reopen_ms={:.1} load={before:.2}->{after:.2}",
                    run.line(),
                    crash.ms,
                    clean.ms
                );
                measured.push(Measured {
                    run,
                    crash,
                    clean,
                    load: (before, after),
                });
            }
        }
        table(n, &engines, &measured, audit == "1");
    }
    remove(&base);
}

fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("cannot remove {}: {e}", dir.display());
    }
}

fn range(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (a, b) = (fmt(min), fmt(max));
    if a == b { a } else { format!("{a}–{b}") }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(n: u64, engines: &[String], measured: &[Measured], audit: bool) {
    let of =
        |e: &str| -> Vec<&Measured> { measured.iter().filter(|m| m.run.engine == e).collect() };
    let loads: Vec<f64> = measured.iter().flat_map(|m| [m.load.0, m.load.1]).collect();
    println!();
    println!(
        "{n} records, {} runs of each engine (ranges over the runs; one-minute load average {} over the runs){}",
        of(&engines[0]).len(),
        range(&loads, |v| format!("{v:.1}")),
        if audit {
            ", segments with the self-audit running"
        } else {
            ""
        }
    );
    println!();
    let mut header = String::from("| |");
    let mut rule = String::from("|---|");
    for e in engines {
        header.push_str(&format!(" {e} |"));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    type Cell = Box<dyn Fn(&[&Measured]) -> String>;
    let base = of(&engines[0]);
    let base_rate = mean(&base.iter().map(|m| m.run.rate).collect::<Vec<_>>());
    let base_cpu = mean(&base.iter().map(|m| m.run.cpu_us).collect::<Vec<_>>());
    let rows: Vec<(String, Cell)> = vec![
        (
            "append rate (records/s)".into(),
            Box::new(|ms| {
                range(
                    &ms.iter().map(|m| m.run.rate).collect::<Vec<_>>(),
                    thousands,
                )
            }),
        ),
        (
            format!("append rate, mean, × {}", engines[0]),
            Box::new(move |ms| {
                format!(
                    "{:.2} ×",
                    mean(&ms.iter().map(|m| m.run.rate).collect::<Vec<_>>()) / base_rate
                )
            }),
        ),
        (
            "process CPU per record until durable (segments: and indexed)".into(),
            Box::new(|ms| {
                range(&ms.iter().map(|m| m.run.cpu_us).collect::<Vec<_>>(), |v| {
                    format!("{v:.1} µs")
                })
            }),
        ),
        (
            format!("CPU per record, mean, × {}", engines[0]),
            Box::new(move |ms| {
                format!(
                    "{:.2} ×",
                    mean(&ms.iter().map(|m| m.run.cpu_us).collect::<Vec<_>>()) / base_cpu
                )
            }),
        ),
        (
            "CPU per record after, until the process is idle".into(),
            Box::new(|ms| {
                range(
                    &ms.iter().map(|m| m.run.later_cpu_us).collect::<Vec<_>>(),
                    |v| format!("{v:.1} µs"),
                )
            }),
        ),
        (
            "bytes on disk per record (allocated blocks)".into(),
            Box::new(|ms| {
                let mut parts: Vec<&str> = ms.iter().map(|m| m.run.parts.as_str()).collect();
                parts.sort();
                parts.dedup();
                format!(
                    "{} ({})",
                    range(
                        &ms.iter()
                            .map(|m| (m.run.allocated / m.run.n) as f64)
                            .collect::<Vec<_>>(),
                        |v| format!("{v:.0}")
                    ),
                    parts.join("; ").replace(',', ", ").replace(':', " ")
                )
            }),
        ),
        (
            "files' length per record (preallocated and sparse space included)".into(),
            Box::new(|ms| {
                range(
                    &ms.iter()
                        .map(|m| (m.run.bytes / m.run.n) as f64)
                        .collect::<Vec<_>>(),
                    |v| format!("{v:.0}"),
                )
            }),
        ),
        (
            "bytes handed to write calls per record (wchar, until idle)".into(),
            Box::new(|ms| {
                range(
                    &ms.iter().map(|m| m.run.written as f64).collect::<Vec<_>>(),
                    |v| format!("{v:.0}"),
                )
            }),
        ),
        (
            "lookup of 10 records by subject (median of 50)".into(),
            Box::new(|ms| {
                range(
                    &ms.iter().map(|m| m.run.lookup_us).collect::<Vec<_>>(),
                    |v| format!("{v:.0} µs"),
                )
            }),
        ),
        (
            "open again after a crash (process exit, nothing closed)".into(),
            Box::new(|ms| {
                range(&ms.iter().map(|m| m.crash.ms).collect::<Vec<_>>(), |v| {
                    format!("{v:.1} ms")
                })
            }),
        ),
        (
            "open again after a clean close".into(),
            Box::new(|ms| {
                range(&ms.iter().map(|m| m.clean.ms).collect::<Vec<_>>(), |v| {
                    format!("{v:.1} ms")
                })
            }),
        ),
        (
            "peak resident memory".into(),
            Box::new(|ms| {
                range(
                    &ms.iter().map(|m| m.run.rss_mib as f64).collect::<Vec<_>>(),
                    |v| format!("{v:.0} MiB"),
                )
            }),
        ),
        (
            "records per commit (mean)".into(),
            Box::new(|ms| {
                range(
                    &ms.iter().map(|m| m.run.per_commit).collect::<Vec<_>>(),
                    |v| format!("{v:.0}"),
                )
            }),
        ),
    ];
    for (name, cell) in rows {
        let mut line = format!("| {name} |");
        for e in engines {
            line.push_str(&format!(" {} |", cell(&of(e))));
        }
        println!("{line}");
    }
}
