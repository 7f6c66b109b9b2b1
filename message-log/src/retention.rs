//! Retention: whole segments go once every record in them is past the
//! retention period — counted from the record's time *and* from its
//! withheld-until date, so a citizen always has the full period to see an
//! exchange after its release.
//!
//! Pruning never looks like tampering, nor tampering like pruning: before
//! a segment is deleted, a marker file (`pruned-FROM-TO.leaves`, the leaf
//! hashes of its records and when they were pruned, checksummed) is made
//! durable, and a retention record naming the range and the digest of
//! those hashes is appended to the log itself, so the next signed and
//! witnessed checkpoint covers it. The self-audit accepts a record without
//! a segment only inside a marker whose hashes match the tree, and whose
//! retention record is in the log. That record's leaf is also kept beside
//! the marker (`pruned-FROM-TO.receipt`), so the marker stays vouched for
//! once retention takes the record's own segment in its turn: the
//! receipt's leaf hashes to the tree's leaf at its position, as the record
//! did.

use std::path::{Path, PathBuf};

use lienthong_proto::merkle::Hash;

use crate::LogError;

const MAGIC: &[u8; 8] = b"LTPRUNE1";

/// A pruning planned by [`crate::LogReader::plan_prune`]: its marker,
/// already durable, and the time of the newest record it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    pub marker: Marker,
    /// The time of the newest record pruned (Unix ms; 0 when every record
    /// was pruned before the log moved to segments — the move's own record
    /// says when those were).
    pub through_ms: i64,
}

impl PrunePlan {
    /// The retention record to append, durably, before
    /// [`crate::LogReader::prune`] deletes anything: it puts the pruning
    /// under the next witnessed checkpoint.
    pub fn record(&self, now_ms: i64) -> crate::LogRecord {
        let m = &self.marker;
        crate::LogRecord {
            phase: crate::Phase::Retention,
            at_ms: now_ms,
            message_id: format!("retention-{}-{}", m.from, m.to),
            pruned: Some(crate::Pruned {
                from: m.from,
                to: m.to,
                digest: m.digest(),
                through_ms: self.through_ms,
            }),
            ..Default::default()
        }
    }
}

/// A retention marker: what was pruned and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub from: u64,
    pub to: u64,
    pub pruned_at_ms: i64,
    pub leaf_hashes: Vec<Hash>,
}

impl Marker {
    pub fn file_name(from: u64, to: u64) -> String {
        format!("pruned-{from:020}-{to:020}.leaves")
    }

    /// SHA-256 over the leaf hashes in order (what the retention record
    /// names).
    pub fn digest(&self) -> Hash {
        lienthong_proto::sha256(&self.leaf_hashes.concat())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + 32 * self.leaf_hashes.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.from.to_be_bytes());
        b.extend_from_slice(&self.to.to_be_bytes());
        b.extend_from_slice(&self.pruned_at_ms.to_be_bytes());
        for h in &self.leaf_hashes {
            b.extend_from_slice(h);
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Marker, LogError> {
        let bad = |why: &str| LogError(format!("retention marker: {why}"));
        let body = checked(b, MAGIC, 36, "marker")?;
        let from = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
        let to = u64::from_be_bytes(body[16..24].try_into().expect("8 bytes"));
        let pruned_at_ms = i64::from_be_bytes(body[24..32].try_into().expect("8 bytes"));
        let hashes = &body[32..];
        let expected = to.checked_sub(from).and_then(|n| n.checked_mul(32));
        if expected != Some(hashes.len() as u64) {
            return Err(bad("its range and its hashes disagree"));
        }
        Ok(Marker {
            from,
            to,
            pruned_at_ms,
            leaf_hashes: hashes
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32 bytes"))
                .collect(),
        })
    }

    /// Writes the marker durably into `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, LogError> {
        let path = dir.join(Self::file_name(self.from, self.to));
        write_durably(dir, &path, &self.encode())?;
        Ok(path)
    }

    /// Every marker in `dir`, by first record.
    pub fn list(dir: &Path) -> Result<Vec<Marker>, LogError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("pruned-") && name.ends_with(".leaves") {
                let m = Marker::decode(&std::fs::read(entry.path())?)
                    .map_err(|e| LogError(format!("{name}: {e}")))?;
                if name != Self::file_name(m.from, m.to) {
                    return Err(LogError(format!("{name}: its contents name another range")));
                }
                out.push(m);
            }
        }
        out.sort_by_key(|m| m.from);
        Ok(out)
    }

    /// The marker whose range starts at `from`, if any.
    pub fn starting_at(dir: &Path, from: u64) -> Result<Option<Marker>, LogError> {
        Ok(Marker::list(dir)?.into_iter().find(|m| m.from == from))
    }
}

const RECEIPT_MAGIC: &[u8; 8] = b"LTRCPT01";

/// A marker's retention record, kept beside it: its position and its leaf
/// bytes (a retention record's leaf names a range and a digest, nothing
/// personal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub leaf: Vec<u8>,
}

impl Receipt {
    pub fn file_name(from: u64, to: u64) -> String {
        format!("pruned-{from:020}-{to:020}.receipt")
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + self.leaf.len());
        b.extend_from_slice(RECEIPT_MAGIC);
        b.extend_from_slice(&self.index.to_be_bytes());
        b.extend_from_slice(&self.leaf);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Receipt, LogError> {
        let body = checked(b, RECEIPT_MAGIC, 20, "receipt")?;
        Ok(Receipt {
            index: u64::from_be_bytes(body[8..16].try_into().expect("8 bytes")),
            leaf: body[16..].to_vec(),
        })
    }

    /// Writes the receipt of marker `m` durably into `dir`.
    pub fn write(&self, dir: &Path, m: &Marker) -> Result<(), LogError> {
        write_durably(
            dir,
            &dir.join(Self::file_name(m.from, m.to)),
            &self.encode(),
        )
    }

    /// The receipt of marker `m` in `dir`, if there is one.
    pub fn read(dir: &Path, m: &Marker) -> Result<Option<Receipt>, LogError> {
        match std::fs::read(dir.join(Self::file_name(m.from, m.to))) {
            Ok(b) => Receipt::decode(&b).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The body of a retention file: `b` starts with `magic`, holds at least
/// `least` bytes, and ends with the CRC-32 of the rest.
fn checked<'b>(
    b: &'b [u8],
    magic: &[u8; 8],
    least: usize,
    what: &str,
) -> Result<&'b [u8], LogError> {
    let bad = |why: &str| LogError(format!("retention {what}: {why}"));
    if b.len() < least || &b[..8] != magic {
        return Err(bad(&format!("not a {what}")));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err(bad("checksum mismatch"));
    }
    Ok(body)
}

/// Writes `bytes` to `path` in `dir` whole or not at all, durably.
pub(crate) fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    crate::segment::sync_dir(dir)
}

/// Whether a record may be pruned at `before_ms` (now − retention): its
/// time and its release are both older.
pub fn prunable(at_ms: i64, withheld_until_ms: i64, before_ms: i64) -> bool {
    at_ms < before_ms && withheld_until_ms < before_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_refuses_edits() {
        let m = Marker {
            from: 10,
            to: 12,
            pruned_at_ms: 99,
            leaf_hashes: vec![[1; 32], [2; 32]],
        };
        let b = m.encode();
        assert_eq!(Marker::decode(&b).unwrap(), m);
        for i in 0..b.len() {
            let mut e = b.clone();
            e[i] ^= 1;
            assert!(Marker::decode(&e).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_withheld_record_outlives_its_release_by_the_period() {
        assert!(prunable(100, 0, 200));
        assert!(!prunable(100, 250, 200), "still withheld plus the period");
        assert!(!prunable(300, 0, 200));
    }
}
