//! Stage 10: the answer. The backend's response is read whole (it is
//! bounded by the message size limit), hashed; at its end it is signed
//! (binding the request digest), and the request and response records are
//! committed together, in one fdatasync; only then does the response leave
//! — head, body and the trailers carrying the signed envelope and the gRPC
//! status the client acts on. So the provider's side of an exchange waits
//! for one commit, not one per record.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::BodyExt as _;
use lienthong_proto::canonical;
use lienthong_proto::pb::exchange::v1::{ResponseEnvelope, ResponseHeader};
use prost::Message;
use tonic::body::Body;

use super::Facts;
use super::backend::Served;
use crate::batch::Signers;
use crate::body::{Complete, Finish, FinishFuture, Observation, Observed};
use crate::faults::Fault;
use crate::message_log::{LogRecord, MessageLog, Phase};
use crate::metadata;
use lienthong_proto::time::unix_ms;

/// Headers that are gRPC's own status; a trailers-only backend answer's
/// move into the trailers the provider signs.
const STATUS_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Reads the backend's response whole, signs and logs it, and gives it
/// back to leave.
pub async fn answer(
    served: Served,
    log: Arc<dyn MessageLog>,
    signers: Arc<Signers>,
    max_message: usize,
) -> Response<Body> {
    let Served {
        facts,
        request,
        log_bodies,
        response,
    } = served;
    let (mut parts, body) = response.into_parts();
    // A trailers-only answer (an error without a body): its status moves
    // to the trailers, where the signed envelope goes.
    let mut moved = HeaderMap::new();
    for name in STATUS_HEADERS {
        if let Some(v) = parts.headers.remove(name) {
            moved.insert(HeaderName::from_static(name), v);
        }
    }
    metadata::strip_lienthong(&mut parts.headers);
    let observed = Observed::finishing(
        body,
        Closing {
            facts,
            request,
            moved,
            log,
            signers,
            max_message,
        },
    )
    .capturing(log_bodies, max_message)
    .bounded(max_message)
    .bounded_whole(max_message);
    // The observed body holds at most `max_message` bytes, and ends a
    // broken backend's answer with a refusal's trailers rather than an
    // error; an error all the same is answered as the provider's own.
    let whole = match observed.collect().await {
        Ok(whole) => whole,
        Err(status) => {
            return Fault::ProviderInternal
                .with(format!(
                    "the response could not be read: {}",
                    status.message()
                ))
                .into_response();
        }
    };
    let trailers = whole.trailers().cloned().unwrap_or_default();
    let data = whole.to_bytes();
    Response::from_parts(
        parts,
        Body::new(Complete::new((!data.is_empty()).then_some(data), trailers)),
    )
}

/// The response's end: sign, log, and decide the trailers.
struct Closing {
    facts: Facts,
    /// The request's record, logged with the response's.
    request: Box<LogRecord>,
    /// The status of a trailers-only answer.
    moved: HeaderMap,
    log: Arc<dyn MessageLog>,
    signers: Arc<Signers>,
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
            facts,
            request,
            moved,
            log,
            signers,
            max_message,
        } = self;
        let refuse = |fault, request: Box<LogRecord>| async {
            facts
                .refused(fault)
                .after(*request)
                .settle(&*log, Fault::ProviderLogFailed)
                .await
                .trailers()
        };
        if let Some(len) = obs.oversized {
            return refuse(Fault::ProviderMessageTooLarge.with(format!(
                "the backend's response reaches {len} bytes (a message of that size, or messages adding up to it); at most {max_message} are passed on"
            )), request)
            .await;
        }
        if let Some(e) = &obs.error {
            return refuse(
                Fault::ServiceUnavailable.with(format!("the backend's response broke off: {e}")),
                request,
            )
            .await;
        }
        let mut trailers = obs.trailers.unwrap_or_default();
        trailers.extend(moved);
        metadata::strip_lienthong(&mut trailers);
        let grpc_status = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                // A backend that ended without a status broke the protocol.
                trailers.insert("grpc-status", HeaderValue::from(2));
                2
            });
        crate::telemetry::outcome(&facts.span, grpc_status, "");
        let header = ResponseHeader {
            message_id: facts.header.message_id.clone(),
            request_digest: facts.request_digest.to_vec(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
            payload_digest: obs.digest.to_vec(),
            payload_size: obs.size,
            grpc_status,
        };
        let Some(signer) = signers.get(facts.target.member()) else {
            return refuse(
                Fault::ProviderInternal
                    .with(format!("no signing key for {}", facts.target.member())),
                request,
            )
            .await;
        };
        let digest = canonical::digest(&canonical::response_header(&header));
        let envelope = match signer.sign(digest).await {
            Ok(signature) => ResponseEnvelope {
                header: Some(header),
                signature: Some(signature),
            }
            .encode_to_vec(),
            Err(e) => return refuse(Fault::ProviderInternal.with(e.to_string()), request).await,
        };
        metadata::put_bin(&mut trailers, metadata::RESPONSE_ENVELOPE, &envelope);
        let mut r = facts.record_with(Phase::Response, envelope);
        r.payload_digest = obs.digest.to_vec();
        r.payload_size = obs.size;
        r.body = obs.body;
        r.grpc_status = grpc_status;
        // Both queued before either is awaited: one commit holds them.
        let request = log.append(*request);
        let response = log.append(r);
        match request.await.and(response.await) {
            Ok(()) => trailers,
            Err(e) => Fault::ProviderLogFailed.with(e.0).trailers(),
        }
    }
}
