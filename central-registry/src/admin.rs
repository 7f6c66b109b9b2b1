//! The registry node's admin port: `GET /health` (200 or 503, the checks
//! as JSON) and `GET /metrics` (the Prometheus text format, written by
//! `metrics-exporter-prometheus`): refused calls, whether this node
//! publishes, the configuration it serves, the build and the process's
//! own figures. `GET` routes answer `HEAD` too; anything else is 404.
//!
//! It answers whoever reaches it and carries no personal data or secret:
//! keep it on loopback or a management network all the same.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Recorder, SharedString, Unit, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::publisher::Publisher;
use crate::store::Store;
use crate::throttle::RefusalCounts;

/// The exposition's content type (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long the store check waits for the database before health fails.
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Every `lienthong_registry_*` family (and the build's): name, kind,
/// unit, help — base units, so that `promtool check metrics` is clean.
const FAMILIES: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        "lienthong_build_info",
        Kind::Gauge,
        None,
        "Always 1; the labels name the running build.",
    ),
    (
        "lienthong_registry_refusals_total",
        Kind::Counter,
        None,
        "Registry calls refused, by method and gRPC code (ResourceExhausted: throttled).",
    ),
    (
        "lienthong_registry_publishing",
        Kind::Gauge,
        None,
        "Whether this registry node holds the publisher lease (1) or serves what another node publishes (0).",
    ),
    (
        "lienthong_registry_configuration_version",
        Kind::Gauge,
        None,
        "The configuration version this node serves (0: none yet).",
    ),
    (
        "lienthong_registry_configuration_created_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "When the configuration this node serves was created (Unix time; 0: none yet).",
    ),
    (
        "lienthong_registry_configuration_expiry_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "When the configuration this node serves expires (Unix time; 0: none yet).",
    ),
];

/// The names of every family this node exports besides `process_*`.
pub fn family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|(name, ..)| *name)
}

/// What the admin port reads: the node's recorder, its refusal counts,
/// its publisher and its store.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    refusals: Arc<RefusalCounts>,
    publisher: Arc<Publisher>,
    store: Arc<dyn Store>,
    /// How long a configuration is valid after its creation.
    validity: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

impl Admin {
    pub fn new(
        refusals: Arc<RefusalCounts>,
        publisher: Arc<Publisher>,
        store: Arc<dyn Store>,
        validity: Duration,
    ) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        for (name, kind, unit, help) in FAMILIES {
            let (name, help) = ((*name).into(), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, *unit, help),
                Kind::Gauge => recorder.describe_gauge(name, *unit, help),
            }
        }
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || {
            process.describe();
            gauge!(
                "lienthong_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "rust_version" => env!("CARGO_PKG_RUST_VERSION"),
            )
            .set(1.0);
        });
        Admin {
            inner: Arc::new(Inner {
                handle: recorder.handle(),
                recorder,
                process,
                refusals,
                publisher,
                store,
                validity,
            }),
        }
    }

    /// Every family, with the values read now.
    pub fn metrics_text(&self) -> String {
        let i = &self.inner;
        let current = i.publisher.current();
        let (version, created_ms) = current
            .as_ref()
            .map_or((0, 0), |c| (c.version, c.created_at_ms));
        metrics::with_local_recorder(&i.recorder, || {
            i.process.collect();
            for ((method, code), n) in i.refusals.snapshot() {
                counter!("lienthong_registry_refusals_total", "method" => method, "code" => code)
                    .absolute(n);
            }
            gauge!("lienthong_registry_publishing").set(u8::from(i.publisher.leading()));
            gauge!("lienthong_registry_configuration_version").set(version as f64);
            gauge!("lienthong_registry_configuration_created_seconds")
                .set((created_ms / 1000) as f64);
            let expiry = if current.is_some() {
                created_ms / 1000 + i.validity.as_secs() as i64
            } else {
                0
            };
            gauge!("lienthong_registry_configuration_expiry_seconds").set(expiry as f64);
        });
        i.handle.render()
    }

    /// The health checks, by name: whether each passes, and why.
    pub async fn health(&self) -> BTreeMap<&'static str, (bool, String)> {
        let i = &self.inner;
        let mut checks = BTreeMap::new();
        let now_ms = lienthong_proto::time::unix_ms(SystemTime::now());
        checks.insert(
            "configuration",
            configuration_check(
                i.publisher.current().map(|c| (c.version, c.created_at_ms)),
                i.validity,
                now_ms,
            ),
        );
        let store = i.store.clone();
        let reached = tokio::time::timeout(
            STORE_CHECK_TIMEOUT,
            tokio::task::spawn_blocking(move || store.settings().map(drop)),
        )
        .await;
        checks.insert(
            "store",
            match reached {
                Ok(Ok(Ok(()))) => (true, "reachable".to_owned()),
                Ok(Ok(Err(e))) => (false, format!("unreachable: {e}")),
                Ok(Err(e)) => (false, format!("the check failed: {e}")),
                Err(_) => (
                    false,
                    format!("no answer within {} s", STORE_CHECK_TIMEOUT.as_secs_f32()),
                ),
            },
        );
        checks.insert(
            "publisher",
            (
                true,
                if i.publisher.leading() {
                    format!("node {} holds the publisher lease", i.publisher.node())
                } else {
                    format!(
                        "node {} serves what the publishing node stores",
                        i.publisher.node()
                    )
                },
            ),
        );
        checks
    }

    /// The admin routes. `GET` routes answer `HEAD` too.
    fn router(self) -> Router {
        Router::new()
            .route("/health", get(health_route))
            .route("/metrics", get(metrics_route))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "not found; the registry's admin port answers GET /health and GET /metrics\n",
                )
            })
            .with_state(self)
    }

    /// Binds `addr` and serves the admin port (HTTP/1.1) there until the
    /// task is aborted; returns the bound address.
    pub async fn start(self, addr: SocketAddr) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let router = self.router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the admin port stopped");
            }
        });
        Ok((bound, task))
    }
}

/// The served configuration's check: there is one, and it has not
/// expired (servers refuse an expired configuration, so a node serving
/// one is as good as down). Pure.
fn configuration_check(
    served: Option<(u64, i64)>,
    validity: Duration,
    now_ms: i64,
) -> (bool, String) {
    let Some((version, created_ms)) = served else {
        return (false, "no configuration published yet".to_owned());
    };
    let left_s = (created_ms + validity.as_millis() as i64 - now_ms) / 1000;
    if left_s <= 0 {
        (
            false,
            format!("version {version} expired {} s ago", -left_s),
        )
    } else {
        (
            true,
            format!("version {version}, valid for {left_s} s more"),
        )
    }
}

/// `/health`'s answer: `{"status":"ok","checks":{"name":{"ok":true,"detail":"…"}}}`.
#[derive(Serialize)]
struct HealthBody<'a> {
    status: &'static str,
    checks: BTreeMap<&'static str, Check<'a>>,
}

#[derive(Serialize)]
struct Check<'a> {
    ok: bool,
    detail: &'a str,
}

async fn health_route(State(admin): State<Admin>) -> Response {
    let checks = admin.health().await;
    let ok = checks.values().all(|(ok, _)| *ok);
    let body = HealthBody {
        status: if ok { "ok" } else { "unhealthy" },
        checks: checks
            .iter()
            .map(|(name, (ok, detail))| (*name, Check { ok: *ok, detail }))
            .collect(),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_route(State(admin): State<Admin>) -> Response {
    match tokio::task::spawn_blocking(move || admin.metrics_text()).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_without_a_configuration_is_unhealthy() {
        let (ok, why) = configuration_check(None, Duration::from_secs(600), 1_000_000);
        assert!(!ok);
        assert!(why.contains("no configuration"), "{why}");
    }

    #[test]
    fn a_configuration_is_healthy_until_it_expires() {
        let validity = Duration::from_secs(600);
        let created = 1_000_000;
        let (ok, why) = configuration_check(Some((7, created)), validity, created + 1_000);
        assert!(ok, "{why}");
        assert!(why.contains("version 7, valid for 599 s more"), "{why}");
        let (ok, why) = configuration_check(Some((7, created)), validity, created + 601_000);
        assert!(!ok);
        assert!(why.contains("version 7 expired 1 s ago"), "{why}");
    }
}
