//! The HTTP client the login uses to reach the identity provider: hyper
//! with rustls (ring), the system's root certificates, no redirects
//! followed, bounded answers and a timeout on every request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The largest answer read from the provider (discovery, keys, tokens).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How long one request to the provider may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// A cheap-to-clone client.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Trusts the system's roots (the provider's URL scheme was checked by
    /// [`crate::oidc::OidcConfig::check`]).
    pub fn new() -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            // A provider on loopback over http still works (the demo's).
            tracing::warn!(errors = ?found.errors, "no system root certificates: an https identity provider cannot be verified");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(https),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// One request, its answer read to the end (within the bounds).
    pub async fn call(
        &self,
        req: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let work = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError(format!("{e}: {}", source_of(&e))))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HttpError(format!("no answer within {:?}", self.timeout)))?
    }
}

fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}
