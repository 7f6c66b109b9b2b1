//! The one place where a fault, at any stage of either side, becomes what
//! it must: its record in the message log (which also counts it in the
//! exchange metrics, see [`crate::admin::metrics::MeteredLog`]), the
//! outcome of the exchange's spans, an operator's log line, and the fault
//! the caller is answered with — as a trailers-only response when nothing
//! of the answer has left yet, or as the trailers of one that has.

use std::time::SystemTime;

use crate::faults::{Fault, FaultError};
use crate::message_log::{LogRecord, MessageLog, Phase};
use lienthong_proto::time::unix_ms;

/// A fault, with the record of the exchange as far as it got.
#[derive(Debug)]
pub struct Refusal {
    pub fault: FaultError,
    /// What the exchange's records say at the stage that failed; what a
    /// stage does not vouch for yet is left out of it (a refusal before
    /// the caller is known to be who it says carries no subject, purpose
    /// or official, so no one can put words into a citizen's trace).
    /// Boxed: every stage's `Result` carries a `Refusal`, and should stay
    /// small.
    pub record: Box<LogRecord>,
    /// A record the exchange made but left to be logged with its outcome
    /// (the provider's request record), logged just before this one.
    pub preceding: Option<Box<LogRecord>>,
    /// The exchange's spans, marked with its outcome.
    pub spans: Vec<tracing::Span>,
}

impl Refusal {
    pub fn new(fault: FaultError, record: LogRecord) -> Self {
        Refusal {
            fault,
            record: Box::new(record),
            preceding: None,
            spans: Vec::new(),
        }
    }

    /// Logs `record` just before the refusal's own, in the same commit.
    pub fn after(mut self, record: LogRecord) -> Self {
        self.preceding = Some(Box::new(record));
        self
    }

    /// Marks `span` with the outcome too.
    pub fn span(mut self, span: &tracing::Span) -> Self {
        if !span.is_disabled() {
            self.spans.push(span.clone());
        }
        self
    }

    /// Logs the refusal and returns the fault to answer with: this one, or
    /// `log_failed` when not even the refusal's record can be logged.
    pub async fn settle(self, log: &dyn MessageLog, log_failed: Fault) -> FaultError {
        let Refusal {
            fault,
            mut record,
            preceding,
            spans,
        } = self;
        tracing::info!(
            fault = %fault,
            message_id = %record.message_id,
            side = ?record.role,
            "exchange refused"
        );
        for span in &spans {
            crate::telemetry::outcome(span, fault.fault.status() as i32, fault.fault.code());
        }
        record.phase = Phase::Fault;
        record.grpc_status = fault.fault.status() as i32;
        record.fault = fault.fault.code().to_owned();
        if record.at_ms == 0 {
            record.at_ms = unix_ms(SystemTime::now());
        }
        // Both queued before either is awaited: one commit holds them.
        let preceding = preceding.map(|p| log.append(*p));
        let own = log.append(*record);
        let logged = match preceding {
            Some(p) => p.await.and(own.await),
            None => own.await,
        };
        match logged {
            Ok(()) => fault,
            Err(e) => log_failed.with(e.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_log::{Appended, LogError, Role};
    use std::sync::Mutex;

    /// Keeps what it is given, or fails every append.
    #[derive(Default)]
    struct Kept(Mutex<Vec<LogRecord>>, bool);

    impl MessageLog for Kept {
        fn append(&self, record: LogRecord) -> Appended {
            let failing = self.1;
            self.0.lock().unwrap().push(record);
            Box::pin(async move {
                if failing {
                    Err(LogError("disk full".into()))
                } else {
                    Ok(())
                }
            })
        }
    }

    fn bare() -> LogRecord {
        LogRecord {
            role: Role::Provider,
            message_id: "m1".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_refusal_is_logged_with_its_code_and_answered_as_itself() {
        let log = Kept::default();
        let answered = Refusal::new(Fault::AccessDenied.with("no grant"), bare())
            .settle(&log, Fault::ProviderLogFailed)
            .await;
        assert_eq!(answered.fault, Fault::AccessDenied);
        let kept = log.0.lock().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].phase, Phase::Fault);
        assert_eq!(kept[0].fault, Fault::AccessDenied.code());
        assert_eq!(kept[0].grpc_status, Fault::AccessDenied.status() as i32);
        assert_eq!(kept[0].message_id, "m1");
        assert!(kept[0].at_ms > 0, "a bare record gets its time");
    }

    #[tokio::test]
    async fn a_refusal_that_cannot_be_logged_is_answered_as_the_log_failure() {
        let log = Kept(Mutex::default(), true);
        let answered = Refusal::new(Fault::Replay.with("again"), bare())
            .settle(&log, Fault::ProviderLogFailed)
            .await;
        assert_eq!(answered.fault, Fault::ProviderLogFailed);
        assert!(answered.message.contains("disk full"), "{answered}");
    }
}
