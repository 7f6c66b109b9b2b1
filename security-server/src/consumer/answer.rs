//! Stage 7: the answer. A provider server's refusal (trailers-only) is
//! logged and passed on; a response streams back to the information
//! system as it arrives, hashed, and at its end is verified ([`verify`]),
//! logged and closed with the provider's status — once both its records
//! are durable.

use std::sync::Arc;

use http::{HeaderMap, Response};
use tonic::body::Body;

use super::forward::Forwarded;
use super::sign::Signed;
use super::verify::{self, Expected, grpc_status, header_text};
use crate::body::{Finish, FinishFuture, Observation, Observed};
use crate::faults::{FAULT_HEADER, Fault};
use crate::message_log::{Appended, MessageLog, Phase};
use crate::metadata;
use crate::refusal::Refusal;

/// Answers the information system with the provider's response.
pub async fn answer(
    forwarded: Forwarded,
    log: Arc<dyn MessageLog>,
    max_message: usize,
) -> Result<Response<Body>, Refusal> {
    let Forwarded {
        signed,
        durable,
        log_bodies,
        response,
    } = forwarded;
    let (mut parts, body) = response.into_parts();
    set_message_id(&mut parts.headers, &signed.facts.message_id);
    if parts.headers.contains_key("grpc-status") {
        // Trailers-only: a refusal by the provider's server, passed on
        // once it is logged.
        return pass_on_refusal(signed, durable, &*log, parts, body).await;
    }
    // With span export the information system learns its trace.
    if let Some((traceparent, _)) = crate::telemetry::propagate(&signed.facts.span)
        && let Ok(v) = http::HeaderValue::from_str(&traceparent)
    {
        parts.headers.insert(crate::telemetry::TRACERESPONSE, v);
    }
    let observed = Observed::finishing(
        body,
        Closing {
            signed,
            durable,
            log,
            max_message,
        },
    )
    .capturing(log_bodies, max_message)
    .bounded(max_message);
    Ok(Response::from_parts(parts, Body::new(observed)))
}

async fn pass_on_refusal(
    signed: Signed,
    durable: Appended,
    log: &dyn MessageLog,
    parts: http::response::Parts,
    body: Body,
) -> Result<Response<Body>, Refusal> {
    let meta = Some(&signed.meta);
    if let Err(e) = durable.await {
        return Err(signed
            .facts
            .refused(Fault::ConsumerLogFailed.with(e.0), meta));
    }
    let mut r = signed.facts.record(Phase::Fault, meta);
    r.grpc_status = grpc_status(&parts.headers);
    r.fault = header_text(&parts.headers, FAULT_HEADER);
    crate::telemetry::outcome(&signed.facts.span, r.grpc_status, &r.fault);
    crate::telemetry::outcome(&signed.facts.forward, r.grpc_status, &r.fault);
    if let Err(e) = log.append(r).await {
        return Err(signed
            .facts
            .refused(Fault::ConsumerLogFailed.with(e.0), meta));
    }
    Ok(Response::from_parts(parts, body))
}

/// The response's end: verify, log, and decide the trailers.
struct Closing {
    signed: Signed,
    durable: Appended,
    log: Arc<dyn MessageLog>,
    max_message: usize,
}

impl Finish for Closing {
    fn finish(self: Box<Self>, obs: Observation) -> FinishFuture {
        Box::pin(self.close(obs))
    }
}

impl Closing {
    async fn close(self, obs: Observation) -> HeaderMap {
        let Closing {
            signed,
            durable,
            log,
            max_message,
        } = self;
        let (facts, meta) = (&signed.facts, Some(&signed.meta));
        if let Err(e) = durable.await {
            return facts
                .refused(Fault::ConsumerLogFailed.with(e.0), meta)
                .settle(&*log, Fault::ConsumerLogFailed)
                .await
                .trailers();
        }
        let expected = Expected {
            provider: signed.meta.target.member(),
            message_id: &facts.message_id,
            request_digest: &facts.request_digest,
        };
        let checked = verify::check_response(expected, &signed.view, &obs, max_message);
        let mut trailers = obs.trailers.unwrap_or_default();
        // The call to the provider ended with the provider's status.
        crate::telemetry::outcome(&facts.forward, grpc_status(&trailers), "");
        let envelope = match checked {
            Ok(envelope) => envelope,
            Err(fault) => {
                return facts
                    .refused(fault, meta)
                    .settle(&*log, Fault::ConsumerLogFailed)
                    .await
                    .trailers();
            }
        };
        let mut record = facts.record(Phase::Response, meta);
        record.payload_digest = obs.digest.to_vec();
        record.payload_size = obs.size;
        record.envelope = envelope;
        record.body = obs.body;
        record.grpc_status = grpc_status(&trailers);
        crate::telemetry::outcome(&facts.span, record.grpc_status, "");
        trailers.remove(metadata::RESPONSE_ENVELOPE);
        match log.append(record).await {
            Ok(()) => trailers,
            Err(e) => Fault::ConsumerLogFailed.with(e.0).trailers(),
        }
    }
}

/// Names the exchange in a response's headers (`lt-message-id`).
pub fn set_message_id(headers: &mut HeaderMap, message_id: &str) {
    if let Ok(v) = http::HeaderValue::from_str(message_id) {
        headers.insert(metadata::MESSAGE_ID, v);
    }
}
