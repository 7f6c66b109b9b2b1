//! The registry's metrics port: `GET /metrics` answers the refusal counts
//! and what this node publishes and serves, in the Prometheus text format;
//! anything else is 404. It answers whoever reaches it: keep it on
//! loopback or a management network.

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

use crate::publisher::Publisher;
use crate::throttle::RefusalCounts;

/// Whether this node publishes, and the version it serves: with several
/// nodes, `sum(lienthong_registry_publishing) == 0` for longer than the
/// lease means no node publishes.
fn publication(p: &Publisher) -> String {
    let current = p.current();
    let version = current.as_ref().map_or(0, |c| c.version);
    let created = current.as_ref().map_or(0, |c| c.created_at_ms / 1000);
    format!(
        "# HELP lienthong_registry_publishing Whether this registry node holds the publisher lease (1) or serves what another node publishes (0).
# TYPE lienthong_registry_publishing gauge
lienthong_registry_publishing {}
# HELP lienthong_registry_configuration_version The configuration version this node serves (0: none yet).
# TYPE lienthong_registry_configuration_version gauge
lienthong_registry_configuration_version {version}
# HELP lienthong_registry_configuration_created_seconds When the configuration this node serves was created (Unix time; 0: none yet).
# TYPE lienthong_registry_configuration_created_seconds gauge
lienthong_registry_configuration_created_seconds {created}
",
        u8::from(p.leading())
    )
}

fn answer(
    counts: &RefusalCounts,
    publisher: &Publisher,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (status, body) = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
        (
            StatusCode::OK,
            counts.prometheus() + &publication(publisher),
        )
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

/// Serves `counts` and `publisher`'s state on `listener` until the task is
/// aborted.
pub fn serve(
    listener: TcpListener,
    counts: Arc<RefusalCounts>,
    publisher: Arc<Publisher>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let (counts, publisher) = (counts.clone(), publisher.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let res = answer(&counts, &publisher, &req);
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
    publisher: Arc<Publisher>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, serve(listener, counts, publisher)))
}
