//! The provider side: signed requests from other security servers, checked
//! and passed to the agency's backend.
//!
//! [`Provider::handle`] takes one request through these stages, in order:
//!
//! 1. the configuration is current, and the TLS peer (already pinned by
//!    the handshake) is a server the configuration lists;
//! 2. the envelope (`lt-envelope-bin`) is well formed and matches the path;
//! 3. the peer serves the client it claims, and this server serves the
//!    provider, which offers the service;
//! 4. the signature verifies against a signing certificate of the client's
//!    member; the timestamp is within the clock skew; the message id is new;
//! 5. the payload (bounded) matches the signed digest and size;
//! 6. the access rights allow the call ([`crate::access::authorize`]);
//! 7. the request is logged: committed while the backend works, and
//!    durable before any byte of the response leaves;
//! 8. the backend is called with the original path and payload;
//! 9. the response streams back; at its end it is signed, binding the
//!    request digest, logged, and the signed envelope goes out in the
//!    trailers.

pub mod policy;
mod response;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use lienthong_certs::Fingerprint;
use lienthong_proto::canonical;
use lienthong_proto::id::{ServerId, SubsystemId};

use crate::metadata::Target;
use lienthong_proto::pb::exchange::v1::{RequestEnvelope, RequestHeader};
use prost::Message;
use tonic::body::Body;
use tower::ServiceExt;

use crate::access::{self, Call};
use crate::body::read_bounded;
use crate::conf_client::view::unix_ms;
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::{Fault, FaultError};
use crate::keys::Keys;
use crate::message_log::{LogRecord, MessageLog, Phase, Role};
use crate::metadata;
use crate::replay::{self, ReplayCache};
use crate::telemetry::{self, Side};

pub use policy::Policies;

/// Headers that are gRPC's own status; a provider moves them from a
/// trailers-only backend answer into the trailers it signs.
const STATUS_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// The provider side of one security server.
pub struct Provider {
    keys: Arc<Keys>,
    conf: Arc<ConfClient>,
    log: Arc<dyn MessageLog>,
    policies: Policies,
    trace: crate::trace::TraceService,
    operational: crate::operational::OperationalService,
    signers: Arc<crate::batch::Signers>,
    replay: ReplayCache,
    max_message: usize,
    max_skew_ms: i64,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("server", &self.keys.server)
            .finish_non_exhaustive()
    }
}

/// The provider side's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request message, bytes.
    pub max_message: usize,
    /// Largest difference between a request's creation time and this
    /// server's clock, ms.
    pub max_skew_ms: i64,
    /// Most message ids remembered against replay
    /// ([`replay::DEFAULT_CAPACITY`]); beyond it new requests are shed.
    pub replay_capacity: usize,
}

/// A request that passed every check.
#[derive(Clone)]
struct Accepted {
    started: Instant,
    peer: ServerId,
    header: RequestHeader,
    client: SubsystemId,
    target: Target,
    request_digest: [u8; 32],
    envelope: Vec<u8>,
    /// This side's span; it ends when the last clone (held until the
    /// response's end) drops.
    span: tracing::Span,
}

impl Accepted {
    fn record(&self, phase: Phase) -> LogRecord {
        let h = &self.header;
        LogRecord {
            role: Role::Provider,
            phase,
            at_ms: unix_ms(SystemTime::now()),
            message_id: h.message_id.clone(),
            client: self.client.to_string(),
            service: format!(
                "{}/{}",
                self.target,
                h.service.as_ref().map_or("", |s| s.service_code.as_str())
            ),
            method: h.method.clone(),
            user_id: h.user_id.clone(),
            purpose: h.purpose.clone(),
            data_subject: h.data_subject.clone(),
            peer: self.peer.to_string(),
            request_digest: self.request_digest.to_vec(),
            payload_digest: h.payload_digest.clone(),
            payload_size: h.payload_size,
            envelope: self.envelope.clone(),
            grpc_status: 0,
            fault: String::new(),
            withheld_until_ms: h.withheld_until_unix_ms,
            duration_us: self.started.elapsed().as_micros() as u64,
            body: None,
            pruned: None,
        }
    }
}

impl Provider {
    pub fn new(
        shared: crate::Shared,
        trace: crate::trace::TraceService,
        operational: crate::operational::OperationalService,
        limits: Limits,
    ) -> Self {
        Provider {
            keys: shared.keys,
            conf: shared.conf,
            log: shared.log,
            policies: shared.policies,
            trace,
            operational,
            signers: shared.signers,
            replay: ReplayCache::with_capacity(limits.replay_capacity),
            max_message: limits.max_message,
            max_skew_ms: limits.max_skew_ms,
        }
    }

    /// Remembers message ids accepted before a restart (from the log, with
    /// their arrival times), so a replay within the window is refused across
    /// restarts too.
    pub fn remember_accepted(&self, accepted: &[(String, String, i64)]) {
        for (client, message_id, at) in accepted {
            // A full cache at start-up means more ids in the window than
            // capacity: new requests are shed until they expire.
            let _ = self
                .replay
                .first_use(client, message_id, *at, at + 2 * self.max_skew_ms);
        }
    }

    /// Handles one request from the peer whose TLS certificate is `peer_cert`.
    pub async fn handle<B>(
        self: Arc<Self>,
        peer_cert: Option<Fingerprint>,
        request: Request<B>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        // As far as the request got: what a refusal's record says.
        let mut partial: Option<Accepted> = None;
        let span = telemetry::exchange_span(Side::Provider, &self.keys.server);
        match self
            .exchange(peer_cert, request, started, &mut partial, &span)
            .await
        {
            Ok(response) => response,
            Err(fault) => {
                tracing::info!(fault = %fault, "request refused");
                telemetry::outcome(&span, fault.fault.status() as i32, fault.fault.code());
                let mut r = partial
                    .map(|a| a.record(Phase::Fault))
                    .unwrap_or_else(|| LogRecord {
                        role: Role::Provider,
                        at_ms: unix_ms(SystemTime::now()),
                        ..Default::default()
                    });
                r.phase = Phase::Fault;
                r.grpc_status = fault.fault.status() as i32;
                r.fault = fault.fault.code().to_owned();
                r.duration_us = started.elapsed().as_micros() as u64;
                match self.log.append(r).await {
                    Ok(()) => fault.into_response(),
                    Err(e) => Fault::ProviderLogFailed.with(e.0).into_response(),
                }
            }
        }
    }

    async fn exchange<B>(
        self: &Arc<Self>,
        peer_cert: Option<Fingerprint>,
        request: Request<B>,
        started: Instant,
        partial: &mut Option<Accepted>,
        span: &tracing::Span,
    ) -> Result<Response<Body>, FaultError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let now = SystemTime::now();
        // 1. Configuration and peer.
        let view = self.current_view(now)?;
        let peer = peer_cert
            .as_ref()
            .and_then(|fp| view.server_with_cert(fp))
            .cloned()
            .ok_or_else(|| {
                Fault::UnknownPeer
                    .with("the TLS certificate is not one the configuration registers")
            })?;

        // 2. Envelope.
        let (parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        let path =
            metadata::parse_path(uri.path()).map_err(|e| Fault::BadEnvelope.with(e.message))?;
        let envelope_bytes =
            metadata::get_bin(&parts.headers, metadata::ENVELOPE, metadata::MAX_ENVELOPE)
                .map_err(|e| Fault::BadEnvelope.with(e))?
                .ok_or_else(|| Fault::BadEnvelope.with("the request carries no lt-envelope-bin"))?;
        let envelope = RequestEnvelope::decode(envelope_bytes.as_slice())
            .map_err(|e| Fault::BadEnvelope.with(format!("the envelope does not decode: {e}")))?;
        let (header, client, target) = envelope_parts(&envelope, &path)?;
        // Before anything is logged or passed on: a field the consumer's
        // server would not have sent is refused, and its value never
        // reaches the log, the backend or a trace.
        crate::fields::check_header(&view, header, &target, path.service)?;
        telemetry::adopt(span, &header.traceparent, &header.tracestate);
        telemetry::describe(span, &client, path.service, path.method);
        telemetry::message_id(span, &header.message_id);
        // 3. Who serves whom.
        if !view.serves(&peer, &client) {
            return Err(Fault::ClientNotOwned.with(format!(
                "{peer} does not serve {client}; a server may only call for its own clients"
            )));
        }
        self.check_target(&view, &target, &path)?;

        // 4. Signature, time, replay.
        self.check_signature(&view, &envelope, &client, now)?;
        let now_ms = unix_ms(now);
        // The client's member signed its own withholding: the grant in force
        // now must cover it, whatever its consumer side checked.
        crate::withholding::check(
            view.withholding_grants(),
            view.groups_of(&client),
            now_ms,
            header.withheld_until_unix_ms,
        )
        .map_err(|refusal| {
            Fault::WithholdingRefused.with(format!(
                "{client} may not withhold this exchange until unix ms {}: {refusal}",
                header.withheld_until_unix_ms
            ))
        })?;

        // Only now, signed by the client's member and within its rights to
        // withhold, does what the envelope says go into a refusal's record:
        // before, a refusal is logged bare, so no one can put words into a
        // citizen's trace in another member's name.
        let accepted = &*partial.insert(Accepted {
            started,
            peer: peer.clone(),
            header: header.clone(),
            client: client.clone(),
            target: target.clone(),
            request_digest: canonical::digest(&canonical::request_header(header)),
            envelope: envelope_bytes,
            span: span.clone(),
        });

        if !replay::fresh(header.created_at_unix_ms, now_ms, self.max_skew_ms) {
            return Err(Fault::StaleTimestamp.with(format!(
                "the request was created at unix ms {}, this server's clock says {now_ms}; at most {} s apart are accepted",
                header.created_at_unix_ms,
                self.max_skew_ms / 1000
            )));
        }
        // 5. Payload.
        let payload = read_bounded(
            body,
            self.max_message,
            Fault::ProviderMessageTooLarge,
            Fault::BadEnvelope,
        )
        .await?;
        if lienthong_proto::sha256(&payload).as_slice() != header.payload_digest
            || payload.len() as u64 != header.payload_size
        {
            return Err(Fault::PayloadMismatch
                .with("the payload is not the one the client signed (altered in transit?)"));
        }

        // 6. Access rights.
        let policy = self.policies.current();
        authorize(&view, &policy, &client, &target, &path)?;

        // Remembered while a request with this id could still be fresh;
        // when full, shed rather than forget. Checked after the access
        // rights, so a member without any cannot fill the cache.
        match self.replay.first_use(
            &client.to_string(),
            &header.message_id,
            now_ms,
            header.created_at_unix_ms + self.max_skew_ms,
        ) {
            replay::Use::First => {}
            replay::Use::Replay => {
                return Err(Fault::Replay.with(format!(
                    "message id {} was already used by {client}",
                    header.message_id
                )));
            }
            replay::Use::Full => {
                return Err(Fault::ReplayCapacity.with(format!(
                    "this server remembers {} message ids still inside the {} s replay window and takes no more until some expire",
                    self.replay.len(),
                    self.max_skew_ms / 1000
                )));
            }
        }

        // 7. Log (with the body if the provider subsystem opted in). The
        // record is queued now and made durable while the backend works;
        // no byte of the response leaves before it is (below).
        let log_bodies = match &target {
            Target::Provider(p) => policy.logs_bodies(p),
            Target::Server(_) => false,
        };
        let request_logged = self.log.append({
            let mut r = accepted.record(Phase::Request);
            r.body = log_bodies.then(|| payload.clone());
            r
        });

        // 8. Backend (or the built-in service).
        let response = match &target {
            Target::Provider(provider) => {
                self.call_backend(
                    &policy, provider, &path, parts, header, &client, payload, span,
                )
                .await?
            }
            Target::Server(_) if path.service == crate::operational::SERVICE => {
                self.operational.serve(&client, payload).await
            }
            Target::Server(_) => self.trace.serve(payload).await,
        };
        request_logged
            .await
            .map_err(|e| Fault::ProviderLogFailed.with(e.0))?;

        // 9. Sign the response at its end.
        let accepted = partial.take().expect("set above");
        Ok(self.answer(response, accepted, log_bodies))
    }

    /// Whether this server serves the target and it offers the service.
    fn check_target(
        &self,
        view: &ConfView,
        target: &Target,
        path: &metadata::GrpcPath<'_>,
    ) -> Result<(), FaultError> {
        let served = match target {
            Target::Provider(p) => {
                view.serves(&self.keys.server, p) && view.offers(p, path.service)
            }
            Target::Server(s) => {
                s == &self.keys.server && metadata::BUILTIN_SERVICES.contains(&path.service)
            }
        };
        if served {
            Ok(())
        } else {
            Err(Fault::ProviderUnknownService.with(format!(
                "{} does not serve {target}/{}",
                self.keys.server, path.service
            )))
        }
    }

    /// Calls the backend with the original path and payload, bounded by
    /// its timeout and the caller's deadline.
    #[allow(clippy::too_many_arguments)]
    async fn call_backend(
        &self,
        policy: &policy::Policy,
        provider: &SubsystemId,
        path: &metadata::GrpcPath<'_>,
        parts: http::request::Parts,
        header: &RequestHeader,
        client: &SubsystemId,
        payload: Bytes,
        span: &tracing::Span,
    ) -> Result<Response<Body>, FaultError> {
        let backend = policy.backend(provider, path.service).ok_or_else(|| {
            Fault::ServiceUnavailable.with(format!(
                "no backend is configured for {provider}/{}",
                path.service
            ))
        })?;
        // The caller's deadline, if shorter, bounds the backend call too.
        let timeout = metadata::grpc_timeout(&parts.headers)
            .map_or(backend.backend.timeout, |d| d.min(backend.backend.timeout));
        let mut headers = parts.headers;
        metadata::strip_lienthong(&mut headers);
        add_verified(&mut headers, header, client);
        // The backend's span becomes a child of this one; without span
        // export it gets the consumer's signed context.
        let (traceparent, tracestate) = telemetry::propagate(span)
            .unwrap_or_else(|| (header.traceparent.clone(), header.tracestate.clone()));
        add_trace_context(&mut headers, &traceparent, &tracestate);
        let mut req = Request::new(Body::new(Full::new(payload)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = parts.uri.path().parse().unwrap_or_default();
        *req.headers_mut() = headers;
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

    fn current_view(&self, now: SystemTime) -> Result<Arc<ConfView>, FaultError> {
        let view = self.conf.view().ok_or_else(|| {
            Fault::ProviderConfExpired.with("the provider's server has no global configuration yet")
        })?;
        if view.is_expired(now) {
            return Err(Fault::ProviderConfExpired.with(format!(
                "the provider's configuration version {} has expired",
                view.version
            )));
        }
        Ok(view)
    }

    fn check_signature(
        &self,
        view: &ConfView,
        envelope: &RequestEnvelope,
        client: &SubsystemId,
        now: SystemTime,
    ) -> Result<(), FaultError> {
        let sig = envelope
            .signature
            .as_ref()
            .ok_or_else(|| Fault::BadSignature.with("the request is not signed"))?;
        let fp = Fingerprint::from_slice(&sig.signer_certificate_sha256)
            .ok_or_else(|| Fault::BadSignature.with("the signature names no certificate"))?;
        let cert = view
            .signing_cert(&fp, now)
            .filter(|c| c.member == client.member)
            .ok_or_else(|| {
                Fault::BadSignature.with(format!(
                    "the request is not signed with a current signing certificate of {}",
                    client.member
                ))
            })?;
        cert.key
            .verify_request(envelope)
            .map(|_| ())
            .map_err(|e| Fault::BadSignature.with(format!("the signature does not verify: {e}")))
    }
}

/// The header, client and target of an envelope, checked against the path.
/// Public only for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn envelope_parts<'e>(
    envelope: &'e RequestEnvelope,
    path: &metadata::GrpcPath<'_>,
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

/// Whether the client may make the call: the access rights for a
/// provider's service; only the instance's trace portal for the built-in
/// access trace.
fn authorize(
    view: &ConfView,
    policy: &policy::Policy,
    client: &SubsystemId,
    target: &Target,
    path: &metadata::GrpcPath<'_>,
) -> Result<(), FaultError> {
    let allowed = match target {
        Target::Provider(provider) => access::authorize(
            &policy.rules,
            &Call {
                client,
                client_groups: view.groups_of(client),
                provider,
                service: path.service,
                method: path.method,
            },
        ),
        // Any member may ask for operational data; it sees its own only.
        Target::Server(_) if path.service == crate::operational::SERVICE => true,
        Target::Server(_) => view.trace_portal.as_ref() == Some(client),
    };
    if allowed {
        return Ok(());
    }
    Err(Fault::AccessDenied.with(match target {
        Target::Provider(p) => format!(
            "{client} may not call {p}/{}/{}; the provider's operator grants access with `lienthong server acl grant`",
            path.service, path.method
        ),
        Target::Server(_) => format!(
            "only the instance's trace portal may call {}; {client} is not it",
            path.service
        ),
    }))
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
