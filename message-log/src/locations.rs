//! Where each record lies: one fixed-width entry per record, record `i`'s
//! at byte `ENTRY·i` of `records.loc` in the log's directory — its
//! segment, and its sealed bytes' offset and length there. Nothing a
//! reader selects by: those keys are in the record itself.
//!
//! Like the tiles ([`crate::tiles`]), and for the same reasons: the file
//! only grows at its end, written by the index batch that adds its records
//! before the index's position commits; what lies past that position is
//! cut, and a file shorter than it cuts the position back. Finding a
//! record's place is then one `pread`, and adding one costs a few bytes of
//! a `pwrite` instead of a row in a B-tree.
//!
//! An entry is derived data and never believed: every read opens the
//! record it names and checks it against the tree's leaf. An entry of
//! zeros (a hole) is no entry at all.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::LogError;

/// Bytes per entry.
pub const ENTRY: u64 = 24;
/// The segment of a record retention pruned (only its leaf hash is kept,
/// in the retention marker).
const PRUNED: u64 = u64::MAX;
/// Flags: every entry has [`PRESENT`]; [`HASH_ONLY`] marks a record pruned
/// before migration (its segment holds its leaf hash only).
const PRESENT: u32 = 1 << 31;
const HASH_ONLY: u32 = 1;

/// Where record `leaf_index` lies, as its entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub leaf_index: u64,
    /// The segment (its first position); -1 once pruned by retention.
    pub segment: i64,
    pub offset: u64,
    pub len: u64,
    /// Only the leaf hash is kept (pruned before migration).
    pub hash_only: bool,
}

impl Row {
    /// The entry of a record pruned by retention.
    pub fn pruned(leaf_index: u64) -> Row {
        Row {
            leaf_index,
            segment: -1,
            offset: 0,
            len: 0,
            hash_only: false,
        }
    }

    /// The entry's bytes.
    pub fn encode(&self) -> Result<[u8; ENTRY as usize], LogError> {
        let len = u32::try_from(self.len)
            .map_err(|_| LogError(format!("record {}: too long to index", self.leaf_index)))?;
        let segment = u64::try_from(self.segment).unwrap_or(PRUNED);
        let flags = PRESENT | if self.hash_only { HASH_ONLY } else { 0 };
        let mut b = [0u8; ENTRY as usize];
        b[0..8].copy_from_slice(&segment.to_be_bytes());
        b[8..16].copy_from_slice(&self.offset.to_be_bytes());
        b[16..20].copy_from_slice(&len.to_be_bytes());
        b[20..24].copy_from_slice(&flags.to_be_bytes());
        Ok(b)
    }

    /// Record `leaf_index`'s entry from its bytes; `None` for a hole or
    /// bytes no entry has.
    pub fn decode(leaf_index: u64, b: &[u8]) -> Option<Row> {
        let b: &[u8; ENTRY as usize] = b.try_into().ok()?;
        let word = |r: std::ops::Range<usize>| u64::from_be_bytes(b[r].try_into().expect("8"));
        let flags = u32::from_be_bytes(b[20..24].try_into().expect("4"));
        if flags & !HASH_ONLY != PRESENT {
            return None;
        }
        let segment = match word(0..8) {
            PRUNED => -1,
            s => i64::try_from(s).ok()?,
        };
        Some(Row {
            leaf_index,
            segment,
            offset: word(8..16),
            len: u64::from(u32::from_be_bytes(b[16..20].try_into().expect("4"))),
            hash_only: flags & HASH_ONLY != 0,
        })
    }
}

/// The file of the log in `log_dir`.
pub fn path(log_dir: &Path) -> PathBuf {
    log_dir.join("records.loc")
}

/// Deletes the entries of the log in `log_dir` (rebuilt with the index).
pub fn remove(log_dir: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path(log_dir)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The entries' file of one log, opened when first needed.
#[derive(Debug)]
pub struct Locations {
    path: PathBuf,
    file: Option<File>,
}

impl Locations {
    pub fn open(log_dir: &Path) -> Locations {
        Locations {
            path: path(log_dir),
            file: None,
        }
    }

    fn file(&mut self, create: bool) -> Result<Option<&File>, LogError> {
        if self.file.is_none() {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(&self.path)
            {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(LogError(format!("{}: {e}", self.path.display()))),
            }
        }
        Ok(self.file.as_ref())
    }

    fn err(&self, e: std::io::Error) -> LogError {
        LogError(format!("{}: {e}", self.path.display()))
    }

    /// How many records the file has entries for, at most `size`.
    pub fn coverage(&mut self, size: u64) -> Result<u64, LogError> {
        let len = match self.file(false)? {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        Ok(size.min(len / ENTRY))
    }

    /// The entries of records `[from, to)`, as many as the file holds
    /// (`None` for a hole or a damaged entry). Callers bound `to` by the
    /// index's committed position.
    pub fn range(&mut self, from: u64, to: u64) -> Result<Vec<Option<Row>>, LogError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let Some(f) = self.file(false)? else {
            return Ok(Vec::new());
        };
        // Never more than the file holds (a position edited far past it
        // must not make a reader allocate for it).
        let buf = crate::segment::read_items(f, from, to - from, ENTRY).map_err(|e| self.err(e))?;
        Ok(buf
            .chunks_exact(ENTRY as usize)
            .zip(from..)
            .map(|(b, i)| Row::decode(i, b))
            .collect())
    }

    /// Record `i`'s entry, if the file holds one.
    pub fn get(&mut self, i: u64) -> Result<Option<Row>, LogError> {
        Ok(self
            .range(i, i.saturating_add(1))?
            .into_iter()
            .next()
            .flatten())
    }

    /// Writes the entries `bytes` (whole entries) from record `first` on.
    pub fn write(&mut self, first: u64, bytes: &[u8]) -> Result<(), LogError> {
        debug_assert_eq!(bytes.len() as u64 % ENTRY, 0);
        let f = self.file(true)?.expect("created above");
        f.write_all_at(bytes, first * ENTRY)
            .map_err(|e| LogError(format!("{}: {e}", self.path.display())))
    }

    /// Marks records `[from, to)` pruned by retention, durably (each of
    /// them, whether the file held its entry or not).
    pub fn mark_pruned(&mut self, from: u64, to: u64) -> Result<(), LogError> {
        if from > to {
            return Err(LogError(format!("no records from {from} to {to}")));
        }
        let held = self.range(from, to)?;
        let mut bytes = Vec::with_capacity(((to - from) * ENTRY) as usize);
        for i in from..to {
            let mut pruned = Row::pruned(i);
            if let Some(Some(row)) = held.get((i - from) as usize) {
                pruned.hash_only = row.hash_only;
            }
            bytes.extend_from_slice(&pruned.encode()?);
        }
        self.write(from, &bytes)?;
        self.sync()
    }

    /// Cuts the file to the entries of `size` records.
    pub fn cut(&mut self, size: u64) -> Result<(), LogError> {
        if let Some(f) = self.file(false)?
            && f.metadata()?.len() > size * ENTRY
        {
            f.set_len(size * ENTRY).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<(), LogError> {
        if let Some(f) = &self.file {
            f.sync_data().map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_holes_are_none() {
        let row = Row {
            leaf_index: 7,
            segment: 4096,
            offset: 1 << 33,
            len: 600,
            hash_only: false,
        };
        assert_eq!(Row::decode(7, &row.encode().unwrap()), Some(row));
        let pruned = Row::pruned(9);
        assert_eq!(Row::decode(9, &pruned.encode().unwrap()), Some(pruned));
        assert_eq!(Row::decode(7, &[0; ENTRY as usize]), None);
        let mut odd = row.encode().unwrap();
        odd[23] |= 2;
        assert_eq!(Row::decode(7, &odd), None, "an unknown flag");
        assert!(
            Row {
                len: 1 << 32,
                ..row
            }
            .encode()
            .is_err()
        );
    }

    #[test]
    fn the_file_is_written_read_cut_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Locations::open(dir.path());
        assert_eq!(l.coverage(10).unwrap(), 0);
        assert_eq!(l.get(0).unwrap(), None);
        let rows: Vec<Row> = (0..10)
            .map(|i| Row {
                leaf_index: i,
                segment: 0,
                offset: 100 * i,
                len: 90,
                hash_only: i == 3,
            })
            .collect();
        let bytes: Vec<u8> = rows.iter().flat_map(|r| r.encode().unwrap()).collect();
        l.write(0, &bytes).unwrap();
        assert_eq!(l.coverage(8).unwrap(), 8);
        assert_eq!(l.coverage(20).unwrap(), 10);
        assert_eq!(l.get(4).unwrap(), Some(rows[4]));
        l.mark_pruned(2, 5).unwrap();
        let got = l.range(0, 12).unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(got[2], Some(Row::pruned(2)));
        assert!(got[3].unwrap().hash_only && got[3].unwrap().segment == -1);
        assert_eq!(got[5], Some(rows[5]));
        l.cut(6).unwrap();
        assert_eq!(Locations::open(dir.path()).coverage(20).unwrap(), 6);
        // A hole written past the end reads as no entry.
        l.write(8, &rows[8].encode().unwrap()).unwrap();
        let got = l.range(6, 9).unwrap();
        assert_eq!(got, [None, None, Some(rows[8])]);
    }
}
