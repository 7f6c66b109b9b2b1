//! Stage 1: the call as the information system made it — its gRPC path,
//! its Lienthong metadata, and (under mutual TLS) the system's pinned
//! certificate.

use bytes::Bytes;
use http::Request;
use lienthong_certs::Fingerprint;
use tonic::body::Body;

use super::{Facts, new_message_id};
use crate::faults::Fault;
use crate::metadata::{self, CallMetadata};
use crate::provider::policy::Policy;
use crate::refusal::Refusal;
use crate::telemetry;

/// A call whose path and metadata parse, from a system allowed to speak
/// for the client it names.
pub struct Call {
    pub facts: Facts,
    pub meta: CallMetadata,
    pub parts: http::request::Parts,
    pub body: Body,
}

/// Reads the call. `pins` is the operator's policy when information
/// systems must present a certificate pinned for their client subsystem.
pub fn parse<B>(
    request: Request<B>,
    system_cert: Option<Fingerprint>,
    pins: Option<&Policy>,
    span: tracing::Span,
) -> Result<Call, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut facts = Facts::new(span);
    let (parts, body) = request.into_parts();
    let path = metadata::parse_path(parts.uri.path()).map_err(|f| facts.refused(f, None))?;
    facts.service = path.service.to_owned();
    facts.method = path.method.to_owned();
    let meta = metadata::parse_call(&parts.headers).map_err(|f| facts.refused(f, None))?;
    facts.message_id = meta.message_id.clone().unwrap_or_else(new_message_id);
    telemetry::adopt(&facts.span, &meta.traceparent, &meta.tracestate);
    telemetry::describe(&facts.span, &meta.client, path.service, path.method);
    telemetry::message_id(&facts.span, &facts.message_id);
    if let Some(policy) = pins {
        let pinned = system_cert.is_some_and(|fp| policy.pinned_for(&fp, &meta.client));
        if !pinned {
            let fault = Fault::ClientUnauthenticated.with(format!(
                "this information system's certificate is not pinned for {}; pin it with `lienthong server clients pin`",
                meta.client
            ));
            return Err(facts.refused(fault, None));
        }
    }
    Ok(Call {
        facts,
        meta,
        parts,
        body: Body::new(body),
    })
}
