//! Stage 6: the provider's response checked against the request it
//! answers — signed by the provider's member, bound to this request,
//! covering exactly the payload and status that arrived.

use std::time::SystemTime;

use http::HeaderMap;
use lienthong_certs::Fingerprint;
use lienthong_proto::id::MemberId;
use lienthong_proto::pb::exchange::v1::ResponseEnvelope;
use prost::Message;

use crate::body::Observation;
use crate::conf_client::ConfView;
use crate::faults::{FAULT_HEADER, Fault, FaultError};
use crate::metadata;

/// What the response must answer.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The provider's member, whose signing certificate must sign it.
    pub provider: &'a MemberId,
    pub message_id: &'a str,
    /// The digest of the request header the client member signed.
    pub request_digest: &'a [u8; 32],
}

/// Checks a response as observed at its end. Returns the envelope bytes
/// for the log.
pub fn check_response(
    expected: Expected<'_>,
    view: &ConfView,
    obs: &Observation,
    max_message: usize,
) -> Result<Vec<u8>, FaultError> {
    if let Some(len) = obs.oversized {
        return Err(Fault::ResponseTooLarge.with(format!(
            "the provider's response holds a message of {len} bytes; at most {max_message} are passed on"
        )));
    }
    if let Some(e) = &obs.error {
        return Err(
            Fault::ProviderUnreachable.with(format!("the provider's response broke off: {e}"))
        );
    }
    let bad = |why: String| Fault::BadResponse.with(why);
    let trailers = obs
        .trailers
        .as_ref()
        .ok_or_else(|| bad("the response ended without trailers".into()))?;
    if trailers.contains_key(FAULT_HEADER) && !trailers.contains_key(metadata::RESPONSE_ENVELOPE) {
        // The provider's server cut its response off (a refusal of its own,
        // like a trailers-only one): its fault passes on.
        let code = header_text(trailers, FAULT_HEADER);
        let why = format!("the provider's server failed the response: {code}");
        return Err(match Fault::from_code(&code) {
            Some(f) if f.side() == crate::faults::Side::ProviderProxy => f.with(why),
            _ => bad(why),
        });
    }
    let bytes = metadata::get_bin(
        trailers,
        metadata::RESPONSE_ENVELOPE,
        metadata::MAX_ENVELOPE,
    )
    .map_err(|e| bad(e.to_string()))?
    .ok_or_else(|| bad("the response carries no signed envelope".into()))?;
    let env = ResponseEnvelope::decode(bytes.as_slice())
        .map_err(|e| bad(format!("the response envelope is malformed: {e}")))?;
    let (Some(header), Some(sig)) = (&env.header, &env.signature) else {
        return Err(bad("the response envelope is incomplete".into()));
    };
    let fp = Fingerprint::from_slice(&sig.signer_certificate_sha256)
        .ok_or_else(|| bad("the response signature names no certificate".into()))?;
    let provider = expected.provider;
    let cert = view
        .signing_cert(&fp, SystemTime::now())
        .filter(|c| &c.member == provider)
        .ok_or_else(|| {
            bad(format!(
                "the response is not signed by a current signing certificate of {provider}"
            ))
        })?;
    cert.key
        .verify_response(&env, expected.request_digest)
        .map_err(|e| bad(format!("the response signature does not verify: {e}")))?;
    if header.message_id != expected.message_id {
        return Err(bad("the response answers another message".into()));
    }
    if header.payload_digest != obs.digest || header.payload_size != obs.size {
        return Err(bad(
            "the response payload does not match its signature".into()
        ));
    }
    if header.grpc_status != grpc_status(trailers) {
        return Err(bad(
            "the response status does not match its signature".into()
        ));
    }
    Ok(bytes)
}

/// The gRPC status in `h` (2, unknown, when there is none).
pub fn grpc_status(h: &HeaderMap) -> i32 {
    h.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// A header's text, bounded, for a record.
pub fn header_text(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(128)
        .collect()
}
