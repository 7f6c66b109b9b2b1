//! The admin port: health (`GET /health`, 200 or 503 with the reasons as
//! JSON), Prometheus metrics (`GET /metrics`), the operational data
//! (`GET /operational-data?since_hours=24&limit=100` or `?message_id=…`):
//! per-exchange metadata from the message log as JSON, never payloads or
//! personal IDs — these read without a token, for load balancers and
//! Prometheus on the management network.
//!
//! Everything else is behind an operator's bearer token ([`operators`],
//! made by `lienthong server operator add`): maintenance mode
//! (`POST /maintenance` with body `on` or `off`, admin only: health
//! answers 503 so load balancers drain the server, while calls in flight
//! finish) and the operators' API under `/api/` that the server's console
//! uses ([`api`]): status, clients, services, access rights to grant and
//! revoke, backends to set ([`backends`]), the message log's self-audit
//! and checkpoints ([`log_view`]), the audit log. Keep the port on loopback or a management
//! network all the same.
//!
//! `GET` routes answer `HEAD` too; `/metrics` is the Prometheus text
//! format (see [`metrics`] for the families).

pub mod api;
pub mod backends;
pub mod log_view;
mod metrics;
pub mod operators;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::conf_client::ConfClient;
use crate::message_log::{CommitStats, LogReader};
use crate::operational::OperationalQuery;
use crate::store::ServerStore;
use lienthong_proto::time::unix_ms;

pub use metrics::{CONTENT_TYPE, MeteredLog, Metrics, family_names};

/// What the admin port reads.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub conf: Arc<ConfClient>,
    pub store: Arc<ServerStore>,
    pub reader: Option<Arc<LogReader>>,
    /// The message log's self-audit (none without a log).
    pub audit: Option<Arc<crate::message_log::audit::AuditStatus>>,
    pub commit_stats: Option<Arc<CommitStats>>,
    /// How far the message log's index is behind its durable records.
    pub index_lag: Option<crate::message_log::writer::IndexLag>,
    pub checkpoint_interval: Duration,
    /// How far back operational data is answered.
    pub operational_window: Duration,
    /// Seconds until the auth certificate expires, from its not-after.
    pub auth_not_after: i64,
    pub maintenance: Arc<AtomicBool>,
    /// The provider's access rights and backends, reloaded at once when
    /// an operator changes them here (otherwise within
    /// [`crate::provider::policy::RELOAD_INTERVAL`]).
    pub policies: Option<crate::provider::Policies>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

/// One health check's outcome.
fn check(ok: bool, detail: String) -> (bool, String) {
    (ok, detail)
}

impl Admin {
    /// The health checks, each (ok, detail).
    pub fn health(&self) -> BTreeMap<&'static str, (bool, String)> {
        let now = SystemTime::now();
        let mut checks = BTreeMap::new();
        checks.insert(
            "configuration",
            match self.conf.view() {
                None => check(false, "no configuration downloaded".into()),
                Some(v) if v.is_expired(now) => {
                    check(false, format!("version {} expired", v.version))
                }
                Some(v) => check(
                    true,
                    format!(
                        "version {}, expires in {} s",
                        v.version,
                        (v.expires_at_ms - unix_ms(now)) / 1000
                    ),
                ),
            },
        );
        let days = (self.auth_not_after - unix_ms(now) / 1000) / 86400;
        checks.insert(
            "keys",
            check(
                days >= 0,
                format!("auth certificate valid for {days} more days"),
            ),
        );
        checks.insert(
            "store",
            match self.store.rules_version() {
                Ok(_) => check(true, "readable".into()),
                Err(e) => check(false, e.to_string()),
            },
        );
        checks.insert(
            "message_log",
            match self.metrics.log_failure() {
                None => check(true, "appending".into()),
                Some((at, e)) => check(
                    false,
                    format!(
                        "the last append failed {} s ago ({e}); exchanges are refused with *.log_failed until one succeeds",
                        (unix_ms(now) - at) / 1000
                    ),
                ),
            },
        );
        if let Some(lag) = &self.index_lag {
            let behind = lag.records();
            checks.insert(
                "message_log_index",
                check(
                    behind < INDEX_LAG_ALARM,
                    format!("{behind} durable records not yet indexed"),
                ),
            );
        }
        if let Some(reader) = &self.reader {
            let detail = match (reader.tree_size(), reader.latest_checkpoint()) {
                (Ok(0), _) => check(true, "empty log".into()),
                (Ok(size), Ok(Some(c))) => {
                    let age = (unix_ms(now) - c.witnessed_at_ms) / 1000;
                    let limit = 3 * self.checkpoint_interval.as_secs() as i64 + 60;
                    check(
                        c.tree_size == size || age <= limit,
                        format!(
                            "last witnessed {age} s ago at {} of {size} records",
                            c.tree_size
                        ),
                    )
                }
                (Ok(size), Ok(None)) => {
                    check(size < 10_000, format!("{size} records, none witnessed yet"))
                }
                (Err(e), _) | (_, Err(e)) => check(false, e.to_string()),
            };
            checks.insert("checkpoint", detail);
        }
        if let Some(audit) = &self.audit {
            let r = audit.report();
            checks.insert(
                "log_audit",
                match r.mismatches.first() {
                    None => check(
                        true,
                        format!(
                            "{} records checked against the tree, no mismatch",
                            r.checked
                        ),
                    ),
                    Some(first) => check(
                        false,
                        format!(
                            "{} mismatches between stored records and the tree, first: {first}",
                            r.found
                        ),
                    ),
                },
            );
        }
        if self.maintenance.load(Ordering::Relaxed) {
            checks.insert(
                "maintenance",
                check(false, "draining: maintenance mode".into()),
            );
        }
        checks
    }

    /// The health checks as JSON, 200 when all pass and 503 otherwise.
    fn health_response(&self) -> Response {
        let checks = self.health();
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

    /// Operational data as a JSON array, for `?since_hours=&limit=` or
    /// `?message_id=` (the owner's view: every record in the window).
    pub fn operational_data(
        &self,
        query: &OperationalQuery,
    ) -> Result<String, OperationalDataError> {
        use crate::message_log::leaf::{phase_name, side_name};
        use crate::operational::{Selection, Viewer};
        let reader = self
            .reader
            .as_ref()
            .ok_or(OperationalDataError::NoMessageLog)?;
        let selection =
            Selection::from_query(query, unix_ms(SystemTime::now()), self.operational_window)?;
        let (records, _) = crate::operational::select(reader, &selection, &Viewer::Owner)?;
        let rows: Vec<OperationalRow<'_>> = records
            .iter()
            .map(|l| OperationalRow {
                record: l.record,
                at_unix_ms: l.at_unix_ms,
                side: side_name(l.side),
                phase: phase_name(l.phase),
                message_id: &l.message_id,
                client: &l.client,
                service: &l.service,
                method: &l.method,
                peer: &l.peer,
                payload_size: l.payload_size,
                grpc_status: l.grpc_status,
                fault: &l.fault,
                duration_us: l.duration_us,
            })
            .collect();
        Ok(serde_json::to_string(&rows)?)
    }

    /// Prometheus text exposition: the figures other parts keep are read
    /// now, then every family is rendered.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        m.record(|| self.record_current());
        m.render()
    }

    /// Sets the gauges and counters that are read rather than counted.
    fn record_current(&self) {
        use ::metrics::{counter, gauge};
        if let Some(s) = &self.commit_stats {
            counter!("lienthong_log_commits_total").absolute(s.commits.load(Ordering::Relaxed));
            counter!("lienthong_log_records_total").absolute(s.records.load(Ordering::Relaxed));
            gauge!("lienthong_log_largest_batch")
                .set(s.largest_batch.load(Ordering::Relaxed) as f64);
            use crate::message_log::cpu;
            let threads = cpu::threads_seconds(std::process::id(), cpu::THREADS);
            counter!("lienthong_log_cpu_seconds_total")
                .absolute((threads + s.appender_cpu().as_secs_f64()) as u64);
        }
        if let Some(lag) = &self.index_lag {
            gauge!("lienthong_log_index_lag_records").set(lag.records() as f64);
        }
        if let Some(a) = &self.audit {
            let r = a.report();
            counter!("lienthong_log_audit_records_total").absolute(r.checked);
            gauge!("lienthong_log_audit_mismatches").set(r.found as f64);
        }
        gauge!("lienthong_log_append_failing")
            .set(f64::from(u8::from(self.metrics.log_failure().is_some())));
        let now_ms = unix_ms(SystemTime::now());
        if let Some(v) = self.conf.view() {
            gauge!("lienthong_configuration_version").set(v.version as f64);
            gauge!("lienthong_configuration_age_seconds")
                .set((now_ms - v.created_at_ms) as f64 / 1e3);
            gauge!("lienthong_configuration_expires_in_seconds")
                .set((v.expires_at_ms - now_ms) as f64 / 1e3);
        }
        gauge!("lienthong_auth_certificate_expires_in_seconds")
            .set((self.auth_not_after - now_ms / 1000) as f64);
        gauge!("lienthong_peer_connections").set(self.metrics.provider_listener.open() as f64);
        crate::limits::record_metrics(&[
            ("consumer", &self.metrics.consumer_listener),
            ("provider", &self.metrics.provider_listener),
        ]);
        counter!("lienthong_calls_shed_total")
            .absolute(self.metrics.calls_shed.load(Ordering::Relaxed));
        gauge!("lienthong_maintenance").set(f64::from(u8::from(
            self.maintenance.load(Ordering::Relaxed),
        )));
    }

    /// The admin routes. `GET` routes answer `HEAD` too.
    fn router(self) -> Router {
        Router::new()
            .route("/health", get(|State(a): State<Self>| async move { a.health_response() }))
            .route("/metrics", get(metrics_route))
            .route("/operational-data", get(operational_route))
            .route(
                "/maintenance",
                post(api::maintenance).layer(DefaultBodyLimit::max(16)),
            )
            .route("/api/whoami", get(api::whoami))
            .route("/api/status", get(api::status))
            .route("/api/clients", get(api::clients))
            .route("/api/services", get(api::services))
            .route(
                "/api/access",
                get(api::access)
                    .post(api::change_access)
                    .layer(DefaultBodyLimit::max(4096)),
            )
            .route(
                "/api/backends",
                post(backends::set).layer(DefaultBodyLimit::max(4096)),
            )
            .route("/api/log", get(log_view::log))
            .route("/api/audit", get(api::audit))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "GET /health, GET /metrics, GET /operational-data; with an operator token: POST /maintenance (on|off), /api/…\n",
                )
            })
            .with_state(self)
    }

    /// Serves the admin port (HTTP/1.1) until dropped.
    pub async fn serve(self, listener: TcpListener) -> JoinHandle<()> {
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the admin port stopped");
            }
        })
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

/// One operational-data record as the admin port shows it.
#[derive(Serialize)]
struct OperationalRow<'a> {
    record: u64,
    at_unix_ms: i64,
    side: &'a str,
    phase: &'a str,
    message_id: &'a str,
    client: &'a str,
    service: &'a str,
    method: &'a str,
    peer: &'a str,
    payload_size: u64,
    grpc_status: i32,
    fault: &'a str,
    duration_us: u64,
}

async fn metrics_route(State(admin): State<Admin>) -> Response {
    let text = tokio::task::spawn_blocking(move || admin.metrics_text()).await;
    match text {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn operational_route(
    State(admin): State<Admin>,
    query: Result<Query<OperationalQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{}\n", e.body_text())).into_response(),
    };
    match tokio::task::spawn_blocking(move || admin.operational_data(&query)).await {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(Err(e)) => (e.status(), format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Why operational data was not answered.
#[derive(Debug, thiserror::Error)]
pub enum OperationalDataError {
    #[error("this server keeps no message log")]
    NoMessageLog,
    #[error(transparent)]
    Query(#[from] crate::operational::BadMessageId),
    #[error(transparent)]
    Log(#[from] crate::message_log::LogError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl OperationalDataError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            OperationalDataError::NoMessageLog | OperationalDataError::Query(_) => {
                StatusCode::BAD_REQUEST
            }
            OperationalDataError::Log(_) | OperationalDataError::Json(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// Where the admin port listens unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9095";

/// Durable records not yet in the message log's index at which health
/// fails: the indexer follows within a second at full load, so a lag this
/// large means it stopped (a record that does not open, a full disk).
pub const INDEX_LAG_ALARM: u64 = 100_000;
