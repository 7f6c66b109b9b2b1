//! The log's secrets and whose log it is.
//!
//! * The **sealing keys**: records are sealed under a key derived per
//!   segment ([`crate::record::SegmentKey`]) from the log key named in the
//!   segment's header. The newest key seals; older ones are kept for
//!   reading after `lienthong server log rotate-key`.
//! * The **subject key**: lookups by data subject use HMAC-SHA256 under it,
//!   never an unkeyed hash (a 12-digit personal id is guessed from its
//!   SHA-256 in minutes).
//!
//! They live in the log key directory (`serve --log-key-dir`), which is
//! never the log's own directory, so a copy of the log alone reveals
//! nothing.

/// The keys of one server's log.
#[derive(Clone)]
pub struct LogKeys {
    /// The security server whose log this is (`INSTANCE/CLASS/MEMBER/SERVER`):
    /// part of every record's associated data, so a segment copied in from
    /// another server never opens here.
    pub owner: String,
    /// The key data subjects are hashed under for lookups.
    pub subject_hash: Vec<u8>,
    /// Sealing keys by id; the highest id seals new segments.
    pub seal: Vec<(u32, [u8; 32])>,
}

impl std::fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKeys")
            .field("owner", &self.owner)
            .field(
                "seal_key_ids",
                &self.seal.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl LogKeys {
    /// Keys with one sealing key (id 1).
    pub fn new(owner: impl Into<String>, subject_hash: Vec<u8>, seal: [u8; 32]) -> Self {
        LogKeys {
            owner: owner.into(),
            subject_hash,
            seal: vec![(1, seal)],
        }
    }

    /// The keyed hash a data subject is looked up under.
    pub fn subject_hash(&self, subject: &str) -> [u8; 32] {
        self.subject_hasher().hash(subject)
    }

    /// [`LogKeys::subject_hash`] with its key prepared once, for many.
    pub fn subject_hasher(&self) -> SubjectHasher {
        SubjectHasher(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &self.subject_hash,
        ))
    }

    /// The key new segments are sealed under: (id, key).
    pub fn current(&self) -> Option<(u32, &[u8; 32])> {
        self.seal
            .iter()
            .max_by_key(|(id, _)| *id)
            .map(|(id, k)| (*id, k))
    }

    /// The sealing key `id`, for reading.
    pub fn seal_key(&self, id: u32) -> Option<&[u8; 32]> {
        self.seal.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }
}

/// The keyed hash of data subjects, its key prepared.
#[derive(Clone)]
pub struct SubjectHasher(ring::hmac::Key);

impl SubjectHasher {
    pub fn hash(&self, subject: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&self.0, subject.as_bytes()).as_ref());
        out
    }
}
