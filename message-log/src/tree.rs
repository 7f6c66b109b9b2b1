//! The log's Merkle tree, stored as its perfect subtrees.
//!
//! Every node of a stored level whose subtree is complete is written once,
//! when its last leaf arrives (level 0 are the leaves, then every
//! [`crate::tiles::STRIDE`]th level): about 1.07 nodes per record, kept in
//! [`crate::tiles`]. Any subtree hash RFC 6962 asks for is then a fold of
//! at most log₂ n nodes, each stored or folded from a few stored ones, so
//! roots and proofs never read the records ([`crate::tiles::View`]). The indexer keeps the right edge of the tree
//! in memory ([`Frontier`]) and knows each new node without reading
//! anything.

use lienthong_proto::merkle::{self, Hash};

use crate::LogError;
use crate::tiles::{STRIDE, Tiles, View, fold};

/// The perfect subtrees along the tree's right edge, largest first.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash): a subtree of 2^level leaves.
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the stored tree of `size` leaves.
    pub fn load(nodes: &mut View<'_>, size: u64) -> Result<Self, LogError> {
        let mut edge = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                let hash = nodes.node(level, start >> level)?;
                edge.push((level, hash));
                start += 1 << level;
            }
        }
        Ok(Frontier { size, edge })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; hands `done` the nodes completed by it
    /// (the leaf itself first) as (level, index, hash), to be stored.
    pub fn push(&mut self, leaf: Hash, mut done: impl FnMut(u32, u64, Hash)) {
        let index = self.size;
        done(0, index, leaf);
        self.edge.push((0, leaf));
        while self.edge.len() >= 2 {
            let (lr, right) = self.edge[self.edge.len() - 1];
            let (ll, left) = self.edge[self.edge.len() - 2];
            if lr != ll {
                break;
            }
            self.edge.truncate(self.edge.len() - 2);
            let parent = merkle::node_hash(&left, &right);
            let level = lr + 1;
            done(level, index >> level, parent);
            self.edge.push((level, parent));
        }
        self.size += 1;
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        let mut it = self.edge.iter().rev();
        let Some((_, last)) = it.next() else {
            return lienthong_proto::sha256(&[]);
        };
        it.fold(*last, |acc, (_, left)| merkle::node_hash(left, &acc))
    }
}

/// What an audit of a range of records found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Records whose sealed bytes were opened and checked (those pruned by
    /// retention have none).
    pub leaves: u64,
    /// Stored nodes (levels 4, 8, …) checked against the stored nodes
    /// below them.
    pub nodes: u64,
    /// What does not match, a sentence each.
    pub mismatches: Vec<String>,
}

/// Checks that every stored node completed by a record of `[from, to)` is
/// the fold of the 2^STRIDE nodes of the stored level below it, each read
/// from its tile. Together with the witnessed checkpoints (which fix the
/// top of the tree) and the check of each record against its leaf node,
/// this finds a record edited in place, however many nodes above it were
/// rewritten to match, and a node edited in its tile.
pub fn audit_nodes(tiles: &mut Tiles, from: u64, to: u64, out: &mut Audit) -> Result<(), LogError> {
    if from >= to {
        return Ok(());
    }
    let span = 1u64 << STRIDE;
    // Level L nodes completed by a record of the range: those whose last
    // leaf, (j + 1) · 2^L − 1, lies in [from, to).
    for level in (STRIDE..64u32).step_by(STRIDE as usize) {
        let width = 1u64 << level;
        if width > to {
            break;
        }
        let lo = (from + 1).div_ceil(width) - 1;
        let hi = to / width;
        if lo >= hi {
            continue;
        }
        let below = tiles.range(level - STRIDE, lo * span, hi * span)?;
        let parents = tiles.range(level, lo, hi)?;
        for j in lo..hi {
            out.nodes += 1;
            let first = ((j - lo) * span) as usize;
            let (Some(under), Some(p)) = (
                below.get(first..first + span as usize),
                parents.get((j - lo) as usize),
            ) else {
                out.mismatches.push(format!(
                    "tree node {level}/{j} or a node below it is missing"
                ));
                continue;
            };
            if *p != fold(under.to_vec()) {
                out.mismatches.push(format!(
                    "tree node {level}/{j} is not the hash of the nodes below it (rewritten)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiles::Pending;
    use lienthong_proto::merkle::{
        consistency_proof, consistency_proof_from, inclusion_proof, inclusion_proof_from, root,
        root_from,
    };

    /// A tree of `n` leaves stored in tiles under `dir`, and its leaves.
    fn stored(dir: &std::path::Path, n: u64) -> (Tiles, Vec<Hash>) {
        let mut tiles = Tiles::open(dir);
        let mut f = Frontier::default();
        let mut pending = Pending::default();
        let leaves: Vec<Hash> = (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect();
        for leaf in &leaves {
            f.push(*leaf, |l, i, h| pending.add(l, i, h));
        }
        pending.write(&mut tiles).unwrap();
        (tiles, leaves)
    }

    #[test]
    fn stored_tree_matches_rfc6962_at_every_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut tiles = Tiles::open(dir.path());
        let mut f = Frontier::default();
        let mut leaves = Vec::new();
        for i in 0..70u64 {
            let leaf = merkle::leaf_hash(&i.to_be_bytes());
            leaves.push(leaf);
            let mut pending = Pending::default();
            f.push(leaf, |l, i, h| pending.add(l, i, h));
            pending.write(&mut tiles).unwrap();
            let n = leaves.len() as u64;
            assert_eq!(f.root(), root(&leaves), "root at {n}");
            assert_eq!(root_from(&mut tiles.view(n), n).unwrap(), root(&leaves));
            // A frontier reloaded from the store is the same.
            let g = Frontier::load(&mut tiles.view(n), n).unwrap();
            assert_eq!(g.root(), f.root());
            for m in [0, n / 3, n - 1] {
                assert_eq!(
                    inclusion_proof_from(&mut tiles.view(n), m, n).unwrap(),
                    inclusion_proof(&leaves, m as usize)
                );
                assert_eq!(
                    consistency_proof_from(&mut tiles.view(n), m, n).unwrap(),
                    consistency_proof(&leaves, m as usize)
                );
            }
        }
    }

    /// Upper levels answered from the cache give the same proofs as the
    /// files, and a view never reads past the size it was given.
    #[test]
    fn cached_upper_levels_and_the_committed_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tiles, leaves) = stored(dir.path(), 3000);
        let n = 2999;
        for m in [0, 1500, 2998] {
            let want = inclusion_proof(&leaves[..n as usize], m as usize);
            assert_eq!(
                inclusion_proof_from(&mut tiles.view(n), m, n).unwrap(),
                want
            );
            assert_eq!(
                inclusion_proof_from(&mut tiles.view(n), m, n).unwrap(),
                want
            );
        }
        // The files hold 3000 leaves; a view of 2999 refuses the 3000th
        // leaf and the node above it.
        assert!(tiles.view(n).node(0, 2999).is_err());
        assert!(tiles.view(n).node(1, 1499).is_err());
        assert!(root_from(&mut tiles.view(n), 3000).is_err());
        assert_eq!(tiles.view(3000).node(0, 2999).unwrap(), leaves[2999]);
    }

    #[test]
    fn the_audit_finds_a_node_edited_in_its_tile() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tiles, _) = stored(dir.path(), 300);
        let mut clean = Audit::default();
        audit_nodes(&mut tiles, 0, 300, &mut clean).unwrap();
        assert!(clean.mismatches.is_empty(), "{:?}", clean.mismatches);
        // Stored: 300 >> 4 nodes of level 4, 300 >> 8 of level 8.
        assert_eq!(clean.nodes, 18 + 1);
        // Only every fourth level has a file.
        for level in 0..10 {
            assert_eq!(
                crate::tiles::path(dir.path(), level).exists(),
                level % 4 == 0 && level < 9,
                "level {level}"
            );
        }
        // One byte of node 4/5 flipped on disk.
        let path = crate::tiles::path(dir.path(), 4);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5 * 32 + 7] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut found = Audit::default();
        audit_nodes(&mut Tiles::open(dir.path()), 0, 300, &mut found).unwrap();
        assert_eq!(
            found.mismatches,
            [
                "tree node 4/5 is not the hash of the nodes below it (rewritten)",
                "tree node 8/0 is not the hash of the nodes below it (rewritten)"
            ],
        );
        // A node of level 4 missing its last leaf.
        let leaves = crate::tiles::path(dir.path(), 0);
        let len = std::fs::metadata(&leaves).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&leaves)
            .unwrap()
            .set_len(len - 32 * 13)
            .unwrap();
        let mut found = Audit::default();
        audit_nodes(&mut Tiles::open(dir.path()), 0, 300, &mut found).unwrap();
        assert!(
            found
                .mismatches
                .contains(&"tree node 4/17 or a node below it is missing".to_string()),
            "{:?}",
            found.mismatches
        );
    }

    /// A node of a level not stored is the fold of the stored level below
    /// it, and one the files do not hold all of is missing.
    #[test]
    fn nodes_between_stored_levels_are_folded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut tiles, leaves) = stored(dir.path(), 40);
        for (level, idx) in [(1, 0), (1, 19), (2, 3), (3, 4), (5, 0)] {
            let width = 1usize << level;
            let first = idx as usize * width;
            assert_eq!(
                tiles.node(level, idx).unwrap(),
                root(&leaves[first..first + width]),
                "{level}/{idx}"
            );
        }
        assert!(tiles.node(3, 5).is_err(), "needs leaves 40 to 47");
        assert!(tiles.node(6, 0).is_err());
    }
}
