//! The two listeners: plain HTTP/2 (h2c) on loopback for the agency's own
//! information systems, and mutual TLS for other security servers. Each
//! connection is served by hyper's HTTP/2 server in its own task; a slow or
//! hostile peer holds up nobody else, and holds nothing for long: the
//! bounds of [`crate::limits`] cap the connections per listener and per
//! address, close a connection that sends no request in time, and ping
//! peers so that one that stopped reading is disconnected. When `stop`
//! turns true the listeners stop accepting and every connection shuts down
//! gracefully (GOAWAY: calls in flight finish, new ones go elsewhere).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use lienthong_certs::Fingerprint;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;

use crate::faults::Fault;
use crate::limits::{ListenerLimits, ListenerStats, Refusal};

/// Largest header list a call may carry (the envelope travels in a
/// header); a larger one is answered with the listener's
/// `headers_too_large` fault.
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// Largest header list HTTP/2 itself accepts (and advertises). Between
/// [`MAX_HEADER_LIST`] and this, a call is refused as a gRPC status with
/// `lt-fault`; past it, HTTP/2 answers a bare 431 without decoding more.
pub const HEADER_LIST_HARD_LIMIT: u32 = 4 * MAX_HEADER_LIST as u32;
/// Most concurrent calls on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// One listener: its name in logs and metrics, its bounds, its counters
/// and the faults it answers with.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) name: &'static str,
    pub(crate) limits: ListenerLimits,
    pub(crate) stats: Arc<ListenerStats>,
    /// The answer to a header list over [`MAX_HEADER_LIST`].
    pub(crate) headers_too_large: Fault,
    /// How a refused TLS peer is counted: its certificate refused, or the
    /// handshake failed otherwise.
    pub(crate) tls_refused: (Fault, Fault),
    /// The second of the last warning about refused connections.
    last_warned: AtomicU64,
}

impl Listener {
    pub(crate) fn new(
        name: &'static str,
        limits: ListenerLimits,
        stats: Arc<ListenerStats>,
        headers_too_large: Fault,
        tls_refused: (Fault, Fault),
    ) -> Arc<Self> {
        Arc::new(Listener {
            name,
            limits,
            stats,
            headers_too_large,
            tls_refused,
            last_warned: AtomicU64::new(0),
        })
    }

    /// Warns of a refused connection, at most once a second (a flood of
    /// them is counted in `/metrics`, not logged line by line).
    fn refused(&self, peer: SocketAddr, why: Refusal) {
        let now = lienthong_proto::time::now_secs() as u64;
        if self.last_warned.swap(now, Ordering::Relaxed) != now {
            let limit = match why {
                Refusal::ListenerFull => self.limits.max_connections,
                Refusal::PeerFull => self.limits.max_connections_per_peer,
            };
            tracing::warn!(listener = self.name, %peer, reason = ?why, limit, "connection refused: too many open");
        }
    }

    fn builder(&self) -> http2::Builder<TokioExecutor> {
        let mut b = http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_header_list_size(HEADER_LIST_HARD_LIMIT)
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .keep_alive_interval(Some(self.limits.keep_alive_interval))
            .keep_alive_timeout(self.limits.keep_alive_timeout);
        b
    }

    /// The refusal of a call whose header list is over [`MAX_HEADER_LIST`].
    fn check_headers(&self, headers: &HeaderMap) -> Option<Response<Body>> {
        // As HTTP/2 counts it (RFC 9113 §6.5.2): name, value and 32 per field.
        let size: usize = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        if size <= MAX_HEADER_LIST {
            return None;
        }
        Some(
            self.headers_too_large
                .with(format!(
                    "the call's header list is {size} bytes; at most {MAX_HEADER_LIST} are accepted"
                ))
                .into_response(),
        )
    }
}

/// A connection's byte stream, whatever carries it (TCP or TLS).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection ready for HTTP/2, and the peer certificate's fingerprint.
type Upgraded = Option<(Box<dyn Io>, Option<Fingerprint>)>;

/// Accepts connections on `listener` until `stop`, within `this`'s bounds;
/// `upgrade` turns each into an HTTP/2 byte stream (or drops it), `handler`
/// answers each request.
fn serve<U, UFut, F, Fut>(
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    this: Arc<Listener>,
    upgrade: U,
    handler: F,
) -> JoinHandle<()>
where
    U: Fn(TcpStream, SocketAddr) -> UFut + Clone + Send + Sync + 'static,
    UFut: Future<Output = Upgraded> + Send + 'static,
    F: Fn(Option<Fingerprint>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        // Every connection is watched; when `stop` turns true (or this task
        // is aborted and the watch dropped) each is shut down gracefully.
        let graceful = GracefulShutdown::new();
        loop {
            let Some(accepted) = accept(&listener, &stop).await else {
                graceful.shutdown().await;
                return;
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admitted = match this.stats.admit(peer.ip(), &this.limits) {
                Ok(a) => a,
                Err(why) => {
                    this.refused(peer, why);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (upgrade, handler, watcher) =
                (upgrade.clone(), handler.clone(), graceful.watcher());
            let this = this.clone();
            tokio::spawn(async move {
                let _admitted = admitted;
                connection(this, tcp, peer, upgrade, handler, watcher).await;
            });
        }
    })
}

/// Serves one admitted connection: upgrades it, then serves HTTP/2 on it,
/// closing it if its first request's headers do not come in time.
async fn connection<U, UFut, F, Fut>(
    this: Arc<Listener>,
    tcp: TcpStream,
    peer: SocketAddr,
    upgrade: U,
    handler: F,
    watcher: Watcher,
) where
    U: Fn(TcpStream, SocketAddr) -> UFut,
    UFut: Future<Output = Upgraded>,
    F: Fn(Option<Fingerprint>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // One deadline from accept to the first request's headers.
    let deadline = Instant::now() + this.limits.header_timeout;
    let (io, fp) = match timeout_at(deadline, upgrade(tcp, peer)).await {
        Ok(Some(upgraded)) => upgraded,
        Ok(None) => return,
        Err(_) => {
            this.stats.timed_out();
            tracing::debug!(listener = this.name, %peer, "no TLS handshake in time: closed");
            return;
        }
    };
    let first_request = Arc::new(Notify::new());
    let (seen, listener) = (first_request.clone(), this.clone());
    let svc = service_fn(move |req: Request<Incoming>| {
        seen.notify_one();
        let (handler, listener) = (handler.clone(), listener.clone());
        async move {
            Ok::<_, Infallible>(match listener.check_headers(req.headers()) {
                None => handler(fp, req).await,
                Some(refusal) => refusal,
            })
        }
    });
    let conn = watcher.watch(this.builder().serve_connection(TokioIo::new(io), svc));
    let first = async move { timeout_at(deadline, first_request.notified()).await.is_ok() };
    match drive(conn, first).await {
        Ended::Closed(Ok(())) => {}
        Ended::Closed(Err(e)) => {
            tracing::debug!(listener = this.name, %peer, error = %e, "connection ended");
        }
        Ended::NoRequest => {
            this.stats.timed_out();
            tracing::debug!(listener = this.name, %peer, "no request in time: closed");
        }
    }
}

/// Serves h2c on `listener`, each request through `handler`.
pub(crate) fn serve_h2c<F, Fut>(
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    this: Arc<Listener>,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve(
        listener,
        stop,
        this,
        |tcp, _| async move { Some((Box::new(tcp) as Box<dyn Io>, None)) },
        move |_, req| handler(req),
    )
}

/// Serves HTTP/2 over TLS on `listener`; `handler` also gets the
/// fingerprint of the peer's certificate (verified by `config`). A refused
/// peer is logged at warning level and counted with the fingerprint of
/// the certificate it presented and its address.
pub(crate) fn serve_tls<F, Fut>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stop: watch::Receiver<bool>,
    this: Arc<Listener>,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Option<Fingerprint>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let listening = this.clone();
    let handshake = move |tcp, peer: SocketAddr| {
        let (acceptor, this) = (acceptor.clone(), listening.clone());
        async move {
            let mut accept = acceptor.accept(tcp);
            let mut presented = None;
            let handshake = std::future::poll_fn(|cx| {
                let (poll, refused) = lienthong_certs::tls::refused_during(|| {
                    std::pin::Pin::new(&mut accept).poll(cx)
                });
                presented = presented.or(refused);
                poll
            });
            match handshake.await {
                Ok(tls) => {
                    let fp = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| Fingerprint::of(c));
                    Some((Box::new(tls) as Box<dyn Io>, fp))
                }
                Err(e) => {
                    this.tls_refusal(peer, presented, &e);
                    None
                }
            }
        }
    };
    serve(listener, stop, this, handshake, handler)
}

impl Listener {
    /// Counts and logs a failed handshake with the certificate `presented`.
    fn tls_refusal(&self, peer: SocketAddr, presented: Option<Fingerprint>, e: &std::io::Error) {
        let (cert_refused, failed) = self.tls_refused;
        let fault = if presented.is_some() {
            cert_refused
        } else {
            failed
        };
        self.stats.tls_refused(fault, presented, peer.ip());
        let certificate = presented.map_or_else(|| "none".to_owned(), |f| f.to_string());
        if e.kind() == std::io::ErrorKind::InvalidData {
            tracing::warn!(listener = self.name, %peer, fault = fault.code(), %certificate, error = %e, "TLS peer refused");
        } else {
            // Closed or reset before finishing: a port probe, or a peer
            // that went away.
            tracing::debug!(listener = self.name, %peer, fault = fault.code(), error = %e, "TLS handshake abandoned");
        }
    }
}

/// How a connection ended.
enum Ended {
    Closed(Result<(), hyper::Error>),
    /// No request came before the deadline.
    NoRequest,
}

/// Drives a connection until it ends; closes it if `first_request`
/// resolves false (no request in time). Graceful shutdown is the
/// connection's watcher's business.
async fn drive(
    conn: impl Future<Output = Result<(), hyper::Error>>,
    first_request: impl Future<Output = bool>,
) -> Ended {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => Ended::Closed(r),
        came = first_request => {
            if came {
                Ended::Closed(conn.await)
            } else {
                Ended::NoRequest
            }
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The next connection, or `None` once `stop` is true.
async fn accept(
    listener: &TcpListener,
    stop: &watch::Receiver<bool>,
) -> Option<std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>> {
    let mut stop = stop.clone();
    if *stop.borrow_and_update() {
        return None;
    }
    tokio::select! {
        a = listener.accept() => Some(a),
        _ = stopped(&mut stop) => None,
    }
}
