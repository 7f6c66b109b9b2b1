//! Stage 8: the request record, made (with the body if the provider
//! subsystem's operator opted in) but not yet appended: it is committed
//! with the response record, in one fdatasync, before any byte of the
//! response leaves ([`super::answer`]); or with the fault record if the
//! exchange fails on the way ([`crate::refusal::Refusal::after`]).

use super::payload::Received;
use super::policy::Policy;
use crate::message_log::{LogRecord, Phase};
use crate::metadata::Target;

/// An accepted request with its record, to be logged with its outcome.
pub struct Logged {
    pub received: Received,
    /// Boxed: it travels through every later stage.
    pub request: Box<LogRecord>,
    /// Whether the provider subsystem's operator logs bodies (the
    /// response's too).
    pub log_bodies: bool,
}

/// Makes the request record of `received`.
pub fn record(received: Received, policy: &Policy) -> Logged {
    let log_bodies = match &received.verified.facts.target {
        Target::Provider(p) => policy.logs_bodies(p),
        Target::Server(_) => false,
    };
    let mut request = received.verified.facts.record(Phase::Request);
    request.body = log_bodies.then(|| received.payload.to_bytes());
    Logged {
        received,
        request: Box::new(request),
        log_bodies,
    }
}
