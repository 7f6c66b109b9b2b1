//! Stage 8: the request record queued (with the body if the provider
//! subsystem's operator opted in). It becomes durable while the backend
//! works; no byte of the response leaves before it is ([`super::backend`]).

use super::payload::Received;
use super::policy::Policy;
use crate::message_log::{Appended, MessageLog, Phase};
use crate::metadata::Target;

/// An accepted request whose record is on its way to disk.
pub struct Logged {
    pub received: Received,
    pub durable: Appended,
    /// Whether the provider subsystem's operator logs bodies (the
    /// response's too).
    pub log_bodies: bool,
}

/// Queues the request record of `received`.
pub fn queue(received: Received, policy: &Policy, log: &dyn MessageLog) -> Logged {
    let log_bodies = match &received.verified.facts.target {
        Target::Provider(p) => policy.logs_bodies(p),
        Target::Server(_) => false,
    };
    let mut record = received.verified.facts.record(Phase::Request);
    record.body = log_bodies.then(|| received.payload.to_bytes());
    let durable = log.append(record);
    Logged {
        received,
        durable,
        log_bodies,
    }
}
