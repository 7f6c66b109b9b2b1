//! The message log: both sides record every exchange they take part in —
//! the request before it is forwarded, the response or fault before it is
//! answered. [`MessageLog::append`] returns only once the record is durable,
//! so a crash never loses an exchange a client saw succeed.
//!
//! [`SqliteLog`] is the embedded backend: one writer thread commits
//! whatever has queued up in one transaction (group commit), so many
//! concurrent exchanges share one fsync.

mod sqlite;

use std::future::Future;
use std::pin::Pin;

pub use sqlite::SqliteLog;

/// Which side of the exchange this server was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Provider,
}

/// What the record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The signed request, before it was forwarded.
    Request,
    /// The signed response, before it was answered.
    Response,
    /// A refusal or failure, before it was answered.
    Fault,
}

/// One log record. Bodies are never logged; the data subject is stored
/// only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub duration_us: u64,
}

/// Why a record could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
#[error("message log: {0}")]
pub struct LogError(pub String);

/// A durable, append-only log of exchanges.
pub trait MessageLog: Send + Sync + 'static {
    /// Appends `record`; resolves once it is durable.
    fn append(
        &self,
        record: LogRecord,
    ) -> Pin<Box<dyn Future<Output = Result<(), LogError>> + Send + '_>>;
}
