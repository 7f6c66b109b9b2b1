//! Stage 1: who is calling — the configuration is current, and the TLS
//! peer (its certificate chain checked by the handshake) is a security
//! server the configuration lists.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use lienthong_certs::Fingerprint;
use lienthong_proto::id::ServerId;

use super::bare_refusal;
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::{Fault, FaultError};
use crate::refusal::Refusal;

/// A request from a known security server.
pub struct Peer {
    pub started: Instant,
    /// The time every check of this request is made at.
    pub now: SystemTime,
    pub span: tracing::Span,
    pub view: Arc<ConfView>,
    pub server: ServerId,
}

/// Identifies the peer whose TLS certificate is `peer_cert`.
pub fn identify(
    conf: &ConfClient,
    peer_cert: Option<Fingerprint>,
    now: SystemTime,
    span: tracing::Span,
) -> Result<Peer, Refusal> {
    let started = Instant::now();
    let known = current_view(conf, now).and_then(|view| {
        let server = peer_cert
            .as_ref()
            .and_then(|fp| view.server_with_cert(fp))
            .cloned()
            .ok_or_else(|| {
                Fault::UnknownPeer
                    .with("the TLS certificate is not one the configuration registers")
            })?;
        Ok((view, server))
    });
    match known {
        Ok((view, server)) => Ok(Peer {
            started,
            now,
            span,
            view,
            server,
        }),
        Err(fault) => Err(bare_refusal(started, &span, fault)),
    }
}

/// The configuration in force, if it is current.
pub fn current_view(conf: &ConfClient, now: SystemTime) -> Result<Arc<ConfView>, FaultError> {
    let view = conf.view().ok_or_else(|| {
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
