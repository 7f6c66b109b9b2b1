//! Stage 5: the payload — read (bounded, kept in the chunks it came in,
//! hashed as they came) and exactly the one the client signed. Nothing of
//! it reaches the backend before this holds.

use super::signature::Verified;
use crate::body::Chunks;
use crate::faults::Fault;
use crate::refusal::Refusal;

/// A verified request with its payload.
pub struct Received {
    pub verified: Verified,
    pub payload: Chunks,
}

/// Reads the payload of `verified`, at most `max_message` bytes.
pub async fn receive(mut verified: Verified, max_message: usize) -> Result<Received, Refusal> {
    let body = std::mem::take(&mut verified.body);
    let payload = match Chunks::read(
        body,
        max_message,
        Fault::ProviderMessageTooLarge,
        Fault::BadEnvelope,
    )
    .await
    {
        Ok(p) => p,
        Err(fault) => return Err(verified.facts.refused(fault)),
    };
    let header = &verified.facts.header;
    if payload.digest().as_slice() != header.payload_digest
        || payload.len() as u64 != header.payload_size
    {
        let fault = Fault::PayloadMismatch
            .with("the payload is not the one the client signed (altered in transit?)");
        return Err(verified.facts.refused(fault));
    }
    Ok(Received { verified, payload })
}
