//! Stage 7: the message id is new for its client. Remembered while a
//! request with it could still be fresh; when the cache is full, requests
//! are shed rather than ids forgotten. Checked after the access rights, so
//! a member without any cannot fill the cache.

use super::signature::Verified;
use crate::conf_client::view::unix_ms;
use crate::faults::{Fault, FaultError};
use crate::replay::{ReplayCache, Use};

/// Remembers the message id of `verified`, refusing a replay.
pub fn check(verified: &Verified, cache: &ReplayCache, max_skew_ms: i64) -> Result<(), FaultError> {
    let facts = &verified.facts;
    let id = &facts.header.message_id;
    match cache.first_use(
        &facts.client.to_string(),
        id,
        unix_ms(verified.now),
        facts.header.created_at_unix_ms + max_skew_ms,
    ) {
        Use::First => Ok(()),
        Use::Replay => Err(Fault::Replay.with(format!(
            "message id {id} was already used by {}",
            facts.client
        ))),
        Use::Full => Err(Fault::ReplayCapacity.with(format!(
            "this server remembers {} message ids still inside the {} s replay window and takes no more until some expire",
            cache.len(),
            max_skew_ms / 1000
        ))),
    }
}
