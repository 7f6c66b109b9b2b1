//! Stage 4: the request record, made before the request leaves and
//! committed with the exchange's outcome — the response's record or the
//! fault's — in one commit: the consumer waits for one `fdatasync` per
//! exchange, and its log is not written twice per exchange.
//!
//! The record is never lost on the way: a call that ends without an
//! outcome (the information system went away mid-answer) still has its
//! request record queued when its state is dropped ([`Pending`]).

use std::sync::Arc;

use super::sign::Signed;
use crate::message_log::{LogRecord, MessageLog, Phase};
use crate::provider::Policies;

/// A signed request with its record, not yet logged.
pub struct Logged {
    pub signed: Signed,
    /// The request record, logged with the outcome.
    pub request: Pending,
    /// Whether the client's operator logs bodies (the response's too).
    pub log_bodies: bool,
}

/// Makes the request record of `signed`, with its body if the client's
/// operator opted in.
pub fn make(mut signed: Signed, log: &Arc<dyn MessageLog>, policies: &Policies) -> Logged {
    let log_bodies = policies.current().logs_bodies(&signed.meta.client);
    let mut record = signed.facts.record(Phase::Request, Some(&signed.meta));
    record.payload_digest = signed.payload.digest().to_vec();
    record.payload_size = signed.payload.len() as u64;
    record.envelope = std::mem::take(&mut signed.envelope);
    if log_bodies {
        record.body = Some(signed.payload.to_bytes());
    }
    Logged {
        signed,
        request: Pending::new(record, log.clone()),
        log_bodies,
    }
}

/// A record waiting to be logged with the exchange's outcome; queued on
/// its own if it is dropped first, so no exit path leaves it out.
pub struct Pending {
    record: Option<Box<LogRecord>>,
    log: Arc<dyn MessageLog>,
}

impl Pending {
    pub fn new(record: LogRecord, log: Arc<dyn MessageLog>) -> Self {
        Pending {
            record: Some(Box::new(record)),
            log,
        }
    }

    /// The record, for the caller to log just before the outcome's.
    pub fn take(mut self) -> LogRecord {
        *self.record.take().expect("a pending record is taken once")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            // Queued now, durable with the writer's next commit; nobody
            // is left to answer, so nobody waits for it.
            drop(self.log.append(*record));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::message_log::Appended;

    /// Keeps the message ids of what it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<String>>);

    impl MessageLog for Kept {
        fn append(&self, record: LogRecord) -> Appended {
            self.0.lock().unwrap().push(record.message_id);
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn pending(log: &Arc<Kept>) -> Pending {
        let record = LogRecord {
            message_id: "m1".into(),
            phase: Phase::Request,
            ..Default::default()
        };
        Pending::new(record, log.clone())
    }

    #[test]
    fn a_request_record_left_behind_is_still_logged() {
        let log = Arc::new(Kept::default());
        drop(pending(&log));
        assert_eq!(*log.0.lock().unwrap(), ["m1"]);
    }

    #[test]
    fn a_request_record_taken_for_the_outcome_is_not_logged_twice() {
        let log = Arc::new(Kept::default());
        let record = pending(&log).take();
        assert_eq!(record.message_id, "m1");
        assert!(log.0.lock().unwrap().is_empty());
    }
}
