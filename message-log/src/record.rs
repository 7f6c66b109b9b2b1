//! A record as a segment stores it: everything the server keeps about one
//! record ([`Stored`]), sealed with ChaCha20-Poly1305.
//!
//! Each segment has its own key, derived with HKDF-SHA256 from the log key
//! named in its header and a random salt drawn when the segment was created
//! ([`SegmentKey`]). The nonce is the record's position in the log. A
//! position is sealed at most once under one segment key: the writer opens
//! a new segment whenever it starts and after any failed write, so a tail
//! cut back after a crash is never written again under the same key. The
//! associated data is the owner server's id, the position and the key id,
//! so a record moved within the log, or copied in from another server's,
//! does not open.

use lienthong_proto::canonical::{hidden_commitment, subject_commitment};
use lienthong_proto::pb::trace::v1::{HiddenOpening, LogLeaf};
use prost::Message;
use ring::aead;
use ring::hkdf;

use crate::{LogError, LogKeys};

/// Everything kept about one record, sealed as one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stored {
    /// The canonical leaf bytes (`lienthong.trace.v1.LogLeaf`): what the
    /// tree hashes.
    #[prost(bytes = "vec", tag = "1")]
    pub leaf: Vec<u8>,
    /// The signed envelope as it travelled.
    #[prost(bytes = "vec", tag = "2")]
    pub envelope: Vec<u8>,
    /// The data subject (for the server's own investigations and lookups).
    #[prost(string, tag = "3")]
    pub data_subject: String,
    /// The salt of the leaf's subject commitment (FindUsage reveals it).
    #[prost(bytes = "vec", tag = "4")]
    pub subject_salt: Vec<u8>,
    /// The body, for subsystems that opted in.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
    /// For a withheld exchange: the encoded `HiddenOpening` its leaf
    /// commits to.
    #[prost(bytes = "vec", tag = "6")]
    pub hidden_opening: Vec<u8>,
    /// For a record retention had pruned before the log moved into
    /// segments: its leaf hash only (everything else empty). Sealed like
    /// any record, so nobody without the log key can turn a record into one.
    #[prost(bytes = "vec", tag = "7")]
    pub pruned_leaf_hash: Vec<u8>,
}

impl Stored {
    /// Checks that what is sealed beside the leaf is what the leaf commits
    /// to: the data subject (its salted commitment, or the keyed hash of
    /// leaves written before commitments) and, for a withheld exchange, the
    /// opening of its hidden official and purpose.
    pub fn check(&self, leaf: &LogLeaf, keys: &LogKeys) -> Result<(), String> {
        if !leaf.data_subject_commitment.is_empty() {
            let expected = subject_commitment(&self.subject_salt, &self.data_subject);
            if self.subject_salt.len() != 32
                || self.data_subject.is_empty()
                || expected.as_slice() != leaf.data_subject_commitment.as_slice()
            {
                return Err("its sealed data subject is not the one its leaf commits to".into());
            }
        } else if !leaf.data_subject_hash.is_empty() {
            if self.data_subject.is_empty()
                || keys.subject_hash(&self.data_subject).as_slice()
                    != leaf.data_subject_hash.as_slice()
            {
                return Err("its sealed data subject is not the one its leaf names".into());
            }
        } else if !self.data_subject.is_empty() {
            return Err("it holds a data subject its leaf does not name".into());
        }
        if !leaf.hidden_commitment.is_empty() {
            let opening = HiddenOpening::decode(self.hidden_opening.as_slice())
                .map_err(|_| "its withheld opening does not decode".to_string())?;
            let expected = hidden_commitment(&opening.salt, &opening.user_id, &opening.purpose);
            if expected.as_slice() != leaf.hidden_commitment.as_slice() {
                return Err("its withheld opening is not what its leaf commits to".into());
            }
        } else if !self.hidden_opening.is_empty() {
            return Err("it holds a withheld opening its leaf does not commit to".into());
        }
        Ok(())
    }
}

const HKDF_INFO: &[u8] = b"lienthong message log segment v1";

/// The sealing key of one segment.
pub struct SegmentKey {
    key: aead::LessSafeKey,
    owner: Vec<u8>,
    key_id: u32,
}

impl std::fmt::Debug for SegmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl SegmentKey {
    /// The key of a segment with `salt`, sealed under log key `key_id`.
    pub fn derive(keys: &LogKeys, key_id: u32, salt: &[u8]) -> Result<Self, LogError> {
        let ikm = keys.seal_key(key_id).ok_or_else(|| {
            LogError(format!(
                "log key {key_id} is not in the log key directory (removed or replaced?)"
            ))
        })?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
        let okm = prk
            .expand(&[HKDF_INFO], &aead::CHACHA20_POLY1305)
            .map_err(|_| LogError("cannot derive a segment key".into()))?;
        Ok(SegmentKey {
            key: aead::LessSafeKey::new(aead::UnboundKey::from(okm)),
            owner: keys.owner.as_bytes().to_vec(),
            key_id,
        })
    }

    fn nonce(index: u64) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        aead::Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, index: u64) -> Vec<u8> {
        let mut a = Vec::with_capacity(self.owner.len() + 13);
        a.extend_from_slice(&self.owner);
        a.push(0);
        a.extend_from_slice(&index.to_be_bytes());
        a.extend_from_slice(&self.key_id.to_be_bytes());
        a
    }

    /// Seals `record` at position `index`, appending the sealed bytes to
    /// `out`.
    pub fn seal_into(
        &self,
        index: u64,
        record: &Stored,
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let start = out.len();
        prost::Message::encode(record, out).map_err(|e| LogError(e.to_string()))?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Self::nonce(index),
                aead::Aad::from(self.aad(index)),
                &mut out[start..],
            )
            .map_err(|_| LogError("sealing failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens the record sealed at `index`; `None` when it does not open
    /// (edited, moved, from another server, or under another key).
    pub fn open(&self, index: u64, sealed: &[u8]) -> Option<Stored> {
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(
                Self::nonce(index),
                aead::Aad::from(self.aad(index)),
                &mut data,
            )
            .ok()?;
        <Stored as prost::Message>::decode(&*plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(owner: &str) -> LogKeys {
        LogKeys::new(owner, vec![1; 32], [2; 32])
    }

    #[test]
    fn a_record_opens_only_where_it_was_sealed() {
        let k = keys("VN/GOV/1/ss1");
        let seg = SegmentKey::derive(&k, 1, &[5; 32]).unwrap();
        let rec = Stored {
            leaf: b"leaf".to_vec(),
            data_subject: "001099012345".into(),
            ..Default::default()
        };
        let mut sealed = Vec::new();
        seg.seal_into(7, &rec, &mut sealed).unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"001099012345"));
        assert_eq!(seg.open(7, &sealed), Some(rec));
        // Another position, another segment, another server: nothing.
        assert_eq!(seg.open(8, &sealed), None);
        let other_segment = SegmentKey::derive(&k, 1, &[6; 32]).unwrap();
        assert_eq!(other_segment.open(7, &sealed), None);
        let other_server = SegmentKey::derive(&keys("VN/GOV/2/ss1"), 1, &[5; 32]).unwrap();
        assert_eq!(other_server.open(7, &sealed), None);
        let mut flipped = sealed.clone();
        flipped[3] ^= 1;
        assert_eq!(seg.open(7, &flipped), None);
        assert!(
            SegmentKey::derive(&k, 2, &[5; 32]).is_err(),
            "unknown key id"
        );
    }
}
