//! The registry's metrics port: `GET /metrics` answers the refusal counts
//! in the Prometheus text format; anything else is 404. It answers whoever
//! reaches it: keep it on loopback or a management network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::throttle::RefusalCounts;

fn answer(counts: &RefusalCounts, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
        (StatusCode::OK, counts.prometheus())
    } else {
        (
            StatusCode::NOT_FOUND,
            "not found; try GET /metrics\n".to_owned(),
        )
    };
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    res
}

/// Serves `counts` on `listener` until the task is aborted.
pub fn serve(listener: TcpListener, counts: Arc<RefusalCounts>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let counts = counts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let res = answer(&counts, &req);
                    async move { Ok::<_, Infallible>(res) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

/// Binds `addr` and serves the metrics there; returns the bound address.
pub async fn start(
    addr: SocketAddr,
    counts: Arc<RefusalCounts>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, serve(listener, counts)))
}
