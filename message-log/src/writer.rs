//! The writer: whatever has queued up is sealed and appended to the
//! current segment as one frame — one `write`, one `fdatasync` — and only
//! then are the records acknowledged (group commit: many concurrent
//! exchanges share one fsync). A second thread, the indexer, follows behind
//! and adds each commit to the index ([`crate::index::catch_up`]); nothing
//! on an exchange's path waits for it.
//!
//! **Who commits.** Commits never overlap and take the queue in order. An
//! appender that awaits its record while no commit is under way and the
//! log is quiet (at most four records a commit) commits what is queued on
//! its own thread, in that poll: a lone exchange (one caller, a quiet
//! server) then waits for its `fdatasync` and nothing else — no wake-up
//! of a writer thread, none of the appender's task afterwards, each a few
//! tens of microseconds of CPU and latency on this project's virtual
//! machines. While a commit is under
//! way, records queue, and the writer thread commits them as one frame
//! when it ends; it alone writes the zeros ahead. (A commit that finds
//! the segment full, or follows a failed write, starts a new segment
//! first — a file created and synced — on whichever thread commits.)
//! The cost of the idle path: the appender's thread (a Tokio worker in
//! the server) is blocked for one `write` + `fdatasync`, only while the
//! log is quiet and no other commit runs — at most one thread at a time.
//!
//! The writer opens a new segment every time it starts and after any failed
//! write, so that no position is ever sealed twice under one segment key
//! (see [`crate::record`]). A failed write is cut back from the segment
//! before anyone is told; until space returns (a full disk), commits fail
//! and exchanges are refused with a clear fault, and nothing acknowledged
//! is lost.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use lienthong_proto::canonical::{hidden_commitment, subject_commitment};
use lienthong_proto::pb::trace::v1::HiddenOpening;
use lienthong_proto::time::now_ms;
use tokio::sync::oneshot;

use std::collections::VecDeque;

use lienthong_proto::merkle;

use crate::index::{self, Derived, Keys, Placed, Segments};
use crate::keys::SubjectHasher;
use crate::leaf::leaf_of;
use crate::record::{Made, SegmentKey, Stored};
use crate::segment::{self, FrameBuilder, Header, KIND_SEALED, Tail};
use crate::{Appended, LogError, LogKeys, LogRecord, MessageLog};

/// Most records committed in one frame.
const MAX_BATCH: usize = 1024;
/// An appender commits on its own thread only while the log is quiet: the
/// last commit, and what is queued now, at most this many records (an
/// exchange's two). Under load the writer thread takes every commit, so
/// appenders' threads are not blocked in turn for small commits.
const QUIET: usize = 4;
/// How often the indexer adds what was committed since (the index lag
/// stays below it, under any load the writer sustains).
const INDEX_EVERY: Duration = Duration::from_millis(200);
/// Committed records that make the indexer start at once.
const INDEX_BACKLOG: u64 = 8192;
/// How long opening a log waits for another writer to let go of it.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How often the writer reports its group-commit statistics (when busy).
const STATS_EVERY: Duration = Duration::from_secs(10);

/// How the log is laid out.
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment is closed and a new one started once it is this large
    /// (retention deletes whole segments). Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
        }
    }
}

/// A record queued for the writer.
struct Job {
    record: LogRecord,
    /// The keyed hash of its data subject, made on the appender's thread.
    subject_key: Option<[u8; 32]>,
    /// The lookup key of its message id ([`crate::runs::message_key`]),
    /// made there too.
    message_key: i64,
    done: oneshot::Sender<Result<(), LogError>>,
}

/// How group commit is doing.
#[derive(Debug, Default)]
pub struct CommitStats {
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub largest_batch: AtomicU64,
    /// Commits an appender made on its own thread, the log being quiet.
    pub by_appenders: AtomicU64,
    /// CPU time (ns) those commits took on the appenders' threads: the
    /// log's work that its own threads' CPU (`/proc`) does not show.
    appender_cpu_ns: AtomicU64,
    /// Where each commit's time and size are also reported, once the
    /// server's metrics are attached ([`CommitStats::report_to`]).
    histograms: std::sync::OnceLock<CommitHistograms>,
}

/// The histograms a commit's time (seconds) and size (records) go to.
#[derive(Debug)]
pub struct CommitHistograms {
    pub seconds: metrics::Histogram,
    pub records: metrics::Histogram,
    /// CPU time of each commit made on an appender's thread.
    pub appender_cpu_seconds: metrics::Histogram,
}

impl CommitStats {
    /// CPU time the commits made on appenders' threads took there (see
    /// [`CommitStats::by_appenders`]); with the CPU of the log's own
    /// threads ([`crate::cpu::THREADS`]), the whole of the log's commits.
    pub fn appender_cpu(&self) -> Duration {
        Duration::from_nanos(self.appender_cpu_ns.load(Ordering::Relaxed))
    }

    /// Reports every later commit to `histograms` too (the first call wins).
    pub fn report_to(&self, histograms: CommitHistograms) {
        let _ = self.histograms.set(histograms);
    }

    fn appender_committed(&self, cpu: Duration) {
        self.appender_cpu_ns
            .fetch_add(cpu.as_nanos() as u64, Ordering::Relaxed);
        if let Some(h) = self.histograms.get() {
            h.appender_cpu_seconds.record(cpu.as_secs_f64());
        }
    }

    fn committed(&self, records: usize, took: std::time::Duration) {
        let n = records as u64;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(n, Ordering::Relaxed);
        self.largest_batch.fetch_max(n, Ordering::Relaxed);
        if let Some(h) = self.histograms.get() {
            h.seconds.record(took.as_secs_f64());
            h.records.record(records as f64);
        }
    }
}

/// Where the writer and the indexer meet.
#[derive(Debug, Default)]
struct Progress {
    /// Records durable in the segments.
    committed: Mutex<u64>,
    wake: Condvar,
    /// Records in the index.
    indexed: AtomicU64,
    stopped: AtomicBool,
    /// What the writer derived from the records it committed, waiting for
    /// the indexer (at most [`index::MOST_DERIVED`]; older ones go).
    derived: Mutex<VecDeque<Derived>>,
}

impl Progress {
    fn give(&self, derived: Vec<Derived>) {
        index::keep_derived(&mut lock(&self.derived), derived);
    }

    fn take(&self) -> VecDeque<Derived> {
        std::mem::take(&mut *lock(&self.derived))
    }
}

/// The message log of one server: segments in a directory.
pub struct SegmentLog {
    shared: Arc<Shared>,
    subjects: SubjectHasher,
    stats: Arc<CommitStats>,
    progress: Arc<Progress>,
    recovered: Tail,
    indexer: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for SegmentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentLog")
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
    }
}

impl SegmentLog {
    /// Opens (creating if needed) the log in `dir` with default options.
    pub fn open(dir: &Path, keys: LogKeys) -> Result<Self, LogError> {
        Self::open_with(dir, keys, Options::default())
    }

    /// Opens the log in `dir`: recovers its tail, brings the index up to
    /// date, and starts the writer (in a new segment) and the indexer.
    pub fn open_with(dir: &Path, keys: LogKeys, options: Options) -> Result<Self, LogError> {
        keys.current()
            .ok_or_else(|| LogError("no log key to seal with".into()))?;
        create_private_dir(dir)?;
        // One writer per log: a second would cut and delete the first's
        // segments under it.
        // The lock goes when the writer stops, so a log reopened at once
        // (a restart) waits for the old writer's last commit.
        let dir_lock = File::create(dir.join("LOCK"))?;
        let waited = Instant::now();
        while dir_lock.try_lock().is_err() {
            if waited.elapsed() > LOCK_WAIT {
                return Err(LogError(format!(
                    "{} is in use by another process (its message log is locked)",
                    dir.display()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let recovered = segment::recover_tail(dir, true)?;
        let size = recovered.size;
        // Records the registry witnessed can never be missing: refuse
        // rather than write new records at their positions (a fork).
        if let Some(c) = crate::checkpoints::latest(&crate::checkpoints::open(dir)?)?
            && c.tree_size > size
        {
            return Err(LogError(format!(
                "the message log in {} ends at record {size}, but the registry witnessed a checkpoint of {} records: records were cut or removed; restore the log from a backup",
                dir.display(),
                c.tree_size
            )));
        }
        crate::keys::check_log(dir, &keys, size)?;
        // A last segment that holds no record (only its header) goes; the
        // new segment starts at the same position.
        if let Some((first, path)) = segment::list(dir)?.last()
            && *first == size
        {
            std::fs::remove_file(path)?;
        }
        let mut conn = index::open(dir)?;
        index::cut_back(&mut conn, dir, size)?;
        let current = Current::create(dir, &keys, size)?;
        let subjects = keys.subject_hasher();

        let stats = Arc::new(CommitStats::default());
        let progress = Arc::new(Progress::default());
        *lock(&progress.committed) = size;
        let w = Writer {
            dir: dir.to_owned(),
            keys: keys.clone(),
            options,
            current: Some(current),
            size,
            poisoned: false,
            reported: Instant::now(),
            dir_lock: Some(dir_lock),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            writer: Mutex::new(w),
            stats: stats.clone(),
            progress: progress.clone(),
        });
        let on_thread = shared.clone();
        thread::Builder::new()
            .name(crate::cpu::THREADS.into())
            .spawn(move || on_thread.run())
            .map_err(|e| LogError(format!("cannot start the log writer: {e}")))?;
        let (indexer_dir, indexer_progress) = (dir.to_owned(), progress.clone());
        let indexer = thread::Builder::new()
            .name(format!("{}-index", crate::cpu::THREADS))
            .spawn(move || indexer(conn, indexer_dir, keys, indexer_progress))
            .map_err(|e| LogError(format!("cannot start the log indexer: {e}")))?;
        if recovered.cut > 0 {
            tracing::warn!(
                bytes = recovered.cut,
                records = size,
                "message log recovered: an incomplete last commit was cut off and kept beside its segment"
            );
        }
        Ok(SegmentLog {
            shared,
            subjects,
            stats,
            progress,
            recovered,
            indexer: Some(indexer),
        })
    }

    pub fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// The statistics, shared (for the admin port).
    pub fn stats_handle(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }

    /// What recovery found when the log opened.
    pub fn recovered(&self) -> &Tail {
        &self.recovered
    }

    /// Durable records not yet in the index.
    pub fn index_lag(&self) -> u64 {
        let committed = *lock(&self.progress.committed);
        committed.saturating_sub(self.progress.indexed.load(Ordering::Relaxed))
    }

    /// A handle that reports the index lag (for metrics and health).
    pub fn lag_handle(&self) -> IndexLag {
        IndexLag(self.progress.clone())
    }

    /// How many records the writer has acknowledged (durable), for readers
    /// in the same process ([`crate::LogReader::following`]): they never
    /// index a commit the writer has not acknowledged (it could still be
    /// cut back).
    pub fn acknowledged(&self) -> IndexLag {
        IndexLag(self.progress.clone())
    }

    /// Stops the writer (after the records already queued) and waits until
    /// the indexer has caught up.
    pub fn close(mut self) {
        self.shared.stop();
        if let Some(h) = self.indexer.take() {
            let _ = h.join();
        }
    }
}

impl Drop for SegmentLog {
    /// The writer thread commits what is queued and stops (the indexer
    /// follows it to the end on its own).
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// How far the index is behind the durable records.
#[derive(Debug, Clone)]
pub struct IndexLag(Arc<Progress>);

impl IndexLag {
    /// Durable records the writer has acknowledged.
    pub fn acknowledged(&self) -> u64 {
        *lock(&self.0.committed)
    }

    pub fn records(&self) -> u64 {
        let committed = *lock(&self.0.committed);
        committed.saturating_sub(self.0.indexed.load(Ordering::Relaxed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Creates `dir` readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), LogError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| LogError(format!("{}: {e}", dir.display())))?;
    } else {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Zeros written ahead of the commits in the segment being written. A
/// commit written over them leaves the file's size and extents alone, so
/// its `fdatasync` has only the data to flush, nothing to journal: on this
/// project's ext4 disk a small commit waits about a third less (median of
/// alternated runs: 304 µs appending, 197 µs over written zeros, 250 µs
/// over `fallocate`d space, whose extents must still be converted).
pub const ALLOCATED_AHEAD: u64 = 1 << 20;
/// What the zeros ahead are written from, a piece at a time: one buffer
/// for the process's life instead of half a MiB allocated, faulted in and
/// freed each time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// The segment being written.
struct Current {
    file: File,
    /// Its first position (its name).
    first: u64,
    key: SegmentKey,
    /// Where its last frame ends.
    len: u64,
    frames: u64,
    /// Its size on disk: `len`, then zeros written ahead.
    allocated: u64,
}

impl Current {
    /// Writes `frame` after the last one and makes it durable.
    fn write(&mut self, frame: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(frame, self.len)?;
        self.file.sync_data()?;
        self.allocated = self.allocated.max(self.len + frame.len() as u64);
        Ok(())
    }

    /// Writes zeros ahead when fewer than half of [`ALLOCATED_AHEAD`] are
    /// left, between commits (off every exchange's path). Best effort: a
    /// disk that cannot take them gets commits appended as without, and
    /// their writes say what is wrong.
    fn write_ahead(&mut self) {
        use std::os::unix::fs::FileExt;
        if !self.wants_zeros() {
            return;
        }
        let target = self.len + ALLOCATED_AHEAD;
        let written = (self.allocated..target)
            .step_by(ZEROS.len())
            .try_for_each(|at| {
                let n = ZEROS.len().min((target - at) as usize);
                self.file.write_all_at(&ZEROS[..n], at)
            });
        match written.and_then(|()| self.file.sync_data()) {
            Ok(()) => self.allocated = target,
            Err(e) => {
                tracing::debug!(error = %e, "message log: no zeros written ahead");
                let _ = self.file.set_len(self.allocated);
            }
        }
    }
}

impl Current {
    /// Whether fewer than half of [`ALLOCATED_AHEAD`] zeros are left.
    fn wants_zeros(&self) -> bool {
        self.allocated - self.len < ALLOCATED_AHEAD / 2
    }
}

impl Drop for Current {
    /// A segment no longer written keeps no zeros after its last frame
    /// (best effort: readers and recovery stop at them anyway).
    fn drop(&mut self) {
        if self.allocated > self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}

impl Current {
    fn create(dir: &Path, keys: &LogKeys, first: u64) -> Result<Current, LogError> {
        let (key_id, _) = keys
            .current()
            .ok_or_else(|| LogError("no log key to seal with".into()))?;
        let mut salt = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| LogError("no randomness for a segment key".into()))?;
        let header = Header {
            key_id,
            first_index: first,
            created_ms: now_ms(),
            salt,
            owner: keys.owner.clone(),
        };
        let path: PathBuf = dir.join(segment::file_name(first));
        // Left by a failed start at the same position: it holds no record.
        if let Ok(m) = std::fs::metadata(&path)
            && m.len() <= header.encode().len() as u64
        {
            std::fs::remove_file(&path)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| write_failed(dir, &e))?;
        let bytes = header.encode();
        let written = file.write_all(&bytes).and_then(|()| file.sync_all());
        if let Err(e) = written
            .map_err(|e| write_failed(dir, &e))
            .and_then(|()| segment::sync_dir(dir))
        {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Current {
            file,
            first,
            key: SegmentKey::derive(keys, key_id, &salt)?,
            len: bytes.len() as u64,
            frames: 0,
            allocated: bytes.len() as u64,
        })
    }
}

/// What a failed write tells the caller; a full disk is named as such (it
/// is the operator's to fix, and the log resumes by itself after).
fn write_failed(dir: &Path, e: &std::io::Error) -> LogError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        LogError(format!(
            "no space left on the disk of {}: the record was not written; exchanges resume once space is freed",
            dir.display()
        ))
    } else {
        LogError(format!("write to {} failed: {e}", dir.display()))
    }
}

struct Writer {
    dir: PathBuf,
    keys: LogKeys,
    options: Options,
    /// None after a failed write: the next commit starts a new segment.
    current: Option<Current>,
    /// Records durable.
    size: u64,
    /// A failed write could not be cut back: the segment's end is unknown,
    /// so nothing more is written until the server restarts (and recovery
    /// finds the end).
    poisoned: bool,
    /// When group-commit statistics were last reported.
    reported: Instant,
    /// The log directory's lock, held until the writer stops (after the
    /// last commit).
    dir_lock: Option<File>,
}

/// What appenders, the writer thread and the indexer share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer thread: records no one is committing, zeros to
    /// write ahead, or the stop.
    work: Condvar,
    writer: Mutex<Writer>,
    stats: Arc<CommitStats>,
    progress: Arc<Progress>,
}

#[derive(Default)]
struct Queue {
    /// Appended, not yet taken into a commit (oldest first).
    jobs: VecDeque<Job>,
    /// A commit is under way (on the writer thread or an appender's).
    busy: bool,
    /// Records in the last commit taken.
    last: usize,
    /// The segment wants zeros written ahead (the writer thread's job,
    /// never an appender's).
    write_ahead: bool,
    stopped: bool,
}

impl Queue {
    /// The next commit's records, oldest first.
    fn batch(&mut self) -> Vec<Job> {
        let n = self.jobs.len().min(MAX_BATCH);
        if n > 0 {
            self.last = n;
        }
        self.jobs.drain(..n).collect()
    }
}

impl Shared {
    /// The writer thread: commits what queued up while a commit was under
    /// way (or what nobody waits for), and writes the zeros ahead.
    fn run(&self) {
        let _failed = Failed(self);
        loop {
            let batch = {
                let mut q = lock(&self.queue);
                loop {
                    if !q.busy && (!q.jobs.is_empty() || q.write_ahead) {
                        break;
                    }
                    if q.stopped && !q.busy && q.jobs.is_empty() {
                        drop(q);
                        // The segment gives back the zeros written ahead,
                        // and the directory is let go, before anyone is
                        // told the writer stopped (no commit can follow:
                        // appends are refused once stopped).
                        let mut w = lock(&self.writer);
                        w.current = None;
                        w.dir_lock = None;
                        drop(w);
                        self.progress.stopped.store(true, Ordering::Release);
                        self.progress.wake.notify_one();
                        return;
                    }
                    q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                q.busy = true;
                q.write_ahead = false;
                q.batch()
            };
            if !batch.is_empty() {
                self.commit(batch, false);
            }
            if let Some(current) = &mut lock(&self.writer).current {
                current.write_ahead();
            }
            lock(&self.queue).busy = false;
        }
    }

    /// Commits what is queued on the calling thread (an appender awaiting
    /// its record) if no commit is under way and the log is quiet; else
    /// leaves it to the writer thread.
    fn lead(&self) {
        let batch = {
            let mut q = lock(&self.queue);
            if q.busy || q.jobs.is_empty() {
                return;
            }
            if q.last > QUIET || q.jobs.len() > QUIET {
                self.work.notify_one();
                return;
            }
            q.busy = true;
            q.batch()
        };
        let _failed = Failed(self);
        let wants_zeros = self.commit(batch, true);
        let mut q = lock(&self.queue);
        q.busy = false;
        q.write_ahead |= wants_zeros;
        if !q.jobs.is_empty() || q.write_ahead || q.stopped {
            // What queued meanwhile, the zeros ahead, or the stop asked
            // for during this commit: the writer thread's.
            self.work.notify_one();
        }
    }

    /// Tells the writer thread of queued records no one is about to commit.
    fn nudge(&self) {
        let q = lock(&self.queue);
        if !q.busy && !q.jobs.is_empty() {
            self.work.notify_one();
        }
    }

    fn stop(&self) {
        lock(&self.queue).stopped = true;
        self.work.notify_one();
    }

    /// Commits `batch` (the caller marked the queue busy) and answers each
    /// of its appenders; returns whether the segment wants zeros ahead.
    /// `by_appender`: made on an appender's thread (counted apart).
    fn commit(&self, mut batch: Vec<Job>, by_appender: bool) -> bool {
        let (stats, progress) = (&self.stats, &self.progress);
        let started = Instant::now();
        let cpu_before = by_appender.then(crate::cpu::this_thread);
        let mut w = lock(&self.writer);
        let result = w.commit(&mut batch).inspect_err(|e| {
            tracing::error!(error = %e, records = batch.len(), "message log commit failed");
        });
        let result = result.map(|derived| progress.give(derived));
        if result.is_ok() {
            stats.committed(batch.len(), started.elapsed());
            if by_appender {
                stats.by_appenders.fetch_add(1, Ordering::Relaxed);
            }
            *lock(&progress.committed) = w.size;
            // The indexer looks every INDEX_EVERY by itself; a large
            // backlog calls it at once.
            if w.size
                .saturating_sub(progress.indexed.load(Ordering::Relaxed))
                >= INDEX_BACKLOG
            {
                progress.wake.notify_one();
            }
        }
        if w.reported.elapsed() >= STATS_EVERY {
            w.reported = Instant::now();
            tracing::info!(
                records = stats.records.load(Ordering::Relaxed),
                commits = stats.commits.load(Ordering::Relaxed),
                largest = stats.largest_batch.load(Ordering::Relaxed),
                by_appenders = stats.by_appenders.load(Ordering::Relaxed),
                "message log group commit"
            );
        }
        let wants_zeros = w.current.as_ref().is_some_and(Current::wants_zeros);
        drop(w);
        for job in batch {
            let _ = job.done.send(result.clone());
        }
        if let Some(before) = cpu_before {
            stats.appender_committed(crate::cpu::this_thread().saturating_sub(before));
        }
        wants_zeros
    }
}

/// Held while a commit (or the writer thread) runs: if it panics, nothing
/// more is written — the segment's end is unknown, as after a write that
/// could not be undone — and every waiting appender is answered with an
/// error instead of waiting forever.
struct Failed<'a>(&'a Shared);

impl Drop for Failed<'_> {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        lock(&self.0.writer).poisoned = true;
        let jobs = {
            let mut q = lock(&self.0.queue);
            q.busy = false;
            q.stopped = true;
            std::mem::take(&mut q.jobs)
        };
        for job in jobs {
            let _ = job.done.send(Err(LogError(
                "the message log writer failed; restart the server to recover the log".into(),
            )));
        }
        self.0.work.notify_one();
        self.0.progress.stopped.store(true, Ordering::Release);
        self.0.progress.wake.notify_one();
    }
}

impl Writer {
    /// Writes `batch` as one frame and makes it durable; returns what the
    /// index takes from each record.
    fn commit(&mut self, batch: &mut [Job]) -> Result<Vec<Derived>, LogError> {
        if self.poisoned {
            return Err(LogError(
                "a failed write could not be undone; restart the server to recover the log".into(),
            ));
        }
        let full = self
            .current
            .as_ref()
            .is_some_and(|c| c.frames > 0 && c.len >= self.options.segment_bytes);
        if self.current.is_none() || full {
            self.current = Some(Current::create(&self.dir, &self.keys, self.size)?);
        }
        let current = self.current.as_mut().expect("opened above");
        // Salts for the withheld records' commitments: one draw per
        // commit that has any. (The subject's salt is the segment key's
        // for the position.)
        let withheld = batch.iter().filter(|j| is_withheld(&j.record)).count();
        let mut salts = vec![0u8; 32 * withheld];
        if withheld > 0 {
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salts)
                .map_err(|_| LogError("no randomness for the commitments".into()))?;
        }
        let mut salts = salts.chunks_exact(32);
        let mut frame = FrameBuilder::new(self.size);
        let mut derived = Vec::with_capacity(batch.len());
        let start = current.len;
        for job in batch.iter_mut() {
            let hidden_salt: &[u8] = if is_withheld(&job.record) {
                salts.next().expect("a salt was drawn per withheld record")
            } else {
                &[]
            };
            let index = frame.next_index();
            let salt = current.key.subject_salt(index);
            // The record is the writer's from here: what it holds moves
            // into the leaf and the sealed record, and its appender is
            // answered whatever the commit's outcome.
            let r = std::mem::take(&mut job.record);
            let keys = Keys::of_record(&r, job.subject_key, job.message_key);
            let digest = (!r.envelope.is_empty()).then(|| lienthong_proto::sha256(&r.envelope));
            let (stored, commitment) = stored(r, &salt, hidden_salt, digest);
            let leaf_hash = merkle::leaf_hash(&stored.leaf);
            let made = Made {
                subject_salt: &salt,
                envelope_digest: digest.as_ref(),
                subject_commitment: commitment.as_ref(),
            };
            let (at, len) = frame.push(KIND_SEALED, |out| {
                current.key.seal_with(index, stored, made, out)
            })?;
            derived.push(Derived {
                index,
                leaf_hash,
                keys,
                placed: Placed {
                    segment: current.first,
                    frame: (start, 0),
                    first: self.size,
                    records: 0,
                    offset: start + at,
                    len: u64::from(len),
                },
            });
        }
        let count = u64::from(frame.count());
        let bytes = frame.finish();
        for d in &mut derived {
            d.placed.frame.1 = start + bytes.len() as u64;
            d.placed.records = count;
        }
        let written = current.write(&bytes);
        if let Err(e) = written {
            // Cut the partial frame back; the next commit starts a new
            // segment (a new key), so no position is sealed twice under one.
            let undone = current
                .file
                .set_len(current.len)
                .and_then(|()| current.file.sync_all());
            current.allocated = current.len;
            self.current = None;
            if let Err(u) = undone {
                self.poisoned = true;
                return Err(LogError(format!(
                    "write failed ({e}) and could not be undone ({u})"
                )));
            }
            return Err(write_failed(&self.dir, &e));
        }
        current.len += bytes.len() as u64;
        current.frames += 1;
        self.size += count;
        Ok(derived)
    }
}

/// Whether `r`'s official and purpose are withheld from the data subject
/// (until `withheld_until_ms`).
fn is_withheld(r: &LogRecord) -> bool {
    r.withheld_until_ms > 0
}

/// What is kept of `r`: its leaf (with the subject committed under
/// `subject_salt` and, when withheld, the official and purpose under
/// `hidden_salt`, 32 random bytes drawn for it) and everything sealed
/// beside it, and the subject commitment. Takes `r`: its values move into
/// what is kept, none is copied.
pub(crate) fn stored(
    mut r: LogRecord,
    subject_salt: &[u8],
    hidden_salt: &[u8],
    envelope_digest: Option<[u8; 32]>,
) -> (Stored, Option<[u8; 32]>) {
    let has_subject = !r.data_subject.is_empty();
    let subject = has_subject.then(|| subject_commitment(subject_salt, &r.data_subject));
    // A withheld exchange's official and purpose stay out of the leaf until
    // its release: a salted commitment stands in, its opening sealed beside.
    let (hidden, opening) = if is_withheld(&r) {
        let hidden = hidden_commitment(hidden_salt, &r.user_id, &r.purpose);
        let opening = HiddenOpening {
            salt: hidden_salt.to_vec(),
            user_id: std::mem::take(&mut r.user_id),
            purpose: std::mem::take(&mut r.purpose),
        };
        (Some(hidden), prost::Message::encode_to_vec(&opening))
    } else {
        (None, Vec::new())
    };
    let envelope = std::mem::take(&mut r.envelope);
    let data_subject = std::mem::take(&mut r.data_subject);
    let body = r.body.take().map(Vec::from);
    let stored = Stored {
        leaf: prost::Message::encode_to_vec(&leaf_of(r, subject, hidden, envelope_digest)),
        envelope,
        data_subject,
        subject_salt: if has_subject {
            subject_salt.to_vec()
        } else {
            Vec::new()
        },
        body,
        hidden_opening: opening,
        pruned_leaf_hash: Vec::new(),
    };
    (stored, subject)
}

/// Follows the writer, adding each commit to the index.
fn indexer(mut conn: rusqlite::Connection, dir: PathBuf, keys: LogKeys, progress: Arc<Progress>) {
    let mut segments = Segments::default();
    let mut failing = false;
    let mut last = Instant::now();
    loop {
        {
            // Wait for work, then let it gather: one catch-up per
            // INDEX_EVERY (or per INDEX_BACKLOG records) costs the index's
            // per-transaction work once for many commits.
            let mut committed = lock(&progress.committed);
            loop {
                let indexed = progress.indexed.load(Ordering::Relaxed);
                let stopped = progress.stopped.load(Ordering::Acquire);
                let backlog = committed.saturating_sub(indexed);
                if stopped
                    || backlog >= INDEX_BACKLOG
                    || (backlog > 0 && last.elapsed() >= INDEX_EVERY)
                    || failing
                {
                    break;
                }
                let wait = match backlog {
                    0 => INDEX_EVERY,
                    _ => INDEX_EVERY.saturating_sub(last.elapsed()),
                };
                let (g, _) = progress
                    .wake
                    .wait_timeout(committed, wait)
                    .unwrap_or_else(|p| p.into_inner());
                committed = g;
            }
        }
        last = Instant::now();
        let acknowledged = *lock(&progress.committed);
        segments.receive(progress.take());
        let caught_up = index::catch_up(&mut conn, &dir, &keys, &mut segments, Some(acknowledged))
            .and_then(|n| {
                progress.indexed.store(n, Ordering::Relaxed);
                // Short of what the writer acknowledged with nothing left
                // to add: the index cannot follow (an edited position);
                // waited on like any failure, never spun on.
                if n < acknowledged {
                    return Err(crate::LogError(format!(
                        "the index stops at record {n} of the {acknowledged} acknowledged"
                    )));
                }
                Ok(n)
            });
        match caught_up {
            Ok(_) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "message log index cannot follow the log");
                }
                failing = true;
                if progress.stopped.load(Ordering::Acquire) {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        }
        if progress.stopped.load(Ordering::Acquire)
            && progress.indexed.load(Ordering::Relaxed) >= *lock(&progress.committed)
        {
            // A clean stop leaves nothing to index again after a power loss.
            if let Err(e) = index::settle(&mut conn, &mut segments, &dir) {
                tracing::warn!(error = %e, "message log tree tiles could not be synced");
            }
            return;
        }
    }
}

impl MessageLog for SegmentLog {
    fn append(&self, record: LogRecord) -> Appended {
        let (done, answer) = oneshot::channel();
        let subject_key =
            (!record.data_subject.is_empty()).then(|| self.subjects.hash(&record.data_subject));
        let message_key = crate::runs::message_key(&record.message_id);
        let queued = {
            let mut q = lock(&self.shared.queue);
            if q.stopped {
                false
            } else {
                q.jobs.push_back(Job {
                    record,
                    subject_key,
                    message_key,
                    done,
                });
                true
            }
        };
        if !queued {
            return Box::pin(std::future::ready(Err(LogError(
                "the log writer has stopped".into(),
            ))));
        }
        Box::pin(Durable {
            shared: self.shared.clone(),
            answer,
            polled: false,
        })
    }
}

/// An appended record, until it is durable. Polled first while no commit
/// is under way and the log is quiet, it commits what is queued itself
/// ([`Shared::lead`]) within that poll — a blocking `write` and
/// `fdatasync` that a timeout around the future cannot cut short; dropped
/// unpolled, it leaves its record to the writer thread.
struct Durable {
    shared: Arc<Shared>,
    answer: oneshot::Receiver<Result<(), LogError>>,
    polled: bool,
}

impl Future for Durable {
    type Output = Result<(), LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.polled {
            self.polled = true;
            self.shared.lead();
        }
        Pin::new(&mut self.answer).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| Err(LogError("the log writer has stopped".into())))
        })
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if !self.polled {
            self.shared.nudge();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> LogKeys {
        LogKeys::new("VN/GOV/000102/ss1", vec![1; 32], [2; 32])
    }

    fn record(i: u64) -> LogRecord {
        LogRecord {
            at_ms: 1_700_000_000_000 + i as i64,
            message_id: format!("m-{i}"),
            client: "VN/GOV/000305/business".into(),
            data_subject: "001190012345".into(),
            ..Default::default()
        }
    }

    /// One caller at a time: each commit is made by the appender awaiting
    /// it, none by the writer thread.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_appender_commits_its_record_itself() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), keys()).unwrap();
        log.append(record(0)).await.unwrap();
        wait_for_zeros_ahead(dir.path(), &log);
        let before = log.stats().by_appenders.load(Ordering::Relaxed);
        for i in 1..6 {
            log.append(record(i)).await.unwrap();
        }
        assert_eq!(log.stats().commits.load(Ordering::Relaxed), 6);
        assert_eq!(log.stats().by_appenders.load(Ordering::Relaxed) - before, 5);
        // Their CPU is counted apart from the log's threads': five
        // commits' sealing, write and fdatasync take more than nothing.
        assert!(log.stats().appender_cpu() > Duration::ZERO);
        assert_eq!(log.acknowledged().acknowledged(), 6);
        log.close();
    }

    /// A commit mixing withheld and released records: each withheld one
    /// gets salt of its own, its leaf commits to its official and purpose
    /// under it, and the others keep theirs in the leaf.
    #[test]
    fn each_withheld_record_of_a_commit_has_its_own_salt() {
        use lienthong_proto::pb::trace::v1::LogLeaf;
        use prost::Message;
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), keys()).unwrap();
        let withheld = |i: u64| !i.is_multiple_of(3);
        for i in 0..9 {
            let mut r = record(i);
            r.user_id = format!("officer-{i}");
            r.purpose = format!("case {i}");
            if withheld(i) {
                r.withheld_until_ms = 4_000_000_000_000;
            }
            drop(log.append(r));
        }
        let waited = Instant::now();
        while log.acknowledged().acknowledged() < 9 {
            assert!(waited.elapsed() < Duration::from_secs(10), "committed");
            thread::sleep(Duration::from_millis(5));
        }
        assert!(
            log.stats().commits.load(Ordering::Relaxed) < 9,
            "some commits hold several"
        );
        log.close();
        let r = crate::LogReader::open(dir.path(), keys()).unwrap();
        let found = r.about("001190012345", 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(found.len(), 9);
        let mut salts = std::collections::HashSet::new();
        for f in found {
            let i = f.leaf_index;
            let leaf = LogLeaf::decode(f.leaf.as_slice()).unwrap();
            match f.hidden {
                Some(opening) => {
                    assert!(withheld(i), "record {i}");
                    let o = HiddenOpening::decode(opening.as_slice()).unwrap();
                    assert_eq!(o.salt.len(), 32);
                    assert!(
                        salts.insert(o.salt.clone()),
                        "record {i}: a salt used twice"
                    );
                    assert_eq!(
                        (o.user_id.as_str(), o.purpose.as_str()),
                        (
                            format!("officer-{i}").as_str(),
                            format!("case {i}").as_str()
                        )
                    );
                    assert_eq!(
                        leaf.hidden_commitment,
                        hidden_commitment(&o.salt, &o.user_id, &o.purpose)
                    );
                    assert!(leaf.user_id.is_empty() && leaf.purpose.is_empty());
                }
                None => {
                    assert!(!withheld(i), "record {i}");
                    assert_eq!(leaf.user_id, format!("officer-{i}"));
                    assert!(leaf.hidden_commitment.is_empty());
                }
            }
        }
        assert_eq!(salts.len(), 6);
    }

    /// Records whose appenders never wait for them are committed all the
    /// same, by the writer thread, in the order they were appended.
    #[test]
    fn records_nobody_waits_for_are_committed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open(dir.path(), keys()).unwrap();
        for i in 0..3 {
            drop(log.append(record(i)));
        }
        let waited = Instant::now();
        while log.acknowledged().acknowledged() < 3 {
            assert!(waited.elapsed() < Duration::from_secs(10), "committed");
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.stats().by_appenders.load(Ordering::Relaxed), 0);
        assert_eq!(log.stats().appender_cpu(), Duration::ZERO);
        log.close();
        let r = crate::LogReader::open(dir.path(), keys()).unwrap();
        let ids: Vec<u64> = (0..3)
            .flat_map(|i| r.by_message(&format!("m-{i}")).unwrap())
            .collect();
        assert_eq!(ids, [0, 1, 2]);
    }

    /// Records queued while a commit is under way wait for the next one and
    /// are all durable when their appenders are answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_queued_during_a_commit_are_committed_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SegmentLog::open(dir.path(), keys()).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(record(i)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let stats = log.stats();
        let commits = stats.commits.load(Ordering::Relaxed);
        assert_eq!(stats.records.load(Ordering::Relaxed), 200);
        assert!(
            commits < 200,
            "some commits held several records: {commits}"
        );
        assert_eq!(log.acknowledged().acknowledged(), 200);
        Arc::try_unwrap(log).unwrap().close();
        let r = crate::LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 200);
    }

    /// A stop asked for while an appender commits on its own thread is
    /// seen when that commit ends: the writer thread stops and lets the
    /// directory go.
    #[test]
    fn a_stop_during_an_appenders_commit_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(SegmentLog::open(dir.path(), keys()).unwrap());
        block_on(log.append(record(0))).unwrap();
        wait_for_zeros_ahead(dir.path(), &log);
        let appender = {
            let log = log.clone();
            thread::spawn(move || block_on(log.append(record(1))))
        };
        // Stop while the appender's commit is under way.
        let waited = Instant::now();
        while !lock(&log.shared.queue).busy && !appender.is_finished() {
            assert!(waited.elapsed() < Duration::from_secs(10), "a commit");
            std::hint::spin_loop();
        }
        log.shared.stop();
        appender.join().unwrap().unwrap();
        let waited = Instant::now();
        while !log.progress.stopped.load(Ordering::Acquire) {
            assert!(
                waited.elapsed() < Duration::from_secs(10),
                "the writer thread stopped"
            );
            thread::sleep(Duration::from_millis(5));
        }
        // The directory is free again although handles remain.
        let again = SegmentLog::open(dir.path(), keys()).unwrap();
        again.close();
        drop(log);
    }

    /// Waits until the writer thread has written the zeros ahead that a
    /// new segment's first commit asked for: the log is then idle.
    fn wait_for_zeros_ahead(dir: &Path, log: &SegmentLog) {
        let (_, segment) = crate::segment::list(dir).unwrap().pop().unwrap();
        let waited = Instant::now();
        while std::fs::metadata(&segment).unwrap().len() < ALLOCATED_AHEAD
            || lock(&log.shared.queue).busy
        {
            assert!(waited.elapsed() < Duration::from_secs(10), "zeros ahead");
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
