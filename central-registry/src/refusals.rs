//! Every refused call is an audit record: who (the server of the TLS
//! peer's auth certificate, a hash prefix of the token presented, or
//! nobody), from where (source address), what and why. Tokens never enter
//! the audit log; a 64-bit prefix of their SHA-256 tells repeated guesses
//! of one token apart without revealing it.

use std::net::SocketAddr;
use std::sync::Arc;

use lienthong_certs::Fingerprint;
use rustls_pki_types::CertificateDer;

use crate::auth::hash_token;
use crate::store::Store;

/// Who made a refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub source: Option<SocketAddr>,
    /// `server <id>`, `tls-peer sha256:<fingerprint>`, `<kind>-token
    /// sha256:<prefix>` or `anonymous`.
    pub identity: String,
}

impl Caller {
    pub fn anonymous(source: Option<SocketAddr>) -> Self {
        Caller {
            source,
            identity: "anonymous".into(),
        }
    }

    /// A caller known by a token: `kind` names the token (`enrollment`, `operator`).
    pub fn token(source: Option<SocketAddr>, kind: &str, token: &str) -> Self {
        Caller {
            source,
            identity: format!("{kind}-token sha256:{}", token_prefix(token)),
        }
    }

    /// A caller known by its TLS certificate: the server it is registered
    /// for, or its fingerprint.
    pub fn peer(store: &dyn Store, source: Option<SocketAddr>, cert: &CertificateDer<'_>) -> Self {
        let fp = Fingerprint::of(cert);
        let identity = match store.certificate(&fp) {
            Ok(Some(c)) => match c.auth_server {
                Some(s) => format!("server {s}"),
                None => format!("tls-peer {fp}"),
            },
            _ => format!("tls-peer {fp}"),
        };
        Caller { source, identity }
    }

    /// The audit actor.
    pub fn actor(&self) -> String {
        self.identity.clone()
    }

    /// The audit detail: the source address, then `what`.
    pub fn detail(&self, what: &str) -> String {
        let from = self.source.map_or_else(
            || "from an unknown address".to_owned(),
            |s| format!("from {s}"),
        );
        if what.is_empty() {
            from
        } else {
            format!("{from}; {what}")
        }
    }
}

/// The first 16 hex digits of a token's SHA-256.
pub fn token_prefix(token: &str) -> String {
    hex::encode(&hash_token(token)[..8])
}

/// Writes refusal audit records.
#[derive(Debug, Clone)]
pub struct Refusals {
    store: Arc<dyn Store>,
}

impl Refusals {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Refusals { store }
    }

    /// Audits a refusal of a call made with an optional TLS client
    /// certificate and an optional token (`kind`, token), off the async
    /// runtime; a failure to audit is logged.
    pub async fn record(
        &self,
        source: Option<SocketAddr>,
        peer: Option<CertificateDer<'static>>,
        token: Option<(&'static str, String)>,
        action: &str,
        what: &str,
        reason: &str,
    ) {
        let (store, action, what, reason) = (
            self.store.clone(),
            action.to_owned(),
            what.to_owned(),
            reason.to_owned(),
        );
        let done = tokio::task::spawn_blocking(move || {
            let caller = match (&peer, &token) {
                (Some(cert), _) => Caller::peer(store.as_ref(), source, cert),
                (None, Some((kind, t))) if !t.is_empty() => Caller::token(source, kind, t),
                _ => Caller::anonymous(source),
            };
            store.record_refusal(&caller.actor(), &action, &caller.detail(&what), &reason)
        })
        .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "could not audit a refused call"),
            Err(e) => tracing::error!(error = %e, "could not audit a refused call"),
        }
    }

    /// As [`record`](Self::record), without waiting.
    pub fn spawn_record(&self, actor: &str, action: &str, detail: &str, reason: &str) {
        let (store, actor, action, detail, reason) = (
            self.store.clone(),
            actor.to_owned(),
            action.to_owned(),
            detail.to_owned(),
            reason.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.record_refusal(&actor, &action, &detail, &reason) {
                tracing::error!(error = %e, "could not audit a refused call");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_never_show_tokens() {
        let src: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let c = Caller::token(Some(src), "enrollment", "lt_secret");
        assert!(!c.actor().contains("secret"));
        assert_eq!(
            c.actor(),
            format!("enrollment-token sha256:{}", token_prefix("lt_secret"))
        );
        assert_eq!(c.detail("server x"), "from 10.0.0.7:5000; server x");
        assert_eq!(
            Caller::anonymous(None).detail(""),
            "from an unknown address"
        );
        assert_ne!(token_prefix("a"), token_prefix("b"));
        assert_eq!(token_prefix("a").len(), 16);
    }
}
