//! The two listeners: plain HTTP/2 (h2c) on loopback for the agency's own
//! information systems, and mutual TLS for other security servers. Each
//! connection is served by hyper's HTTP/2 server in its own task; a slow or
//! hostile peer holds up nobody else. When `stop` turns true the listeners
//! stop accepting and every connection shuts down gracefully (GOAWAY: calls
//! in flight finish, new ones go elsewhere).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use lienthong_certs::Fingerprint;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;

/// How long a peer may take to complete a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest header block accepted (the envelope travels in a header).
pub const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Most concurrent calls on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

fn builder() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// A connection's byte stream, whatever carries it (TCP or TLS).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connection ready for HTTP/2, and the peer certificate's fingerprint.
type Upgraded = Option<(Box<dyn Io>, Option<Fingerprint>)>;

/// Accepts connections on `listener` until `stop`; `upgrade` turns each
/// into an HTTP/2 byte stream (or drops it), `handler` answers each request.
fn serve<U, UFut, F, Fut>(
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    upgrade: U,
    handler: F,
    open_connections: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> JoinHandle<()>
where
    U: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> UFut + Clone + Send + Sync + 'static,
    UFut: Future<Output = Upgraded> + Send + 'static,
    F: Fn(Option<Fingerprint>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Some(accepted) = accept(&listener, &stop).await else {
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
            let _ = tcp.set_nodelay(true);
            let (upgrade, handler, stop) = (upgrade.clone(), handler.clone(), stop.clone());
            let open = open_connections.clone();
            tokio::spawn(async move {
                let Some((io, fp)) = upgrade(tcp, peer).await else {
                    return;
                };
                let _counted = open.map(Counted::new);
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(fp, req).await) }
                });
                let conn = builder().serve_connection(TokioIo::new(io), svc);
                if let Err(e) = until_stopped(conn, stop).await {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    })
}

/// Serves h2c on `listener`, each request through `handler`.
pub fn serve_h2c<F, Fut>(
    listener: TcpListener,
    stop: watch::Receiver<bool>,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve(
        listener,
        stop,
        |tcp, _| async move { Some((Box::new(tcp) as Box<dyn Io>, None)) },
        move |_, req| handler(req),
        None,
    )
}

/// Serves HTTP/2 over TLS on `listener`; `handler` also gets the
/// fingerprint of the peer's certificate (verified by `config`).
pub fn serve_tls<F, Fut>(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    stop: watch::Receiver<bool>,
    open_connections: Option<Arc<std::sync::atomic::AtomicU64>>,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Option<Fingerprint>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let handshake = move |tcp, peer: std::net::SocketAddr| {
        let acceptor = acceptor.clone();
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake refused");
                    return None;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return None;
                }
            };
            let fp = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| Fingerprint::of(c));
            Some((Box::new(tls) as Box<dyn Io>, fp))
        }
    };
    serve(listener, stop, handshake, handler, open_connections)
}

/// Counts an open connection while alive.
struct Counted(Arc<std::sync::atomic::AtomicU64>);

impl Counted {
    fn new(c: Arc<std::sync::atomic::AtomicU64>) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Counted(c)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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

/// Drives a connection; when `stop` turns true, shuts it down gracefully.
async fn until_stopped<C>(conn: C, mut stop: watch::Receiver<bool>) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>> + GracefulShutdown,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().shutdown();
            conn.await
        }
    }
}

/// hyper's HTTP/2 connections, shut down gracefully.
trait GracefulShutdown {
    fn shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> GracefulShutdown for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}
