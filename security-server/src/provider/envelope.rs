//! Stage 2: what the request says it is — its envelope (`lt-envelope-bin`)
//! well formed and matching the path, with only fields the consumer's
//! server would have sent, for a client the peer serves and a service this
//! server serves.

use bytes::Bytes;
use http::Request;
use lienthong_proto::id::{ServerId, SubsystemId};
use lienthong_proto::pb::exchange::v1::{RequestEnvelope, RequestHeader};
use prost::Message;
use tonic::body::Body;

use super::bare_refusal;
use super::peer::Peer;
use crate::conf_client::ConfView;
use crate::faults::{Fault, FaultError};
use crate::metadata::{self, GrpcPath, Target};
use crate::refusal::Refusal;
use crate::telemetry;

/// A request whose envelope is well formed and addressed here (its
/// signature not checked yet).
pub struct Enveloped {
    pub peer: Peer,
    pub envelope: RequestEnvelope,
    /// The envelope as it came.
    pub envelope_bytes: Vec<u8>,
    pub client: SubsystemId,
    pub target: Target,
    pub parts: http::request::Parts,
    pub body: Body,
}

/// Reads the envelope of `request` from `peer`, addressed to `server`.
pub fn open<B>(peer: Peer, request: Request<B>, server: &ServerId) -> Result<Enveloped, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    match read(&peer, &parts, server) {
        Ok((envelope, envelope_bytes, client, target)) => Ok(Enveloped {
            peer,
            envelope,
            envelope_bytes,
            client,
            target,
            parts,
            body: Body::new(body),
        }),
        Err(fault) => Err(bare_refusal(peer.started, &peer.span, fault)),
    }
}

fn read(
    peer: &Peer,
    parts: &http::request::Parts,
    server: &ServerId,
) -> Result<(RequestEnvelope, Vec<u8>, SubsystemId, Target), FaultError> {
    let path =
        metadata::parse_path(parts.uri.path()).map_err(|e| Fault::BadEnvelope.with(e.message))?;
    let bytes = metadata::get_bin(&parts.headers, metadata::ENVELOPE, metadata::MAX_ENVELOPE)
        .map_err(|e| Fault::BadEnvelope.with(e.to_string()))?
        .ok_or_else(|| Fault::BadEnvelope.with("the request carries no lt-envelope-bin"))?;
    let envelope = RequestEnvelope::decode(bytes.as_slice())
        .map_err(|e| Fault::BadEnvelope.with(format!("the envelope does not decode: {e}")))?;
    let (header, client, target) = envelope_parts(&envelope, &path)?;
    // Before anything is logged or passed on: a field the consumer's
    // server would not have sent is refused, and its value never reaches
    // the log, the backend or a trace.
    crate::fields::check_header(&peer.view, header, &target, path.service)?;
    telemetry::adopt(&peer.span, &header.traceparent, &header.tracestate);
    telemetry::describe(&peer.span, &client, path.service, path.method);
    telemetry::message_id(&peer.span, &header.message_id);
    if !peer.view.serves(&peer.server, &client) {
        return Err(Fault::ClientNotOwned.with(format!(
            "{} does not serve {client}; a server may only call for its own clients",
            peer.server
        )));
    }
    check_target(&peer.view, server, &target, &path)?;
    Ok((envelope, bytes, client, target))
}

/// Whether `server` serves the target and it offers the service.
pub fn check_target(
    view: &ConfView,
    server: &ServerId,
    target: &Target,
    path: &GrpcPath<'_>,
) -> Result<(), FaultError> {
    let served = match target {
        Target::Provider(p) => view.serves(server, p) && view.offers(p, path.service),
        Target::Server(s) => s == server && metadata::BUILTIN_SERVICES.contains(&path.service),
    };
    if served {
        Ok(())
    } else {
        Err(Fault::ProviderUnknownService
            .with(format!("{server} does not serve {target}/{}", path.service)))
    }
}

/// The header, client and target of an envelope, checked against the path.
/// Public only for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn envelope_parts<'e>(
    envelope: &'e RequestEnvelope,
    path: &GrpcPath<'_>,
) -> Result<(&'e RequestHeader, SubsystemId, Target), FaultError> {
    let bad = |why: String| Fault::BadEnvelope.with(why);
    let header = envelope
        .header
        .as_ref()
        .ok_or_else(|| bad("the envelope has no header".into()))?;
    let client = header
        .client
        .as_ref()
        .ok_or_else(|| bad("the envelope names no client".into()))
        .and_then(|c| SubsystemId::try_from(c).map_err(|e| bad(format!("client: {e}"))))?;
    let service = header
        .service
        .as_ref()
        .ok_or_else(|| bad("the envelope names no service".into()))?;
    let target = match (&service.provider, &header.target_server) {
        (Some(p), None) => {
            Target::Provider(SubsystemId::try_from(p).map_err(|e| bad(format!("provider: {e}")))?)
        }
        (None, Some(s)) => {
            Target::Server(ServerId::try_from(s).map_err(|e| bad(format!("server: {e}")))?)
        }
        _ => {
            return Err(bad(
                "the envelope must name either a provider subsystem or a target server".into(),
            ));
        }
    };
    if service.service_code != path.service || header.method != path.method {
        return Err(bad(format!(
            "the envelope is for {}/{}, the call is to {}/{}",
            service.service_code, header.method, path.service, path.method
        )));
    }
    metadata::check_message_id(&header.message_id).map_err(|e| bad(e.message))?;
    Ok((header, client, target))
}
