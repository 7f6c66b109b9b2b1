//! The log's Merkle tree, stored as its perfect subtrees.
//!
//! Every node whose subtree is complete is written once, when its last leaf
//! arrives (level 0 are the leaves): about two nodes per record. Any
//! subtree hash RFC 6962 asks for is then a fold of at most log₂ n stored
//! nodes, so roots and proofs never read the leaves ([`Nodes`]). The writer
//! keeps the right edge of the tree in memory ([`Frontier`]) and knows each
//! new node without reading anything.

use lienthong_proto::merkle::{self, Hash, SubtreeHashes};
use rusqlite::{Connection, OptionalExtension, params};

use crate::LogError;

/// The perfect subtrees along the tree's right edge, largest first.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// (level, hash): a subtree of 2^level leaves.
    edge: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the stored tree of `size` leaves.
    pub fn load(conn: &Connection, size: u64) -> Result<Self, LogError> {
        let mut edge = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                let hash = node(conn, level, start >> level)?;
                edge.push((level, hash));
                start += 1 << level;
            }
        }
        Ok(Frontier { size, edge })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the nodes completed by it (including
    /// the leaf itself) as (level, index, hash), to be stored.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let index = self.size;
        let mut done = vec![(0, index, leaf)];
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
            done.push((level, index >> level, parent));
            self.edge.push((level, parent));
        }
        self.size += 1;
        done
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

/// Stores the nodes a push completed.
pub fn store_nodes(conn: &Connection, nodes: &[(u32, u64, Hash)]) -> Result<(), LogError> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    for (level, idx, hash) in nodes {
        stmt.execute(params![*level as i64, *idx as i64, hash.as_slice()])?;
    }
    Ok(())
}

fn node(conn: &Connection, level: u32, idx: u64) -> Result<Hash, LogError> {
    let bytes: Option<Vec<u8>> = conn
        .prepare_cached("SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2")?
        .query_row(params![level as i64, idx as i64], |r| r.get(0))
        .optional()?;
    bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| LogError(format!("tree node {level}/{idx} is missing")))
}

/// What an audit of a range of records found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Records whose sealed bytes were opened and checked (those pruned by
    /// retention have none).
    pub leaves: u64,
    /// Stored nodes checked against their children.
    pub nodes: u64,
    /// What does not match, a sentence each.
    pub mismatches: Vec<String>,
}

/// The stored leaf hashes (level-0 nodes) of records `[from, to)`.
pub fn leaf_hashes(
    conn: &Connection,
    from: u64,
    to: u64,
) -> Result<std::collections::HashMap<u64, Vec<u8>>, LogError> {
    level_nodes(conn, 0, from, to)
}

fn level_nodes(
    conn: &Connection,
    level: u32,
    lo: u64,
    hi: u64,
) -> Result<std::collections::HashMap<u64, Vec<u8>>, LogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, hash FROM nodes WHERE level = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
    )?;
    let rows = stmt.query_map(params![level as i64, lo as i64, hi as i64], |r| {
        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Checks that every node completed by a record of `[from, to)` is the
/// hash of its two children (`leaves` are the range's level-0 nodes, as
/// [`leaf_hashes`] read them). Together with the witnessed checkpoints
/// (which fix the top of the tree) and the check of each record against
/// its leaf node, this finds a record edited in place, however many nodes
/// above it were rewritten to match.
pub fn audit_nodes(
    conn: &Connection,
    from: u64,
    to: u64,
    leaves: std::collections::HashMap<u64, Vec<u8>>,
    out: &mut Audit,
) -> Result<(), LogError> {
    if from >= to {
        return Ok(());
    }
    let level_nodes = |level, lo, hi| level_nodes(conn, level, lo, hi);
    // Level L nodes completed by a record of the range: those whose last
    // leaf, (j + 1) · 2^L − 1, lies in [from, to).
    let mut below = leaves;
    for level in 1..64u32 {
        let width = 1u64 << level;
        if width > to {
            break;
        }
        let lo = (from + 1).div_ceil(width) - 1;
        let hi = to / width;
        if lo >= hi {
            below = level_nodes(level, lo, hi)?;
            continue;
        }
        // Children not fetched with the level below (its range was
        // narrower) are read now.
        let children = if (2 * lo..2 * hi).all(|c| below.contains_key(&c)) {
            below
        } else {
            level_nodes(level - 1, 2 * lo, 2 * hi)?
        };
        let parents = level_nodes(level, lo, hi)?;
        for j in lo..hi {
            out.nodes += 1;
            let (Some(l), Some(r), Some(p)) = (
                children.get(&(2 * j)),
                children.get(&(2 * j + 1)),
                parents.get(&j),
            ) else {
                out.mismatches.push(format!(
                    "tree node {level}/{j} or one of its children is missing"
                ));
                continue;
            };
            let (Ok(l), Ok(r)) = (
                <Hash>::try_from(l.as_slice()),
                <Hash>::try_from(r.as_slice()),
            ) else {
                out.mismatches
                    .push(format!("tree node {level}/{j}: a child is not 32 bytes"));
                continue;
            };
            if p.as_slice() != merkle::node_hash(&l, &r) {
                out.mismatches.push(format!(
                    "tree node {level}/{j} is not the hash of its children (rewritten)"
                ));
            }
        }
        below = parents;
    }
    Ok(())
}

/// Subtree hashes from the stored nodes.
pub struct Nodes<'c>(pub &'c Connection);

impl SubtreeHashes for Nodes<'_> {
    type Error = LogError;

    fn range(&mut self, a: u64, b: u64) -> Result<Hash, LogError> {
        let n = b - a;
        if n.is_power_of_two() && a.is_multiple_of(n) {
            return node(self.0, n.trailing_zeros(), a >> n.trailing_zeros());
        }
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        let left = self.range(a, a + k)?;
        let right = self.range(a + k, b)?;
        Ok(merkle::node_hash(&left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_proto::merkle::{
        consistency_proof, consistency_proof_from, inclusion_proof, inclusion_proof_from, root,
        root_from,
    };

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE nodes (level INTEGER, idx INTEGER, hash BLOB, PRIMARY KEY (level, idx))",
        )
        .unwrap();
        c
    }

    #[test]
    fn stored_tree_matches_rfc6962_at_every_size() {
        let c = db();
        let mut f = Frontier::default();
        let mut leaves = Vec::new();
        for i in 0..70u64 {
            let leaf = merkle::leaf_hash(&i.to_be_bytes());
            leaves.push(leaf);
            store_nodes(&c, &f.push(leaf)).unwrap();
            let n = leaves.len() as u64;
            assert_eq!(f.root(), root(&leaves), "root at {n}");
            assert_eq!(root_from(&mut Nodes(&c), n).unwrap(), root(&leaves));
            // A frontier reloaded from the store is the same.
            let g = Frontier::load(&c, n).unwrap();
            assert_eq!(g.root(), f.root());
            for m in [0, n / 3, n - 1] {
                assert_eq!(
                    inclusion_proof_from(&mut Nodes(&c), m, n).unwrap(),
                    inclusion_proof(&leaves, m as usize)
                );
                assert_eq!(
                    consistency_proof_from(&mut Nodes(&c), m, n).unwrap(),
                    consistency_proof(&leaves, m as usize)
                );
            }
        }
    }
}
