//! Reading the log: records about a data subject or an exchange, the tree
//! head, proofs, witnessed checkpoints, and the self-audit's checks.
//!
//! The index only says where to look. Every record a reader returns is
//! read from its segment, opened, and its keys re-derived from its leaf
//! (subject, time, withheld-until): an index row that points elsewhere or
//! was edited is skipped and reported, never believed. Before answering, a
//! reader brings the index up to the segments' durable end
//! ([`crate::index::catch_up`]), so it never misses a record the writer
//! acknowledged.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::trace::v1::{LogLeaf, Phase, Side};
use prost::Message;
use rusqlite::Connection;

use crate::checkpoints::{self, StoredCheckpoint};
use crate::index::{self, Keys, Row, Segments};
use crate::record::Stored;
use crate::retention::{self, Marker, PrunePlan, Receipt};
use crate::tree::{self, Audit};
use crate::{LogError, LogKeys};

/// A record about a data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRecord {
    pub leaf_index: u64,
    /// The leaf bytes (`LogLeaf`).
    pub leaf: Vec<u8>,
    pub withheld_until_ms: i64,
    /// For a withheld exchange: the encoded `HiddenOpening` its leaf
    /// commits to (official and purpose), unsealed.
    pub hidden: Option<Vec<u8>>,
    /// The salt of the leaf's subject commitment (empty for leaves written
    /// before commitments, which carry the keyed hash).
    pub subject_salt: Vec<u8>,
}

/// Queries over one server's log.
pub struct LogReader {
    dir: PathBuf,
    keys: LogKeys,
    inner: Mutex<Inner>,
    /// The writer in this process, if any: readers index no further than
    /// what it acknowledged.
    writer: Option<crate::writer::IndexLag>,
}

struct Inner {
    index: Connection,
    checkpoints: Connection,
    segments: Segments,
    /// Why the index last could not follow the segments, if it could not.
    behind: Option<String>,
    /// What a move from the SQLite era found pruned, once known (`None`
    /// inside: nothing it found is believed).
    moved: Option<Option<Arc<Moved>>>,
}

/// The records a move from the SQLite era found pruned
/// ([`LogReader::moved`]), by position.
#[derive(Debug)]
struct Moved {
    pruned: Vec<u64>,
}

impl Moved {
    fn holds(&self, leaf_index: u64) -> bool {
        self.pruned.binary_search(&leaf_index).is_ok()
    }
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// Opens the log in `dir` for reading (rebuilding its index when it is
    /// missing or unreadable).
    pub fn open(dir: &Path, keys: LogKeys) -> Result<Self, LogError> {
        if !dir.is_dir() {
            return Err(LogError(format!("{}: no message log here", dir.display())));
        }
        crate::keys::check_subject_key(dir, &keys, false)?;
        Ok(LogReader {
            dir: dir.to_owned(),
            keys,
            inner: Mutex::new(Inner {
                index: index::open(dir)?,
                checkpoints: checkpoints::open(dir)?,
                segments: Segments::default(),
                behind: None,
                moved: None,
            }),
            writer: None,
        })
    }

    /// Reads the log `writer` (in this process) writes: never indexes a
    /// commit it has not acknowledged.
    /// (`writer` is [`crate::SegmentLog::acknowledged`].)
    pub fn following(mut self, writer: crate::writer::IndexLag) -> Self {
        self.writer = Some(writer);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The index brought up to the segments' durable end. When the index
    /// cannot follow (a record that does not open), readers still get
    /// everything before it, and the error is logged.
    fn fresh(&self) -> MutexGuard<'_, Inner> {
        let mut g = self.lock();
        let inner = &mut *g;
        let limit = self.writer.as_ref().map(|w| w.acknowledged());
        match index::catch_up(
            &mut inner.index,
            &self.dir,
            &self.keys,
            &mut inner.segments,
            limit,
        ) {
            Ok(_) => inner.behind = None,
            Err(e) => {
                if inner.behind.as_deref() != Some(e.0.as_str()) {
                    tracing::error!(error = %e, "message log index cannot follow the log");
                }
                inner.behind = Some(e.0);
            }
        }
        g
    }

    /// Number of records.
    pub fn tree_size(&self) -> Result<u64, LogError> {
        index::size(&self.fresh().index)
    }

    /// Runs `f` over the tree the index's committed position covers
    /// (nodes past it are refused, whatever the tiles hold).
    fn with_tree<T>(
        &self,
        f: impl FnOnce(&mut crate::tiles::View<'_>) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        let mut g = self.fresh();
        let inner = &mut *g;
        let committed = index::size(&inner.index)?;
        f(&mut inner.segments.tiles(&self.dir).view(committed))
    }

    /// The root of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        self.with_tree(|t| merkle::root_from(t, size))
    }

    /// Inclusion proof of record `index` in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.with_tree(|t| merkle::inclusion_proof_from(t, index, size))?
            .ok_or_else(|| LogError(format!("record {index} is not in a tree of {size}")))
    }

    /// Consistency proof from the tree of `old` records to that of `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        self.with_tree(|t| merkle::consistency_proof_from(t, old, new))?
            .ok_or_else(|| LogError(format!("no consistency proof from {old} to {new}")))
    }

    /// Reads and opens the record an index row points to, checked against
    /// the tree's leaf.
    fn read(&self, segments: &mut Segments, row: &Row) -> Result<(Stored, LogLeaf), LogError> {
        let (stored, leaf) = self.open_row(segments, row)?;
        let i = row.leaf_index;
        // The row is in the committed index, so its leaf node is too.
        let node = segments.tiles(&self.dir).node(0, i);
        if node.ok() != Some(merkle::leaf_hash(&stored.leaf)) {
            return Err(LogError(format!(
                "record {i}: its bytes do not hash to the tree's leaf (edited after it was written)"
            )));
        }
        Ok((stored, leaf))
    }

    /// The records a move from the SQLite era found pruned by retention
    /// (kept as their leaf hash alone), as the move's own record says
    /// ([`crate::legacy::migrate`]): the last record of the log's first
    /// segment, whose header says the move made it (time 0), names how
    /// many records it moved and how many of them were pruned, with the
    /// digest of the pruned ones' leaf hashes, in the tree the registry
    /// witnesses. Believed only if the records marked so below it are
    /// exactly those — their number and digest. `None` for a log never
    /// moved, moved with nothing pruned, or whose marks disagree (every
    /// record kept as its hash alone is then reported). Found once per
    /// reader (never while the index is still short of the move's record).
    fn moved(&self, inner: &mut Inner) -> Option<Arc<Moved>> {
        if let Some(known) = &inner.moved {
            return known.clone();
        }
        let size = index::size(&inner.index).ok()?;
        let end = crate::segment::list(&self.dir)
            .ok()?
            .iter()
            .map(|(first, _)| *first)
            .find(|first| *first > 0)
            .unwrap_or(size);
        if size < end {
            // The index has not reached the first segment's end yet.
            return None;
        }
        let found = self.find_moved(inner, end).map(Arc::new);
        inner.moved = Some(found.clone());
        found
    }

    /// [`LogReader::moved`] of a log whose first segment ends at `end`
    /// (which the index covers).
    fn find_moved(&self, inner: &mut Inner, end: u64) -> Option<Moved> {
        let path = self.dir.join(crate::segment::file_name(0));
        let (header, _) = crate::segment::Header::read(&std::fs::File::open(path).ok()?).ok()?;
        if header.first_index != 0 || header.created_ms != 0 {
            return None;
        }
        let last = end.checked_sub(1)?;
        let row = index::row(&inner.index, inner.segments.locations(&self.dir), last).ok()??;
        if row.segment != 0 || row.hash_only {
            return None;
        }
        let (_, leaf) = self.read(&mut inner.segments, &row).ok()?;
        let (moved, count) = crate::legacy::parse_moved_id(&leaf.message_id)?;
        if leaf.phase != Phase::Retention as i32
            || leaf.pruned_from != 0
            || leaf.pruned_to != last
            || moved != last
        {
            return None;
        }
        let pruned: Vec<u64> = inner
            .segments
            .locations(&self.dir)
            .range(0, last)
            .ok()?
            .into_iter()
            .flatten()
            .filter(|r| r.segment == 0 && r.hash_only)
            .map(|r| r.leaf_index)
            .collect();
        if pruned.len() as u64 != count {
            return None;
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        let tiles = inner.segments.tiles(&self.dir);
        for &i in &pruned {
            digest.update(&tiles.node(0, i).ok()?);
        }
        (digest.finish().as_ref() == leaf.pruned_leaves_digest.as_slice())
            .then_some(Moved { pruned })
    }

    /// Reads and opens the record an index row points to.
    fn open_row(&self, segments: &mut Segments, row: &Row) -> Result<(Stored, LogLeaf), LogError> {
        let i = row.leaf_index;
        if row.hash_only {
            return Err(LogError(format!("record {i} was pruned")));
        }
        let stored = self.open_entry(segments, row)?;
        let leaf = LogLeaf::decode(stored.leaf.as_slice())
            .map_err(|e| LogError(format!("record {i}: its leaf does not decode: {e}")))?;
        Ok((stored, leaf))
    }

    /// Opens the entry an index row points to, whatever its kind (again
    /// from the file there now, if its segment's file was started again
    /// since this reader opened it).
    fn open_entry(&self, segments: &mut Segments, row: &Row) -> Result<Stored, LogError> {
        match self.open_entry_once(segments, row) {
            Err(_)
                if row.segment >= 0
                    && segments.forget_if_replaced(&self.dir, row.segment as u64) =>
            {
                self.open_entry_once(segments, row)
            }
            opened => opened,
        }
    }

    fn open_entry_once(&self, segments: &mut Segments, row: &Row) -> Result<Stored, LogError> {
        let i = row.leaf_index;
        if row.segment < 0 {
            return Err(LogError(format!("record {i} was pruned")));
        }
        let (file, key, _) = segments.get(&self.dir, &self.keys, row.segment as u64)?;
        if row.offset.saturating_add(row.len) > file.metadata()?.len() {
            return Err(LogError(format!(
                "record {i}: its index entry points past the end of segment {}",
                row.segment
            )));
        }
        let mut sealed = vec![0u8; row.len as usize];
        file.read_exact_at(&mut sealed, row.offset)
            .map_err(|e| LogError(format!("record {i}: {e}")))?;
        key.open(i, &sealed).ok_or_else(|| {
            LogError(format!(
                "record {i}: it does not open (edited, moved, or from another server's log)"
            ))
        })
    }

    /// Whether the log holds the retention record of marker `m` (the
    /// pruning is then in the tree the registry witnesses): read from its
    /// segment, or — once retention took that segment too — from the
    /// marker's receipt, whose leaf must hash to the tree's leaf at its
    /// position. A record found in its segment leaves a receipt behind if
    /// there is none yet.
    fn retention_recorded(&self, inner: &mut Inner, m: &Marker) -> Result<bool, LogError> {
        let names_m = |leaf: &LogLeaf, index: u64| {
            leaf.phase == Phase::Retention as i32
                && leaf.pruned_from == m.from
                && leaf.pruned_to == m.to
                && leaf.pruned_leaves_digest == m.digest()
                && index >= m.to
        };
        let id = format!("retention-{}-{}", m.from, m.to);
        for row in self.found_under(inner, crate::runs::message_key(&id))? {
            if let Ok((stored, leaf)) = self.read(&mut inner.segments, &row)
                && names_m(&leaf, row.leaf_index)
            {
                if matches!(Receipt::read(&self.dir, m), Ok(None)) {
                    let receipt = Receipt {
                        index: row.leaf_index,
                        leaf: stored.leaf,
                    };
                    if let Err(e) = receipt.write(&self.dir, m) {
                        tracing::warn!(error = %e, "message log: a retention receipt could not be written");
                    }
                }
                return Ok(true);
            }
        }
        let Some(receipt) = Receipt::read(&self.dir, m)? else {
            return Ok(false);
        };
        let size = index::size(&inner.index)?;
        let in_tree = receipt.index < size
            && inner.segments.tiles(&self.dir).node(0, receipt.index).ok()
                == Some(merkle::leaf_hash(&receipt.leaf));
        Ok(in_tree
            && LogLeaf::decode(receipt.leaf.as_slice())
                .is_ok_and(|leaf| names_m(&leaf, receipt.index)))
    }

    /// The entries of the records found under lookup key `key`
    /// ([`crate::runs`]), oldest first: candidates, which callers check
    /// against the records themselves. (One with no entry is left out; the
    /// self-audit reports it.)
    fn found_under(&self, inner: &mut Inner, key: i64) -> Result<Vec<Row>, LogError> {
        let segments = &mut inner.segments;
        let mut leaves = snapshot(&inner.index, |c| {
            let size = held(index::size(c)?, segments.locations(&self.dir))?;
            let mut leaves = Vec::new();
            crate::runs::lookup(c, key, size, |leaf| {
                leaves.push(leaf);
                Ok(true)
            })?;
            Ok(leaves)
        })?;
        leaves.sort_unstable();
        let locations = inner.segments.locations(&self.dir);
        let mut rows = Vec::with_capacity(leaves.len());
        for leaf in leaves {
            rows.extend(locations.get(leaf)?);
        }
        Ok(rows)
    }

    /// The entries of records `[from, to)` (`to` at most the index's
    /// committed position), by record; `None` where the file holds no
    /// entry.
    fn rows_between(
        &self,
        inner: &mut Inner,
        from: u64,
        to: u64,
    ) -> Result<Vec<Option<Row>>, LogError> {
        let mut rows = inner.segments.locations(&self.dir).range(from, to)?;
        rows.resize((to.max(from) - from) as usize, None);
        Ok(rows)
    }

    /// Records about `subject` in `[since, until)`, newest first, skipping
    /// `offset` and returning at most `limit`. Each is re-read from its
    /// segment and kept only if its own subject and time say so.
    pub fn about(
        &self,
        subject: &str,
        since_ms: i64,
        until_ms: i64,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<SubjectRecord>, LogError> {
        let key = self.keys.subject_hash(subject);
        let mut g = self.fresh();
        let inner = &mut *g;
        let segments = &mut inner.segments;
        let mut out = Vec::new();
        // One snapshot: where an entry lies depends on the index's size.
        snapshot(&inner.index, |c| {
            let size = held(index::size(c)?, segments.locations(&self.dir))?;
            let mut skipped = 0;
            crate::runs::lookup(c, crate::runs::subject_key(&key), size, |leaf_index| {
                if out.len() as u64 >= limit {
                    return Ok(false);
                }
                // Each record is read and kept only if its own subject and
                // time say so; nothing the index says is believed. One that
                // cannot be believed makes the answer fail rather than come
                // back short: a short page would end the paging, and the
                // records after it would silently go missing. (Not checked
                // against the tree here: a record edited in place is
                // answered as it is, and the portal's proof check says so.)
                let unbelievable = |why: String| {
                    LogError(format!(
                        "the index names record {leaf_index} as about this subject, and {why} (an edited index; the self-audit reports it)"
                    ))
                };
                let row = segments
                    .locations(&self.dir)
                    .get(leaf_index)?
                    .ok_or_else(|| unbelievable("holds no entry for it".into()))?;
                // Retention takes a record's lookup entries with it.
                if row.segment < 0 || row.hash_only {
                    return Err(unbelievable("its entry says it was pruned".into()));
                }
                let (stored, leaf) = self
                    .open_row(segments, &row)
                    .map_err(|e| unbelievable(format!("it cannot be read: {e}")))?;
                // Another subject under the same 8-byte lookup key: a
                // collision, or an entry edited in (the audit reports it).
                if Keys::of(&leaf, &stored.data_subject, &self.keys).subject_key != Some(key) {
                    return Ok(true);
                }
                if let Err(why) = stored.check(&leaf, &self.keys) {
                    return Err(unbelievable(format!("it does not hold together: {why}")));
                }
                if leaf.at_unix_ms < since_ms || leaf.at_unix_ms >= until_ms {
                    return Ok(true);
                }
                if skipped < offset {
                    skipped += 1;
                    return Ok(true);
                }
                out.push(SubjectRecord {
                    leaf_index,
                    withheld_until_ms: leaf.withheld_until_unix_ms,
                    leaf: stored.leaf,
                    hidden: (!stored.hidden_opening.is_empty()).then_some(stored.hidden_opening),
                    subject_salt: stored.subject_salt,
                });
                Ok((out.len() as u64) < limit)
            })
        })?;
        Ok(out)
    }

    /// The newest retention record among the first `size` records (those a
    /// checkpoint of that size proves), with its leaf bytes: what the
    /// server's retention took last, and the time of the newest record it
    /// took. `None` when nothing was pruned. Read from the record, never
    /// the index; one whose segment is gone too is passed over for the
    /// newest that can still be shown.
    pub fn latest_retention(&self, size: u64) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let mut g = self.fresh();
        let rows = self.found_under(&mut g, crate::runs::RETENTION_KEY)?;
        let rows = rows
            .into_iter()
            .rev()
            .filter(|r| r.leaf_index < size && r.segment >= 0 && !r.hash_only);
        for row in rows {
            if let Ok((stored, leaf)) = self.read(&mut g.segments, &row)
                && leaf.phase == Phase::Retention as i32
            {
                return Ok(Some((row.leaf_index, stored.leaf)));
            }
        }
        Ok(None)
    }

    fn stored(&self, index: u64) -> Result<Option<Stored>, LogError> {
        let mut g = self.fresh();
        let inner = &mut *g;
        let Some(row) = index::row(&inner.index, inner.segments.locations(&self.dir), index)?
        else {
            return Ok(None);
        };
        if row.segment < 0 || row.hash_only {
            return Ok(None);
        }
        Ok(Some(self.read(&mut inner.segments, &row)?.0))
    }

    /// The data subject of record `index`, unsealed (for this server's
    /// operator only; never sent over the bus).
    pub fn subject_of(&self, index: u64) -> Result<Option<String>, LogError> {
        Ok(self
            .stored(index)?
            .map(|s| s.data_subject)
            .filter(|s| !s.is_empty()))
    }

    /// The logged body of record `index`, unsealed, if its subsystem opted
    /// in (for this server's operator only).
    pub fn body_of(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.stored(index)?.and_then(|s| s.body))
    }

    /// The leaf bytes of record `index` (none once pruned).
    pub fn leaf(&self, index: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.stored(index)?.map(|s| s.leaf))
    }

    /// The records of one exchange (both phases), oldest first.
    pub fn by_message(&self, message_id: &str) -> Result<Vec<u64>, LogError> {
        let mut g = self.fresh();
        let rows = self.found_under(&mut g, crate::runs::message_key(message_id))?;
        let mut out = Vec::new();
        for row in rows {
            match self.read(&mut g.segments, &row) {
                Ok((_, leaf)) if leaf.message_id == message_id => out.push(row.leaf_index),
                // Another exchange under the same lookup key (a collision,
                // or an edited index: the self-audit reports that).
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "message log: a record cannot be read"),
            }
        }
        Ok(out)
    }

    /// (client, message id, time) of the requests this server accepted as
    /// provider since `since_ms`: what the replay protection must remember
    /// across a restart.
    pub fn provider_requests_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, String, i64)>, LogError> {
        let mut out = Vec::new();
        self.newest_first(since_ms, |_, leaf| {
            if leaf.side == Side::Provider as i32
                && leaf.phase == Phase::Request as i32
                && leaf.at_unix_ms >= since_ms
            {
                out.push((
                    leaf.client.clone(),
                    leaf.message_id.clone(),
                    leaf.at_unix_ms,
                ));
            }
            true
        })?;
        out.reverse();
        Ok(out)
    }

    /// Calls `each` with the records newest first until it returns false or
    /// the records are a minute (concurrent writers' clock order) older
    /// than `since_ms`.
    fn newest_first(
        &self,
        since_ms: i64,
        mut each: impl FnMut(u64, &LogLeaf) -> bool,
    ) -> Result<(), LogError> {
        const SLACK_MS: i64 = 60_000;
        const PAGE: u64 = 1_000;
        let mut g = self.fresh();
        let size = index::size(&g.index)?;
        let mut below = g.segments.locations(&self.dir).coverage(size)?;
        while below > 0 {
            let from = below.saturating_sub(PAGE);
            let rows = self.rows_between(&mut g, from, below)?;
            below = from;
            let rows = rows
                .into_iter()
                .rev()
                .flatten()
                .filter(|r| r.segment >= 0 && !r.hash_only);
            for row in rows {
                let leaf = match self.read(&mut g.segments, &row) {
                    Ok((_, leaf)) => leaf,
                    Err(e) => {
                        tracing::error!(error = %e, "message log: a record cannot be read");
                        continue;
                    }
                };
                if leaf.at_unix_ms < since_ms.saturating_sub(SLACK_MS)
                    || !each(row.leaf_index, &leaf)
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Operational data: the decoded records written in `[since, until)`
    /// (of one exchange, with `message_id`) that `visible` lets through,
    /// newest first, at most `limit`, and whether more matched.
    pub fn operational(
        &self,
        since_ms: i64,
        until_ms: i64,
        message_id: Option<&str>,
        limit: u64,
        visible: impl Fn(&LogLeaf) -> bool,
    ) -> Result<(Vec<(u64, LogLeaf)>, bool), LogError> {
        let limit = limit as usize;
        let mut found = Vec::new();
        let mut keep = |index: u64, l: &LogLeaf| {
            if l.at_unix_ms >= since_ms && l.at_unix_ms < until_ms && visible(l) {
                found.push((index, l.clone()));
            }
            found.len() <= limit
        };
        match message_id {
            Some(id) => {
                let indexes = self.by_message(id)?;
                for i in indexes.into_iter().rev() {
                    let Some(leaf) = self.leaf(i)? else { continue };
                    let Ok(l) = LogLeaf::decode(leaf.as_slice()) else {
                        continue;
                    };
                    if !keep(i, &l) {
                        break;
                    }
                }
            }
            None => self.newest_first(since_ms, keep)?,
        }
        let truncated = found.len() > limit;
        found.truncate(limit);
        Ok((found, truncated))
    }

    /// The newest witnessed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, LogError> {
        checkpoints::latest(&self.lock().checkpoints)
    }

    /// The newest `limit` witnessed checkpoints, newest first.
    pub fn recent_checkpoints(&self, limit: usize) -> Result<Vec<StoredCheckpoint>, LogError> {
        checkpoints::recent(&self.lock().checkpoints, limit)
    }

    /// Keeps a witnessed checkpoint.
    pub fn record_checkpoint(&self, c: &StoredCheckpoint) -> Result<(), LogError> {
        checkpoints::record(&self.lock().checkpoints, c)
    }

    /// Checks records `[from, to)`: each has exactly one index entry; each
    /// opens, hashes to its tree leaf, and was indexed under the keys its
    /// leaf gives; a record without a segment lies in a retention marker
    /// whose hashes match the tree; every stored node completed in the
    /// range is the fold of the stored nodes below it. At the end of the log: no index entry past
    /// it, and the segments hold every indexed record.
    pub fn audit(&self, from: u64, to: u64) -> Result<Audit, LogError> {
        // What the writer had acknowledged before the index caught up to
        // it: the index holds at least that much, or cannot follow.
        let floor = self.writer.as_ref().map(|w| w.acknowledged());
        let mut g = self.fresh();
        // The audit reads what the directory holds now, not a file this
        // reader opened before another was put in its place.
        g.segments.forget_replaced(&self.dir);
        // One snapshot of the index: the indexer merges subject runs as it
        // goes, and where an entry lies depends on the index's size.
        // What the index's files hold bounds what is read: a position past
        // them (an edited index, or files cut under a running server) is
        // reported once, never followed.
        let (size, held, entries, past) = snapshot(&g.index, |c| {
            let size = index::size(c)?;
            let held = crate::locations::Locations::open(&self.dir)
                .coverage(size)?
                .min(crate::tiles::Tiles::open(&self.dir).coverage(size)?);
            let to = to.min(held);
            let mut entries = Default::default();
            if from < to {
                entries = crate::runs::entries(c, from, to, size)?;
            }
            let mut past = 0;
            if to == size {
                past = crate::runs::past_end(c, size)?;
            }
            Ok((size, held, entries, past))
        })?;
        let at_end = to >= size;
        let to = to.min(size).min(held);
        // Entries under the committed position change only when retention
        // marks them pruned (checked below either way).
        let rows = self.rows_between(&mut g, from, to.max(from))?;
        // Nodes under the committed position never change: read outside
        // the snapshot, from the tiles themselves.
        let leaves = g
            .segments
            .tiles(&self.dir)
            .leaf_hashes(from, to.max(from))?;
        let mut out = Audit::default();
        if held < size {
            out.mismatches.push(format!(
                "the index's position says {size} records, and its files hold {held} (an edited index, or its files cut)"
            ));
        }
        if from < to {
            // The lookup entries the records give.
            let mut given = 0u64;
            // Entries of records that do not open: those records are
            // reported already, and what they give cannot be known.
            let mut unopened_entries = 0u64;
            let markers = Marker::list(&self.dir).unwrap_or_else(|e| {
                out.mismatches.push(format!("retention markers: {e}"));
                Vec::new()
            });
            let listed = crate::segment::list(&self.dir)?;
            // Retention takes whole segments, one after another: markers
            // never overlap (an overlapping one could borrow another's
            // retention record below).
            let mut ranges: Vec<(u64, u64)> = markers.iter().map(|m| (m.from, m.to)).collect();
            ranges.sort_unstable();
            for pair in ranges.windows(2) {
                if pair[1].0 < pair[0].1 {
                    out.mismatches.push(format!(
                        "retention markers of records {} to {} and {} to {} overlap",
                        pair[0].0, pair[0].1, pair[1].0, pair[1].1
                    ));
                }
            }
            // Whether the log holds each marker's retention record, by the
            // marker's range (looked up once an audit).
            let mut recorded: HashMap<(u64, u64), bool> = HashMap::new();
            for (i, row) in (from..).zip(&rows) {
                let Some(row) = row else {
                    unopened_entries += entries.get(&i).map_or(0, |keys| keys.len() as u64);
                    out.mismatches
                        .push(format!("record {i}: its index entry is missing"));
                    continue;
                };
                let node = leaves.get(&i).map(|h| h.as_slice());
                if row.segment < 0 {
                    let marked = markers.iter().find(|m| m.from <= i && i < m.to);
                    match marked {
                        Some(m)
                            if node.is_some()
                                && m.leaf_hashes
                                    .get((i - m.from) as usize)
                                    .map(|h| h.as_slice())
                                    == node =>
                        {
                            // A marker stands only for a segment retention
                            // took: its retention record is in the log
                            // (whichever of its records is audited), and
                            // no segment left holds the record — unless it
                            // is that very segment, its prune cut short
                            // (the next plan finishes it).
                            let vouched = match recorded.get(&(m.from, m.to)) {
                                Some(v) => *v,
                                None => {
                                    let v = match self.retention_recorded(&mut g, m) {
                                        Ok(v) => v,
                                        Err(e) => {
                                            out.mismatches.push(e.0);
                                            false
                                        }
                                    };
                                    if !v {
                                        out.mismatches.push(format!(
                                            "records {} to {}: pruned, but the log holds no retention record for them",
                                            m.from, m.to
                                        ));
                                    }
                                    recorded.insert((m.from, m.to), v);
                                    v
                                }
                            };
                            if let Some(at) = listed.iter().rposition(|(f, _)| *f <= i) {
                                let next = listed.get(at + 1).map(|(f, _)| *f);
                                let cut_short =
                                    vouched && listed[at].0 == m.from && next == Some(m.to);
                                if !cut_short {
                                    out.mismatches.push(format!(
                                        "record {i}: marked pruned, but a segment still holds it"
                                    ));
                                }
                            }
                        }
                        Some(_) => out.mismatches.push(format!(
                            "record {i}: its retention marker does not match the tree"
                        )),
                        None => out.mismatches.push(format!(
                            "record {i}: pruned, but no retention marker says so"
                        )),
                    }
                    continue;
                }
                if row.hash_only {
                    // Only a log moved from the SQLite era holds records
                    // pruned one by one (in its first segment, as the
                    // move's own record says); anywhere else, a record kept
                    // as its hash alone is one hidden by someone who holds
                    // the keys.
                    let moved = self.moved(&mut g);
                    if row.segment != 0 || !moved.is_some_and(|m| m.holds(i)) {
                        out.mismatches.push(format!(
                            "record {i}: only its hash is kept, outside a log moved from the SQLite era (a record hidden by someone with the keys)"
                        ));
                        continue;
                    }
                    match self.open_entry(&mut g.segments, row) {
                        Ok(stored) if Some(stored.pruned_leaf_hash.as_slice()) == node => {}
                        Ok(_) => out.mismatches.push(format!(
                            "record {i}: its pruned entry does not match the tree"
                        )),
                        Err(e) => out.mismatches.push(e.0),
                    }
                    continue;
                }
                match self.read(&mut g.segments, row) {
                    Ok((stored, leaf)) => {
                        out.leaves += 1;
                        let derived = Keys::of(&leaf, &stored.data_subject, &self.keys);
                        for (what, key) in derived.lookups() {
                            given += 1;
                            if !entries.get(&i).is_some_and(|keys| keys.contains(&key)) {
                                out.mismatches
                                    .push(format!("record {i}: its {what} index entry is missing"));
                            }
                        }
                        if let Err(why) = stored.check(&leaf, &self.keys) {
                            out.mismatches.push(format!("record {i}: {why}"));
                        }
                    }
                    Err(e) => {
                        unopened_entries += entries.get(&i).map_or(0, |keys| keys.len() as u64);
                        out.mismatches.push(e.0);
                    }
                }
            }
            let held: u64 =
                entries.values().map(|keys| keys.len() as u64).sum::<u64>() - unopened_entries;
            if held > given {
                out.mismatches.push(format!(
                    "records {from} to {to}: the lookup index holds {} entries no record gives (edited index)",
                    held - given
                ));
            }
            tree::audit_nodes(g.segments.tiles(&self.dir), from, to, &mut out)?;
        }
        if let Some(why) = &g.behind {
            out.mismatches
                .push(format!("the index cannot follow the segments: {why}"));
        }
        if at_end {
            if let Some(c) = checkpoints::latest(&g.checkpoints)? {
                if c.tree_size > size {
                    out.mismatches.push(format!(
                        "the log holds {size} records but the registry witnessed a checkpoint of {} (records cut or removed)",
                        c.tree_size
                    ));
                } else if merkle::root_from(
                    &mut g.segments.tiles(&self.dir).view_uncached(size),
                    c.tree_size,
                )? != c.root
                {
                    out.mismatches.push(format!(
                        "the tree of the first {} records is not the one of the witnessed checkpoint (history rewritten)",
                        c.tree_size
                    ));
                }
            }
            if past > 0 {
                out.mismatches
                    .push(format!("the index holds {past} entries past the log's end"));
            }
            if let Some(floor) = floor
                && size < floor
            {
                out.mismatches.push(format!(
                    "the index stops at {size} records, short of the {floor} the writer acknowledged (it cannot follow the segments)"
                ));
            }
            // The index only grows, but for a crash's tail cut back at a
            // start: a position that went back under a running reader was
            // edited (and this reader would not look again).
            if let Some(indexed) = g.segments.indexed()
                && indexed > size
            {
                out.mismatches.push(format!(
                    "the index's position went back from {indexed} to {size} records (edited index)"
                ));
            }
            let durable = crate::segment::recover_tail(&self.dir, false)?.size;
            if durable < size && !markers_reach(&self.dir, size)? {
                out.mismatches.push(format!(
                    "the index holds {size} records but the segments end at {durable} (segments cut or removed)"
                ));
            }
        }
        Ok(out)
    }

    /// Plans retention: the oldest segment (never the newest) whose every
    /// record may go at `before_ms` ([`retention::prunable`]), as a marker
    /// already made durable. The caller appends the marker's retention
    /// record to the log and then calls [`LogReader::prune`].
    pub fn plan_prune(&self, before_ms: i64, now_ms: i64) -> Result<Option<PrunePlan>, LogError> {
        let mut g = self.fresh();
        let list = crate::segment::list(&self.dir)?;
        let size = index::size(&g.index)?;
        let [(first, _), (next, _), ..] = list.as_slice() else {
            return Ok(None);
        };
        let (first, next) = (*first, *next);
        if next > size {
            return Ok(None);
        }
        let rows = self.rows_between(&mut g, first, next)?;
        // A prune cut short after it began marking the entries: finish it,
        // once its marker is the segment's (hashes and all) and its
        // retention record is in the log — never on the entries' word.
        if rows.iter().flatten().any(|r| r.segment < 0) {
            let leaves = g.segments.tiles(&self.dir).leaf_hashes(first, next)?;
            let finishable = match Marker::starting_at(&self.dir, first)? {
                Some(m)
                    if m.to == next
                        && (first..next)
                            .zip(&m.leaf_hashes)
                            .all(|(i, h)| leaves.get(&i) == Some(h))
                        && self.retention_recorded(&mut g, &m)? =>
                {
                    Some(m)
                }
                _ => None,
            };
            let Some(m) = finishable else {
                return Err(LogError(format!(
                    "segment {first}: its index entries say pruned, and no retention of it is recorded (an edited index); not pruning"
                )));
            };
            drop(g);
            self.prune(&m)?;
            return self.plan_prune(before_ms, now_ms);
        }
        let Some(rows) = rows.into_iter().collect::<Option<Vec<Row>>>() else {
            return Err(LogError(format!(
                "segment {first}: the index lacks some of its records; not pruning"
            )));
        };
        let leaves = g.segments.tiles(&self.dir).leaf_hashes(first, next)?;
        let mut hashes = Vec::with_capacity(rows.len());
        let mut through_ms = 0;
        for row in &rows {
            let h = leaves
                .get(&row.leaf_index)
                .copied()
                .ok_or_else(|| LogError(format!("record {}: no tree leaf", row.leaf_index)))?;
            // Decided on the record itself, never on the index: a record
            // the index calls hash-only must be one in its segment.
            if row.hash_only {
                let moved = self.moved(&mut g);
                if row.segment != 0 || !moved.is_some_and(|m| m.holds(row.leaf_index)) {
                    return Err(LogError(format!(
                        "record {}: only its hash is kept, outside a log moved from the SQLite era; not pruning",
                        row.leaf_index
                    )));
                }
                let stored = self.open_entry(&mut g.segments, row)?;
                if stored.pruned_leaf_hash.as_slice() != h.as_slice() {
                    return Err(LogError(format!(
                        "record {}: the index says only its hash is kept, and its segment holds more; not pruning",
                        row.leaf_index
                    )));
                }
            } else {
                let (_, leaf) = self.read(&mut g.segments, row)?;
                if !retention::prunable(leaf.at_unix_ms, leaf.withheld_until_unix_ms, before_ms) {
                    return Ok(None);
                }
                through_ms = through_ms.max(leaf.at_unix_ms);
            }
            hashes.push(h);
        }
        let marker = Marker {
            from: first,
            to: next,
            pruned_at_ms: now_ms,
            leaf_hashes: hashes,
        };
        marker.write(&self.dir)?;
        Ok(Some(PrunePlan { marker, through_ms }))
    }

    /// Removes the segment `marker` covers, once its retention record is
    /// durable. Returns how many records went.
    pub fn prune(&self, marker: &Marker) -> Result<u64, LogError> {
        let mut g = self.lock();
        let inner = &mut *g;
        // Under the index's write lock from the start (a read upgraded to a
        // write fails at once when the indexer has just committed), and
        // durable before the segment goes: after a power loss, lookup
        // entries of records whose segment is gone would remain.
        inner.index.pragma_update(None, "synchronous", "FULL")?;
        let removed = (|| {
            let tx = rusqlite::Transaction::new_unchecked(
                &inner.index,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            // Marked first: a crash after it finishes the prune at the
            // next plan.
            inner
                .segments
                .locations(&self.dir)
                .mark_pruned(marker.from, marker.to)?;
            let size = index::size(&tx)?;
            crate::runs::remove_range(&tx, marker.from, marker.to, size)?;
            tx.commit()?;
            Ok::<_, LogError>(())
        })();
        inner.index.pragma_update(None, "synchronous", "NORMAL")?;
        removed?;
        g.segments.clear();
        let path = self.dir.join(crate::segment::file_name(marker.from));
        std::fs::remove_file(&path)?;
        crate::segment::sync_dir(&self.dir)?;
        Ok(marker.to - marker.from)
    }
}

/// The index's position `size`, if `records.loc` holds an entry for each
/// of those records — as it does whenever the position committed (the
/// entries are written first). A position past them is an edited index,
/// or one whose file was cut (which the indexer's next batch repairs):
/// lookups fail at once, rather than probe a run for every 2^18 records
/// the position claims or come back short (the self-audit reports it too).
fn held(size: u64, locations: &mut crate::locations::Locations) -> Result<u64, LogError> {
    let held = locations.coverage(size)?;
    if held < size {
        return Err(LogError(format!(
            "the index's position says {size} records, and records.loc holds entries for {held} (an edited index, or its file cut; the self-audit reports it)"
        )));
    }
    Ok(size)
}

/// Runs `read` in one read transaction of `conn` (a consistent snapshot,
/// however the indexer moves on meanwhile).
fn snapshot<T>(
    conn: &rusqlite::Connection,
    read: impl FnOnce(&rusqlite::Connection) -> Result<T, LogError>,
) -> Result<T, LogError> {
    let tx = conn.unchecked_transaction()?;
    let out = read(&tx);
    // Read only: nothing to keep.
    drop(tx);
    out
}

/// Whether retention markers account for every record up to `size`
/// (when every segment was pruned).
fn markers_reach(dir: &Path, size: u64) -> Result<bool, LogError> {
    Ok(Marker::list(dir)?.iter().any(|m| m.to >= size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{ALLOCATED_AHEAD, Options, SegmentLog};
    use crate::{LogRecord, MessageLog};
    use std::sync::Arc;

    const CITIZEN: &str = "001099012345";

    fn keys() -> LogKeys {
        LogKeys::new("VN/GOV/000102/ss1", b"subject key".to_vec(), [7; 32])
    }

    fn record(i: usize, subject: &str) -> LogRecord {
        LogRecord {
            at_ms: 1000 + i as i64,
            message_id: format!("m-{i}"),
            data_subject: subject.into(),
            purpose: "hồ sơ điều tra 2026/114".into(),
            user_id: "officer-nguyen-van-a".into(),
            envelope: format!("envelope naming {subject}").into_bytes(),
            ..Default::default()
        }
    }

    async fn write(dir: &Path, n: usize, options: Options) {
        let log = Arc::new(SegmentLog::open_with(dir, keys(), options).unwrap());
        // Eight at a time: group commits of up to eight records.
        for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
            let mut tasks = Vec::new();
            for &i in chunk {
                let log = log.clone();
                let subject = if i % 10 == 0 { CITIZEN } else { "079099000001" };
                tasks.push(tokio::spawn(
                    async move { log.append(record(i, subject)).await },
                ));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        }
        // Waits for the indexer to catch up.
        Arc::try_unwrap(log).unwrap().close();
    }

    /// Segments of a few records each.
    fn small() -> Options {
        Options {
            segment_bytes: 2048,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_durable_proven_and_found_by_subject() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 200, small()).await;
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 200);
        assert!(
            crate::segment::list(dir.path()).unwrap().len() > 3,
            "segments rolled"
        );
        let root = r.root(200).unwrap();
        let found = r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(found.len(), 20);
        assert!(found.windows(2).all(|w| w[0].leaf_index > w[1].leaf_index));
        for rec in &found {
            let leaf = LogLeaf::decode(rec.leaf.as_slice()).unwrap();
            assert!(
                leaf.data_subject_hash.is_empty(),
                "no keyed hash in the leaf"
            );
            assert_eq!(
                leaf.data_subject_commitment,
                lienthong_proto::canonical::subject_commitment(&rec.subject_salt, CITIZEN)
            );
            let proof = r.inclusion_proof(rec.leaf_index, 200).unwrap();
            assert!(merkle::verify_inclusion(
                &merkle::leaf_hash(&rec.leaf),
                rec.leaf_index,
                200,
                &proof,
                &root
            ));
            assert_eq!(
                r.subject_of(rec.leaf_index).unwrap().as_deref(),
                Some(CITIZEN)
            );
            assert_eq!(
                r.by_message(&leaf.message_id).unwrap(),
                vec![rec.leaf_index]
            );
        }
        assert_eq!(r.about(CITIZEN, 0, i64::MAX, 15, 100).unwrap().len(), 5);
        assert_eq!(r.about(CITIZEN, 1000, 1050, 0, 100).unwrap().len(), 5);
        let audit = r.audit(0, u64::MAX).unwrap();
        assert_eq!(audit.mismatches, Vec::<String>::new());
        assert_eq!(audit.leaves, 200);
    }

    #[tokio::test]
    async fn reopening_continues_the_same_tree_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 5, Options::default()).await;
        let r = LogReader::open(dir.path(), keys()).unwrap();
        let old_root = r.root(5).unwrap();
        write(dir.path(), 4, Options::default()).await;
        assert_eq!(r.tree_size().unwrap(), 9, "the reader follows the writer");
        assert_eq!(crate::segment::list(dir.path()).unwrap().len(), 2);
        let proof = r.consistency_proof(5, 9).unwrap();
        assert!(merkle::verify_consistency(
            5,
            9,
            &old_root,
            &r.root(9).unwrap(),
            &proof
        ));
        assert!(r.audit(0, 9).unwrap().mismatches.is_empty());
    }

    /// Every byte of every file in the log's directory.
    fn files_of(dir: &Path) -> Vec<u8> {
        let mut all = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(e.unwrap().path()).unwrap_or_default());
        }
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_personal_is_stored_in_clear_nor_as_an_unkeyed_hash() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 20, Options::default()).await;
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap().len(), 2);
        drop(r);
        let bytes = files_of(dir.path());
        for secret in [
            CITIZEN,
            "hồ sơ điều tra",
            "officer-nguyen-van-a",
            "envelope naming",
        ] {
            assert!(!contains(&bytes, secret.as_bytes()), "{secret:?} in clear");
        }
        let unkeyed = lienthong_proto::sha256(CITIZEN.as_bytes());
        assert!(!contains(&bytes, &unkeyed), "unkeyed hash of the subject");
    }

    fn tamper(dir: &Path, sql: &str) {
        let db = Connection::open(index::path(dir)).unwrap();
        assert!(db.execute(sql, []).unwrap() > 0, "{sql}");
    }

    /// Writes `bytes` over record `i`'s entry in `records.loc` (as
    /// `edit` makes them from the entry there).
    fn edit_entry(dir: &Path, i: u64, edit: impl FnOnce(&mut [u8; 24])) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(crate::locations::path(dir))
            .unwrap();
        let mut b = [0u8; 24];
        f.read_exact_at(&mut b, i * crate::locations::ENTRY)
            .unwrap();
        edit(&mut b);
        f.write_all_at(&b, i * crate::locations::ENTRY).unwrap();
    }

    fn audit(dir: &Path) -> Vec<String> {
        LogReader::open(dir, keys())
            .unwrap()
            .audit(0, u64::MAX)
            .unwrap()
            .mismatches
    }

    /// The operator's edits that used to hide an access: each is found by
    /// the audit, and none hides the record from the subject's trace.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn index_edits_are_found_and_never_hide_a_record() {
        let base = tempfile::tempdir().unwrap();
        write(base.path(), 30, small()).await;
        let fresh = || {
            let d = tempfile::tempdir().unwrap();
            for e in std::fs::read_dir(base.path()).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
            }
            d
        };
        // One of the citizen's records (appends are concurrent: which
        // positions are theirs varies).
        let theirs = LogReader::open(base.path(), keys())
            .unwrap()
            .about(CITIZEN, 0, i64::MAX, 0, 100)
            .unwrap()[1]
            .leaf_index;
        type Edit = fn(&mut [u8; 24]);
        let cases: [(Edit, &str, &str); 4] = [
            (|b| *b = [0; 24], "its index entry is missing", "deleted"),
            (
                // Flagged as a record pruned before migration, in a log
                // that was never moved.
                |b| b[23] |= 1,
                "only its hash is kept, outside a log moved",
                "hash only",
            ),
            (
                |b| b[0..8].copy_from_slice(&u64::MAX.to_be_bytes()),
                "pruned, but no retention marker",
                "pruned",
            ),
            (
                |b| b[15] = b[15].wrapping_add(1),
                "it does not open",
                "moved",
            ),
        ];
        for (edit, expect, name) in cases {
            let d = fresh();
            edit_entry(d.path(), theirs, edit);
            let found = audit(d.path());
            let expect = format!("record {theirs}: {expect}");
            assert!(
                found.iter().any(|m| m.starts_with(&expect)),
                "{name}: {found:?}"
            );
            // The citizen's answer fails rather than come back without it.
            let answer =
                LogReader::open(d.path(), keys())
                    .unwrap()
                    .about(CITIZEN, 0, i64::MAX, 0, 100);
            assert!(answer.is_err(), "{name}: {:?}", answer.map(|r| r.len()));
            // An index rebuilt from the segments answers the truth again.
            index::remove(d.path()).unwrap();
            let r = LogReader::open(d.path(), keys()).unwrap();
            assert_eq!(
                r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap().len(),
                3,
                "{name}"
            );
            assert!(
                r.audit(0, u64::MAX).unwrap().mismatches.is_empty(),
                "{name}"
            );
        }
        // A lookup entry past the end.
        let d = fresh();
        tamper(
            d.path(),
            "INSERT INTO runs SELECT run, key, leaf_index + 100 FROM runs WHERE leaf_index = 3",
        );
        assert!(
            audit(d.path())
                .iter()
                .any(|m| m.contains("past the log's end"))
        );
    }

    /// The lookup index (sorted runs) edited: a subject's or a message's
    /// entry deleted hides the record from lookups until the audit finds
    /// it; an entry added names a record not about the subject, which
    /// lookups drop and the audit finds; a rebuilt index answers the truth
    /// again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookup_index_edits_are_found() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 30, small()).await;
        // Concurrent appends: which positions are the citizen's varies.
        let citizen: Vec<u64> = LogReader::open(dir.path(), keys())
            .unwrap()
            .about(CITIZEN, 0, i64::MAX, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.leaf_index)
            .collect();
        let (theirs, other) = (citizen[0], (0..30).find(|i| !citizen.contains(i)).unwrap());
        tamper(
            dir.path(),
            &format!("DELETE FROM runs WHERE leaf_index = {theirs} AND key >= 0"),
        );
        let found = audit(dir.path());
        let missing = format!("record {theirs}: its subject index entry is missing");
        assert!(found.contains(&missing), "{found:?}");
        index::remove(dir.path()).unwrap();
        assert!(audit(dir.path()).is_empty());

        let r = LogReader::open(dir.path(), keys()).unwrap();
        let leaf = r.leaf(theirs).unwrap().unwrap();
        let message_id = LogLeaf::decode(leaf.as_slice()).unwrap().message_id;
        assert_eq!(r.by_message(&message_id).unwrap(), [theirs]);
        tamper(
            dir.path(),
            &format!("DELETE FROM runs WHERE leaf_index = {theirs} AND key < 0"),
        );
        assert!(r.by_message(&message_id).unwrap().is_empty());
        let found = r.audit(0, u64::MAX).unwrap().mismatches;
        let missing = format!("record {theirs}: its message id index entry is missing");
        assert!(found.contains(&missing), "{found:?}");
        drop(r);
        index::remove(dir.path()).unwrap();
        assert!(audit(dir.path()).is_empty());

        tamper(
            dir.path(),
            &format!(
                "INSERT INTO runs SELECT run, key, {other} FROM runs WHERE leaf_index = {theirs} AND key >= 0"
            ),
        );
        let found = audit(dir.path());
        assert!(
            found
                .iter()
                .any(|m| m.contains("lookup index holds 1 entries")),
            "{found:?}"
        );
        // The record named is read and dropped: it is someone else's.
        let r = LogReader::open(dir.path(), keys()).unwrap();
        let answer: Vec<u64> = r
            .about(CITIZEN, 0, i64::MAX, 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.leaf_index)
            .collect();
        assert_eq!(answer, citizen);
        drop(r);
        index::remove(dir.path()).unwrap();
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap().len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segment_edits_and_foreign_segments_are_found() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 30, small()).await;
        let segs = crate::segment::list(dir.path()).unwrap();
        // A byte flipped inside a sealed record of the first segment.
        let (_, first) = &segs[0];
        let mut bytes = std::fs::read(first).unwrap();
        let at = bytes.len() - 20;
        bytes[at] ^= 1;
        std::fs::write(first, &bytes).unwrap();
        let found = audit(dir.path());
        assert!(
            found.iter().any(|m| m.contains("does not open")),
            "{found:?}"
        );

        // Another server's segment copied in place of one of ours.
        let other = tempfile::tempdir().unwrap();
        let theirs = LogKeys::new("VN/GOV/000999/ss9", b"subject key".to_vec(), [7; 32]);
        {
            let log = SegmentLog::open_with(other.path(), theirs, small()).unwrap();
            for i in 0..30 {
                log.append(record(i, CITIZEN)).await.unwrap();
            }
        }
        std::fs::copy(other.path().join(crate::segment::file_name(0)), first).unwrap();
        let found = audit(dir.path());
        assert!(
            found.iter().any(|m| m.contains("names another log")),
            "{found:?}"
        );

        // The log key removed or replaced: nothing opens, and it says why.
        let wrong = LogKeys::new("VN/GOV/000102/ss1", b"subject key".to_vec(), [8; 32]);
        let r = LogReader::open(dir.path(), wrong).unwrap();
        let found = r.audit(0, u64::MAX).unwrap().mismatches;
        assert!(
            found.iter().any(|m| m.contains("does not open")),
            "{found:?}"
        );
        let mut missing = keys();
        missing.seal = vec![(2, [7; 32])];
        index::remove(dir.path()).unwrap();
        let r = LogReader::open(dir.path(), missing).unwrap();
        assert_eq!(r.tree_size().unwrap(), 0, "nothing indexed without the key");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_commit_is_cut_back_and_the_index_follows() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 10, Options::default()).await;
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 10);
        drop(r);
        // Half of a later commit reached the disk before a crash.
        let (_, last) = crate::segment::list(dir.path()).unwrap().pop().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        std::io::Write::write_all(&mut f, b"LTCF\x00\x00\x10\x00junk").unwrap();
        drop(f);
        let log = SegmentLog::open(dir.path(), keys()).unwrap();
        assert_eq!(log.recovered().size, 10);
        assert!(log.recovered().cut > 0);
        log.append(record(10, CITIZEN)).await.unwrap();
        log.close();
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 11);
        assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
    }

    /// The index the writer's derived keys and placements built (its
    /// commits added without reading them back) is the one the records
    /// give when it is rebuilt from the segments alone, across segments,
    /// batches and restarts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_index_from_derived_keys_is_the_index_rebuilt_from_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut n: u64 = 0;
        for round in 0..3 {
            let log = SegmentLog::open_with(dir.path(), keys(), small()).unwrap();
            for _ in 0..30 {
                let mut r = record(n as usize, if n.is_multiple_of(3) { "" } else { CITIZEN });
                if n.is_multiple_of(4) {
                    r.withheld_until_ms = 50_000 + n as i64;
                }
                // Commits of one record and of many.
                if round == 1 {
                    drop(log.append(r));
                } else {
                    log.append(r).await.unwrap();
                }
                n += 1;
            }
            log.close();
        }
        // The records' entries, and their lookup entries.
        let rows = |dir: &Path| {
            let conn = index::open(dir).unwrap();
            let mut locations = crate::locations::Locations::open(dir);
            let rows = (0..n)
                .map(|i| {
                    index::row(&conn, &mut locations, i)
                        .unwrap()
                        .expect("indexed")
                })
                .collect::<Vec<_>>();
            let mut lookups: Vec<_> = crate::runs::entries(&conn, 0, n, n)
                .unwrap()
                .into_iter()
                .map(|(leaf, mut keys)| {
                    keys.sort_unstable();
                    (leaf, keys)
                })
                .collect();
            lookups.sort_unstable();
            (rows, lookups)
        };
        let built = rows(dir.path());
        let keys_per_record = |k: usize| built.1.iter().filter(|(_, keys)| keys.len() == k).count();
        assert!(keys_per_record(1) > 0, "records without a subject");
        assert!(keys_per_record(2) > 0, "records with one");
        assert_eq!(built.1.len() as u64, n);
        assert!(
            built.0.iter().any(|r| r.segment > 0),
            "more than one segment"
        );
        index::remove(dir.path()).unwrap();
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), n);
        assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
        drop(r);
        assert_eq!(rows(dir.path()), built);
    }

    /// A commit handed over whole is indexed from the writer's account
    /// alone: with every frame's checksum spoiled on disk, reading the
    /// segments indexes nothing, and the same segments with the writer's
    /// account index every record as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_handed_over_whole_is_indexed_without_reading_it() {
        use crate::index::{Derived, Placed, Segments};
        use crate::segment;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 40, small()).await;
        let k = keys();
        // What the writer handed over, rebuilt from the log as written.
        let conn = index::open(dir.path()).unwrap();
        let mut locations = crate::locations::Locations::open(dir.path());
        let rows: Vec<_> = (0..40)
            .map(|i| index::row(&conn, &mut locations, i).unwrap().unwrap())
            .collect();
        let lookups = crate::runs::entries(&conn, 0, 40, 40).unwrap();
        let mut tiles = crate::tiles::Tiles::open(dir.path());
        let mut segments = Segments::default();
        let (mut derived, mut checksums) = (Vec::new(), Vec::new());
        for (first, path) in segment::list(dir.path()).unwrap() {
            let (file, key, header_len) = segments.get(dir.path(), &k, first).unwrap();
            let len = file.metadata().unwrap().len();
            let mut at = *header_len;
            while let Some(frame) = segment::read_frame(file, at, len).unwrap() {
                for e in &frame.entries {
                    let stored = key.open(e.index, &e.bytes).unwrap();
                    let leaf = LogLeaf::decode(stored.leaf.as_slice()).unwrap();
                    derived.push(Derived {
                        index: e.index,
                        leaf_hash: tiles.node(0, e.index).unwrap(),
                        keys: Keys::of(&leaf, &stored.data_subject, &k),
                        placed: Placed {
                            segment: first,
                            frame: (frame.offset, frame.end),
                            first: frame.first,
                            records: frame.entries.len() as u64,
                            offset: e.offset,
                            len: e.bytes.len() as u64,
                        },
                    });
                }
                // The frame's checksum: bytes 8 to 12 of its header.
                checksums.push((path.clone(), frame.offset + 8));
                at = frame.end;
            }
        }
        assert_eq!(derived.len(), 40);
        assert!(checksums.len() > 5, "several commits, several segments");
        drop((conn, tiles, segments, locations));
        index::remove(dir.path()).unwrap();
        for (path, at) in checksums {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
        }
        let mut conn = index::open(dir.path()).unwrap();
        let read = index::catch_up(&mut conn, dir.path(), &k, &mut Segments::default(), None);
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let mut handed = Segments::default();
        handed.receive(derived);
        let size = index::catch_up(&mut conn, dir.path(), &k, &mut handed, None).unwrap();
        assert_eq!(size, 40);
        let mut locations = crate::locations::Locations::open(dir.path());
        let again: Vec<_> = (0..40)
            .map(|i| index::row(&conn, &mut locations, i).unwrap().unwrap())
            .collect();
        assert_eq!(again, rows);
        assert_eq!(crate::runs::entries(&conn, 0, 40, 40).unwrap(), lookups);
    }

    /// A segment started again under its name (the writer does that when
    /// the first commit into a new segment failed, e.g. on a full disk) is
    /// read from its new file by an indexer and a reader that had opened
    /// the old one, header alone: neither stays stuck before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_started_again_under_its_name_is_read_from_its_new_file() {
        use crate::index::Segments;
        use crate::segment;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 10, Options::default()).await;
        let k = keys();
        let path = dir.path().join(segment::file_name(0));
        let full = std::fs::read(&path).unwrap();
        let header_len = Segments::default().get(dir.path(), &k, 0).unwrap().2;
        index::remove(dir.path()).unwrap();
        // The segment before its first commit: its header alone.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &full[..header_len as usize]).unwrap();
        let reader = LogReader::open(dir.path(), k.clone()).unwrap();
        assert_eq!(reader.tree_size().unwrap(), 0);
        let mut conn = index::open(dir.path()).unwrap();
        let mut indexer = Segments::default();
        assert_eq!(
            index::catch_up(&mut conn, dir.path(), &k, &mut indexer, None).unwrap(),
            0
        );
        // Started again under the same name (another file), committed to.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &full).unwrap();
        assert_eq!(
            index::catch_up(&mut conn, dir.path(), &k, &mut indexer, None).unwrap(),
            10
        );
        for i in 0..10 {
            assert!(reader.leaf(i).unwrap().is_some(), "record {i}");
        }
    }

    /// The same with the writer's own way of starting a segment again:
    /// each start makes a new segment at the log's end and removes a last
    /// one that holds no record, so a reader that saw the segment empty
    /// must read its new file (another key) once records come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_follows_a_segment_the_writer_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys();
        write(dir.path(), 10, Options::default()).await;
        // A start: segment 10, its header alone.
        let log = SegmentLog::open(dir.path(), k.clone()).unwrap();
        let reader = LogReader::open(dir.path(), k.clone()).unwrap();
        assert_eq!(reader.tree_size().unwrap(), 10);
        assert!(reader.leaf(9).unwrap().is_some());
        log.close();
        // The next start makes segment 10 again, and commits to it.
        let log = SegmentLog::open(dir.path(), k.clone()).unwrap();
        for i in 10..20 {
            log.append(record(i, CITIZEN)).await.unwrap();
        }
        log.close();
        assert_eq!(reader.tree_size().unwrap(), 20);
        for i in 0..20 {
            assert!(reader.leaf(i).unwrap().is_some(), "record {i}");
        }
        assert_eq!(
            reader.audit(0, u64::MAX).unwrap().mismatches,
            Vec::<String>::new()
        );
    }

    /// A segment replaced under its name by an edited copy (a new file)
    /// is found by the next audit of a reader that had the original open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edited_copy_put_in_a_segments_place_is_found_by_a_reader_that_had_it_open() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 10, Options::default()).await;
        let reader = LogReader::open(dir.path(), keys()).unwrap();
        assert!(reader.leaf(5).unwrap().is_some());
        assert!(reader.audit(0, u64::MAX).unwrap().mismatches.is_empty());
        let row = index::row(
            &index::open(dir.path()).unwrap(),
            &mut crate::locations::Locations::open(dir.path()),
            5,
        )
        .unwrap()
        .unwrap();
        let path = dir.path().join(crate::segment::file_name(0));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(row.offset + row.len / 2) as usize] ^= 1;
        let copy = dir.path().join("copy");
        std::fs::write(&copy, bytes).unwrap();
        std::fs::rename(&copy, &path).unwrap();
        let found = reader.audit(0, u64::MAX).unwrap().mismatches;
        assert!(found.iter().any(|m| m.contains("record 5")), "{found:?}");
    }

    /// A reader that reads the whole log keeps at most
    /// [`index::MOST_OPEN`] segment files open, and still reads and audits
    /// every record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_keeps_a_bounded_number_of_segments_open() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1000, small()).await;
        let segments = crate::segment::list(dir.path()).unwrap().len();
        assert!(segments > index::MOST_OPEN + 8, "{segments} segments");
        let reader = LogReader::open(dir.path(), keys()).unwrap();
        for i in (0..1000).chain(0..1000) {
            assert!(reader.leaf(i).unwrap().is_some(), "record {i}");
        }
        assert!(reader.audit(0, u64::MAX).unwrap().mismatches.is_empty());
        let open = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|t| t.starts_with(dir.path()) && t.to_string_lossy().ends_with(".seg"))
            .count();
        assert!(
            (1..=index::MOST_OPEN).contains(&open),
            "{open} segment files open"
        );
    }

    /// The segment being written has zeros written ahead of its last
    /// commit; readers stop at it, and a segment no longer written (closed
    /// when full, or at a stop) keeps none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn zeros_written_ahead_are_read_past_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open_with(dir.path(), keys(), small()).unwrap();
        for i in 0..40 {
            log.append(record(i, CITIZEN)).await.unwrap();
        }
        let segments = crate::segment::list(dir.path()).unwrap();
        assert!(segments.len() > 1, "segments rolled");
        let (_, current) = segments.last().unwrap();
        // The writer thread writes them after the commit that wanted them.
        let waited = std::time::Instant::now();
        while std::fs::metadata(current).unwrap().len() < ALLOCATED_AHEAD {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(10),
                "the segment being written has zeros written ahead"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for (_, closed) in &segments[..segments.len() - 1] {
            let len = std::fs::metadata(closed).unwrap().len();
            assert!(
                len < 16 * 1024,
                "a closed segment ends at its last frame ({len})"
            );
        }
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 40);
        assert_eq!(r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap().len(), 40);
        assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
        drop(r);
        log.close();
        let (_, last) = crate::segment::list(dir.path()).unwrap().pop().unwrap();
        assert!(
            std::fs::metadata(&last).unwrap().len() < 16 * 1024,
            "given back at the stop"
        );
        let log = SegmentLog::open(dir.path(), keys()).unwrap();
        assert_eq!((log.recovered().size, log.recovered().cut), (40, 0));
        log.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_prunes_whole_segments_with_a_marker_and_spares_the_withheld() {
        let dir = tempfile::tempdir().unwrap();
        let log = SegmentLog::open_with(dir.path(), keys(), small()).unwrap();
        for i in 0..60 {
            let mut r = record(i, CITIZEN);
            if i == 45 {
                r.withheld_until_ms = 10_000;
            }
            log.append(r).await.unwrap();
        }
        let r = LogReader::open(dir.path(), keys()).unwrap();
        let root = r.root(60).unwrap();
        // Another reader that has read every record, so holds every
        // segment open.
        let other = LogReader::open(dir.path(), keys()).unwrap();
        for i in 0..60 {
            assert!(other.leaf(i).unwrap().is_some());
        }
        let mut pruned = 0;
        // Records are at 1000..1060; everything is past retention at 5000,
        // but record 45 is withheld until 10,000.
        assert_eq!(r.latest_retention(60).unwrap(), None, "nothing pruned yet");
        let mut last = None;
        let mut plans = 0;
        while let Some(plan) = r.plan_prune(5000, 7000).unwrap() {
            log.append(plan.record(7000)).await.unwrap();
            plans += 1;
            pruned += r.prune(&plan.marker).unwrap();
            last = Some(plan);
        }
        assert!(pruned > 0 && pruned <= 45, "{pruned}");
        // Once they next look at the log, neither that reader nor the
        // writer's indexer (after the next commit) keeps a deleted segment
        // open: an open file keeps its disk space.
        log.append(record(60, "")).await.unwrap();
        assert_eq!(other.tree_size().unwrap(), 61 + plans);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.index_lag() > 0 {
            assert!(std::time::Instant::now() < deadline, "index lag");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let held: Vec<_> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| {
                target.starts_with(dir.path()) && target.to_string_lossy().ends_with(" (deleted)")
            })
            .collect();
        assert_eq!(
            held,
            Vec::<std::path::PathBuf>::new(),
            "deleted segments held open"
        );
        // The newest retention record says what went last: the records up
        // to the newest one pruned (records are dated 1000 + their index).
        let last = last.unwrap();
        assert_eq!(last.through_ms, 1000 + last.marker.to as i64 - 1);
        let size = r.tree_size().unwrap();
        let (at, bytes) = r
            .latest_retention(size)
            .unwrap()
            .expect("a retention record");
        let leaf = LogLeaf::decode(bytes.as_slice()).unwrap();
        assert!(at >= 60 && leaf.phase == Phase::Retention as i32);
        assert_eq!(
            (leaf.pruned_to, leaf.pruned_through_unix_ms, leaf.at_unix_ms),
            (last.marker.to, last.through_ms, 7000)
        );
        assert_eq!(
            r.latest_retention(60).unwrap(),
            None,
            "only below the size asked"
        );
        assert_eq!(r.root(60).unwrap(), root, "the tree is untouched");
        let kept = r.about(CITIZEN, 0, i64::MAX, 0, 100).unwrap();
        assert_eq!(kept.len() as u64, 60 - pruned);
        assert!(
            kept.iter().any(|k| k.leaf_index == 45),
            "withheld record kept"
        );
        for k in kept {
            let proof = r.inclusion_proof(k.leaf_index, 60).unwrap();
            assert!(merkle::verify_inclusion(
                &merkle::leaf_hash(&k.leaf),
                k.leaf_index,
                60,
                &proof,
                &root
            ));
        }
        assert_eq!(
            r.audit(0, u64::MAX).unwrap().mismatches,
            Vec::<String>::new()
        );
        // Rebuilt from segments and markers: the same tree.
        drop(r);
        log.close();
        index::remove(dir.path()).unwrap();
        let r = LogReader::open(dir.path(), keys()).unwrap();
        assert_eq!(r.tree_size().unwrap(), size);
        assert_eq!(r.root(60).unwrap(), root);
        assert_eq!(
            r.audit(0, u64::MAX).unwrap().mismatches,
            Vec::<String>::new()
        );
        // A marker edited to cover for a deleted record is found.
        let m = Marker::list(dir.path()).unwrap().remove(0);
        let mut forged = m.clone();
        forged.leaf_hashes[0] = [9; 32];
        std::fs::write(
            dir.path().join(Marker::file_name(m.from, m.to)),
            forged.encode(),
        )
        .unwrap();
        let found = r.audit(0, u64::MAX).unwrap().mismatches;
        assert!(
            found
                .iter()
                .any(|f| f.contains("retention marker does not match")),
            "{found:?}"
        );
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;
    use crate::{LogRecord, MessageLog, SegmentLog};

    fn record(i: u64) -> LogRecord {
        LogRecord {
            at_ms: 1000 + i as i64,
            message_id: format!("m-{i}"),
            data_subject: "001099012345".into(),
            ..Default::default()
        }
    }

    /// After a new log key is started, new segments are sealed under it and
    /// the old ones still read under theirs; without the old key they do not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_key_seals_new_segments_and_the_old_one_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let one = LogKeys::new("VN/GOV/000102/ss1", b"subject key".to_vec(), [1; 32]);
        let log = SegmentLog::open(dir.path(), one.clone()).unwrap();
        for i in 0..3 {
            log.append(record(i)).await.unwrap();
        }
        log.close();
        let mut both = one.clone();
        both.seal.push((2, [2; 32]));
        let log = SegmentLog::open(dir.path(), both.clone()).unwrap();
        for i in 3..6 {
            log.append(record(i)).await.unwrap();
        }
        log.close();
        let key_ids: Vec<u32> = crate::segment::list(dir.path())
            .unwrap()
            .iter()
            .map(|(_, p)| {
                crate::segment::Header::read(&std::fs::File::open(p).unwrap())
                    .unwrap()
                    .0
                    .key_id
            })
            .collect();
        assert_eq!(key_ids, vec![1, 2]);
        let r = LogReader::open(dir.path(), both.clone()).unwrap();
        assert_eq!(r.tree_size().unwrap(), 6);
        assert_eq!(
            r.about("001099012345", 0, i64::MAX, 0, 10).unwrap().len(),
            6
        );
        assert!(r.audit(0, u64::MAX).unwrap().mismatches.is_empty());
        drop(r);
        // The old key gone: its segment cannot be read, and the audit says why.
        let mut only_new = both.clone();
        only_new.seal.retain(|(id, _)| *id == 2);
        index::remove(dir.path()).unwrap();
        let r = LogReader::open(dir.path(), only_new).unwrap();
        assert_eq!(r.tree_size().unwrap(), 0);
        let found = r.audit(0, u64::MAX).unwrap().mismatches;
        assert!(found.iter().any(|m| m.contains("log key 1")), "{found:?}");
    }
}
