//! What every engine's run shares: log_scale's records, its appenders, and
//! the process's own measures (CPU, memory, bytes on disk).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lienthong_message_log::{LogKeys, LogRecord, MessageLog};

/// The traced citizen: every thousandth record is about them.
pub const SUBJECT: &str = "001190012345";

/// The keys log_scale uses.
pub fn keys() -> LogKeys {
    LogKeys::new("VN/GOV/000102/ss1", vec![7; 32], [9; 32])
}

/// log_scale's `record(i)`, byte for byte.
pub fn record(i: u64) -> LogRecord {
    LogRecord {
        at_ms: 1_700_000_000_000 + i as i64,
        message_id: format!("{i:016x}{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        client: "VN/GOV/000305/business".into(),
        service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
        method: "GetPerson".into(),
        user_id: "officer-7".into(),
        purpose: "business registration 2026-114".into(),
        data_subject: if i.is_multiple_of(1000) {
            SUBJECT.into()
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

/// Appends records `0..n` with `appenders` concurrent appenders, each
/// waiting until its own record is durable (log_scale's loop). Returns the
/// time it took.
pub async fn drive(log: Arc<dyn MessageLog>, n: u64, appenders: usize) -> Duration {
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
            done.expect("appender").expect("append");
        }
    }
    started.elapsed()
}

fn stat_fields() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// This process's CPU time (user + system), from /proc (as log_scale).
pub fn cpu() -> Duration {
    let f = stat_fields();
    // utime and stime are fields 14 and 15 (11 and 12 after the name).
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Waits until the process has used no CPU for a second (at most `cap`):
/// an engine's work left for background threads (an LSM's flushes and
/// compactions) is then done. Returns the CPU used meanwhile.
pub fn settle(cap: Duration) -> Duration {
    let started = Instant::now();
    let from = cpu();
    let mut last = from;
    let mut quiet = 0;
    while quiet < 4 && started.elapsed() < cap {
        std::thread::sleep(Duration::from_millis(250));
        let now = cpu();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    last - from
}

/// What this process has written, from /proc/self/io: (`wchar`, the bytes
/// it handed to write calls — the engine's own writes, whatever the page
/// cache then does with them; `write_bytes`, the page-cache memory it
/// dirtied, which counts a whole (possibly large) folio each time a write
/// dirties it again, and so overstates an engine that writes into pages
/// already written).
pub fn written() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("write_bytes:"))
}

/// The process's peak resident memory, in MiB.
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Bytes of the files under `dir` whose name contains `part` ("" for
/// all), recursively: (apparent length, allocated blocks).
pub fn bytes_under(dir: &Path, part: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = bytes_under(&e.path(), part);
            total.0 += a;
            total.1 += b;
        } else if e.file_name().to_string_lossy().contains(part) {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What one run measured, as the child reports it to the parent.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub engine: String,
    pub n: u64,
    pub rate: f64,
    /// Process CPU from the first append until every record is durable
    /// (and, for segments, indexed), per record.
    pub cpu_us: f64,
    /// CPU the process went on using after that, until idle, per record.
    pub later_cpu_us: f64,
    pub bytes: u64,
    pub allocated: u64,
    /// Bytes per record, by part.
    pub parts: String,
    pub lookup_us: f64,
    /// Bytes handed to write calls from the first append until idle, per
    /// record (`wchar`).
    pub written: u64,
    /// Page-cache bytes dirtied meanwhile, per record (`write_bytes`).
    pub dirtied: u64,
    pub rss_mib: u64,
    pub per_commit: f64,
}

/// What reopening measured.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Reopen {
    pub ms: f64,
    pub records: u64,
}

/// A child's report on its standard output: one line, a tag and the
/// figures as JSON.
pub trait Report: serde::Serialize + serde::de::DeserializeOwned {
    const TAG: &'static str;

    fn line(&self) -> String {
        format!(
            "{} {}",
            Self::TAG,
            serde_json::to_string(self).expect("figures serialize")
        )
    }

    /// The report among a child's output lines.
    fn parse(out: &str) -> Option<Self> {
        out.lines().find_map(|l| {
            let json = l.strip_prefix(Self::TAG)?.strip_prefix(' ')?;
            serde_json::from_str(json).ok()
        })
    }
}

impl Report for Run {
    const TAG: &'static str = "RUN";
}

impl Report for Reopen {
    const TAG: &'static str = "REOPEN";
}
