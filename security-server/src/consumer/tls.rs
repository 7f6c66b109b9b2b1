//! How the agency's information systems reach the consumer side: plain h2c
//! (loopback or a trusted network), TLS with the server's auth
//! certificate, or mutual TLS where each information system's certificate
//! is pinned for the subsystems it may call as
//! (`lienthong server clients pin`).

use std::sync::Arc;

use lienthong_certs::CertError;
use lienthong_certs::tls::{self, Identity};
use rustls::ServerConfig;

use crate::provider::Policies;

/// The consumer side's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumerTransport {
    /// HTTP/2 without TLS.
    #[default]
    Plain,
    /// TLS with the server's auth certificate; information systems are not
    /// authenticated by the transport.
    Tls,
    /// TLS, and each information system presents a certificate pinned for
    /// the subsystem it calls as.
    MutualTls,
}

/// A consumer transport's name that is none of `h2c`, `tls`, `mtls`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transport {0:?}: use h2c, tls or mtls")]
pub struct UnknownTransport(pub String);

impl std::str::FromStr for ConsumerTransport {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        match s {
            "h2c" => Ok(ConsumerTransport::Plain),
            "tls" => Ok(ConsumerTransport::Tls),
            "mtls" => Ok(ConsumerTransport::MutualTls),
            other => Err(UnknownTransport(other.to_owned())),
        }
    }
}

/// The rustls config of the consumer side, or `None` for plain h2c.
pub fn server_config(
    transport: ConsumerTransport,
    identity: &Identity,
    policies: &Policies,
) -> Result<Option<ServerConfig>, CertError> {
    match transport {
        ConsumerTransport::Plain => Ok(None),
        ConsumerTransport::Tls => tls::server_config_no_client_auth(identity).map(Some),
        ConsumerTransport::MutualTls => {
            // Which subsystem a certificate may call as is checked per call.
            let policies = policies.clone();
            tls::server_config_pinned_clients(
                identity,
                Arc::new(move |fp| policies.current().is_pinned(fp)),
            )
            .map(Some)
        }
    }
}
