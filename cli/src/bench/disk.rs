//! What one durable commit costs on the disk the logs are on: the median
//! time of appending 4 KiB to a file and `fdatasync`ing it, measured in the
//! same run as the exchanges, so the log's added latency can be read
//! against it — and of the same write over zeros synced ahead, as the
//! message log's writer commits (`writer::ALLOCATED_AHEAD`).

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Commits timed to find the median.
pub const SAMPLES: usize = 200;

/// The median of `samples` appends of 4 KiB, each followed by
/// `fdatasync`, in a scratch file under `dir` (removed afterwards).
pub fn median_fdatasync(dir: &Path, samples: usize) -> std::io::Result<Duration> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let median = median_of(samples, |_, block| {
        file.write_all(block)?;
        file.sync_data()
    });
    drop(file);
    std::fs::remove_file(&path)?;
    median
}

/// The median of `samples` writes of 4 KiB over zeros written and synced
/// beforehand, each followed by `fdatasync` (the file's size does not
/// change), in a scratch file under `dir` (removed afterwards).
pub fn median_fdatasync_over_zeros(dir: &Path, samples: usize) -> std::io::Result<Duration> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fdatasync-probe-ahead");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    file.write_all_at(&vec![0u8; BLOCK * samples.max(1)], 0)?;
    file.sync_all()?;
    let median = median_of(samples, |i, block| {
        file.write_all_at(block, (i * BLOCK) as u64)?;
        file.sync_data()
    });
    drop(file);
    std::fs::remove_file(&path)?;
    median
}

const BLOCK: usize = 4096;

/// The median time of `samples` (at least one) calls of `commit(i, block)`.
fn median_of(
    samples: usize,
    mut commit: impl FnMut(usize, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<Duration> {
    let block = [0x5au8; BLOCK];
    let mut times = Vec::with_capacity(samples.max(1));
    for i in 0..samples.max(1) {
        let start = Instant::now();
        commit(i, &block)?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_commit_takes_some_time_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let median = super::median_fdatasync(dir.path(), 5).unwrap();
        assert!(median > std::time::Duration::ZERO);
        let ahead = super::median_fdatasync_over_zeros(dir.path(), 5).unwrap();
        assert!(ahead > std::time::Duration::ZERO);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
