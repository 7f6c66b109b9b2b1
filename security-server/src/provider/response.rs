//! The backend's response on its way back: hashed as it streams, then
//! signed (binding the request digest) and logged before its trailers —
//! and the gRPC status in them — leave.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use lienthong_proto::pb::exchange::v1::ResponseHeader;
use prost::Message;
use tonic::body::Body;

use super::{Accepted, Provider, STATUS_HEADERS};
use crate::body::{Observation, Observed};
use crate::conf_client::view::unix_ms;
use crate::faults::Fault;
use crate::message_log::Phase;
use crate::metadata;

impl Provider {
    pub(super) fn answer(
        self: &Arc<Self>,
        response: Response<Body>,
        accepted: Accepted,
        log_bodies: bool,
    ) -> Response<Body> {
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
        let this = self.clone();
        let finisher = Box::new(move |obs: Observation| {
            Box::pin(async move { this.finish(accepted, moved, obs).await })
                as std::pin::Pin<Box<dyn std::future::Future<Output = HeaderMap> + Send>>
        });
        let observed = Observed::new(body, finisher)
            .capturing(log_bodies, self.max_message)
            .bounded(self.max_message);
        Response::from_parts(parts, Body::new(observed))
    }

    /// Signs the response, logs it, and returns the trailers to send.
    async fn finish(&self, accepted: Accepted, moved: HeaderMap, obs: Observation) -> HeaderMap {
        let failed = match (&obs.oversized, &obs.error) {
            (Some(len), _) => Some(Fault::ProviderMessageTooLarge.with(format!(
                "the backend's response holds a message of {len} bytes; at most {} are passed on",
                self.max_message
            ))),
            (None, Some(e)) => Some(
                Fault::ServiceUnavailable.with(format!("the backend's response broke off: {e}")),
            ),
            (None, None) => None,
        };
        if let Some(fault) = failed {
            let mut r = accepted.record(Phase::Fault);
            r.fault = fault.fault.code().into();
            r.grpc_status = fault.fault.status() as i32;
            crate::telemetry::outcome(&accepted.span, fault.fault.status() as i32, &r.fault);
            let _ = self.log.append(r).await;
            return fault.trailers();
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
        crate::telemetry::outcome(&accepted.span, grpc_status, "");
        let header = ResponseHeader {
            message_id: accepted.header.message_id.clone(),
            request_digest: accepted.request_digest.to_vec(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
            payload_digest: obs.digest.to_vec(),
            payload_size: obs.size,
            grpc_status,
        };
        let Some(signer) = self.signers.get(accepted.target.member()) else {
            return Fault::ProviderInternal
                .with(format!("no signing key for {}", accepted.target.member()))
                .trailers();
        };
        let digest = lienthong_proto::canonical::digest(
            &lienthong_proto::canonical::response_header(&header),
        );
        let envelope = match signer.sign(digest).await {
            Ok(signature) => lienthong_proto::pb::exchange::v1::ResponseEnvelope {
                header: Some(header),
                signature: Some(signature),
            }
            .encode_to_vec(),
            Err(e) => return Fault::ProviderInternal.with(e).trailers(),
        };
        let mut r = accepted.record(Phase::Response);
        r.payload_digest = obs.digest.to_vec();
        r.payload_size = obs.size;
        r.envelope = envelope.clone();
        r.body = obs.body.clone();
        r.grpc_status = grpc_status;
        if let Err(e) = self.log.append(r).await {
            return Fault::ProviderLogFailed.with(e.0).trailers();
        }
        metadata::put_bin(&mut trailers, metadata::RESPONSE_ENVELOPE, &envelope);
        trailers
    }
}
