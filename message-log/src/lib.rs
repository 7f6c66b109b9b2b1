//! The message log: both sides of every exchange record it — the request
//! before it is forwarded, the response or fault before it is answered.
//! [`MessageLog::append`] resolves only once the record is durable, so a
//! crash never loses an exchange a client saw succeed.
//!
//! The log is tamper-evident: each record's canonical bytes
//! (`lienthong.trace.v1.LogLeaf`, [`leaf`]) are a leaf of an append-only
//! RFC 6962 Merkle tree ([`tree`]). The server signs checkpoints of the
//! tree and the registry countersigns them after checking they extend the
//! previous one; any record can then be proven to be in a witnessed tree.
//!
//! Storage, in the order a record meets it:
//!
//! * [`SegmentLog`] ([`writer`]) — whatever has queued up is sealed
//!   ([`record`]) and appended as one checksummed frame to the current
//!   segment file ([`segment`]), with one `fdatasync` per group commit, by
//!   the appender that finds the log idle or else by the writer thread.
//! * [`index`] — the tree's nodes ([`tiles`]), each record's place and
//!   time ([`locations`]) and the lookups by subject key and message id
//!   ([`runs`]), derived from the segments behind the writer, never on an
//!   exchange's path, rebuilt from the segments when behind or damaged.
//! * [`LogReader`] — queries by data subject, message id and time, proofs,
//!   checkpoints ([`checkpoints`]); every record it returns is re-read from
//!   its segment and its keys re-derived from the leaf.
//! * [`audit`] — walks the whole log again and again, checking segments,
//!   index and tree against each other.
//! * [`legacy`] — moves a log of the SQLite era into segments, same leaves,
//!   same positions.
//!
//! [`cpu`] reads what the log costs (its own threads, and its commits on
//! appenders' threads), for the benchmarks and the admin port.

#![forbid(unsafe_code)]

pub mod audit;
pub mod checkpoints;
pub mod cpu;
pub mod index;
pub mod keys;
pub mod leaf;
pub mod legacy;
pub mod locations;
mod reader;
pub mod record;
pub mod retention;
pub mod runs;
pub mod segment;
pub mod tiles;
pub mod tree;
pub mod writer;

use std::future::Future;
use std::pin::Pin;

pub use checkpoints::StoredCheckpoint;
pub use keys::LogKeys;
pub use reader::{LogReader, SubjectRecord};
pub use writer::{CommitHistograms, CommitStats, SegmentLog};

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
    /// Not an exchange: retention pruned a range of records
    /// ([`LogRecord::pruned`]).
    Retention,
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
    /// For [`Phase::Retention`]: what was pruned.
    pub pruned: Option<Pruned>,
}

/// What a retention record says was pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The records `[from, to)`.
    pub from: u64,
    pub to: u64,
    /// SHA-256 over their leaf hashes, in order.
    pub digest: [u8; 32],
    /// The time of the newest record pruned (Unix ms).
    pub through_ms: i64,
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

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError(e.to_string())
    }
}

/// A durable, append-only log of exchanges.
pub trait MessageLog: Send + Sync + 'static {
    /// Appends `record`. The record is queued when `append` returns, and
    /// records become durable in the order they were appended; the future
    /// resolves once this one is durable (so a record that resolved also
    /// vouches for every record appended before it, unless those failed).
    /// Await the future or drop it: a record is committed when its future
    /// is first polled or dropped, or with any commit after it, so one
    /// held unpolled may wait for that.
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
