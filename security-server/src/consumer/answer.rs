//! Stage 7: the answer. A provider server's refusal (trailers-only) is
//! logged and passed on; a response streams back to the information
//! system as it arrives, hashed, and at its end is verified ([`verify`]),
//! logged and closed with the provider's status — once its record and the
//! request's, committed together, are durable.

use std::sync::Arc;

use http::{HeaderMap, Response};
use tonic::body::Body;

use super::forward::Forwarded;
use super::log_request::Pending;
use super::sign::Signed;
use super::verify::{self, Expected, grpc_status, header_text};
use crate::body::{Finish, FinishFuture, Observation, Observed};
use crate::faults::{FAULT_HEADER, Fault};
use crate::message_log::{LogRecord, MessageLog, Phase};
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
        request,
        log_bodies,
        response,
    } = forwarded;
    let (mut parts, body) = response.into_parts();
    set_message_id(&mut parts.headers, &signed.facts.message_id);
    if parts.headers.contains_key("grpc-status") {
        // Trailers-only: a refusal by the provider's server, passed on
        // once it is logged.
        return pass_on_refusal(signed, request, &*log, parts, body).await;
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
            request,
            log,
            max_message,
        },
    )
    .capturing(log_bodies, max_message)
    .bounded(max_message);
    Ok(Response::from_parts(parts, Body::new(observed)))
}

/// Logs the request's record and then `outcome`'s in one commit.
async fn log_both(
    log: &dyn MessageLog,
    request: Pending,
    outcome: LogRecord,
) -> Result<(), crate::message_log::LogError> {
    // Both queued before either is awaited: one commit holds them.
    let request = log.append(request.take());
    let outcome = log.append(outcome);
    request.await.and(outcome.await)
}

async fn pass_on_refusal(
    signed: Signed,
    request: Pending,
    log: &dyn MessageLog,
    parts: http::response::Parts,
    body: Body,
) -> Result<Response<Body>, Refusal> {
    let meta = Some(&signed.meta);
    let mut r = signed.facts.record(Phase::Fault, meta);
    r.grpc_status = grpc_status(&parts.headers);
    r.fault = header_text(&parts.headers, FAULT_HEADER);
    crate::telemetry::outcome(&signed.facts.span, r.grpc_status, &r.fault);
    crate::telemetry::outcome(&signed.facts.forward, r.grpc_status, &r.fault);
    if let Err(e) = log_both(log, request, r).await {
        return Err(signed
            .facts
            .refused(Fault::ConsumerLogFailed.with(e.0), meta));
    }
    Ok(Response::from_parts(parts, body))
}

/// The response's end: verify, log, and decide the trailers.
struct Closing {
    signed: Signed,
    request: Pending,
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
            request,
            log,
            max_message,
        } = self;
        let (facts, meta) = (&signed.facts, Some(&signed.meta));
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
                    .after(request.take())
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
        match log_both(&*log, request, record).await {
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
