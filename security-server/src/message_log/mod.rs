//! The message log: both sides record every exchange they take part in —
//! the request before it is forwarded, the response or fault before it is
//! answered. [`MessageLog::append`] returns only once the record is durable,
//! so a crash never loses an exchange a client saw succeed.
//!
//! The log is tamper-evident: each record's canonical bytes
//! (`lienthong.trace.v1.LogLeaf`, [`leaf`]) are a leaf of an append-only
//! RFC 6962 Merkle tree ([`tree`]). The server signs checkpoints of the
//! tree and the registry countersigns them after checking they extend the
//! previous one; any record can then be proven to be in a witnessed tree.
//!
//! * [`SqliteLog`] — the embedded writer: one thread commits whatever has
//!   queued up in one transaction (group commit), so many concurrent
//!   exchanges share one fsync.
//! * [`LogReader`] — queries by data subject, inclusion and consistency
//!   proofs, checkpoints.
//!
//! Bodies are never logged. The data subject is kept as a keyed hash (for
//! lookup) and sealed with AEAD (for the server's own investigations); the
//! two keys live in the server's directory, 0600.

pub mod audit;
pub mod leaf;
mod reader;
mod sqlite;
pub mod tree;

use std::future::Future;
use std::pin::Pin;

pub use reader::{LogReader, StoredCheckpoint, SubjectRecord};
pub use sqlite::{CommitHistograms, CommitStats, SqliteLog};

/// Which side of the exchange this server was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Consumer,
    Provider,
}

/// What the record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// The signed request, before it was forwarded.
    #[default]
    Request,
    /// The signed response, before it was answered.
    Response,
    /// A refusal or failure, before it was answered.
    Fault,
}

/// One record as the proxy sides hand it over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogRecord {
    pub role: Role,
    pub phase: Phase,
    pub at_ms: i64,
    pub message_id: String,
    pub client: String,
    pub service: String,
    pub method: String,
    pub user_id: String,
    pub purpose: String,
    /// In plain text only here: the log stores a keyed hash and a sealed copy.
    pub data_subject: String,
    /// The other security server.
    pub peer: String,
    /// Digest of the request header (what the response binds).
    pub request_digest: Vec<u8>,
    pub payload_digest: Vec<u8>,
    pub payload_size: u64,
    /// The signed envelope as it travelled (request or response).
    pub envelope: Vec<u8>,
    pub grpc_status: i32,
    /// The fault code, for `Phase::Fault`.
    pub fault: String,
    /// Hidden from the data subject until then (Unix ms); 0 = not hidden.
    pub withheld_until_ms: i64,
    pub duration_us: u64,
    /// The body (request or response), only for subsystems that opted in;
    /// stored sealed, never in the leaf.
    pub body: Option<bytes::Bytes>,
}

/// Why a record could not be made durable or read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("message log: {0}")]
pub struct LogError(pub String);

impl From<rusqlite::Error> for LogError {
    fn from(e: rusqlite::Error) -> Self {
        LogError(e.to_string())
    }
}

/// The two secrets of a log: the key data subjects are hashed under, and
/// the key their plain text is sealed with.
#[derive(Clone)]
pub struct LogKeys {
    pub subject_hash: Vec<u8>,
    pub seal: [u8; 32],
}

impl std::fmt::Debug for LogKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogKeys(<redacted>)")
    }
}

impl LogKeys {
    /// The keyed hash a data subject is stored and looked up under.
    pub fn subject_hash(&self, subject: &str) -> [u8; 32] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.subject_hash);
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::hmac::sign(&key, subject.as_bytes()).as_ref());
        out
    }
}

/// A durable, append-only log of exchanges.
pub trait MessageLog: Send + Sync + 'static {
    /// Appends `record`. The record is queued when `append` returns, and
    /// records become durable in the order they were appended; the future
    /// resolves once this one is durable (so a record that resolved also
    /// vouches for every record appended before it, unless those failed).
    fn append(&self, record: LogRecord) -> Appended;
}

/// The outcome of an append, once the record is durable.
pub type Appended = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send + 'static>>;

/// A log that keeps nothing: only for measuring what logging costs
/// (`serve --dangerous-disable-message-log`). Never for real traffic.
#[derive(Debug, Default)]
pub struct DangerousDiscard;

impl MessageLog for DangerousDiscard {
    fn append(&self, _record: LogRecord) -> Appended {
        Box::pin(std::future::ready(Ok(())))
    }
}
