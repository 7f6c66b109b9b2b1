//! The admin port: health (`GET /health`, 200 or 503 with the reasons as
//! JSON), Prometheus metrics (`GET /metrics`), and maintenance mode
//! (`POST /maintenance` with body `on` or `off`: health answers 503 so load
//! balancers drain the server, while calls in flight finish), and the
//! operational data (`GET /operational-data?since_hours=24&limit=100` or
//! `?message_id=…`): per-exchange metadata from the message log as JSON,
//! never payloads or personal IDs. The port answers whoever reaches it:
//! keep it on loopback or a management network.
//!
//! Metrics are counted where every exchange ends — its final log record
//! ([`MeteredLog`]) — so they agree with the log by construction.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::conf_client::ConfClient;
use crate::conf_client::view::unix_ms;
use crate::message_log::{Appended, CommitStats, LogReader, LogRecord, MessageLog, Phase, Role};
use crate::message_log::{BATCH_BUCKETS, COMMIT_BUCKETS_US};
use crate::store::ServerStore;

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// The labels of an exchange counter: side, client, service, fault.
type ExchangeKey = (&'static str, String, String, String);

/// Exchange counters and latencies.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (side, client, service, fault) → exchanges ended.
    exchanges: Mutex<HashMap<ExchangeKey, u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// The consumer port's connections and refusals.
    pub consumer_listener: Arc<crate::limits::ListenerStats>,
    /// The provider port's connections and refusals.
    pub provider_listener: Arc<crate::limits::ListenerStats>,
    /// Provider calls shed for their peer's concurrency limit.
    pub calls_shed: Arc<AtomicU64>,
    /// Whether the last append to the message log failed.
    log_failing: AtomicBool,
    /// When (unix ms) and why the last append failed.
    log_failure: Mutex<Option<(i64, String)>>,
}

impl Metrics {
    fn observe(&self, r: &LogRecord) {
        if r.phase == Phase::Request {
            return;
        }
        let side = match r.role {
            Role::Consumer => "consumer",
            Role::Provider => "provider",
        };
        let key = (side, r.client.clone(), r.service.clone(), r.fault.clone());
        *lock(&self.exchanges).entry(key).or_default() += 1;
        lock(&self.latency)
            .entry(side)
            .or_default()
            .observe(r.duration_us as f64 / 1e6);
    }

    /// Notes an append's outcome: a failure stands until an append succeeds.
    fn appended(&self, outcome: &Result<(), crate::message_log::LogError>) {
        match outcome {
            Ok(()) => {
                if self.log_failing.swap(false, Ordering::Relaxed) {
                    *lock(&self.log_failure) = None;
                    tracing::info!("message log appends again");
                }
            }
            Err(e) => {
                *lock(&self.log_failure) = Some((unix_ms(SystemTime::now()), e.0.clone()));
                self.log_failing.store(true, Ordering::Relaxed);
            }
        }
    }

    /// When (unix ms) and why the last append failed, if it did.
    pub fn log_failure(&self) -> Option<(i64, String)> {
        if !self.log_failing.load(Ordering::Relaxed) {
            return None;
        }
        lock(&self.log_failure).clone()
    }
}

/// Writes one Prometheus histogram: cumulative `buckets` (upper bound,
/// count), then +Inf, sum and count; `labels` ends with a comma if any.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: impl Iterator<Item = (String, u64)>,
    count: u64,
    sum: f64,
) {
    for (le, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let plain = labels.trim_end_matches(',');
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        }
    };
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(plain));
    let _ = writeln!(out, "{name}_count{} {count}", braces(plain));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A message log that also counts exchanges.
pub struct MeteredLog {
    inner: Arc<dyn MessageLog>,
    metrics: Arc<Metrics>,
}

impl MeteredLog {
    pub fn new(inner: Arc<dyn MessageLog>, metrics: Arc<Metrics>) -> Self {
        MeteredLog { inner, metrics }
    }
}

impl MessageLog for MeteredLog {
    fn append(&self, record: LogRecord) -> Appended {
        self.metrics.observe(&record);
        let (appended, metrics) = (self.inner.append(record), self.metrics.clone());
        Box::pin(async move {
            let outcome = appended.await;
            metrics.appended(&outcome);
            outcome
        })
    }
}

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
    pub checkpoint_interval: Duration,
    /// How far back operational data is answered.
    pub operational_window: Duration,
    /// Seconds until the auth certificate expires, from its not-after.
    pub auth_not_after: i64,
    pub maintenance: Arc<AtomicBool>,
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

    fn health_response(&self) -> Response<Full<Bytes>> {
        let checks = self.health();
        let ok = checks.values().all(|(ok, _)| *ok);
        let mut json = format!(
            "{{\"status\":\"{}\",\"checks\":{{",
            if ok { "ok" } else { "unhealthy" }
        );
        for (i, (name, (ok, detail))) in checks.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let _ = write!(
                json,
                "\"{name}\":{{\"ok\":{ok},\"detail\":\"{}\"}}",
                detail.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        json.push_str("}}");
        let mut r = Response::new(Full::new(Bytes::from(json)));
        *r.status_mut() = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }

    /// Operational data as a JSON array, for `?since_hours=&limit=` or
    /// `?message_id=` (the owner's view: every record in the window).
    pub fn operational_data(&self, query: &str) -> Result<String, String> {
        use crate::message_log::leaf::{phase_name, side_name};
        use crate::operational::{Selection, Viewer};
        let reader = self
            .reader
            .as_ref()
            .ok_or("this server keeps no message log")?;
        let selection =
            Selection::from_query(query, unix_ms(SystemTime::now()), self.operational_window)?;
        let (records, _) = crate::operational::select(reader, &selection, &Viewer::Owner)
            .map_err(|e| e.to_string())?;
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("[");
        for l in &records {
            if out.len() > 1 {
                out.push(',');
            }
            let side = side_name(l.side);
            let phase = phase_name(l.phase);
            let _ = write!(
                out,
                "{{\"record\":{},\"at_unix_ms\":{},\"side\":\"{side}\",\"phase\":\"{phase}\",\"message_id\":\"{}\",\"client\":\"{}\",\"service\":\"{}\",\"method\":\"{}\",\"peer\":\"{}\",\"payload_size\":{},\"grpc_status\":{},\"fault\":\"{}\",\"duration_us\":{}}}",
                l.record,
                l.at_unix_ms,
                esc(&l.message_id),
                esc(&l.client),
                esc(&l.service),
                esc(&l.method),
                esc(&l.peer),
                l.payload_size,
                l.grpc_status,
                esc(&l.fault),
                l.duration_us
            );
        }
        out.push(']');
        Ok(out)
    }

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str("# HELP lienthong_exchanges_total Exchanges ended, by side, client, service and fault (empty = success).\n# TYPE lienthong_exchanges_total counter\n");
        for ((side, client, service, fault), n) in lock(&self.metrics.exchanges).iter() {
            let _ = writeln!(
                out,
                "lienthong_exchanges_total{{side=\"{side}\",client=\"{}\",service=\"{}\",fault=\"{}\"}} {n}",
                label(client),
                label(service),
                label(fault)
            );
        }
        out.push_str("# HELP lienthong_exchange_seconds Time from a call's arrival to its end, per side.\n# TYPE lienthong_exchange_seconds histogram\n");
        for (side, h) in lock(&self.metrics.latency).iter() {
            histogram(
                &mut out,
                "lienthong_exchange_seconds",
                &format!("side=\"{side}\","),
                BUCKETS.iter().map(|b| b.to_string()).zip(h.counts),
                h.count,
                h.sum,
            );
        }
        if let Some(s) = &self.commit_stats {
            let _ = writeln!(
                out,
                "# TYPE lienthong_log_commits_total counter\nlienthong_log_commits_total {}",
                s.commits.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "# TYPE lienthong_log_records_total counter\nlienthong_log_records_total {}",
                s.records.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "# TYPE lienthong_log_largest_batch gauge\nlienthong_log_largest_batch {}",
                s.largest_batch.load(Ordering::Relaxed)
            );
            let commits = s.commits.load(Ordering::Relaxed);
            out.push_str("# HELP lienthong_log_commit_seconds Time to write and fsync one group commit.\n# TYPE lienthong_log_commit_seconds histogram\n");
            histogram(
                &mut out,
                "lienthong_log_commit_seconds",
                "",
                COMMIT_BUCKETS_US
                    .iter()
                    .map(|us| (*us as f64 / 1e6).to_string())
                    .zip(s.commit_buckets.iter().map(|n| n.load(Ordering::Relaxed))),
                commits,
                s.commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            );
            out.push_str("# HELP lienthong_log_commit_records Records per group commit.\n# TYPE lienthong_log_commit_records histogram\n");
            histogram(
                &mut out,
                "lienthong_log_commit_records",
                "",
                BATCH_BUCKETS
                    .iter()
                    .map(u64::to_string)
                    .zip(s.batch_buckets.iter().map(|n| n.load(Ordering::Relaxed))),
                commits,
                s.records.load(Ordering::Relaxed) as f64,
            );
        }
        if let Some(a) = &self.audit {
            let r = a.report();
            let _ = writeln!(
                out,
                "# HELP lienthong_log_audit_records_total Records checked against the tree by the self-audit.\n# TYPE lienthong_log_audit_records_total counter\nlienthong_log_audit_records_total {}",
                r.checked
            );
            let _ = writeln!(
                out,
                "# HELP lienthong_log_audit_mismatches Distinct stored records or tree nodes found not to match.\n# TYPE lienthong_log_audit_mismatches gauge\nlienthong_log_audit_mismatches {}",
                r.found
            );
        }
        let now_ms = unix_ms(SystemTime::now());
        if let Some(v) = self.conf.view() {
            let _ = writeln!(
                out,
                "# TYPE lienthong_configuration_version gauge\nlienthong_configuration_version {}",
                v.version
            );
            let _ = writeln!(
                out,
                "# TYPE lienthong_configuration_age_seconds gauge\nlienthong_configuration_age_seconds {}",
                (now_ms - v.created_at_ms) / 1000
            );
            let _ = writeln!(
                out,
                "# TYPE lienthong_configuration_expires_in_seconds gauge\nlienthong_configuration_expires_in_seconds {}",
                (v.expires_at_ms - now_ms) / 1000
            );
        }
        let _ = writeln!(
            out,
            "# TYPE lienthong_auth_certificate_expires_in_days gauge\nlienthong_auth_certificate_expires_in_days {}",
            (self.auth_not_after - now_ms / 1000) / 86400
        );
        let _ = writeln!(
            out,
            "# HELP lienthong_peer_connections Open TLS connections from other security servers.\n# TYPE lienthong_peer_connections gauge\nlienthong_peer_connections {}",
            self.metrics.provider_listener.open()
        );
        crate::limits::write_metrics(
            &mut out,
            &[
                ("consumer", &self.metrics.consumer_listener),
                ("provider", &self.metrics.provider_listener),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP lienthong_calls_shed_total Provider calls shed because their peer had its most calls in progress (server.serverproxy.too_many_calls).\n# TYPE lienthong_calls_shed_total counter\nlienthong_calls_shed_total {}",
            self.metrics.calls_shed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE lienthong_maintenance gauge\nlienthong_maintenance {}",
            u8::from(self.maintenance.load(Ordering::Relaxed))
        );
        out
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/health") => self.health_response(),
            (&Method::GET, "/metrics") => text(StatusCode::OK, self.metrics_text()),
            (&Method::GET, "/operational-data") => {
                let query = req.uri().query().unwrap_or("").to_owned();
                let this = self.clone();
                match tokio::task::spawn_blocking(move || this.operational_data(&query)).await {
                    Ok(Ok(json)) => {
                        let mut r = text(StatusCode::OK, json);
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        r
                    }
                    Ok(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                }
            }
            (&Method::POST, "/maintenance") => {
                let body = http_body_util::Limited::new(req.into_body(), 16)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                match body.as_ref() {
                    b"on" => {
                        self.maintenance.store(true, Ordering::Relaxed);
                        tracing::warn!("maintenance mode on: health answers 503");
                        text(StatusCode::OK, "maintenance on\n".into())
                    }
                    b"off" => {
                        self.maintenance.store(false, Ordering::Relaxed);
                        tracing::info!("maintenance mode off");
                        text(StatusCode::OK, "maintenance off\n".into())
                    }
                    _ => text(StatusCode::BAD_REQUEST, "send `on` or `off`\n".into()),
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "GET /health, GET /metrics, GET /operational-data, POST /maintenance (on|off)\n"
                    .into(),
            ),
        }
    }

    /// Serves the admin port (HTTP/1.1) until dropped.
    pub async fn serve(self, listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let admin = self.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(admin.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        })
    }
}

/// Where the admin port listens unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9095";
