//! RFC 6962 / RFC 9162 Merkle tree hashing: roots, inclusion proofs and
//! consistency proofs over leaf hashes.
//!
//! Used by signature batches (one signature over the root of several
//! envelope digests) and by the tamper-evident message log.

use crate::sha256;

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash of a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// The hash of an interior node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0x01]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish())
}

fn to_hash(d: ring::digest::Digest) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The root hash of a tree with the given leaf hashes (the empty tree hashes
/// to `SHA-256("")`).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(&[]),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` (RFC 6962 §2.1.1), or `None` when out of range.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    fn path(index: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
        let n = leaves.len();
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if index < k {
            path(index, &leaves[..k], out);
            out.push(root(&leaves[k..]));
        } else {
            path(index - k, &leaves[k..], out);
            out.push(root(&leaves[..k]));
        }
    }
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

/// The root that `proof` leads to from `leaf` at `index` in a tree of
/// `tree_size` leaves (RFC 9162 §2.1.3.2), or `None` when the proof has the
/// wrong shape for that position.
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Option<Hash> {
    if index >= tree_size {
        return None;
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(r)
}

/// Whether `proof` shows that `leaf` sits at `index` in the tree of
/// `tree_size` leaves with root `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    root_from_inclusion(leaf, index, tree_size, proof).is_some_and(|r| r == *root)
}

/// The consistency proof between the first `old_size` leaves and all of
/// `leaves` (RFC 6962 §2.1.2), or `None` when `old_size` is out of range.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Option<Vec<Hash>> {
    fn subproof(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
        let n = leaves.len();
        if m == n {
            if !complete {
                out.push(root(leaves));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            subproof(m, &leaves[..k], complete, out);
            out.push(root(&leaves[k..]));
        } else {
            subproof(m - k, &leaves[k..], false, out);
            out.push(root(&leaves[..k]));
        }
    }
    if old_size > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size < leaves.len() {
        subproof(old_size, leaves, true, &mut out);
    }
    Some(out)
}

/// Whether `proof` shows that the tree (`old_size`, `old_root`) is a prefix
/// of the tree (`new_size`, `new_root`) (RFC 9162 §2.1.4.2). An empty old
/// tree is a prefix of every tree.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

/// A source of subtree hashes `MTH(D[a..b])` for the ranges RFC 6962's
/// recursion asks for: a stored tree answers from its perfect subtrees
/// without reading every leaf.
pub trait SubtreeHashes {
    type Error;
    /// The hash of the subtree over leaves `a..b` (`a < b`).
    fn range(&mut self, a: u64, b: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes in memory are a source too (tests, small trees).
impl SubtreeHashes for &[Hash] {
    type Error = std::convert::Infallible;
    fn range(&mut self, a: u64, b: u64) -> Result<Hash, Self::Error> {
        Ok(root(&self[a as usize..b as usize]))
    }
}

fn split_u64(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The root of the first `size` leaves of `src`.
pub fn root_from<S: SubtreeHashes>(src: &mut S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(sha256(&[]));
    }
    src.range(0, size)
}

/// As [`inclusion_proof`], from a [`SubtreeHashes`] source: the audit path
/// of leaf `index` in the tree of the first `size` leaves.
pub fn inclusion_proof_from<S: SubtreeHashes>(
    src: &mut S,
    index: u64,
    size: u64,
) -> Result<Option<Vec<Hash>>, S::Error> {
    if index >= size {
        return Ok(None);
    }
    let mut out = Vec::new();
    // Walk down from the whole tree, collecting siblings, then reverse:
    // RFC 6962 lists them leaf-most first.
    let (mut lo, mut hi, mut m) = (0u64, size, index);
    while hi - lo > 1 {
        let k = split_u64(hi - lo);
        if m < k {
            out.push(src.range(lo + k, hi)?);
            hi = lo + k;
        } else {
            out.push(src.range(lo, lo + k)?);
            lo += k;
            m -= k;
        }
    }
    out.reverse();
    Ok(Some(out))
}

/// As [`consistency_proof`], from a [`SubtreeHashes`] source: between the
/// first `old_size` and the first `new_size` leaves.
pub fn consistency_proof_from<S: SubtreeHashes>(
    src: &mut S,
    old_size: u64,
    new_size: u64,
) -> Result<Option<Vec<Hash>>, S::Error> {
    if old_size > new_size {
        return Ok(None);
    }
    let mut out = Vec::new();
    if old_size == 0 || old_size == new_size {
        return Ok(Some(out));
    }
    // SUBPROOF(m, D[lo..hi], complete), iteratively, siblings collected
    // top-down and reversed at the end.
    let (mut lo, mut hi, mut m, mut complete) = (0u64, new_size, old_size, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(src.range(lo, hi)?);
            }
            break;
        }
        let k = split_u64(n);
        if m <= k {
            out.push(src.range(lo + k, hi)?);
            hi = lo + k;
        } else {
            out.push(src.range(lo, lo + k)?);
            lo += k;
            m -= k;
            complete = false;
        }
    }
    out.reverse();
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn known_answer_rfc6962_empty_and_single() {
        assert_eq!(
            hex(&root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // Leaf hash of the empty string, as in Certificate Transparency test vectors.
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=33 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(&l, i).unwrap();
                assert!(
                    verify_inclusion(&l[i], i as u64, n as u64, &p, &r),
                    "n={n} i={i}"
                );
                let wrong_leaf = leaf_hash(b"other");
                assert!(!verify_inclusion(&wrong_leaf, i as u64, n as u64, &p, &r));
                // Tree size is authenticated by the signed checkpoint, not the
                // path; an index past the end is refused outright.
                assert!(!verify_inclusion(&l[i], n as u64, n as u64, &p, &r));
                if n > 1 {
                    let other = (i + 1) % n;
                    assert!(
                        !verify_inclusion(&l[i], other as u64, n as u64, &p, &r)
                            || l[i] == l[other]
                    );
                }
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&l[i], i as u64, n as u64, &bad, &r));
                }
            }
            assert!(inclusion_proof(&l, n).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_forks_fail() {
        for n in 1..=33 {
            let l = leaves(n);
            let new_root = root(&l);
            for m in 0..=n {
                let old_root = root(&l[..m]);
                let p = consistency_proof(&l, m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &old_root, &new_root, &p),
                    "m={m} n={n}"
                );
                if m > 0 && m < n {
                    // A forked history: the old tree's last leaf rewritten.
                    let mut forked = l[..m].to_vec();
                    forked[m - 1] = leaf_hash(b"rewritten");
                    let forked_root = root(&forked);
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &forked_root,
                        &new_root,
                        &p
                    ));
                }
            }
            // Rolling back is never consistent.
            if n > 1 {
                let p = consistency_proof(&l, n - 1).unwrap();
                assert!(!verify_consistency(
                    n as u64,
                    n as u64 - 1,
                    &new_root,
                    &root(&l[..n - 1]),
                    &p
                ));
            }
        }
    }

    #[test]
    fn proofs_from_a_subtree_source_match_the_in_memory_ones() {
        for n in 0..=40usize {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&[i as u8])).collect();
            let mut src: &[Hash] = &leaves;
            assert_eq!(root_from(&mut src, n as u64).unwrap(), root(&leaves));
            for i in 0..=n {
                assert_eq!(
                    inclusion_proof_from(&mut src, i as u64, n as u64).unwrap(),
                    inclusion_proof(&leaves, i),
                    "inclusion {i} of {n}"
                );
                assert_eq!(
                    consistency_proof_from(&mut src, i as u64, n as u64).unwrap(),
                    consistency_proof(&leaves, i),
                    "consistency {i} → {n}"
                );
            }
        }
    }
}
