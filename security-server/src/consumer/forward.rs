//! Stage 5: the signed request sent to one of the provider's security
//! servers, failing over to the next.
//!
//! One HTTP/2 connection per provider server and address, kept and shared
//! by every call (tonic's `Channel`: reconnects by itself). Each connection
//! pins the peer to the configuration's auth certificates *and* to the
//! server id it was dialled for. [`order_servers`] is the pure choice of
//! which server to try first; the next ones are the failover.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use lienthong_certs::net::TlsConnectorService;
use lienthong_certs::tls::{self, TrustStore};
use lienthong_proto::id::ServerId;
use lienthong_registry_client::error_chain;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

use super::check::Checked;
use super::log_request::{Logged, Pending};
use super::sign::Signed;
use crate::conf_client::ConfView;
use crate::faults::{Fault, FaultError};
use crate::keys::Keys;
use crate::metadata::Target;
use crate::refusal::Refusal;

/// How long connecting to a provider server may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The order to try the target's servers in: for a provider, all of its
/// servers starting at `start` (round robin spreads load; the rest are
/// failover); for a server's built-in service, that server.
pub fn order_servers(view: &ConfView, target: &Target, start: usize) -> Vec<ServerId> {
    let provider = match target {
        Target::Provider(p) => p,
        Target::Server(s) => return vec![s.clone()],
    };
    let all = view.servers_of(provider);
    if all.is_empty() {
        return Vec::new();
    }
    let k = start % all.len();
    all[k..].iter().chain(&all[..k]).cloned().collect()
}

/// What a connection failure means for the operator, when its cause says
/// more than its words.
pub fn explain(error_chain: &str) -> Option<&'static str> {
    // A provider's server answers an auth certificate its configuration
    // does not pin with this alert (an unknown CA gets `UnknownCA`).
    error_chain.contains("CertificateUnknown").then_some(
        "the provider's server does not know this server's certificate: its configuration predates this server's registration; it downloads the configuration again when refusing one, so retry in a few seconds, and if it persists check that this server's registration was approved and its certificate is not revoked",
    )
}

/// Pooled connections to provider servers.
pub struct ProviderPool {
    keys: Arc<Keys>,
    trust: TrustStore,
    channels: Mutex<HashMap<(ServerId, String), Channel>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for ProviderPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderPool")
    }
}

/// Why no channel to a provider's server could be made.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error(transparent)]
    Tls(#[from] lienthong_certs::CertError),
    #[error("address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ProviderPool {
    pub fn new(keys: Arc<Keys>, trust: TrustStore) -> Self {
        ProviderPool {
            keys,
            trust,
            channels: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    fn channel(&self, server: &ServerId, address: &str) -> Result<Channel, ChannelError> {
        let key = (server.clone(), address.to_owned());
        let mut map = match self.channels.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let config = tls::client_config(&self.keys.auth, self.trust.clone(), Some(server.clone()))?;
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|source| ChannelError::Address {
                address: address.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let connector = TlsConnectorService::new(Arc::new(config)).with_timeout(CONNECT_TIMEOUT);
        let channel = endpoint.connect_with_connector_lazy(connector);
        map.insert(key, channel.clone());
        Ok(channel)
    }

    /// Sends the request made by `make` to a server of `target`; on a
    /// connection failure tries the next. Returns the server that answered.
    pub async fn send(
        &self,
        view: &ConfView,
        target: &Target,
        make: impl Fn() -> Request<Body>,
    ) -> Result<(ServerId, Response<Body>), FaultError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let order = order_servers(view, target, start);
        let mut failures = Vec::new();
        for server in order {
            let Some(entry) = view.server(&server) else {
                continue;
            };
            let channel = match self.channel(&server, &entry.address) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{server}: {e}"));
                    continue;
                }
            };
            match channel.oneshot(make()).await {
                Ok(response) => return Ok((server, response)),
                Err(e) => {
                    let why = error_chain(&e);
                    tracing::warn!(%server, address = %entry.address, error = %why, "provider server unreachable; trying the next");
                    let hint = explain(&why).map_or_else(String::new, |h| format!(" ({h})"));
                    failures.push(format!("{server} at {}: {why}{hint}", entry.address));
                }
            }
        }
        Err(Fault::ProviderUnreachable.with(if failures.is_empty() {
            format!("no security server serves {target}")
        } else {
            format!("tried {}", failures.join("; "))
        }))
    }
}

/// A request a provider's server answered (its response not read yet).
pub struct Forwarded {
    pub signed: Signed,
    /// The request record, logged with the outcome.
    pub request: Pending,
    pub log_bodies: bool,
    pub response: Response<Body>,
}

/// Sends the logged request to a server of its provider.
pub async fn forward(logged: Logged, pool: &ProviderPool) -> Result<Forwarded, Refusal> {
    let Logged {
        mut signed,
        request,
        log_bodies,
    } = logged;
    let make = || {
        let mut r = Request::new(Body::new(signed.payload.body()));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = path_only(&signed.uri);
        *r.headers_mut() = signed.headers.clone();
        r
    };
    match pool.send(&signed.view, &signed.meta.target, make).await {
        Ok((server, response)) => {
            if let Some(entry) = signed.view.server(&server) {
                crate::telemetry::server_address(&signed.facts.forward, &entry.address);
            }
            signed.facts.peer = server.to_string();
            Ok(Forwarded {
                signed,
                request,
                log_bodies,
                response,
            })
        }
        Err(fault) => Err(signed
            .facts
            .refused(fault, Some(&signed.meta))
            .after(request.take())),
    }
}

/// The benchmark's floor (`--dangerous-pass-through`): the call goes to
/// a server of its provider as it came, metadata and all, and its answer
/// comes back untouched. Nothing is signed, checked by the provider or
/// logged.
pub async fn pass_through(
    checked: Checked,
    pool: &ProviderPool,
) -> Result<Response<Body>, Refusal> {
    let Checked {
        facts,
        meta,
        view,
        parts,
        body,
    } = checked;
    // A streaming body cannot be sent twice: the floor has no failover
    // (a second attempt would carry no body).
    let body = std::sync::Mutex::new(Some(body));
    let make = || {
        let body = body
            .lock()
            .ok()
            .and_then(|mut b| b.take())
            .unwrap_or_default();
        let mut r = Request::new(body);
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = path_only(&parts.uri);
        *r.headers_mut() = parts.headers.clone();
        r
    };
    match pool.send(&view, &meta.target, make).await {
        Ok((_, response)) => Ok(response),
        Err(fault) => Err(facts.refused(fault, None)),
    }
}

/// The call's path, for a request to another server.
fn path_only(uri: &http::Uri) -> http::Uri {
    uri.path().parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_certificate_is_explained_and_other_failures_are_not() {
        let refused = "transport error: received fatal alert: CertificateUnknown";
        assert!(explain(refused).is_some_and(|h| h.contains("retry in a few seconds")));
        for other in [
            "transport error: Connection refused (os error 111)",
            "transport error: received fatal alert: UnknownCA",
            "invalid peer certificate: NotValidForName",
        ] {
            assert_eq!(explain(other), None, "{other}");
        }
    }
}
