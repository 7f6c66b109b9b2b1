//! What one peer can hold of a security server, and what happens past it.
//!
//! - Each listener keeps at most [`ListenerLimits::max_connections`] open
//!   connections, and at most [`ListenerLimits::max_connections_per_peer`]
//!   from one IP address; one more is closed as soon as it is accepted.
//! - A connection must finish its TLS handshake (if any), the HTTP/2
//!   preface and its first request's headers within
//!   [`ListenerLimits::header_timeout`] of being accepted, or it is closed.
//! - HTTP/2 keep-alive pings find peers that stopped reading: one that does
//!   not answer a ping within [`ListenerLimits::keep_alive_timeout`] is
//!   disconnected, and what its calls held is released.
//! - On the provider side, each calling security server (the auth
//!   certificate its TLS handshake verified) has at most
//!   [`DEFAULT_MAX_CALLS_PER_PEER`] calls in progress ([`PerPeerCalls`]);
//!   one more is shed at once with [`Fault::TooManyCalls`], never queued.
//!
//! Every refusal is counted in [`ListenerStats`], which the admin port
//! shows in `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Request, Response};
use lienthong_certs::Fingerprint;
use tonic::body::Body;
use tower::limit::ConcurrencyLimit;
use tower::load_shed::LoadShed;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::faults::Fault;

/// How long a new connection may take to send its first request's headers
/// (TLS handshake and HTTP/2 preface included).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most open connections on one listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_000;
/// Most open connections on one listener from one IP address. Information
/// systems and security servers multiplex their calls over one or a few
/// HTTP/2 connections; this leaves room for several processes per host.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 100;
/// Idle time after which a connection's peer is sent an HTTP/2 ping.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a peer has to answer a ping before it is disconnected.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most calls one calling security server may have in progress on the
/// provider side: twice the performance contract's 1,000 concurrent
/// requests, so one peer at full load is never shed.
pub const DEFAULT_MAX_CALLS_PER_PEER: usize = 2_048;
/// Most distinct (listener, fault, certificate, address) series of refused
/// TLS peers kept for `/metrics`; refusals past it are counted as `other`,
/// so a peer presenting ever new certificates cannot grow memory.
pub const MAX_REFUSAL_SERIES: usize = 1_000;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// # Default
    /// 10 s ([`DEFAULT_HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// # Default
    /// 1,000 ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// # Default
    /// 100 ([`DEFAULT_MAX_CONNECTIONS_PER_PEER`]).
    pub max_connections_per_peer: usize,
    /// # Default
    /// 30 s ([`DEFAULT_KEEP_ALIVE_INTERVAL`]).
    pub keep_alive_interval: Duration,
    /// # Default
    /// 20 s ([`DEFAULT_KEEP_ALIVE_TIMEOUT`]).
    pub keep_alive_timeout: Duration,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            keep_alive_interval: DEFAULT_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

// === impl ListenerStats ===

/// Why a connection was closed without being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener holds its most connections.
    ListenerFull,
    /// The peer's address holds its most connections.
    PeerFull,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// (fault code, certificate fingerprint or `none`, peer address).
type RefusalKey = (&'static str, String, String);

/// One listener's open connections and refusals.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: Mutex<Open>,
    listener_full: AtomicU64,
    peer_full: AtomicU64,
    timed_out: AtomicU64,
    tls_refused: Mutex<BTreeMap<RefusalKey, u64>>,
}

/// A connection counted as open until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    stats: Arc<ListenerStats>,
    peer: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = lock(&self.stats.open);
        open.total -= 1;
        if let Some(n) = open.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.per_peer.remove(&self.peer);
            }
        }
    }
}

impl ListenerStats {
    /// Counts a new connection from `peer` as open, unless `limits` are reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        limits: &ListenerLimits,
    ) -> Result<Admitted, Refusal> {
        let mut open = lock(&self.open);
        let from_peer = open.per_peer.get(&peer).copied().unwrap_or(0);
        let refusal = if open.total >= limits.max_connections {
            Some((Refusal::ListenerFull, &self.listener_full))
        } else if from_peer >= limits.max_connections_per_peer {
            Some((Refusal::PeerFull, &self.peer_full))
        } else {
            None
        };
        if let Some((why, counter)) = refusal {
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        open.total += 1;
        *open.per_peer.entry(peer).or_default() += 1;
        Ok(Admitted {
            stats: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.open).total
    }

    /// Counts a connection closed for sending no request in time.
    pub(crate) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a TLS peer refused with `fault`, which presented `cert`.
    pub(crate) fn tls_refused(&self, fault: Fault, cert: Option<Fingerprint>, peer: IpAddr) {
        let mut series = lock(&self.tls_refused);
        let key = (
            fault.code(),
            cert.map_or_else(|| "none".to_owned(), |c| c.to_string()),
            peer.to_string(),
        );
        let key = if series.len() < MAX_REFUSAL_SERIES || series.contains_key(&key) {
            key
        } else {
            (fault.code(), "other".to_owned(), "other".to_owned())
        };
        *series.entry(key).or_default() += 1;
    }

    /// TLS refusals counted so far, by (fault, certificate, address).
    pub fn tls_refusals(&self) -> BTreeMap<RefusalKey, u64> {
        lock(&self.tls_refused).clone()
    }
}

/// Records the listeners' figures (run under the server's recorder, see
/// `admin`).
pub(crate) fn record_metrics(listeners: &[(&'static str, &ListenerStats)]) {
    use metrics::{counter, gauge};
    for (name, s) in listeners {
        gauge!("lienthong_open_connections", "listener" => *name).set(s.open() as f64);
        for (reason, n) in [
            ("listener_full", &s.listener_full),
            ("peer_full", &s.peer_full),
            ("header_timeout", &s.timed_out),
        ] {
            counter!("lienthong_connections_refused_total", "listener" => *name, "reason" => reason)
                .absolute(n.load(Ordering::Relaxed));
        }
        for ((fault, cert, peer), n) in s.tls_refusals() {
            counter!(
                "lienthong_tls_refused_total",
                "listener" => *name,
                "fault" => fault,
                "certificate" => cert,
                "peer" => peer,
            )
            .absolute(n);
        }
    }
}

// === impl PerPeerCalls ===

/// A request on the provider side with the fingerprint of its peer's
/// (verified) TLS certificate.
pub(crate) type PeerRequest<B> = (Option<Fingerprint>, Request<B>);

/// Calls in progress per calling security server, on the provider side.
///
/// Keyed by the peer server (its verified auth certificate), not by the
/// client subsystem: the peer is known from the handshake before any work,
/// so a shed call costs no parsing, signature check or log write — the
/// client is only known after verifying the envelope's signature, the
/// costliest step the limit protects. A consumer server's own clients
/// share its allowance; dividing it among them is that server's business.
///
/// Each peer's calls pass tower's `ConcurrencyLimit` behind `LoadShed`: a
/// call past the limit is answered at once with [`Fault::TooManyCalls`]
/// and never reaches the provider, nor waits. A call counts until its
/// response starts (its headers), the time it holds the backend.
pub(crate) struct PerPeerCalls<S> {
    max: usize,
    inner: S,
    peers: Mutex<HashMap<Option<Fingerprint>, LoadShed<ConcurrencyLimit<S>>>>,
    /// Calls shed so far (shown in `/metrics`).
    shed: Arc<AtomicU64>,
}

impl<S: Clone> PerPeerCalls<S> {
    pub(crate) fn new(max: usize, inner: S, shed: Arc<AtomicU64>) -> Self {
        PerPeerCalls {
            max,
            inner,
            peers: Mutex::default(),
            shed,
        }
    }

    /// Passes the call on, or sheds it if its peer has `max` in progress.
    pub(crate) async fn call<B>(&self, request: PeerRequest<B>) -> Response<Body>
    where
        S: Service<PeerRequest<B>, Response = Response<Body>, Error = Infallible>,
    {
        let peer = request.0;
        // Clones share the peer's semaphore; only the map's entry is kept.
        let mut svc = lock(&self.peers)
            .entry(peer)
            .or_insert_with(|| {
                ServiceBuilder::new()
                    .load_shed()
                    .concurrency_limit(self.max)
                    .service(self.inner.clone())
            })
            .clone();
        let result = match svc.ready().await {
            Ok(svc) => svc.call(request).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(response) => response,
            Err(e) if e.is::<tower::load_shed::error::Overloaded>() => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = ?peer, limit = self.max, "call shed: too many in progress");
                Fault::TooManyCalls
                    .with(format!(
                        "the calling security server has {} calls in progress here, the most allowed; retry with back-off",
                        self.max
                    ))
                    .into_response()
            }
            Err(e) => Fault::ProviderInternal.with(e.to_string()).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_per_listener_and_per_peer() {
        let stats = Arc::new(ListenerStats::default());
        let limits = ListenerLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            ..Default::default()
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = stats.admit(a, &limits).unwrap();
        let _a2 = stats.admit(a, &limits).unwrap();
        assert_eq!(stats.admit(a, &limits).unwrap_err(), Refusal::PeerFull);
        let _b1 = stats.admit(b, &limits).unwrap();
        assert_eq!(stats.admit(b, &limits).unwrap_err(), Refusal::ListenerFull);
        assert_eq!(stats.open(), 3);
        drop(a1);
        assert_eq!(stats.open(), 2);
        let _a3 = stats
            .admit(a, &limits)
            .expect("a closed connection frees its place");
        let metrics = crate::admin::Metrics::default();
        metrics.record(|| record_metrics(&[("provider", &stats)]));
        let text = metrics.render();
        assert!(text.contains("lienthong_open_connections{listener=\"provider\"} 3"));
        assert!(text.contains("reason=\"peer_full\"} 1"), "{text}");
        assert!(text.contains("reason=\"listener_full\"} 1"), "{text}");
    }

    #[tokio::test]
    async fn calls_past_a_peers_limit_are_shed_not_queued() {
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let reached = Arc::new(AtomicU64::new(0));
        let (r, n) = (release.clone(), reached.clone());
        let backend = tower::service_fn(move |_: PeerRequest<()>| {
            let (r, n) = (r.clone(), n.clone());
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                if let Ok(p) = r.acquire().await {
                    p.forget();
                }
                Ok::<_, Infallible>(Response::new(Body::default()))
            }
        });
        let shed = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(PerPeerCalls::new(2, backend, shed.clone()));
        let (a, b) = (Some(Fingerprint([1; 32])), Some(Fingerprint([2; 32])));
        let call = |peer| {
            let calls = calls.clone();
            tokio::spawn(async move { calls.call((peer, Request::new(()))).await })
        };
        let held = [call(a), call(a)];
        while reached.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        let refused = call(a).await.unwrap();
        assert_eq!(refused.headers()["lt-fault"], Fault::TooManyCalls.code());
        assert_eq!(
            reached.load(Ordering::SeqCst),
            2,
            "the shed call never reached the service"
        );
        let other = call(b);
        while reached.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        release.add_permits(3);
        assert!(other.await.unwrap().headers().get("lt-fault").is_none());
        for h in held {
            assert!(h.await.unwrap().headers().get("lt-fault").is_none());
        }
        assert_eq!(shed.load(Ordering::SeqCst), 1);
        let after = call(a);
        release.add_permits(1);
        assert!(
            after.await.unwrap().headers().get("lt-fault").is_none(),
            "finished calls free their places"
        );
    }

    #[test]
    fn refusal_series_are_bounded() {
        let stats = ListenerStats::default();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for i in 0..MAX_REFUSAL_SERIES + 10 {
            let fp = Fingerprint(lienthong_proto::sha256(&i.to_le_bytes()));
            stats.tls_refused(Fault::UnknownPeer, Some(fp), peer);
        }
        let series = stats.tls_refusals();
        assert_eq!(series.len(), MAX_REFUSAL_SERIES + 1);
        let other = (Fault::UnknownPeer.code(), "other".into(), "other".into());
        assert_eq!(series[&other], 10);
    }
}
