//! The tree's nodes on disk, as append-only tiles: one file per stored
//! level in the log's directory (`tree-NN.tile`), node (level, i) being the
//! 32 bytes at offset 32·i. Every [`STRIDE`]th level is stored, the leaves
//! (level 0) first; a node of a level between is the fold of the 2, 4 or 8
//! nodes of the stored level under it, read with one `pread`. A node is
//! written once, when its subtree completes, by the index batch that adds
//! its last leaf ([`crate::index::catch_up`]); each level's file only ever
//! grows at its end.
//!
//! Why every fourth level: storing them all costs 64 bytes a record (32
//! for the leaf, 32 for the levels above); every fourth, 34. What a proof
//! pays for it is at most 1 + 3 + 7 hashes for each group of three levels
//! not stored (a few microseconds), and the levels from
//! [`CACHED_FROM_LEVEL`] up come from the cache as before.
//!
//! Why a file per level rather than C2SP tlog-tiles' 256-wide tiles of
//! eight levels: those are made to be served and cached over HTTP, each
//! tile an immutable object. Here the nodes are read on this machine only,
//! so the simplest addressing wins: the offset of a node is its index
//! times 32, a level of a tree of `size` leaves holds exactly
//! `size >> level` nodes, and cutting the tree back after a crash is one
//! `ftruncate` per level.
//!
//! The tiles are derived data, like the rest of the index: nothing on an
//! exchange's path waits for them, and they are `fdatasync`ed only every
//! [`SYNC_EVERY`] records. What the index's committed position covers is
//! the truth; a reader never reads a node beyond it ([`View`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lienthong_proto::merkle::{self, Hash, SubtreeHashes};

use crate::LogError;

/// Bytes per node.
pub const NODE: u64 = 32;
/// Records indexed between two `fdatasync`s of the tiles. After a power
/// loss (not a process crash: the page cache survives that) at most this
/// many records, and the batch in flight, are indexed again from the
/// segments; about half a second of records at the target rate, and 24
/// `fdatasync`s per 65,536 records at ten million.
pub const SYNC_EVERY: u64 = 1 << 16;
/// Levels from which nodes read for proofs are kept in memory: every
/// proof crosses the same few upper nodes, and one node of level 8 stands
/// for 256 records.
const CACHED_FROM_LEVEL: u32 = 8;
/// Most nodes kept in that cache (2 MiB); it is emptied when full.
const CACHED_NODES: usize = 1 << 16;
/// Levels a tree of up to 2⁶⁴ − 1 leaves has.
const LEVELS: u32 = 64;
/// Levels stored: 0, `STRIDE`, 2·`STRIDE`, … (the others are folded from
/// the stored level below them).
pub const STRIDE: u32 = 4;

/// Whether the nodes of `level` are kept in a file.
pub fn stored(level: u32) -> bool {
    level.is_multiple_of(STRIDE)
}

/// The levels kept in files.
fn stored_levels() -> impl Iterator<Item = u32> {
    (0..LEVELS).step_by(STRIDE as usize)
}

/// The hash of a perfect subtree from its nodes of one level, left to
/// right (a power of two of them).
pub fn fold(mut nodes: Vec<Hash>) -> Hash {
    debug_assert!(nodes.len().is_power_of_two());
    while nodes.len() > 1 {
        nodes = nodes
            .chunks_exact(2)
            .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
            .collect();
    }
    nodes[0]
}

/// The file of one level of the log in `log_dir`.
pub fn path(log_dir: &Path, level: u32) -> PathBuf {
    log_dir.join(format!("tree-{level:02}.tile"))
}

/// Deletes the tiles of the log in `log_dir` (rebuilt with the index).
pub fn remove(log_dir: &Path) -> Result<(), LogError> {
    for level in 0..LEVELS {
        match std::fs::remove_file(path(log_dir, level)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What identifies this boot of the machine: tiles written under the same
/// boot survive a process crash in the page cache; under another, only
/// what was synced is believed. Where the kernel does not say, a token of
/// this process (so every restart counts as a power loss: safe, slower).
pub fn boot() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
            Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => {
                let mut token = [0u8; 16];
                // Without randomness the token is all zeros: still unlike
                // any boot id, so the rule above still holds.
                let _ =
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token);
                format!("process-{}-{:02x?}", std::process::id(), token)
            }
        }
    })
}

/// The tile files of one log, opened as they are needed.
#[derive(Debug)]
pub struct Tiles {
    log_dir: PathBuf,
    files: Vec<Option<File>>,
    /// Upper nodes read for proofs (never for the audit).
    cache: HashMap<(u32, u64), Hash>,
    /// The largest committed size the cache was filled under: a smaller
    /// one means the tree was cut back, and the cache goes.
    cached_size: u64,
    /// Whether the files were brought in line with the index's position
    /// since they were opened ([`crate::index`] does it in its first batch).
    pub(crate) reconciled: bool,
}

impl Tiles {
    /// The tiles of the log in `log_dir` (nothing is opened yet).
    pub fn open(log_dir: &Path) -> Tiles {
        Tiles {
            log_dir: log_dir.to_owned(),
            files: (0..LEVELS).map(|_| None).collect(),
            cache: HashMap::new(),
            cached_size: 0,
            reconciled: false,
        }
    }

    fn file(&mut self, level: u32, create: bool) -> Result<Option<&File>, LogError> {
        let slot = &mut self.files[level as usize];
        if slot.is_none() {
            let path = path(&self.log_dir, level);
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(&path)
            {
                Ok(f) => *slot = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(LogError(format!("{}: {e}", path.display()))),
            }
        }
        Ok(slot.as_ref())
    }

    /// Bytes the file of `level` holds (0 when it does not exist).
    pub fn bytes(&mut self, level: u32) -> Result<u64, LogError> {
        match self.file(level, false)? {
            Some(f) => Ok(f.metadata()?.len()),
            None => Ok(0),
        }
    }

    /// Node (level, idx) as the files hold it (folded from the stored
    /// level below when its own level is not stored), unchecked against
    /// any position: callers know it is committed.
    pub fn node(&mut self, level: u32, idx: u64) -> Result<Hash, LogError> {
        let missing = || LogError(format!("tree node {level}/{idx} is missing"));
        if !stored(level) {
            let below = level - level % STRIDE;
            let width = level - below;
            let nodes = self.range(below, idx << width, (idx + 1) << width)?;
            if nodes.len() as u64 != 1 << width {
                return Err(missing());
            }
            return Ok(fold(nodes));
        }
        let mut hash = [0u8; 32];
        let f = self.file(level, false)?.ok_or_else(missing)?;
        match f.read_exact_at(&mut hash, idx * NODE) {
            Ok(()) => Ok(hash),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(missing()),
            Err(e) => Err(LogError(format!("tree node {level}/{idx}: {e}"))),
        }
    }

    /// Nodes `[lo, hi)` of `level`, as many of them as the file holds.
    pub fn range(&mut self, level: u32, lo: u64, hi: u64) -> Result<Vec<Hash>, LogError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let Some(f) = self.file(level, false)? else {
            return Ok(Vec::new());
        };
        let buf = crate::segment::read_items(f, lo, hi - lo, NODE)
            .map_err(|e| LogError(format!("tree level {level}: {e}")))?;
        Ok(buf
            .chunks_exact(NODE as usize)
            .map(|c| c.try_into().expect("chunks of 32 bytes"))
            .collect())
    }

    /// The leaf hashes (level 0) of records `[from, to)`, by record.
    pub fn leaf_hashes(&mut self, from: u64, to: u64) -> Result<HashMap<u64, Hash>, LogError> {
        Ok((from..).zip(self.range(0, from, to)?).collect())
    }

    /// Writes consecutive nodes of `level` from node `first` on.
    fn write(&mut self, level: u32, first: u64, bytes: &[u8]) -> Result<(), LogError> {
        let f = self.file(level, true)?.expect("created above");
        f.write_all_at(bytes, first * NODE)
            .map_err(|e| LogError(format!("tree level {level}: {e}")))
    }

    /// The largest tree, at most `size` leaves, whose nodes the files all
    /// hold: node (L, i) is needed once leaf (i + 1)·2^L − 1 is in.
    pub fn coverage(&mut self, size: u64) -> Result<u64, LogError> {
        let mut covered = size;
        for level in stored_levels() {
            let expected = size >> level;
            if expected == 0 {
                break;
            }
            let have = self.bytes(level)? / NODE;
            if have < expected {
                covered = covered.min(((have + 1) << level) - 1);
            }
        }
        Ok(covered)
    }

    /// Cuts every stored level to exactly the nodes of a tree of `size`
    /// leaves (what a batch wrote and the index never committed, or a
    /// garbage tail), and deletes the files of levels not stored (kept by
    /// releases that stored every level).
    pub fn cut(&mut self, size: u64) -> Result<(), LogError> {
        self.cache.clear();
        self.cached_size = 0;
        for level in (0..LEVELS).filter(|l| !stored(*l)) {
            self.files[level as usize] = None;
            match std::fs::remove_file(path(&self.log_dir, level)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        for level in stored_levels() {
            let keep = (size >> level) * NODE;
            if let Some(f) = self.file(level, false)?
                && f.metadata()?.len() > keep
            {
                f.set_len(keep)
                    .map_err(|e| LogError(format!("tree level {level}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        let mut any = false;
        for f in self.files.iter().flatten() {
            f.sync_data()?;
            any = true;
        }
        if any {
            crate::segment::sync_dir(&self.log_dir)?;
        }
        Ok(())
    }

    /// The tree of `size` leaves, `size` being the index's committed
    /// position: nodes beyond it are refused, whatever the files hold.
    pub fn view(&mut self, size: u64) -> View<'_> {
        if size < self.cached_size {
            self.cache.clear();
        }
        self.cached_size = self.cached_size.max(size);
        View {
            tiles: self,
            size,
            cached: true,
        }
    }

    /// As [`Tiles::view`], every node read from its file (the audit's
    /// view: a node edited on disk is never answered from memory).
    pub fn view_uncached(&mut self, size: u64) -> View<'_> {
        View {
            tiles: self,
            size,
            cached: false,
        }
    }
}

/// The committed tree as a source of subtree hashes.
pub struct View<'t> {
    tiles: &'t mut Tiles,
    size: u64,
    cached: bool,
}

impl View<'_> {
    /// Node (level, idx), if the committed tree holds it.
    pub fn node(&mut self, level: u32, idx: u64) -> Result<Hash, LogError> {
        if (u128::from(idx) + 1) << level > u128::from(self.size) {
            return Err(LogError(format!(
                "tree node {level}/{idx} lies beyond the index's {} records",
                self.size
            )));
        }
        let cached = self.cached && level >= CACHED_FROM_LEVEL;
        if cached && let Some(h) = self.tiles.cache.get(&(level, idx)) {
            return Ok(*h);
        }
        let h = self.tiles.node(level, idx)?;
        if cached {
            if self.tiles.cache.len() >= CACHED_NODES {
                self.tiles.cache.clear();
            }
            self.tiles.cache.insert((level, idx), h);
        }
        Ok(h)
    }
}

impl SubtreeHashes for View<'_> {
    type Error = LogError;

    fn range(&mut self, a: u64, b: u64) -> Result<Hash, LogError> {
        let n = b - a;
        if n.is_power_of_two() && a.is_multiple_of(n) {
            return self.node(n.trailing_zeros(), a >> n.trailing_zeros());
        }
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        let left = self.range(a, a + k)?;
        let right = self.range(a + k, b)?;
        Ok(merkle::node_hash(&left, &right))
    }
}

/// The nodes a batch completed, gathered per level to be written with one
/// `pwrite` each.
#[derive(Debug, Default)]
pub struct Pending {
    /// Per level: the first node's index and the nodes' bytes.
    levels: Vec<(u64, Vec<u8>)>,
    /// A node that did not follow the one before it on its level (the
    /// frontier never does that; refused rather than written at the wrong
    /// place).
    out_of_order: Option<(u32, u64)>,
}

impl Pending {
    /// Adds node (level, idx), if its level is stored.
    pub fn add(&mut self, level: u32, idx: u64, hash: Hash) {
        if !stored(level) {
            return;
        }
        let level = level as usize;
        if self.levels.len() <= level {
            self.levels.resize_with(level + 1, Default::default);
        }
        let (first, bytes) = &mut self.levels[level];
        if bytes.is_empty() {
            *first = idx;
        } else if *first + bytes.len() as u64 / NODE != idx {
            self.out_of_order.get_or_insert((level as u32, idx));
            return;
        }
        bytes.extend_from_slice(&hash);
    }

    /// Writes the nodes to their files.
    pub fn write(self, tiles: &mut Tiles) -> Result<(), LogError> {
        if let Some((level, idx)) = self.out_of_order {
            return Err(LogError(format!(
                "tree node {level}/{idx} came out of order; the batch is not written"
            )));
        }
        for (level, (first, bytes)) in self.levels.iter().enumerate() {
            if !bytes.is_empty() {
                tiles.write(level as u32, *first, bytes)?;
            }
        }
        Ok(())
    }
}
