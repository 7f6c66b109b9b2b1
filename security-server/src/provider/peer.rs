//! Stage 1: who is calling — the configuration is current, and the TLS
//! peer is a security server it lists. The handshake admitted any
//! certificate chaining to the instance's CA and not revoked; whether the
//! configuration pins it is decided here, first, for every request. A
//! peer the configuration does not know yet (a server that joined since
//! the last poll) makes the server ask the registry for a newer
//! configuration — at most one poll per
//! [`MIN_ASKED_POLL_INTERVAL`](crate::conf_client::MIN_ASKED_POLL_INTERVAL)
//! — and wait for it a moment before refusing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lienthong_certs::Fingerprint;
use lienthong_proto::id::ServerId;

use super::bare_refusal;
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::{Fault, FaultError};
use crate::refusal::Refusal;

/// Longest a request from an unknown peer waits for a newer configuration.
pub const UNKNOWN_PEER_WAIT: Duration = Duration::from_secs(3);

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
pub async fn identify(
    conf: &ConfClient,
    peer_cert: Option<Fingerprint>,
    now: SystemTime,
    span: tracing::Span,
) -> Result<Peer, Refusal> {
    let started = Instant::now();
    let known = match current_view(conf, now) {
        Ok(view) => match known_peer(&view, peer_cert.as_ref()) {
            Some(server) => Ok((view, server)),
            None => refreshed(conf, &view, peer_cert.as_ref(), now).await,
        },
        Err(fault) => Err(fault),
    };
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

/// The server `cert` belongs to under `view`.
fn known_peer(view: &ConfView, cert: Option<&Fingerprint>) -> Option<ServerId> {
    cert.and_then(|fp| view.server_with_cert(fp)).cloned()
}

/// Looks for the peer in a configuration newer than `view`.
async fn refreshed(
    conf: &ConfClient,
    view: &ConfView,
    cert: Option<&Fingerprint>,
    now: SystemTime,
) -> Result<(Arc<ConfView>, ServerId), FaultError> {
    let Some(fp) = cert else {
        return Err(Fault::UnknownPeer.with("the peer presented no TLS certificate"));
    };
    let why = format!(
        "a peer presented certificate {fp}, not in configuration version {}",
        view.version
    );
    let newer = conf
        .newer_than(view.version, &why, UNKNOWN_PEER_WAIT)
        .await
        .filter(|v| v.version > view.version && !v.is_expired(now));
    if let Some(newer) = newer
        && let Some(server) = known_peer(&newer, cert)
    {
        return Ok((newer, server));
    }
    let version = conf.view().map_or(view.version, |v| v.version);
    Err(Fault::UnknownPeer.with(format!(
        "TLS certificate {fp} is not one configuration version {version} registers (asked the registry for a newer one): a server that has just joined is known once its registration is approved and published; a removed or replaced server is not"
    )))
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
