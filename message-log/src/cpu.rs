//! CPU time as `/proc` gives it: a process's, and that of the log's own
//! threads (the writer and the indexer name theirs [`THREADS`] and
//! `THREADS-index`), so a benchmark can tell the log's cost from the rest
//! of the process's; and the calling thread's, to the nanosecond, for the
//! commits an appender makes on its own thread
//! ([`CommitStats::appender_cpu`](crate::writer::CommitStats::appender_cpu)).

use std::time::Duration;

/// The name of the writer thread, and the start of the indexer's.
pub const THREADS: &str = "message-log";
/// The indexer thread's name as `/proc` gives it (`THREADS-index`, cut to
/// 15 bytes).
pub const INDEXER: &str = "message-log-ind";

/// Clock ticks per second of `/proc/*/stat` (USER_HZ: 100 on every Linux
/// this runs on).
const CLK_TCK: f64 = 100.0;

/// User + system CPU seconds process `pid` spent so far (0 once it is gone,
/// or where there is no `/proc`).
pub fn process_seconds(pid: u32) -> f64 {
    stat_seconds(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds spent so far by the threads of process `pid`
/// whose name starts with `prefix` (as `/proc` gives it: 15 bytes at most).
pub fn threads_seconds(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| stat_seconds(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// User + system CPU time the calling thread has spent so far
/// (`CLOCK_THREAD_CPUTIME_ID`, to the nanosecond).
pub fn this_thread() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// User + system CPU seconds in a `/proc/…/stat` file (0 if unreadable).
fn stat_seconds(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // The fields after the command name (which may hold spaces and
    // parentheses); utime and stime are the 12th and 13th of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / CLK_TCK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads are found by the start of their names, and only they: CPU
    /// a thread of another name spends is not counted.
    #[test]
    fn threads_are_told_apart_by_their_names() {
        use std::sync::{Arc, Barrier};
        const SPENT: f64 = 0.15;
        let me = std::process::id();
        let before = (process_seconds(me), threads_seconds(me, "cpu-test-log"));
        // Each thread spends SPENT seconds of its own CPU, then stays (a
        // finished thread leaves /proc) until it has been counted.
        let (spent, counted) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
        let spin = |name: String| {
            let (spent, counted) = (spent.clone(), counted.clone());
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let mut x = 0u64;
                    while stat_seconds("/proc/thread-self/stat") < SPENT {
                        for _ in 0..100_000 {
                            x = std::hint::black_box(x.wrapping_add(1));
                        }
                    }
                    spent.wait();
                    counted.wait();
                })
                .unwrap()
        };
        // Named apart from the log's own threads, which other tests of
        // this binary run meanwhile.
        let threads = [spin("cpu-test-other".into()), spin("cpu-test-log".into())];
        spent.wait();
        let after = (process_seconds(me), threads_seconds(me, "cpu-test-log"));
        counted.wait();
        for t in threads {
            t.join().unwrap();
        }
        let logged = after.1 - before.1;
        assert!(logged >= SPENT, "{logged} s in the log's thread");
        assert!(logged < 2.0 * SPENT, "{logged} s: another thread counted");
        assert!(after.0 - before.0 >= 2.0 * SPENT, "{after:?} {before:?}");
    }

    /// The calling thread's clock counts what it spends, and not what it
    /// waits, nor what another thread spends meanwhile.
    #[test]
    fn this_thread_counts_its_own_cpu_only() {
        const SPENT: Duration = Duration::from_millis(50);
        let before = this_thread();
        let mut x = 0u64;
        while this_thread() - before < SPENT {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spun = this_thread() - before;
        assert!(spun >= SPENT && spun < 4 * SPENT, "{spun:?}");

        let before = this_thread();
        let other = std::thread::spawn(|| {
            let started = this_thread();
            while this_thread() - started < SPENT {}
        });
        std::thread::sleep(SPENT);
        other.join().unwrap();
        let waited = this_thread() - before;
        assert!(waited < SPENT / 5, "{waited:?} counted while waiting");
    }

    /// The names the log's threads have in `/proc`: the writer's is
    /// [`THREADS`], the indexer's [`INDEXER`] (which starts with it).
    #[test]
    fn the_logs_threads_go_by_the_names_counted() {
        let dir = tempfile::tempdir().unwrap();
        let keys = crate::LogKeys::new("VN/GOV/000102/ss1", vec![1; 32], [2; 32]);
        let log = crate::SegmentLog::open(dir.path(), keys).unwrap();
        let names = || -> Vec<String> {
            std::fs::read_dir(format!("/proc/{}/task", std::process::id()))
                .unwrap()
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim_end().to_owned())
                .collect()
        };
        // A thread names itself once it runs.
        let waited = std::time::Instant::now();
        let mut seen = names();
        while !(seen.iter().any(|n| n == THREADS) && seen.iter().any(|n| n == INDEXER)) {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the log's threads are not named as counted: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
            seen = names();
        }
        log.close();
        assert!(INDEXER.starts_with(THREADS));
    }
}
