//! The response on its way back: verified as it streams, logged at its
//! end, and answered with the provider's status.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Response};
use lienthong_certs::Fingerprint;
use lienthong_proto::pb::exchange::v1::ResponseEnvelope;
use prost::Message;
use tonic::body::Body;

use super::{Consumer, Exchange};
use crate::body::{Observation, Observed};
use crate::conf_client::ConfView;
use crate::faults::{FAULT_HEADER, Fault, FaultError};
use crate::message_log::Phase;
use crate::metadata;

impl Consumer {
    pub(super) fn answer(
        self: &Arc<Self>,
        response: Response<Body>,
        ex: Exchange,
        view: Arc<ConfView>,
        log_bodies: bool,
        request_durable: tokio::task::JoinHandle<Result<(), crate::message_log::LogError>>,
    ) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        // The information system learns the exchange's id (for operational
        // data and the logs) and, with span export, its trace.
        set_message_id(&mut parts.headers, &ex.message_id);
        if let Some((traceparent, _)) = crate::telemetry::propagate(&ex.span)
            && let Ok(v) = http::HeaderValue::from_str(&traceparent)
        {
            parts.headers.insert(crate::telemetry::TRACERESPONSE, v);
        }
        let this = self.clone();
        let finisher = Box::new(move |obs: Observation| {
            Box::pin(async move {
                if let Err(fault) = super::durable(request_durable).await {
                    return fault.trailers();
                }
                this.finish(ex, view, obs).await
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = HeaderMap> + Send>>
        });
        let observed = Observed::new(body, finisher)
            .capturing(log_bodies, self.max_message)
            .bounded(self.max_message);
        Response::from_parts(parts, Body::new(observed))
    }

    /// Verifies the provider's signed response, logs, and returns the
    /// trailers the information system gets.
    async fn finish(&self, ex: Exchange, view: Arc<ConfView>, obs: Observation) -> HeaderMap {
        let checked = check_response(&ex, &view, &obs, self.max_message);
        let mut record = ex.record(Phase::Response);
        record.payload_digest = obs.digest.to_vec();
        record.payload_size = obs.size;
        let mut trailers = obs.trailers.unwrap_or_default();
        // The call to the provider ended with the provider's status.
        crate::telemetry::outcome(&ex.forward, grpc_status(&trailers), "");
        match checked {
            Ok(envelope) => {
                record.envelope = envelope;
                record.body = obs.body.clone();
                record.grpc_status = grpc_status(&trailers);
                crate::telemetry::outcome(&ex.span, record.grpc_status, "");
                trailers.remove(metadata::RESPONSE_ENVELOPE);
                match self.log.append(record).await {
                    Ok(()) => trailers,
                    Err(e) => Fault::ConsumerLogFailed.with(e.0).trailers(),
                }
            }
            Err(fault) => {
                tracing::warn!(fault = %fault, message_id = %ex.message_id, "response refused");
                crate::telemetry::outcome(
                    &ex.span,
                    fault.fault.status() as i32,
                    fault.fault.code(),
                );
                let _ = self.log.append(ex.fault_record(&fault)).await;
                fault.trailers()
            }
        }
    }
}

/// Names the exchange in a response's headers (`lt-message-id`).
pub(super) fn set_message_id(headers: &mut HeaderMap, message_id: &str) {
    if let Ok(v) = http::HeaderValue::from_str(message_id) {
        headers.insert(metadata::MESSAGE_ID, v);
    }
}

pub(super) fn grpc_status(h: &HeaderMap) -> i32 {
    h.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

pub(super) fn header_text(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(128)
        .collect()
}

/// Checks a response against the request it answers: signed by the
/// provider's member, bound to the request, covering exactly the payload
/// and status received. Returns the envelope bytes for the log.
fn check_response(
    ex: &Exchange,
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
    .map_err(bad)?
    .ok_or_else(|| bad("the response carries no signed envelope".into()))?;
    let env = ResponseEnvelope::decode(bytes.as_slice())
        .map_err(|e| bad(format!("the response envelope is malformed: {e}")))?;
    let (Some(header), Some(sig)) = (&env.header, &env.signature) else {
        return Err(bad("the response envelope is incomplete".into()));
    };
    let provider = ex
        .call
        .as_ref()
        .map(|c| c.target.member().clone())
        .ok_or_else(|| bad("no call".into()))?;
    let fp = Fingerprint::from_slice(&sig.signer_certificate_sha256)
        .ok_or_else(|| bad("the response signature names no certificate".into()))?;
    let cert = view
        .signing_cert(&fp, SystemTime::now())
        .filter(|c| c.member == provider)
        .ok_or_else(|| {
            bad(format!(
                "the response is not signed by a current signing certificate of {provider}"
            ))
        })?;
    cert.key
        .verify_response(&env, &ex.request_digest)
        .map_err(|e| bad(format!("the response signature does not verify: {e}")))?;
    if header.message_id != ex.message_id {
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
