//! The index: everything derived from the segments that readers need fast —
//! where each record lies and its time, in a file of fixed-width entries
//! ([`crate::locations`]); the tree's nodes in append-only tiles
//! ([`crate::tiles`]); and the lookups by subject and by message id as
//! sorted runs ([`crate::runs`]) in one SQLite file (`index.db`, WAL,
//! `synchronous=NORMAL`: it is rebuilt, never trusted), which also holds
//! the index's committed position. That position says how much of all of
//! it is true: entries and tiles past it are cut, entries or tiles short of
//! it cut the index back to what they hold, and the records after are
//! indexed again.
//!
//! [`catch_up`] reads the frames written since the index's position and
//! adds them, in transactions of at most [`BATCH`] records. The writer's
//! indexer thread calls it after every commit, and every reader before it
//! answers, so the index is never on an exchange's path and readers never
//! miss a durable record. A deleted or unreadable index is rebuilt from the
//! segments (and the retention markers of pruned ones) when the log opens.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};

use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::trace::v1::LogLeaf;
use prost::Message;
use rusqlite::{Connection, params};

use crate::locations::{self, Locations};
use crate::record::SegmentKey;
use crate::retention::Marker;
use crate::segment::{self, Header, KIND_PRUNED, KIND_SEALED};
use crate::tiles::{self, Pending, SYNC_EVERY, Tiles};
use crate::tree::Frontier;
use crate::{LogError, LogKeys};

/// Most records added in one transaction.
pub const BATCH: u64 = 20_000;
/// The index's layout: an index of an older one is rebuilt on open.
/// (2: the subject index as sorted runs; 3: the tree's nodes in tiles,
/// [`crate::tiles`]; 4: records' places in [`crate::locations`], message
/// ids beside subjects in [`crate::runs`].)
const LAYOUT: i64 = 4;
/// SQLite's page cache per connection, in KiB (negative: SQLite's unit).
const CACHE_KIB: i64 = -16 * 1024;

const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS position (
        id      INTEGER PRIMARY KEY CHECK (id = 0),
        size    INTEGER NOT NULL,
        segment INTEGER NOT NULL,
        offset  INTEGER NOT NULL,
        -- The tiles and the records' entries were fdatasynced with this
        -- many records in.
        tiles_synced INTEGER NOT NULL,
        -- The boot the tiles were last written under (tiles::boot).
        boot    TEXT NOT NULL
    ) STRICT;
    INSERT OR IGNORE INTO position (id, size, segment, offset, tiles_synced, boot)
        VALUES (0, 0, -1, 0, 0, '');
"#;

/// The index file of the log in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("index.db")
}

/// Opens the index of the log in `dir`, rebuilding it from scratch when it
/// is unreadable.
pub fn open(dir: &Path) -> Result<Connection, LogError> {
    match try_open(dir) {
        Ok(c) => Ok(c),
        Err(e) => {
            tracing::warn!(error = %e, "message log index unreadable; rebuilding it from the segments");
            remove(dir)?;
            try_open(dir)
        }
    }
}

/// Deletes the index of the log in `dir`, tiles included (it is rebuilt
/// on the next open).
pub fn remove(dir: &Path) -> Result<(), LogError> {
    tiles::remove(dir)?;
    locations::remove(dir)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path(dir).into_os_string();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn try_open(dir: &Path) -> Result<Connection, LogError> {
    let conn = Connection::open(path(dir))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Room for a batch's dirty pages: a smaller cache spills them into the
    // WAL half-way through the transaction and reads them back.
    conn.pragma_update(None, "cache_size", CACHE_KIB)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('records', 'position')",
        [],
        |r| r.get(0),
    )?;
    // Older or newer (a release rolled back): either way rebuilt, never
    // read in a layout this release does not know.
    if version != LAYOUT && tables > 0 {
        return Err(LogError(format!(
            "index layout {version}, this version keeps layout {LAYOUT}"
        )));
    }
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(crate::runs::SCHEMA)?;
    conn.pragma_update(None, "user_version", LAYOUT)?;
    // Readable at all (a full integrity check would read the whole index:
    // seconds at ten million records, on every start). A page damaged
    // deeper fails its query later; deleting index.db rebuilds it.
    size(&conn)?;
    Ok(conn)
}

/// Records the index holds (its position).
pub fn size(conn: &Connection) -> Result<u64, LogError> {
    Ok(conn.query_row("SELECT size FROM position", [], |r| r.get::<_, i64>(0))? as u64)
}

/// Forgets what the index holds at and after `size` (records the tail
/// recovery cut off after the index had seen them), and cuts the tiles to
/// match.
pub fn cut_back(conn: &mut Connection, dir: &Path, size: u64) -> Result<(), LogError> {
    // Nothing to forget: tiles past the position, if any, are cut by the
    // next batch ([`reconcile`]), under the index's write lock.
    if self::size(conn)? <= size {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if self::size(&tx)? > size {
        forget_from(&tx, size)?;
        Tiles::open(dir).cut(size)?;
        Locations::open(dir).cut(size)?;
    }
    tx.commit()?;
    Ok(())
}

/// Deletes the index's entries of records `size` and after (the caller
/// cuts the files).
fn forget_from(tx: &rusqlite::Transaction<'_>, size: u64) -> Result<(), LogError> {
    crate::runs::cut_back(tx, size)?;
    tx.execute(
        "UPDATE position SET size = ?1, segment = -1, offset = 0,
            tiles_synced = min(tiles_synced, ?1)",
        [size as i64],
    )?;
    Ok(())
}

/// Brings the tiles and the records' entries in line with the index's
/// committed position `size` (inside the batch's write transaction `tx`):
/// a file shorter than the position needs (deleted, cut, or not yet on
/// the disk at a power loss) cuts the index back to what the files hold;
/// after a boot other than the one they were written under, only what was
/// synced is believed; whatever lies past the position (a batch that never
/// committed, a garbage tail) is cut. Returns the position kept.
fn reconcile(
    tx: &rusqlite::Transaction<'_>,
    segments: &mut Segments,
    dir: &Path,
    size: u64,
    synced: u64,
    boot: &str,
) -> Result<u64, LogError> {
    let mut kept = segments
        .tiles(dir)
        .coverage(size)?
        .min(segments.locations(dir).coverage(size)?);
    if boot != tiles::boot() {
        kept = kept.min(synced);
    }
    if kept < size {
        tracing::warn!(
            position = size,
            kept,
            "message log tree tiles or record entries hold less than the index: indexing the rest again"
        );
        forget_from(tx, kept)?;
    }
    segments.locations(dir).cut(kept)?;
    let tiles = segments.tiles(dir);
    tiles.cut(kept)?;
    tiles.reconciled = true;
    Ok(kept)
}

/// Makes the tiles durable up to the index's position (when the indexer
/// stops: a later start after a power loss then indexes nothing again).
pub fn settle(conn: &mut Connection, segments: &mut Segments, dir: &Path) -> Result<(), LogError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    segments.tiles(dir).sync()?;
    segments.locations(dir).sync()?;
    tx.execute("UPDATE position SET tiles_synced = size", [])?;
    tx.commit()?;
    Ok(())
}

/// What a record contributes to the index, derived from its leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// The lookup key of its message id ([`crate::runs::message_key`]);
    /// none for a hash-only entry.
    pub message: Option<i64>,
    /// The keyed hash of its data subject, if it has one.
    pub subject_key: Option<[u8; 32]>,
    /// A retention record: found under [`crate::runs::RETENTION_KEY`] too.
    pub retention: bool,
}

impl Keys {
    /// The index keys of a record: from its leaf, and its sealed subject.
    pub fn of(leaf: &LogLeaf, data_subject: &str, keys: &LogKeys) -> Keys {
        let subject_key = if !data_subject.is_empty() {
            Some(keys.subject_hash(data_subject))
        } else {
            // A leaf of the SQLite era carries the keyed hash itself.
            leaf.data_subject_hash.as_slice().try_into().ok()
        };
        Keys {
            message: Some(crate::runs::message_key(&leaf.message_id)),
            subject_key,
            retention: leaf.phase == lienthong_proto::pb::trace::v1::Phase::Retention as i32,
        }
    }

    /// The keys [`Keys::of`] finds in the record `r` is sealed as, from
    /// `r` itself (`subject_key`: the keyed hash of its data subject;
    /// `message_key`: [`crate::runs::message_key`] of its message id).
    pub fn of_record(
        r: &crate::LogRecord,
        subject_key: Option<[u8; 32]>,
        message_key: i64,
    ) -> Keys {
        debug_assert_eq!(message_key, crate::runs::message_key(&r.message_id));
        Keys {
            message: Some(message_key),
            subject_key,
            retention: r.phase == crate::Phase::Retention,
        }
    }

    /// The lookup keys the record is found under ([`crate::runs`]), each
    /// with what it looks up.
    pub fn lookups(&self) -> impl Iterator<Item = (&'static str, i64)> {
        let message = self.message.map(|k| ("message id", k));
        let subject = self
            .subject_key
            .map(|k| ("subject", crate::runs::subject_key(&k)));
        let retention = self
            .retention
            .then_some(("retention", crate::runs::RETENTION_KEY));
        message.into_iter().chain(subject).chain(retention)
    }
}

/// What indexing a record adds, as the writer derived it when it sealed
/// the record: the indexer takes it instead of opening the record again.
/// (The self-audit checks every index entry against the record it names,
/// whoever made the entry.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub index: u64,
    pub leaf_hash: Hash,
    pub keys: Keys,
    /// Where the writer put it.
    pub placed: Placed,
}

/// Where the writer put a record: the frame of its commit and its sealed
/// bytes. A commit whose every record the indexer has so is added without
/// reading the segment again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The segment (its first position).
    pub segment: u64,
    /// Where the commit's frame starts and ends in the segment file.
    pub frame: (u64, u64),
    /// The frame's first record, and how many it holds.
    pub first: u64,
    pub records: u64,
    /// Where the record's sealed bytes lie in the segment file, and their
    /// length.
    pub offset: u64,
    pub len: u64,
}

/// Most derived entries kept waiting for the indexer; past it the oldest
/// go, and the indexer opens those records instead.
pub const MOST_DERIVED: usize = 32_768;

/// Adds `derived` to `waiting`, keeping the newest [`MOST_DERIVED`].
pub fn keep_derived(waiting: &mut VecDeque<Derived>, derived: impl IntoIterator<Item = Derived>) {
    waiting.extend(derived);
    let excess = waiting.len().saturating_sub(MOST_DERIVED);
    waiting.drain(..excess);
}

/// Most segment files one [`Segments`] keeps open. A reader looking far
/// back, or an index rebuilt from the start, would otherwise hold every
/// segment of the log: hundreds in a national server's retention period,
/// against a process's limit on open files (1,024 by default).
pub const MOST_OPEN: usize = 32;

/// Segment files and their keys, opened once (at most [`MOST_OPEN`] at a
/// time: the one asked for least recently is closed first).
#[derive(Default)]
pub struct Segments {
    /// What the writer derived from records not yet indexed, in order.
    derived: VecDeque<Derived>,
    /// Each open segment, and when it was last asked for (by `asked`).
    open: HashMap<u64, ((File, SegmentKey, u64), u64)>,
    asked: u64,
    /// The tree's right edge after the last batch, kept so the next batch
    /// need not read it back (checked against the index's size).
    frontier: Option<Frontier>,
    /// The index's size after the last batch: a catch-up with nothing new
    /// below its limit costs nothing.
    indexed: Option<u64>,
    /// The tree's tiles, opened with the first batch.
    tiles: Option<Tiles>,
    /// The records' entries, opened with the first batch.
    locations: Option<Locations>,
}

impl Segments {
    /// Forgets segment `first` if its name no longer holds the file opened
    /// (the writer starts a segment again under the same name, as a new
    /// file with a new key, when the first commit into it failed, e.g. on
    /// a full disk, or when it starts again and the last segment holds no
    /// record); true if it did. The next [`Segments::get`] opens the file
    /// that is there now. A name that cannot be looked up for any reason
    /// but its absence counts as unchanged.
    pub fn forget_if_replaced(&mut self, dir: &Path, first: u64) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(((file, _, _), _)) = self.open.get(&first) else {
            return false;
        };
        let replaced = match std::fs::metadata(dir.join(segment::file_name(first))) {
            Ok(now) => file
                .metadata()
                .is_ok_and(|opened| (now.dev(), now.ino()) != (opened.dev(), opened.ino())),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if replaced {
            self.open.remove(&first);
        }
        replaced
    }

    /// [`Segments::forget_if_replaced`] for every segment open here.
    pub fn forget_replaced(&mut self, dir: &Path) {
        let open: Vec<u64> = self.open.keys().copied().collect();
        for first in open {
            self.forget_if_replaced(dir, first);
        }
    }

    /// Closes the files of segments that are no longer in `list` (sorted,
    /// as [`segment::list`] gives it): retention deleted them, and an open
    /// file keeps its disk space until it is closed.
    pub fn keep_listed(&mut self, list: &[(u64, PathBuf)]) {
        self.open
            .retain(|first, _| list.binary_search_by_key(first, |(f, _)| *f).is_ok());
    }

    /// The segment starting at `first`: (file, key, header length).
    pub fn get(
        &mut self,
        dir: &Path,
        keys: &LogKeys,
        first: u64,
    ) -> Result<&(File, SegmentKey, u64), LogError> {
        use std::collections::hash_map::Entry;
        self.asked += 1;
        if !self.open.contains_key(&first)
            && self.open.len() >= MOST_OPEN
            && let Some(&oldest) = self
                .open
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(f, _)| f)
        {
            self.open.remove(&oldest);
        }
        if let Entry::Vacant(slot) = self.open.entry(first) {
            let path = dir.join(segment::file_name(first));
            let file = File::open(&path).map_err(|e| {
                LogError(format!(
                    "segment {} is missing or unreadable: {e}",
                    path.display()
                ))
            })?;
            let (header, len) =
                Header::read(&file).map_err(|e| LogError(format!("{}: {e}", path.display())))?;
            if header.first_index != first || header.owner != keys.owner {
                return Err(LogError(format!(
                    "{}: its header names another log (owner {}, first record {})",
                    path.display(),
                    header.owner,
                    header.first_index
                )));
            }
            let key = SegmentKey::derive(keys, header.key_id, &header.salt)?;
            slot.insert(((file, key, len), 0));
        }
        let (segment, used) = self.open.get_mut(&first).expect("opened above");
        *used = self.asked;
        Ok(segment)
    }

    /// The tree's tiles of the log in `dir`.
    pub fn tiles(&mut self, dir: &Path) -> &mut Tiles {
        self.tiles.get_or_insert_with(|| Tiles::open(dir))
    }

    /// The index's size after this [`Segments`]' last batch.
    pub fn indexed(&self) -> Option<u64> {
        self.indexed
    }

    /// The records' entries of the log in `dir`.
    pub fn locations(&mut self, dir: &Path) -> &mut Locations {
        self.locations.get_or_insert_with(|| Locations::open(dir))
    }

    /// Takes what the writer derived from the records it committed since
    /// (in order, after what was received before).
    pub fn receive(&mut self, derived: impl IntoIterator<Item = Derived>) {
        keep_derived(&mut self.derived, derived);
    }

    /// Forgets open files (after retention removed some, or a batch
    /// failed: the tiles are then checked against the position again).
    pub fn clear(&mut self) {
        self.derived.clear();
        self.open.clear();
        self.frontier = None;
        self.indexed = None;
        self.tiles = None;
        self.locations = None;
    }
}

/// Adds every complete frame written since the index's position; returns
/// the index's new size. Safe to call from any number of threads and
/// processes at once: each batch re-reads the position inside its write
/// transaction.
pub fn catch_up(
    conn: &mut Connection,
    dir: &Path,
    keys: &LogKeys,
    segments: &mut Segments,
    limit: Option<u64>,
) -> Result<u64, LogError> {
    if let (Some(indexed), Some(limit)) = (segments.indexed, limit)
        && indexed >= limit
    {
        return Ok(indexed);
    }
    loop {
        let result = catch_up_batch(conn, dir, keys, segments, limit);
        let (added, size) = result.inspect_err(|_| segments.clear())?;
        segments.indexed = Some(size);
        if added == 0 || limit.is_some_and(|l| size >= l) {
            return Ok(size);
        }
    }
}

/// Where the frame holding record `size` starts: the position's hint when
/// it is one, else found by walking the segment's frames.
fn locate(
    dir: &Path,
    keys: &LogKeys,
    segments: &mut Segments,
    size: u64,
    hint: (i64, u64),
    list: &[(u64, PathBuf)],
) -> Result<Option<(u64, u64)>, LogError> {
    let Some(&(first, _)) = list.iter().rev().find(|(f, _)| *f <= size) else {
        return Ok(None);
    };
    // A position past the end of the file opened here: the name may hold
    // another file now (the segment was started again).
    let opened_len = segments.get(dir, keys, first)?.0.metadata()?.len();
    if hint.0 == first as i64 && hint.1 > opened_len {
        segments.forget_if_replaced(dir, first);
    }
    let (file, _, header_len) = segments.get(dir, keys, first)?;
    let len = file.metadata()?.len();
    if hint.0 == first as i64 && (*header_len..=len).contains(&hint.1) {
        return Ok(Some((first, hint.1)));
    }
    let mut at = *header_len;
    while let Some(frame) = segment::read_frame(file, at, len)? {
        if frame.first + frame.entries.len() as u64 > size {
            break;
        }
        at = frame.end;
    }
    Ok(Some((first, at)))
}

fn catch_up_batch(
    conn: &mut Connection,
    dir: &Path,
    keys: &LogKeys,
    segments: &mut Segments,
    limit: Option<u64>,
) -> Result<(u64, u64), LogError> {
    let limit = limit.unwrap_or(u64::MAX);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (size, mut seg, mut off, synced, boot): (i64, i64, i64, i64, String) = tx.query_row(
        "SELECT size, segment, offset, tiles_synced, boot FROM position",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    let (mut start, mut synced) = (size as u64, synced as u64);
    if !segments.tiles(dir).reconciled {
        let kept = reconcile(&tx, segments, dir, start, synced, &boot)?;
        if kept < start {
            (start, seg, off, synced) = (kept, -1, 0, synced.min(kept));
        }
    }
    let mut size = start;
    let list = segment::list(dir)?;
    segments.keep_listed(&list);
    let mut frontier = match segments.frontier.take() {
        Some(f) if f.size() == size => f,
        _ => Frontier::load(&mut segments.tiles(dir).view(size), size)?,
    };
    let mut pending = Pending::default();
    let mut derived = std::mem::take(&mut segments.derived);
    let mut pos: Option<(u64, u64)> = None;
    // What stopped the batch short; what came before it is kept.
    let mut failure: Option<LogError> = None;
    // Whether the last segment's file was opened again in this batch.
    let mut reopened = false;
    // The records' entries from `start` on, and their lookup entries, put
    // in at the end in the table's order.
    let mut entries: Vec<u8> = Vec::new();
    let mut lookups = Vec::new();
    {
        // Records pruned by retention are known by their markers only.
        if !list.iter().any(|(f, _)| *f <= size)
            && let Some(marker) = Marker::starting_at(dir, size)?
        {
            for (i, leaf_hash) in marker.leaf_hashes.iter().enumerate() {
                let index = marker.from + i as u64;
                entries.extend_from_slice(&locations::Row::pruned(index).encode()?);
                frontier.push(*leaf_hash, |l, i, h| pending.add(l, i, h));
            }
            size = marker.to;
        }
        'segments: while size - start < BATCH {
            let hint = match pos {
                Some((f, o)) => (f as i64, o),
                None => (seg, off as u64),
            };
            let Some((first, mut at)) = locate(dir, keys, segments, size, hint, &list)? else {
                if let Some((later, _)) = list.iter().find(|(f, _)| *f > size)
                    && Marker::starting_at(dir, size)?.is_none()
                {
                    failure = Some(LogError(format!(
                        "records {size} to {later} are missing: no segment or retention marker holds them"
                    )));
                }
                break;
            };
            let (file, key, _) = segments.get(dir, keys, first)?;
            let len = file.metadata()?.len();
            loop {
                if size >= limit {
                    pos = Some((first, at));
                    break 'segments;
                }
                // A commit the writer handed over whole is not read again
                // (the self-audit reads every record from its segment).
                let (added, end, frame_end) = if let Some((n, frame_end)) =
                    handed_over(&mut derived, first, size, at, len)
                {
                    let added: Vec<Added> = derived
                        .drain(..n)
                        .map(|d| Added {
                            index: d.index,
                            leaf_hash: d.leaf_hash,
                            keys: d.keys,
                            offset: d.placed.offset,
                            len: d.placed.len,
                            pruned: false,
                        })
                        .collect();
                    (added, size + n as u64, frame_end)
                } else {
                    let Some(frame) = segment::read_frame(file, at, len)? else {
                        pos = Some((first, at));
                        let last = list.last().map(|(f, _)| *f) == Some(first);
                        // The next segment, if this one was closed.
                        match list.iter().find(|(f, _)| *f == size) {
                            Some(_) if first != size => {
                                pos = None;
                                continue 'segments;
                            }
                            // The end of the log (or a commit being written),
                            // unless the segment holds no record yet and was
                            // started again since it was opened here (only such
                            // a segment ever is): then its new file is read,
                            // from its header on (once a batch).
                            _ if last => {
                                if first == size
                                    && !reopened
                                    && segments.forget_if_replaced(dir, first)
                                {
                                    reopened = true;
                                    if segments.get(dir, keys, first).is_ok() {
                                        pos = Some((first, 0));
                                        continue 'segments;
                                    }
                                    // Not there again yet (removed and not yet
                                    // made, or its header not yet written):
                                    // the next batch reads it.
                                }
                                break 'segments;
                            }
                            _ => {
                                failure = Some(LogError(format!(
                                    "segment {first} ends at record {size} (byte {at} of {len}) but the log goes on: a commit is damaged or records are missing"
                                )));
                                break 'segments;
                            }
                        }
                    };
                    let end = frame.first + frame.entries.len() as u64;
                    if frame.first > size || end <= size {
                        failure = Some(LogError(format!(
                            "segment {first}: a commit at byte {} starts at record {}, expected {size}",
                            frame.offset, frame.first
                        )));
                        break 'segments;
                    }
                    // A position cut back inside a commit (to what the tiles
                    // held): its first records are in the index already.
                    let entries = &frame.entries[(size - frame.first) as usize..];
                    // The whole commit is checked before any of it is added;
                    // a record the writer derived is not opened again.
                    let checked: Result<Vec<_>, LogError> = entries
                        .iter()
                        .map(|e| {
                            let (leaf_hash, keys) = match take_derived(&mut derived, e.index) {
                                Some(d) if e.kind == KIND_SEALED => (d.leaf_hash, d.keys),
                                _ => entry_keys(e, key, keys, first)?,
                            };
                            Ok(Added {
                                index: e.index,
                                leaf_hash,
                                keys,
                                offset: e.offset,
                                len: e.bytes.len() as u64,
                                pruned: e.kind == KIND_PRUNED,
                            })
                        })
                        .collect();
                    match checked {
                        Ok(added) => (added, end, frame.end),
                        Err(e) => {
                            failure = Some(e);
                            break 'segments;
                        }
                    }
                };
                for a in added {
                    let row = locations::Row {
                        leaf_index: a.index,
                        segment: first as i64,
                        offset: a.offset,
                        len: a.len,
                        hash_only: a.pruned,
                    };
                    entries.extend_from_slice(&row.encode()?);
                    lookups.extend(
                        a.keys
                            .lookups()
                            .map(|(_, k)| crate::runs::entry(a.index, k)),
                    );
                    frontier.push(a.leaf_hash, |l, i, h| pending.add(l, i, h));
                }
                size = end;
                at = frame_end;
                pos = Some((first, at));
                if size - start >= BATCH {
                    break 'segments;
                }
            }
        }
    }
    // A batch that added nothing keeps the position it found: where it
    // walked to in a file it could not read on says nothing of the log.
    let (seg, off) = match pos {
        Some((f, o)) if size > start => (f as i64, o as i64),
        _ => (seg, off),
    };
    crate::runs::add_all(&tx, &mut lookups)?;
    crate::runs::merge(&tx, start, size)?;
    // The entries and nodes go to their files before the position that
    // covers them commits; synced now and then, so a power loss costs a
    // bounded re-indexing (tiles::SYNC_EVERY).
    debug_assert_eq!(entries.len() as u64, (size - start) * locations::ENTRY);
    segments.locations(dir).write(start, &entries)?;
    pending.write(segments.tiles(dir))?;
    // (`synced` above `size` only in an index edited by hand.)
    if size.saturating_sub(synced) >= SYNC_EVERY {
        segments.tiles(dir).sync()?;
        segments.locations(dir).sync()?;
        synced = size;
    }
    tx.execute(
        "UPDATE position SET size = ?1, segment = ?2, offset = ?3, tiles_synced = ?4, boot = ?5",
        params![size as i64, seg, off, synced as i64, tiles::boot()],
    )?;
    tx.commit()?;
    segments.frontier = Some(frontier);
    segments.derived = derived;
    match failure {
        Some(e) => Err(e),
        None => Ok((size - start, size)),
    }
}

/// A record as a batch adds it to the index.
struct Added {
    index: u64,
    leaf_hash: Hash,
    keys: Keys,
    offset: u64,
    len: u64,
    pruned: bool,
}

/// How many of the waiting derived entries make up the commit at byte
/// `at` of segment `segment` whose first record is `size`, and where that
/// commit ends: when the writer handed over every record of it, and it lies
/// within the file's `file_len` bytes. Drops what was derived for records
/// before `size`.
fn handed_over(
    derived: &mut VecDeque<Derived>,
    segment: u64,
    size: u64,
    at: u64,
    file_len: u64,
) -> Option<(usize, u64)> {
    while derived.front().is_some_and(|d| d.index < size) {
        derived.pop_front();
    }
    let p = derived.front()?.placed;
    if p.segment != segment || p.frame.0 != at || p.first != size || p.frame.1 > file_len {
        return None;
    }
    let n = usize::try_from(p.records).ok()?;
    let whole = derived.len() >= n
        && derived
            .iter()
            .take(n)
            .zip(size..)
            .all(|(d, i)| d.index == i && d.placed.frame == p.frame);
    whole.then_some((n, p.frame.1))
}

/// What the writer derived for record `index`, if it did; drops what it
/// derived for records before it (indexed already, or cut back).
fn take_derived(derived: &mut VecDeque<Derived>, index: u64) -> Option<Derived> {
    while derived.front().is_some_and(|d| d.index < index) {
        derived.pop_front();
    }
    derived.pop_front_if(|d| d.index == index)
}

/// The leaf hash and index keys of one entry, opened and checked: a
/// sealed record must open and hold what its leaf commits to; a hash-only
/// entry must open too (so nobody without the log key can turn a record
/// into one).
fn entry_keys(
    e: &segment::Entry,
    key: &SegmentKey,
    keys: &LogKeys,
    segment: u64,
) -> Result<(Hash, Keys), LogError> {
    let i = e.index;
    let stored = key.open(i, &e.bytes).ok_or_else(|| {
        LogError(format!(
            "record {i} in segment {segment} does not open (edited, or sealed under another key or server)"
        ))
    })?;
    match e.kind {
        KIND_SEALED if stored.pruned_leaf_hash.is_empty() => {
            let leaf = LogLeaf::decode(stored.leaf.as_slice())
                .map_err(|err| LogError(format!("record {i}: its leaf does not decode: {err}")))?;
            stored
                .check(&leaf, keys)
                .map_err(|why| LogError(format!("record {i}: {why}")))?;
            Ok((
                merkle::leaf_hash(&stored.leaf),
                Keys::of(&leaf, &stored.data_subject, keys),
            ))
        }
        // Only a log moved from the SQLite era holds records pruned one
        // by one, in its first segment (the audit checks them against the
        // move's own record: `LogReader::moved`).
        KIND_PRUNED if segment != 0 => Err(LogError(format!(
            "record {i}: only its hash is kept, outside a log moved from the SQLite era"
        ))),
        KIND_PRUNED if stored.leaf.is_empty() => {
            let h: Hash = stored
                .pruned_leaf_hash
                .as_slice()
                .try_into()
                .map_err(|_| LogError(format!("record {i}: a pruned entry is not 32 bytes")))?;
            Ok((h, Keys::default()))
        }
        kind => Err(LogError(format!(
            "record {i}: an entry of kind {kind} that does not hold what its kind says"
        ))),
    }
}

pub use crate::locations::Row;

/// The entry of record `index`, if the index's committed position covers
/// it (`locations`: the log's, as [`Segments::locations`] gives it).
pub fn row(
    conn: &Connection,
    locations: &mut Locations,
    index: u64,
) -> Result<Option<Row>, LogError> {
    if index >= size(conn)? {
        return Ok(None);
    }
    locations.get(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogRecord;

    /// A commit is added without reading only when every record of it
    /// waits, at the place being read, within the file.
    #[test]
    fn only_a_whole_commit_where_it_is_read_is_taken_as_handed_over() {
        let placed = |first, records| Placed {
            segment: 100,
            frame: (64, 64 + 40 * records),
            first,
            records,
            offset: 0,
            len: 30,
        };
        let derived = |indexes: std::ops::Range<u64>, first, records| {
            indexes
                .map(|index| Derived {
                    index,
                    leaf_hash: [0; 32],
                    keys: Keys::default(),
                    placed: placed(first, records),
                })
                .collect::<VecDeque<_>>()
        };
        // Records before the position are dropped; the commit is taken.
        let mut d = derived(105..110, 105, 3);
        d.push_front(derived(104..105, 104, 1)[0].clone());
        assert_eq!(handed_over(&mut d, 100, 105, 64, 1 << 20), Some((3, 184)));
        assert_eq!(d.front().unwrap().index, 105);
        // Not all of the commit waits (the oldest went past MOST_DERIVED,
        // or the rest is not handed over yet).
        assert_eq!(
            handed_over(&mut derived(105..107, 105, 3), 100, 105, 64, 1 << 20),
            None
        );
        // Another segment, another byte, a commit begun before the position
        // (the index was cut back inside it), a file shorter than the commit.
        assert_eq!(
            handed_over(&mut derived(105..108, 105, 3), 101, 105, 64, 1 << 20),
            None
        );
        assert_eq!(
            handed_over(&mut derived(105..108, 105, 3), 100, 105, 65, 1 << 20),
            None
        );
        assert_eq!(
            handed_over(&mut derived(105..108, 104, 4), 100, 105, 64, 1 << 20),
            None
        );
        assert_eq!(
            handed_over(&mut derived(105..108, 105, 3), 100, 105, 64, 150),
            None
        );
        // Records of two commits with the same first record: not one commit.
        let mut mixed = derived(105..108, 105, 3);
        mixed[2].placed.frame = (184, 224);
        assert_eq!(handed_over(&mut mixed, 100, 105, 64, 1 << 20), None);
        assert_eq!(
            handed_over(&mut VecDeque::new(), 100, 105, 64, 1 << 20),
            None
        );
    }

    /// What the writer derives from a record is what the indexer finds
    /// in its sealed leaf.
    #[test]
    fn keys_from_the_record_are_the_keys_of_its_leaf() {
        let keys = LogKeys::new("VN/GOV/1/ss1", vec![4; 32], [5; 32]);
        let records = [
            LogRecord {
                at_ms: 7,
                message_id: "m-1".into(),
                data_subject: "001099012345".into(),
                ..Default::default()
            },
            LogRecord {
                at_ms: 8,
                message_id: "m-2".into(),
                withheld_until_ms: 99,
                ..Default::default()
            },
        ];
        for r in records {
            let subject = (!r.data_subject.is_empty()).then_some([1; 32]);
            let leaf =
                LogLeaf::decode(crate::leaf::leaf_bytes(&r, subject, None).as_slice()).unwrap();
            let hashed = (!r.data_subject.is_empty()).then(|| keys.subject_hash(&r.data_subject));
            assert_eq!(
                Keys::of_record(&r, hashed, crate::runs::message_key(&r.message_id)),
                Keys::of(&leaf, &r.data_subject, &keys)
            );
        }
    }
}
