//! Stage 7: the message id is new for its client. Remembered while a
//! request with it could still be fresh; when the cache is full, requests
//! are shed rather than ids forgotten. Checked after the access rights, so
//! a member without any cannot fill the cache. In a cluster of servers
//! sharing one database, the id is also claimed there, so a request
//! replayed to another node of the cluster is refused too.

use std::sync::Arc;

use super::signature::Verified;
use crate::faults::{Fault, FaultError};
use crate::replay::{ReplayCache, Use};
use crate::store::ServerStore;
use lienthong_proto::time::unix_ms;

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

/// What the cluster's check needs of a verified request, taken before it
/// awaits (the request itself is not `Sync`).
pub struct Claim {
    client: String,
    message_id: String,
    now_ms: i64,
    expires_ms: i64,
}

impl Claim {
    pub fn of(verified: &Verified, max_skew_ms: i64) -> Self {
        let facts = &verified.facts;
        Claim {
            client: facts.client.to_string(),
            message_id: facts.header.message_id.clone(),
            now_ms: unix_ms(verified.now),
            expires_ms: facts.header.created_at_unix_ms + max_skew_ms,
        }
    }
}

/// The cluster's check, after [`check`]: refuses an id another node of the
/// cluster accepted (nothing is asked on a single server).
pub async fn check_cluster(
    claim: Claim,
    cache: &ReplayCache,
    store: &Arc<ServerStore>,
) -> Result<(), FaultError> {
    let Claim {
        client,
        message_id,
        now_ms,
        expires_ms,
    } = claim;
    match cache
        .first_use_in_cluster(store, &client, &message_id, now_ms, expires_ms)
        .await
    {
        Ok(Use::Replay) => Err(Fault::Replay.with(format!(
            "message id {message_id} was already used by {client} (on another server of this cluster)"
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(Fault::ReplayCapacity.with(format!(
            "the cluster's replay check could not be made: {e}"
        ))),
    }
}
