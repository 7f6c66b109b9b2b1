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

/// The file in the log's directory that says which subject key its
/// lookups were made under: a check value (HMAC of a fixed label under the
/// key, 16 bytes), which tells nothing of the key.
pub const SUBJECT_KEY_CHECK: &str = "subject-key.check";

/// Refuses to write to the log in `dir` (of `size` records) with keys
/// that cannot read it — a replaced key, the wrong key directory, or a
/// log copied from another server: under each log key its segments name,
/// one of its records must open (the newest such segment's first), and
/// its lookups must have been made under their subject key
/// ([`check_subject_key`], recorded on the first open that has none).
/// Writing on would seal new records beside old ones no key could read,
/// and would index citizens under a key their earlier records are not
/// found by. One header read per segment, one record opened per key.
pub fn check_log(dir: &std::path::Path, keys: &LogKeys, size: u64) -> Result<(), crate::LogError> {
    use crate::segment::{self, Header};
    let mut checked = std::collections::HashSet::new();
    for (first, path) in segment::list(dir)?.iter().rev() {
        if *first >= size {
            continue;
        }
        let file = std::fs::File::open(path)?;
        let (header, at) = Header::read(&file)?;
        if !checked.insert(header.key_id) {
            continue;
        }
        let key = crate::record::SegmentKey::derive(keys, header.key_id, &header.salt)
            .map_err(|e| wrong_keys(format!("segment {first}: {e}")))?;
        let len = file.metadata()?.len();
        // Every entry is sealed, a record kept as its hash alone too.
        let frame = segment::read_frame(&file, at, len)?;
        if let Some(e) = frame.iter().flat_map(|f| &f.entries).next()
            && key.open(e.index, &e.bytes).is_none()
        {
            return Err(wrong_keys(format!(
                "record {} (segment {first}) does not open under log key {}, or it was damaged",
                e.index, header.key_id
            )));
        }
    }
    check_subject_key(dir, keys, true)
}

/// Refuses `keys` whose subject key is not the one the lookups of the
/// log in `dir` were made under, by the check value `subject-key.check`
/// holds; where it holds none, `record` writes it (the writer, on the
/// first open that finds none). Readers check too: a reader builds the
/// index as well, and one under another subject key would index citizens
/// where no lookup finds them.
pub fn check_subject_key(
    dir: &std::path::Path,
    keys: &LogKeys,
    record: bool,
) -> Result<(), crate::LogError> {
    let check = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &keys.subject_hash),
        b"lienthong log subject key check",
    );
    let check = &check.as_ref()[..16];
    let path = dir.join(SUBJECT_KEY_CHECK);
    match std::fs::read(&path) {
        Ok(held) if held == check => Ok(()),
        Ok(_) => Err(wrong_keys(
            "the subject key is not the one this log's lookups were made under".into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && record => {
            crate::retention::write_durably(dir, &path, check)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::LogError(format!("{}: {e}", path.display()))),
    }
}

fn wrong_keys(what: String) -> crate::LogError {
    crate::LogError(format!(
        "{what}: the log key directory is not this log's (a replaced key, the wrong --log-key-dir, or a log copied from another server); restore the key directory from its backup or escrow"
    ))
}
