//! The embedded message log: SQLite in WAL mode with `synchronous=FULL`,
//! written by one thread that commits every queued record in one
//! transaction (group commit) and only then acknowledges them.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc;
use std::thread;

use ring::hmac;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::{LogError, LogRecord, MessageLog, Phase, Role};

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS messages (
        id             INTEGER PRIMARY KEY,
        at             INTEGER NOT NULL,
        role           TEXT NOT NULL,
        phase          TEXT NOT NULL,
        message_id     TEXT NOT NULL,
        client         TEXT NOT NULL,
        service        TEXT NOT NULL,
        method         TEXT NOT NULL,
        user_id        TEXT NOT NULL,
        purpose        TEXT NOT NULL,
        subject_hash   BLOB,
        peer           TEXT NOT NULL,
        request_digest BLOB NOT NULL,
        payload_digest BLOB NOT NULL,
        payload_size   INTEGER NOT NULL,
        envelope       BLOB NOT NULL,
        grpc_status    INTEGER NOT NULL,
        fault          TEXT NOT NULL,
        duration_us    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX IF NOT EXISTS messages_subject ON messages (subject_hash);
    CREATE INDEX IF NOT EXISTS messages_message ON messages (message_id);
"#;

type Job = (LogRecord, oneshot::Sender<Result<(), LogError>>);

/// The message log in one SQLite file.
pub struct SqliteLog {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for SqliteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteLog")
    }
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path`. `subject_key` keys the
    /// hash under which data subjects are stored.
    pub fn open(path: &Path, subject_key: &[u8]) -> Result<Self, LogError> {
        let conn = Connection::open(path).map_err(|e| LogError(e.to_string()))?;
        let setup = || -> rusqlite::Result<()> {
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(SCHEMA)
        };
        setup().map_err(|e| LogError(format!("{}: {e}", path.display())))?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, subject_key);
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("message-log".into())
            .spawn(move || writer(conn, key, rx))
            .map_err(|e| LogError(format!("cannot start the log writer: {e}")))?;
        Ok(SqliteLog { tx })
    }

    /// Number of records (for status and tests).
    pub fn count(path: &Path) -> Result<u64, LogError> {
        let conn = Connection::open(path).map_err(|e| LogError(e.to_string()))?;
        conn.query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| LogError(e.to_string()))
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Consumer => "consumer",
        Role::Provider => "provider",
    }
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Request => "request",
        Phase::Response => "response",
        Phase::Fault => "fault",
    }
}

/// Commits queued records in batches until every sender is gone.
fn writer(mut conn: Connection, key: hmac::Key, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &key, &batch).map_err(|e| {
            tracing::error!(error = %e, records = batch.len(), "message log commit failed");
            LogError(e.to_string())
        });
        for (_, done) in batch {
            let _ = done.send(result.clone());
        }
    }
}

fn commit(conn: &mut Connection, key: &hmac::Key, batch: &[Job]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO messages (at, role, phase, message_id, client, service, method, user_id,
                purpose, subject_hash, peer, request_digest, payload_digest, payload_size, envelope,
                grpc_status, fault, duration_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        for (r, _) in batch {
            let subject = (!r.data_subject.is_empty())
                .then(|| hmac::sign(key, r.data_subject.as_bytes()).as_ref().to_vec());
            stmt.execute(params![
                r.at_ms,
                role(r.role),
                phase(r.phase),
                r.message_id,
                r.client,
                r.service,
                r.method,
                r.user_id,
                r.purpose,
                subject,
                r.peer,
                r.request_digest,
                r.payload_digest,
                r.payload_size as i64,
                r.envelope,
                r.grpc_status,
                r.fault,
                r.duration_us as i64,
            ])?;
        }
    }
    tx.commit()
}

impl MessageLog for SqliteLog {
    fn append(
        &self,
        record: LogRecord,
    ) -> Pin<Box<dyn Future<Output = Result<(), LogError>> + Send + '_>> {
        let (done, wait) = oneshot::channel();
        let sent = self.tx.send((record, done));
        Box::pin(async move {
            sent.map_err(|_| LogError("the log writer has stopped".into()))?;
            wait.await
                .map_err(|_| LogError("the log writer has stopped".into()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> LogRecord {
        LogRecord {
            role: Role::Provider,
            phase: Phase::Request,
            at_ms: 1,
            message_id: format!("m-{i}"),
            client: "VN/GOV/1/a".into(),
            service: "VN/GOV/2/b/s.v1.S".into(),
            method: "Get".into(),
            user_id: String::new(),
            purpose: String::new(),
            data_subject: "001099012345".into(),
            peer: String::new(),
            request_digest: vec![1; 32],
            payload_digest: vec![2; 32],
            payload_size: 3,
            envelope: vec![],
            grpc_status: 0,
            fault: String::new(),
            duration_us: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_all_durable_and_subjects_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let log = std::sync::Arc::new(SqliteLog::open(&path, b"key").unwrap());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.append(record(i)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(SqliteLog::count(&path).unwrap(), 200);
        let conn = Connection::open(&path).unwrap();
        let plain: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages WHERE instr(CAST(subject_hash AS TEXT), '001099') > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(plain, 0, "the data subject is never stored in plain text");
    }
}
