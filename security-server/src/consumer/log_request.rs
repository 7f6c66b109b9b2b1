//! Stage 4: the request record queued. It becomes durable while the
//! request travels; the answer waits for it (records become durable in the
//! order they were appended), so no answer leaves before it.

use super::sign::Signed;
use crate::message_log::{Appended, MessageLog, Phase};
use crate::provider::Policies;

/// A signed request whose record is on its way to disk.
pub struct Logged {
    pub signed: Signed,
    /// Resolves once the request record is durable.
    pub durable: Appended,
    /// Whether the client's operator logs bodies (the response's too).
    pub log_bodies: bool,
}

/// Queues the request record of `signed`, with its body if the client's
/// operator opted in.
pub fn queue(mut signed: Signed, log: &dyn MessageLog, policies: &Policies) -> Logged {
    let log_bodies = policies.current().logs_bodies(&signed.meta.client);
    let mut record = signed.facts.record(Phase::Request, Some(&signed.meta));
    record.payload_digest = signed.payload.digest().to_vec();
    record.payload_size = signed.payload.len() as u64;
    record.envelope = std::mem::take(&mut signed.envelope);
    if log_bodies {
        record.body = Some(signed.payload.to_bytes());
    }
    let durable = log.append(record);
    Logged {
        signed,
        durable,
        log_bodies,
    }
}
