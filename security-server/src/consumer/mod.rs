//! The consumer side: calls from the agency's own information systems,
//! forwarded to the provider's security server.
//!
//! [`Consumer::handle`] takes one call through these stages, one module
//! each, in the order the call meets them; each hands the next a state
//! that holds what it established:
//!
//! 1. [`call`]: read the gRPC path and the Lienthong metadata; under
//!    mutual TLS, the caller's certificate must be pinned for the client
//!    subsystem it names ([`tls`]) → [`call::Call`];
//! 2. [`check`]: the configuration is current, the client subsystem is
//!    registered on *this* server and the provider offers the service →
//!    [`check::Checked`];
//! 3. [`sign`]: read the request (bounded, kept in the chunks it came in,
//!    hashed as they come) and sign its envelope with the client member's
//!    key → [`sign::Signed`];
//! 4. [`log_request`]: make the request record, to be committed with the
//!    exchange's outcome (one commit per exchange) → [`log_request::Logged`];
//! 5. [`forward`]: send it over a pooled mutual-TLS connection to a server
//!    of the provider, failing over to the next → [`forward::Forwarded`];
//! 6. [`verify`]: at the response's end, check the provider's signature
//!    and its binding to this request and to what arrived;
//! 7. [`answer`]: stream the response back, and at its end log both
//!    records in one commit and send the trailers — only once they are
//!    durable.
//!
//! A fault at any stage becomes its record, span outcome and answer in
//! one place, [`crate::refusal`].

pub mod answer;
pub mod call;
pub mod check;
pub mod forward;
pub mod local;
pub mod log_request;
pub mod sign;
pub mod tls;
pub mod verify;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use lienthong_certs::Fingerprint;
use tonic::body::Body;

use crate::conf_client::ConfClient;
use crate::faults::{Fault, FaultError};
use crate::keys::Keys;
use crate::message_log::{LogRecord, MessageLog, Phase, Role};
use crate::metadata::CallMetadata;
use crate::refusal::Refusal;
use crate::telemetry::{self, Side};
use lienthong_proto::time::unix_ms;

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
    /// Benchmark floor only: no envelope, no signature, no log.
    pass_through: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("server", &self.keys.server)
            .finish_non_exhaustive()
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

/// What the consumer's records of one exchange say, as far as it got.
/// Each stage's state owns one and adds what it established.
#[derive(Clone)]
pub struct Facts {
    started: Instant,
    service: String,
    method: String,
    message_id: String,
    request_digest: [u8; 32],
    /// The provider's server that answered.
    peer: String,
    /// This side's span; it ends when the last clone (held until the
    /// response's end) drops.
    span: tracing::Span,
    /// The CLIENT span of the call to the provider server (none before it).
    forward: tracing::Span,
}

impl Facts {
    fn new(span: tracing::Span) -> Self {
        Facts {
            started: Instant::now(),
            service: String::new(),
            method: String::new(),
            message_id: String::new(),
            request_digest: [0; 32],
            peer: String::new(),
            span,
            forward: tracing::Span::none(),
        }
    }

    /// The exchange's id.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// A record of this exchange. `call` is the call once it was checked
    /// against the configuration: only a call this server may make, with
    /// fields the instance accepts, goes into its records; before that a
    /// record carries no client, subject, purpose or official, so no one
    /// can put words into a citizen's trace in another client's name.
    fn record(&self, phase: Phase, call: Option<&CallMetadata>) -> LogRecord {
        LogRecord {
            role: Role::Consumer,
            phase,
            at_ms: unix_ms(SystemTime::now()),
            message_id: self.message_id.clone(),
            client: call.map(|c| c.client.to_string()).unwrap_or_default(),
            service: match call {
                Some(c) => format!("{}/{}", c.target, self.service),
                None => self.service.clone(),
            },
            method: self.method.clone(),
            user_id: call.map(|c| c.user_id.clone()).unwrap_or_default(),
            purpose: call.map(|c| c.purpose.clone()).unwrap_or_default(),
            data_subject: call.map(|c| c.data_subject.clone()).unwrap_or_default(),
            peer: self.peer.clone(),
            request_digest: self.request_digest.to_vec(),
            payload_digest: Vec::new(),
            payload_size: 0,
            envelope: Vec::new(),
            grpc_status: 0,
            fault: String::new(),
            withheld_until_ms: call.map_or(0, |c| c.withheld_until_ms),
            duration_us: self.started.elapsed().as_micros() as u64,
            body: None,
            pruned: None,
        }
    }

    /// The refusal of this exchange with `fault`.
    fn refused(&self, fault: FaultError, call: Option<&CallMetadata>) -> Refusal {
        Refusal::new(fault, self.record(Phase::Fault, call))
            .span(&self.span)
            .span(&self.forward)
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
            pass_through: false,
        }
    }

    /// Makes this side a bare mutual-TLS gateway (no envelope, signature,
    /// access check or log): the floor `lienthong bench` measures the
    /// guarantees against. Never for real traffic.
    pub fn dangerous_pass_through(mut self) -> Self {
        self.pass_through = true;
        self
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
        let span = telemetry::exchange_span(Side::Consumer, &self.keys.server);
        // The pipeline's state is large; boxed, the task hyper spawns per
        // stream stays small and is not copied whole as it is stored and
        // polled (memmove was the profile's top entry).
        match Box::pin(self.pipeline(system_cert, request, span)).await {
            Ok(response) => response,
            Err(refusal) => {
                let message_id = refusal.record.message_id.clone();
                let mut response = refusal
                    .settle(&*self.log, Fault::ConsumerLogFailed)
                    .await
                    .into_response();
                if !message_id.is_empty() {
                    answer::set_message_id(response.headers_mut(), &message_id);
                }
                response
            }
        }
    }

    /// The stages, in order.
    async fn pipeline<B>(
        self: &Arc<Self>,
        system_cert: Option<Fingerprint>,
        request: Request<B>,
        span: tracing::Span,
    ) -> Result<Response<Body>, Refusal>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let pins = self.require_pins.then(|| self.policies.current());
        let call = call::parse(request, system_cert, pins.as_deref(), span)?;
        let checked = check::against_configuration(call, &self.conf, &self.keys.server)?;
        if self.pass_through {
            return forward::pass_through(checked, &self.pool).await;
        }
        let signed = sign::sign(checked, &self.signers, self.max_message).await?;
        let logged = log_request::make(signed, &self.log, &self.policies);
        let forwarded = forward::forward(logged, &self.pool).await?;
        answer::answer(forwarded, self.log.clone(), self.max_message).await
    }
}

#[cfg(test)]
mod tests;
