//! Stage 9: the backend — the provider's own service, with the original
//! path and payload and the verified caller in its metadata, bounded by
//! its timeout and the caller's deadline; or a built-in service of this
//! server. The backend may see the request before any record of it is
//! durable; no byte of its answer leaves before both are
//! ([`super::answer`]).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::exchange::v1::RequestHeader;
use tonic::body::Body;
use tower::ServiceExt;

use super::Facts;
use super::log_request::Logged;
use super::peer::Peer;
use super::policy::{BackendConn, Policies, Policy};
use crate::builtin::BuiltIn;
use crate::faults::{Fault, FaultError};
use crate::message_log::LogRecord;
use crate::metadata::{self, Target};
use crate::refusal::Refusal;
use crate::telemetry;

/// A request the backend answered (its response not read yet), with the
/// request's record to log with the response's.
pub struct Served {
    pub facts: Facts,
    pub request: Box<LogRecord>,
    pub log_bodies: bool,
    pub response: Response<Body>,
}

/// Calls the backend of `logged`.
pub async fn call(logged: Logged, policy: &Policy, builtin: &BuiltIn) -> Result<Served, Refusal> {
    let Logged {
        received,
        request,
        log_bodies,
    } = logged;
    let verified = received.verified;
    let facts = verified.facts;
    let service = facts
        .header
        .service
        .as_ref()
        .map_or("", |s| s.service_code.as_str());
    let answered = match &facts.target {
        Target::Provider(provider) => match policy.backend(provider, service) {
            None => Err(Fault::ServiceUnavailable
                .with(format!("no backend is configured for {provider}/{service}"))),
            Some(backend) => {
                let mut headers = verified.parts.headers;
                metadata::strip_lienthong(&mut headers);
                add_verified(&mut headers, &facts.header, &facts.client);
                // The backend's span becomes a child of this one; without
                // span export it gets the consumer's signed context.
                let (traceparent, tracestate) =
                    telemetry::propagate(&facts.span).unwrap_or_else(|| {
                        (
                            facts.header.traceparent.clone(),
                            facts.header.tracestate.clone(),
                        )
                    });
                add_trace_context(&mut headers, &traceparent, &tracestate);
                let mut req = Request::new(Body::new(received.payload.body()));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = verified.parts.uri.path().parse().unwrap_or_default();
                *req.headers_mut() = headers;
                send(backend, req).await
            }
        },
        Target::Server(_) => {
            let mut headers = verified.parts.headers;
            metadata::strip_lienthong(&mut headers);
            Ok(builtin
                .call(
                    &facts.client,
                    verified.parts.uri.path(),
                    headers,
                    &received.payload,
                )
                .await)
        }
    };
    let response = match answered {
        Ok(r) => r,
        Err(fault) => return Err(facts.refused(fault).after(*request)),
    };
    Ok(Served {
        facts,
        request,
        log_bodies,
        response,
    })
}

/// Sends `req` to `backend`, bounded by its timeout and the caller's
/// deadline (`grpc-timeout`), whichever is shorter.
async fn send(backend: &BackendConn, req: Request<Body>) -> Result<Response<Body>, FaultError> {
    let timeout = deadline(req.headers(), backend.backend.timeout);
    match tokio::time::timeout(timeout, backend.channel.clone().oneshot(req)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Fault::ServiceUnavailable.with(format!(
            "the backend at {} cannot be reached: {e}",
            backend.backend.url
        ))),
        Err(_) => Err(Fault::ServiceTimeout.with(format!(
            "the backend at {} did not answer within {:?}",
            backend.backend.url, timeout
        ))),
    }
}

/// The caller's deadline, if shorter than the backend's timeout.
fn deadline(headers: &HeaderMap, timeout: Duration) -> Duration {
    metadata::grpc_timeout(headers).map_or(timeout, |d| d.min(timeout))
}

/// The benchmark's floor (`--dangerous-pass-through`): the call goes to
/// the backend its Lienthong metadata names, as it came, and its answer
/// back untouched. No envelope, signature, access right or log.
pub async fn pass_through<B>(
    peer: Peer,
    request: Request<B>,
    policies: &Policies,
) -> Result<Response<Body>, Refusal>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, body) = request.into_parts();
    let routed = metadata::parse_path(parts.uri.path()).and_then(|path| {
        let call = metadata::parse_call(&parts.headers)?;
        match &call.target {
            Target::Provider(p) => Ok((p.clone(), path.service.to_owned())),
            Target::Server(_) => {
                Err(Fault::BadRequest.with("built-in services are not passed through"))
            }
        }
    });
    let (provider, service) =
        routed.map_err(|f| super::bare_refusal(peer.started, &peer.span, f))?;
    let policy = policies.current();
    let Some(backend) = policy.backend(&provider, &service) else {
        let fault = Fault::ServiceUnavailable
            .with(format!("no backend is configured for {provider}/{service}"));
        return Err(super::bare_refusal(peer.started, &peer.span, fault));
    };
    metadata::strip_lienthong(&mut parts.headers);
    send(backend, Request::from_parts(parts, Body::new(body)))
        .await
        .map_err(|f| super::bare_refusal(peer.started, &peer.span, f))
}

/// Tells the backend which trace its work belongs to.
fn add_trace_context(headers: &mut HeaderMap, traceparent: &str, tracestate: &str) {
    for (name, value) in [
        (metadata::TRACEPARENT, traceparent),
        (metadata::TRACESTATE, tracestate),
    ] {
        if !value.is_empty()
            && let Ok(v) = HeaderValue::from_str(value)
        {
            headers.insert(name, v);
        }
    }
}

/// Tells the backend, from the verified envelope, who is calling and why.
fn add_verified(headers: &mut HeaderMap, h: &RequestHeader, client: &SubsystemId) {
    let mut put = |name: &'static str, value: &str| {
        if !value.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(value.as_bytes())
        {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put(metadata::CLIENT, &client.to_string());
    put(metadata::MESSAGE_ID, &h.message_id);
    put(metadata::USER_ID, &h.user_id);
    put(metadata::PURPOSE, &h.purpose);
    put(metadata::DATA_SUBJECT, &h.data_subject);
}
