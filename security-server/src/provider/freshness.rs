//! Stage 4: the request is fresh — created within the clock skew of this
//! server's clock (so the replay cache need only remember ids that long).

use super::signature::Verified;
use crate::faults::{Fault, FaultError};
use crate::replay;
use lienthong_proto::time::unix_ms;

/// Whether `verified` was created within `max_skew_ms` of its arrival.
pub fn check(verified: &Verified, max_skew_ms: i64) -> Result<(), FaultError> {
    let created = verified.facts.header.created_at_unix_ms;
    let now_ms = unix_ms(verified.now);
    if replay::fresh(created, now_ms, max_skew_ms) {
        return Ok(());
    }
    Err(Fault::StaleTimestamp.with(format!(
        "the request was created at unix ms {created}, this server's clock says {now_ms}; at most {} s apart are accepted",
        max_skew_ms / 1000
    )))
}
