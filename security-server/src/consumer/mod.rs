//! The consumer side: calls from the agency's own information systems,
//! forwarded to the provider's security server.
//!
//! [`Consumer::handle`] takes one call through these stages, in order:
//!
//! 1. read the gRPC path and the Lienthong metadata ([`crate::metadata`]);
//!    under mutual TLS, the caller's certificate must be pinned for the
//!    client subsystem it names ([`tls`]);
//! 2. check the configuration is current, the client subsystem is
//!    registered on *this* server and the provider offers the service;
//! 3. read the request (bounded by the message size limit) and digest it;
//! 4. sign the envelope with the client member's key ([`Keys`]);
//! 5. log the request durably ([`crate::message_log`]);
//! 6. send it over a pooled mutual-TLS connection to a server of the
//!    provider, failing over to the next ([`forward`]);
//! 7. stream the response back while hashing it, and at its end verify the
//!    provider's signature and its binding to this request, log, and answer
//!    ([`crate::body::Observed`]).

pub mod forward;
pub mod local;
mod response;
pub mod tls;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use lienthong_certs::Fingerprint;
use lienthong_proto::canonical;
use lienthong_proto::pb::exchange::v1::{RequestEnvelope, RequestHeader};
use prost::Message;
use tonic::body::Body;

use crate::body::read_bounded;
use crate::conf_client::view::unix_ms;
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::{FAULT_HEADER, Fault, FaultError};
use crate::keys::Keys;
use crate::message_log::{LogRecord, MessageLog, Phase, Role};
use crate::metadata::{self, CallMetadata, GrpcPath, Target};
use crate::telemetry::{self, Side};
use response::{grpc_status, header_text, set_message_id};

pub use forward::ProviderPool;
pub use local::LocalServices;

/// Default largest request message, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The consumer side of one security server.
pub struct Consumer {
    keys: Arc<Keys>,
    conf: Arc<ConfClient>,
    log: Arc<dyn MessageLog>,
    pool: ProviderPool,
    max_message: usize,
    /// The operator's decisions: pinned information systems, body logging.
    policies: crate::provider::Policies,
    /// Whether information systems must present pinned certificates.
    require_pins: bool,
    signers: Arc<crate::batch::Signers>,
    /// Health and reflection, answered by this server itself.
    local: LocalServices,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("server", &self.keys.server)
            .finish_non_exhaustive()
    }
}

/// Waits for a queued record to be durable.
async fn durable(
    queued: tokio::task::JoinHandle<Result<(), crate::message_log::LogError>>,
) -> Result<(), FaultError> {
    match queued.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Fault::ConsumerLogFailed.with(e.0)),
        Err(e) => Err(Fault::ConsumerLogFailed.with(e.to_string())),
    }
}

/// A new message id: 32 hex digits, the first 12 the creation time in
/// Unix milliseconds and the other 20 random (80 bits), like a UUIDv7.
/// Time-ordered ids keep the message logs' `message_id` indexes appending
/// at their end instead of dirtying a random page per record.
pub fn new_message_id() -> String {
    message_id_at(SystemTime::now())
}

fn message_id_at(now: SystemTime) -> String {
    let mut b = [0u8; 16];
    // Without a working system RNG nothing can be signed safely either.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b[6..])
        .expect("system random number generator is available");
    let ms = unix_ms(now).max(0) as u64;
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    hex::encode(b)
}

/// An exchange as far as the consumer got: what its log records need.
#[derive(Clone)]
struct Exchange {
    started: Instant,
    call: Option<CallMetadata>,
    service: String,
    method: String,
    message_id: String,
    request_digest: [u8; 32],
    peer: String,
    /// This side's span; it ends when the last clone (held until the
    /// response's end) drops.
    span: tracing::Span,
    /// The CLIENT span of the call to the provider server (none before it).
    forward: tracing::Span,
}

impl Exchange {
    fn record(&self, phase: Phase) -> LogRecord {
        let c = self.call.as_ref();
        LogRecord {
            role: Role::Consumer,
            phase,
            at_ms: unix_ms(SystemTime::now()),
            message_id: self.message_id.clone(),
            client: c.map(|c| c.client.to_string()).unwrap_or_default(),
            service: match c {
                Some(c) => format!("{}/{}", c.target, self.service),
                None => self.service.clone(),
            },
            method: self.method.clone(),
            user_id: c.map(|c| c.user_id.clone()).unwrap_or_default(),
            purpose: c.map(|c| c.purpose.clone()).unwrap_or_default(),
            data_subject: c.map(|c| c.data_subject.clone()).unwrap_or_default(),
            peer: self.peer.clone(),
            request_digest: self.request_digest.to_vec(),
            payload_digest: Vec::new(),
            payload_size: 0,
            envelope: Vec::new(),
            grpc_status: 0,
            fault: String::new(),
            withheld_until_ms: c.map_or(0, |c| c.withheld_until_ms),
            duration_us: self.started.elapsed().as_micros() as u64,
            body: None,
            pruned: None,
        }
    }

    fn fault_record(&self, f: &FaultError) -> LogRecord {
        let mut r = self.record(Phase::Fault);
        r.grpc_status = f.fault.status() as i32;
        r.fault = f.fault.code().to_owned();
        r
    }
}

impl Consumer {
    /// The consumer side; `require_pins` when information systems connect
    /// over mutual TLS.
    pub fn new(
        shared: crate::Shared,
        pool: ProviderPool,
        max_message: usize,
        require_pins: bool,
        local: LocalServices,
    ) -> Self {
        Consumer {
            keys: shared.keys,
            conf: shared.conf,
            log: shared.log,
            pool,
            max_message,
            policies: shared.policies,
            require_pins,
            signers: shared.signers,
            local,
        }
    }

    /// Handles one call from an information system (see the module docs);
    /// `system_cert` is the fingerprint of its TLS certificate, if any.
    pub async fn handle<B>(
        self: Arc<Self>,
        system_cert: Option<Fingerprint>,
        request: Request<B>,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if LocalServices::claims(&request) {
            return self.local.call(request).await;
        }
        let mut ex = Exchange {
            started: Instant::now(),
            call: None,
            service: String::new(),
            method: String::new(),
            message_id: String::new(),
            request_digest: [0; 32],
            peer: String::new(),
            span: telemetry::exchange_span(Side::Consumer, &self.keys.server),
            forward: tracing::Span::none(),
        };
        match self.exchange(system_cert, request, &mut ex).await {
            Ok(response) => response,
            Err(fault) => {
                tracing::info!(fault = %fault, message_id = %ex.message_id, "call refused");
                telemetry::outcome(&ex.span, fault.fault.status() as i32, fault.fault.code());
                telemetry::outcome(&ex.forward, fault.fault.status() as i32, fault.fault.code());
                // A refusal is logged too; if even that fails, say so.
                let mut response = match self.log.append(ex.fault_record(&fault)).await {
                    Ok(()) => fault.into_response(),
                    Err(e) => Fault::ConsumerLogFailed.with(e.0).into_response(),
                };
                if !ex.message_id.is_empty() {
                    set_message_id(response.headers_mut(), &ex.message_id);
                }
                response
            }
        }
    }

    async fn exchange<B>(
        self: &Arc<Self>,
        system_cert: Option<Fingerprint>,
        request: Request<B>,
        ex: &mut Exchange,
    ) -> Result<Response<Body>, FaultError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // 1. Path and metadata.
        let (parts, body) = request.into_parts();
        let path = metadata::parse_path(parts.uri.path())?;
        ex.service = path.service.to_owned();
        ex.method = path.method.to_owned();
        let call = metadata::parse_call(&parts.headers)?;
        ex.message_id = call.message_id.clone().unwrap_or_else(new_message_id);
        telemetry::adopt(&ex.span, &call.traceparent, &call.tracestate);
        telemetry::describe(&ex.span, &call.client, path.service, path.method);
        telemetry::message_id(&ex.span, &ex.message_id);
        if self.require_pins {
            let policy = self.policies.current();
            let pinned = system_cert.is_some_and(|fp| policy.pinned_for(&fp, &call.client));
            if !pinned {
                return Err(Fault::ClientUnauthenticated.with(format!(
                    "this information system's certificate is not pinned for {}; pin it with `lienthong server clients pin`",
                    call.client
                )));
            }
        }

        // 2. Configuration, client and service.
        let view = self.current_view()?;
        self.check_call(&view, &call, &path)?;
        // Only a call this server may make, with fields the instance
        // accepts, goes into its records: a refusal before this point is
        // logged without client, subject, purpose or official, so no one
        // can put words into a citizen's trace in another client's name.
        ex.call = Some(call.clone());

        // 3. The request, bounded.
        let payload = read_bounded(
            body,
            self.max_message,
            Fault::MessageTooLarge,
            Fault::BadRequest,
        )
        .await?;

        // 4. Sign.
        let signer = self.signers.get(&call.client.member).ok_or_else(|| {
            Fault::NoSigningKey.with(format!(
                "this server holds no signing key for {}; register the client here with `lienthong server clients add`",
                call.client.member
            ))
        })?;
        let payload_digest = lienthong_proto::sha256(&payload);
        // The provider's span becomes a child of the call's CLIENT span;
        // without span export the caller's context travels on unchanged.
        ex.forward = telemetry::client_span(&ex.span, path.service, path.method);
        let (traceparent, tracestate) = telemetry::propagate(&ex.forward)
            .unwrap_or_else(|| (call.traceparent.clone(), call.tracestate.clone()));
        let header = RequestHeader {
            message_id: ex.message_id.clone(),
            client: Some((&call.client).into()),
            service: Some(lienthong_proto::pb::identifiers::v1::ServiceId {
                provider: match &call.target {
                    Target::Provider(p) => Some(p.into()),
                    Target::Server(_) => None,
                },
                service_code: path.service.to_owned(),
                version: String::new(),
            }),
            method: path.method.to_owned(),
            user_id: call.user_id.clone(),
            purpose: call.purpose.clone(),
            data_subject: call.data_subject.clone(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
            payload_digest: payload_digest.to_vec(),
            payload_size: payload.len() as u64,
            traceparent,
            tracestate,
            withheld_until_unix_ms: call.withheld_until_ms,
            target_server: match &call.target {
                Target::Server(s) => Some(s.into()),
                Target::Provider(_) => None,
            },
        };
        ex.request_digest = canonical::digest(&canonical::request_header(&header));
        let signature = signer
            .sign(ex.request_digest)
            .await
            .map_err(|e| Fault::ConsumerInternal.with(format!("signing failed: {e}")))?;
        let envelope_bytes = RequestEnvelope {
            header: Some(header),
            signature: Some(signature),
        }
        .encode_to_vec();

        // The envelope travels in a header (base64) and, as bytes, in the
        // request record.
        let mut headers = parts.headers;
        metadata::strip_lienthong(&mut headers);
        metadata::put_bin(&mut headers, metadata::ENVELOPE, &envelope_bytes);

        // 5. Queue the request record. It becomes durable while the request
        //    travels; the answer waits for it (records become durable in the
        //    order they were appended), so no answer leaves before it.
        let mut record = ex.record(Phase::Request);
        record.payload_digest = payload_digest.to_vec();
        record.payload_size = payload.len() as u64;
        record.envelope = envelope_bytes;
        let log_bodies = self.policies.current().logs_bodies(&call.client);
        if log_bodies {
            record.body = Some(payload.clone());
        }
        let request_durable = tokio::spawn(self.log.append(record));

        // 6. Forward, failing over between the provider's servers.
        let make = || {
            let mut r = Request::new(Body::new(Full::new(payload.clone())));
            *r.method_mut() = http::Method::POST;
            *r.uri_mut() = parts.uri.path().parse().unwrap_or_default();
            *r.headers_mut() = headers.clone();
            r
        };
        let (server, response) = self.pool.send(&view, &call.target, make).await?;
        ex.peer = server.to_string();
        if let Some(entry) = view.server(&server) {
            telemetry::server_address(&ex.forward, &entry.address);
        }
        if response.headers().contains_key("grpc-status") {
            // Trailers-only: a refusal by the provider's server, passed on
            // once it is logged.
            durable(request_durable).await?;
            let mut r = ex.record(Phase::Fault);
            r.grpc_status = grpc_status(response.headers());
            r.fault = header_text(response.headers(), FAULT_HEADER);
            telemetry::outcome(&ex.span, r.grpc_status, &r.fault);
            telemetry::outcome(&ex.forward, r.grpc_status, &r.fault);
            self.log
                .append(r)
                .await
                .map_err(|e| Fault::ConsumerLogFailed.with(e.0))?;
            let mut response = response;
            set_message_id(response.headers_mut(), &ex.message_id);
            return Ok(response);
        }

        // 7. Verify the response as it streams back.
        Ok(self.answer(response, ex.clone(), view, log_bodies, request_durable))
    }

    fn current_view(&self) -> Result<Arc<ConfView>, FaultError> {
        let view = self.conf.view().ok_or_else(|| {
            Fault::ConsumerConfExpired.with("no global configuration has been downloaded yet")
        })?;
        if view.is_expired(SystemTime::now()) {
            return Err(Fault::ConsumerConfExpired.with(format!(
                "configuration version {} expired at {}; the registry has not been reachable — check `lienthong server status`",
                view.version,
                lienthong_certs::verify::fmt_time(view.expires_at_ms / 1000)
            )));
        }
        Ok(view)
    }

    fn check_call(
        &self,
        view: &ConfView,
        call: &CallMetadata,
        path: &GrpcPath<'_>,
    ) -> Result<(), FaultError> {
        if !view.serves(&self.keys.server, &call.client) {
            if view.knows_subsystem(&call.client) {
                return Err(Fault::ClientNotOnThisServer.with(format!(
                    "{} is registered on another security server, not on {}",
                    call.client, self.keys.server
                )));
            }
            return Err(Fault::UnknownClient.with(format!(
                "{} is not a registered client of any security server",
                call.client
            )));
        }
        if let Err(refusal) = crate::withholding::check(
            view.withholding_grants(),
            view.groups_of(&call.client),
            unix_ms(SystemTime::now()),
            call.withheld_until_ms,
        ) {
            return Err(Fault::WithholdingNotAllowed.with(format!(
                "{} may not withhold this exchange until unix ms {}: {refusal}",
                call.client, call.withheld_until_ms
            )));
        }
        let offered = match &call.target {
            Target::Provider(p) => view.offers(p, path.service) && !view.servers_of(p).is_empty(),
            Target::Server(s) => {
                metadata::BUILTIN_SERVICES.contains(&path.service) && view.server(s).is_some()
            }
        };
        if !offered {
            return Err(Fault::UnknownService.with(format!(
                "{} does not offer {} over the bus",
                call.target, path.service
            )));
        }
        crate::fields::check_call(view, call, path.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn message_ids_are_unique_and_ordered_by_time() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        let a = message_id_at(t);
        let b = message_id_at(t);
        let later = message_id_at(t + Duration::from_millis(1));
        assert_eq!(a.len(), 32);
        assert!(metadata::check_message_id(&a).is_ok());
        assert_ne!(a, b, "80 random bits");
        assert_eq!(a[..12], b[..12]);
        assert_eq!(&a[..12], format!("{:012x}", 1_795_000_000_123u64));
        assert!(later > a && later > b, "later ids sort after");
    }
}
