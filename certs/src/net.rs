//! TLS streams for tonic: a listener whose handshakes run concurrently, and
//! a connector for `tonic::transport::Endpoint::connect_with_connector`.
//!
//! Both set `TCP_NODELAY` (gRPC's small frames otherwise wait on Nagle's
//! algorithm for tens of milliseconds).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use tokio_stream::wrappers::ReceiverStream;

/// How long a peer may take to complete a TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many established connections may wait for the gRPC server to take them.
const ACCEPT_BACKLOG: usize = 128;

/// Accepts TCP connections on `listener` and yields TLS streams, for
/// `tonic::transport::Server::serve_with_incoming`. Each handshake runs in
/// its own task, so a slow or hostile peer holds up nobody else. Failed
/// handshakes are logged (with the reason, never key material) and dropped.
/// The accept loop stops when the returned stream is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<Result<server::TlsStream<TcpStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPT_BACKLOG);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
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
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(DEFAULT_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Connects over TCP and TLS with a fixed client config; a tower service
/// from URI to stream, as tonic's `connect_with_connector` wants. The URI's
/// host and port are dialled; the certificate is checked by the config's
/// verifier (pinning), not against the host name.
#[derive(Clone)]
pub struct TlsConnectorService {
    connector: TlsConnector,
    timeout: Duration,
}

impl TlsConnectorService {
    pub fn new(config: Arc<ClientConfig>) -> Self {
        TlsConnectorService {
            connector: TlsConnector::from(config),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Limits TCP connect plus handshake time (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Dials `host:port` and completes the TLS handshake.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
            ServerName::try_from("lienthong.invalid").expect("static name is valid")
        });
        let connector = self.connector.clone();
        let addr = format!("{host}:{port}");
        let fut = async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            connector.connect(name, tcp).await
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS connect timed out"))?
    }
}

impl tower::Service<http::Uri> for TlsConnectorService {
    type Response = TokioIo<client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            this.connect(&host, port).await.map(TokioIo::new)
        })
    }
}
