//! The provider side: signed requests from other security servers, checked
//! and passed to the agency's backend.
//!
//! [`Provider::handle`] takes one request through these stages, one module
//! each, in the order the request meets them; each hands the next a state
//! that holds what it established:
//!
//! 1. [`peer`]: the configuration is current, and the TLS peer (already
//!    authenticated by the handshake) is a server it lists → [`peer::Peer`];
//! 2. [`envelope`]: the envelope (`lt-envelope-bin`) is well formed,
//!    matches the path, names a client the peer serves and a service this
//!    server serves → [`envelope::Enveloped`];
//! 3. [`signature`]: it is signed with a current signing certificate of
//!    the client's member, who may withhold it as it asks →
//!    [`signature::Verified`]; from here on refusals are logged with what
//!    the envelope says;
//! 4. [`freshness`]: its creation time is within the clock skew;
//! 5. [`payload`]: the payload (bounded, kept in the chunks it came in) is
//!    the one signed → [`payload::Received`];
//! 6. [`access`]: the access rights allow the call;
//! 7. [`replay`]: its message id is new, here and on the other nodes of
//!    its cluster (remembered only now, so a member without rights cannot
//!    fill the cache);
//! 8. [`log_request`]: the request record is made, to be committed with
//!    the exchange's outcome → [`log_request::Logged`];
//! 9. [`backend`]: the backend (or a built-in service) is called with the
//!    original path and payload → [`backend::Served`];
//! 10. [`answer`]: the response is read whole (bounded) and signed,
//!     binding the request digest; the request and response records are
//!     committed together, in one fdatasync, and only then does the
//!     response leave, the signed envelope in its trailers.
//!
//! A fault at any stage becomes its record, span outcome and answer in
//! one place, [`crate::refusal`].

pub mod access;
pub mod answer;
pub mod backend;
pub mod envelope;
pub mod freshness;
pub mod log_request;
pub mod payload;
pub mod peer;
pub mod policy;
pub mod replay;
pub mod signature;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use lienthong_certs::Fingerprint;
use lienthong_proto::id::{ServerId, SubsystemId};
use lienthong_proto::pb::exchange::v1::RequestHeader;
use tonic::body::Body;

use crate::conf_client::ConfClient;
use crate::faults::{Fault, FaultError};
use crate::keys::Keys;
use crate::message_log::{LogRecord, MessageLog, Phase, Role};
use crate::metadata::Target;
use crate::refusal::Refusal;
use crate::replay::ReplayCache;
use crate::telemetry::{self, Side};
use lienthong_proto::time::unix_ms;

#[doc(hidden)]
pub use envelope::envelope_parts;
pub use policy::Policies;

/// The provider side of one security server.
pub struct Provider {
    keys: Arc<Keys>,
    conf: Arc<ConfClient>,
    log: Arc<dyn MessageLog>,
    policies: Policies,
    builtin: crate::builtin::BuiltIn,
    signers: Arc<crate::batch::Signers>,
    replay: ReplayCache,
    max_message: usize,
    max_skew_ms: i64,
    /// Benchmark floor only: no envelope, no signature, no log.
    pass_through: bool,
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
    /// ([`crate::replay::DEFAULT_CAPACITY`]); beyond it new requests are
    /// shed.
    pub replay_capacity: usize,
}

/// What the provider's records of a request say once its signature
/// verified. Before that, a refusal is logged bare ([`bare_refusal`]), so
/// no one can put words into a citizen's trace in another member's name.
#[derive(Clone)]
pub struct Facts {
    started: Instant,
    peer: ServerId,
    header: RequestHeader,
    client: SubsystemId,
    target: Target,
    request_digest: [u8; 32],
    /// The signed request envelope, as it came.
    envelope: Vec<u8>,
    /// This side's span; it ends when the last clone (held until the
    /// response's end) drops.
    span: tracing::Span,
}

impl Facts {
    /// A record of this request, carrying the request's envelope.
    fn record(&self, phase: Phase) -> LogRecord {
        self.record_with(phase, self.envelope.clone())
    }

    /// A record of this request, carrying `envelope`.
    fn record_with(&self, phase: Phase, envelope: Vec<u8>) -> LogRecord {
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
            envelope,
            grpc_status: 0,
            fault: String::new(),
            withheld_until_ms: h.withheld_until_unix_ms,
            duration_us: self.started.elapsed().as_micros() as u64,
            body: None,
            pruned: None,
        }
    }

    /// The refusal of this request with `fault`.
    fn refused(&self, fault: FaultError) -> Refusal {
        Refusal::new(fault, self.record(Phase::Fault)).span(&self.span)
    }
}

/// The refusal of a request whose envelope is not vouched for yet.
fn bare_refusal(started: Instant, span: &tracing::Span, fault: FaultError) -> Refusal {
    let record = LogRecord {
        role: Role::Provider,
        at_ms: unix_ms(SystemTime::now()),
        duration_us: started.elapsed().as_micros() as u64,
        ..Default::default()
    };
    Refusal::new(fault, record).span(span)
}

impl Provider {
    pub fn new(shared: crate::Shared, builtin: crate::builtin::BuiltIn, limits: Limits) -> Self {
        Provider {
            keys: shared.keys,
            conf: shared.conf,
            log: shared.log,
            policies: shared.policies,
            builtin,
            signers: shared.signers,
            replay: ReplayCache::with_capacity(limits.replay_capacity),
            max_message: limits.max_message,
            max_skew_ms: limits.max_skew_ms,
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
        let span = telemetry::exchange_span(Side::Provider, &self.keys.server);
        // Boxed for the same reason as the consumer's (consumer/mod.rs).
        match Box::pin(self.pipeline(peer_cert, request, span)).await {
            Ok(response) => response,
            Err(refusal) => refusal
                .settle(&*self.log, Fault::ProviderLogFailed)
                .await
                .into_response(),
        }
    }

    /// The stages, in order.
    async fn pipeline<B>(
        self: &Arc<Self>,
        peer_cert: Option<Fingerprint>,
        request: Request<B>,
        span: tracing::Span,
    ) -> Result<Response<Body>, Refusal>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let peer = peer::identify(&self.conf, peer_cert, SystemTime::now(), span).await?;
        if self.pass_through {
            return backend::pass_through(peer, request, &self.policies).await;
        }
        let enveloped = envelope::open(peer, request, &self.keys.server)?;
        let verified = signature::verify(enveloped)?;
        freshness::check(&verified, self.max_skew_ms).map_err(|f| verified.facts.refused(f))?;
        let received = payload::receive(verified, self.max_message).await?;
        let policy = self.policies.current();
        access::check(&received.verified, &policy)
            .map_err(|f| received.verified.facts.refused(f))?;
        replay::check(&received.verified, &self.replay, self.max_skew_ms)
            .map_err(|f| received.verified.facts.refused(f))?;
        let claim = replay::Claim::of(&received.verified, self.max_skew_ms);
        if let Err(f) = replay::check_cluster(claim, &self.replay, self.policies.store()).await {
            return Err(received.verified.facts.refused(f));
        }
        let logged = log_request::record(received, &policy);
        let served = backend::call(logged, &policy, &self.builtin).await?;
        Ok(answer::answer(
            served,
            self.log.clone(),
            self.signers.clone(),
            self.max_message,
        )
        .await)
    }
}

#[cfg(test)]
mod tests;
