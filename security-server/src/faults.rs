//! The fault table: every refusal of a security server, with its stable
//! code, gRPC status, the side it comes from and what it means.
//!
//! A refusal reaches the information system as a gRPC status whose
//! `lt-fault` metadata carries the code, and whose message says what to do.
//! `docs/faults.md` is this table for people; a test keeps them in step.

use std::fmt;

use http::{HeaderMap, HeaderValue};
use tonic::Code;

/// Metadata key that carries a fault code.
pub const FAULT_HEADER: &str = "lt-fault";

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The calling information system sent something wrong.
    Client,
    /// The consumer's security server (X-Road: client proxy) refused or failed.
    ConsumerProxy,
    /// The provider's security server (X-Road: server proxy) refused or failed.
    ProviderProxy,
}

macro_rules! faults {
    ($($variant:ident => ($code:literal, $status:ident, $side:ident, $meaning:literal),)*) => {
        /// Every fault a security server can answer with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Fault {
            $(#[doc = $meaning] $variant,)*
        }

        impl Fault {
            /// All faults, in table order.
            pub const ALL: &'static [Fault] = &[$(Fault::$variant,)*];

            /// The stable code carried in `lt-fault`.
            pub fn code(self) -> &'static str {
                match self { $(Fault::$variant => $code,)* }
            }

            /// The gRPC status code.
            pub fn status(self) -> Code {
                match self { $(Fault::$variant => Code::$status,)* }
            }

            /// Which side is at fault.
            pub fn side(self) -> Side {
                match self { $(Fault::$variant => Side::$side,)* }
            }

            /// The fault with this code, if it is one of ours.
            pub fn from_code(code: &str) -> Option<Fault> {
                Fault::ALL.iter().copied().find(|f| f.code() == code)
            }

            /// What the fault means, for the documentation.
            pub fn meaning(self) -> &'static str {
                match self { $(Fault::$variant => $meaning,)* }
            }
        }
    };
}

faults! {
    BadRequest => ("client.bad_request", InvalidArgument, Client,
        "The call's path or Lienthong metadata (lt-client, lt-service, lt-user-id, lt-purpose, lt-data-subject, lt-message-id) is missing or malformed."),
    ClientUnauthenticated => ("client.unauthenticated", Unauthenticated, Client,
        "The information system's TLS certificate is not pinned on this server for the subsystem it calls as (lt-client)."),
    UnknownClient => ("client.unknown_client", PermissionDenied, Client,
        "The calling subsystem (lt-client) is not in the global configuration."),
    ClientNotOnThisServer => ("client.client_not_on_this_server", PermissionDenied, Client,
        "The calling subsystem is registered, but not on this security server; call through the server it is registered on, or register it here."),
    WithholdingNotAllowed => ("client.withholding_not_allowed", PermissionDenied, Client,
        "No withholding grant of the registry in force now covers the client's groups, or lt-withheld-until is not after now, or it is further than the grant's maximum duration."),
    DataSubjectRequired => ("client.data_subject_required", InvalidArgument, Client,
        "The called service handles personal data (the registry marks it so): the call must name its data subject (lt-data-subject)."),
    UnknownService => ("client.unknown_service", NotFound, Client,
        "The provider subsystem does not offer the called service, or no security server serves the provider."),
    MessageTooLarge => ("client.message_too_large", ResourceExhausted, Client,
        "The request message exceeds the security server's size limit."),
    ConsumerConfExpired => ("server.clientproxy.conf_expired", Unavailable, ConsumerProxy,
        "This security server's global configuration has expired (the registry has been unreachable for too long); no exchange is possible until a new one is downloaded."),
    NoSigningKey => ("server.clientproxy.no_signing_key", FailedPrecondition, ConsumerProxy,
        "This security server holds no usable signing key and certificate for the client's member."),
    ProviderUnreachable => ("server.clientproxy.provider_unreachable", Unavailable, ConsumerProxy,
        "No security server of the provider could be reached."),
    BadResponse => ("server.clientproxy.bad_response", DataLoss, ConsumerProxy,
        "The provider's response is not signed by the provider's member, is not bound to this request, or its payload does not match its signature."),
    ResponseTooLarge => ("server.clientproxy.response_too_large", ResourceExhausted, ConsumerProxy,
        "A message of the provider's response exceeds this security server's size limit; the response was cut off before it."),
    ConsumerLogFailed => ("server.clientproxy.log_failed", Unavailable, ConsumerProxy,
        "This security server could not write its message log; no exchange proceeds unlogged."),
    ConsumerInternal => ("server.clientproxy.internal", Internal, ConsumerProxy,
        "An internal error of the consumer's security server; its log has the details."),
    ProviderConfExpired => ("server.serverproxy.conf_expired", Unavailable, ProviderProxy,
        "The provider's security server has an expired global configuration."),
    UnknownPeer => ("server.serverproxy.unknown_peer", Unauthenticated, ProviderProxy,
        "The calling security server's TLS certificate is not registered in the global configuration."),
    ClientNotOwned => ("server.serverproxy.client_not_owned", PermissionDenied, ProviderProxy,
        "The calling security server does not serve the client subsystem it claims to call for."),
    BadEnvelope => ("server.serverproxy.bad_envelope", InvalidArgument, ProviderProxy,
        "The request envelope (lt-envelope-bin) is missing, malformed, or does not match the call's path."),
    BadField => ("server.serverproxy.bad_field", InvalidArgument, ProviderProxy,
        "A field of the signed envelope is not in the canonical form both servers enforce: official or purpose not NFC, too long, or with invisible, private-use or unassigned characters; data subject not in one of the instance's formats, or missing for a service that handles personal data; trace context not printable ASCII. Nothing of it was logged or passed on."),
    WithholdingRefused => ("server.serverproxy.withholding_refused", PermissionDenied, ProviderProxy,
        "The envelope withholds the exchange from the data subject, but no withholding grant in force covers the client, or the release date is not within the grant's maximum duration from the provider's clock."),
    ReplayCapacity => ("server.serverproxy.replay_capacity", ResourceExhausted, ProviderProxy,
        "The provider's replay cache is full: it sheds new requests rather than forget a message id that could still be replayed. Retry later; the provider's operator raises --replay-capacity."),
    BadSignature => ("server.serverproxy.bad_signature", Unauthenticated, ProviderProxy,
        "The request's signature does not verify against a signing certificate of the client's member."),
    PayloadMismatch => ("server.serverproxy.payload_mismatch", InvalidArgument, ProviderProxy,
        "The request payload does not match the digest or size its signature covers."),
    Replay => ("server.serverproxy.replay", AlreadyExists, ProviderProxy,
        "The message id was already used by this client within the replay window."),
    StaleTimestamp => ("server.serverproxy.stale_timestamp", FailedPrecondition, ProviderProxy,
        "The request's creation time is outside the allowed clock skew; check both servers' clocks."),
    AccessDenied => ("server.serverproxy.access_denied", PermissionDenied, ProviderProxy,
        "The provider's access rights do not allow this client to call this service or method."),
    ProviderUnknownService => ("server.serverproxy.unknown_service", NotFound, ProviderProxy,
        "The provider's security server does not serve the called subsystem or service."),
    ProviderMessageTooLarge => ("server.serverproxy.message_too_large", ResourceExhausted, ProviderProxy,
        "The request, or a message of the backend's response, exceeds the provider security server's size limit."),
    ServiceUnavailable => ("server.serverproxy.service_unavailable", Unavailable, ProviderProxy,
        "The provider's backend is not configured or cannot be reached."),
    ServiceTimeout => ("server.serverproxy.service_timeout", DeadlineExceeded, ProviderProxy,
        "The provider's backend did not answer in time."),
    ProviderLogFailed => ("server.serverproxy.log_failed", Unavailable, ProviderProxy,
        "The provider's security server could not write its message log; no exchange proceeds unlogged."),
    ProviderInternal => ("server.serverproxy.internal", Internal, ProviderProxy,
        "An internal error of the provider's security server; its log has the details."),
    // Listeners: connections and calls past a server's bounds.
    HeadersTooLarge => ("client.headers_too_large", ResourceExhausted, Client,
        "The call's header list (metadata) is larger than the security server accepts (64 KiB); send less metadata."),
    ClientTlsRefused => ("client.tls_handshake_failed", Unauthenticated, Client,
        "The information system's TLS handshake with the consumer port failed for a reason other than an unpinned certificate (no common protocol, no certificate where one is required); the connection was closed and counted in /metrics."),
    ProviderHeadersTooLarge => ("server.serverproxy.headers_too_large", ResourceExhausted, ProviderProxy,
        "The request's header list is larger than the provider's security server accepts (64 KiB)."),
    PeerTlsRefused => ("server.serverproxy.tls_handshake_failed", Unauthenticated, ProviderProxy,
        "A peer's TLS handshake with the provider port failed for a reason other than an unregistered certificate (no certificate, no common protocol); the connection was closed and counted in /metrics."),
    TooManyCalls => ("server.serverproxy.too_many_calls", ResourceExhausted, ProviderProxy,
        "The calling security server already has as many calls in progress on this provider as one peer may (--max-calls-per-peer); the call was shed before any work. Retry with back-off."),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refusal: the fault and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultError {
    pub fault: Fault,
    pub message: String,
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.fault, self.message)
    }
}

impl std::error::Error for FaultError {}

impl Fault {
    /// This fault with a message.
    pub fn with(self, message: impl Into<String>) -> FaultError {
        FaultError {
            fault: self,
            message: message.into(),
        }
    }
}

impl FaultError {
    /// The gRPC trailers (or trailers-only headers) of this refusal:
    /// `grpc-status`, `grpc-message` and `lt-fault`.
    pub fn trailers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from(self.fault.status() as i32));
        let message = format!("{}: {}", self.fault.code(), self.message);
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
            h.insert("grpc-message", v);
        }
        h.insert(FAULT_HEADER, HeaderValue::from_static(self.fault.code()));
        h
    }

    /// A trailers-only gRPC response carrying this refusal.
    pub fn into_response<B: Default>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::default());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.extend(self.trailers());
        response
    }
}

/// Percent-encodes a `grpc-message` as the gRPC spec asks: bytes outside
/// printable ASCII, and `%`, become `%XX`.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn fault_table_is_consistent() {
        let mut codes = HashSet::new();
        for &f in Fault::ALL {
            assert!(codes.insert(f.code()), "duplicate code {}", f.code());
            let prefix = match f.side() {
                Side::Client => "client.",
                Side::ConsumerProxy => "server.clientproxy.",
                Side::ProviderProxy => "server.serverproxy.",
            };
            assert!(
                f.code().starts_with(prefix),
                "{} has the wrong side",
                f.code()
            );
            assert_ne!(f.status(), Code::Ok, "{} must not be OK", f.code());
            assert!(f.meaning().ends_with('.'), "{} meaning", f.code());
        }
    }

    #[test]
    fn fault_table_matches_the_documentation() {
        let doc = include_str!("../../docs/faults.md");
        for &f in Fault::ALL {
            let row = format!("| `{}` | {:?} |", f.code(), f.status());
            assert!(
                doc.contains(&row),
                "docs/faults.md lacks the row starting {row}"
            );
        }
    }

    #[test]
    fn refusal_response_carries_code_status_and_message() {
        let r: http::Response<()> = Fault::AccessDenied
            .with("client VN/GOV/1/x may not call y — ask the provider")
            .into_response();
        let h = r.headers();
        assert_eq!(h["grpc-status"], "7");
        assert_eq!(h[FAULT_HEADER], "server.serverproxy.access_denied");
        let msg = h["grpc-message"].to_str().unwrap();
        assert!(msg.starts_with("server.serverproxy.access_denied: client"));
        assert!(
            msg.contains("%E2%80%94"),
            "non-ASCII is percent-encoded: {msg}"
        );
    }
}
