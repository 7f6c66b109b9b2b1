//! The server's metrics: one Prometheus recorder per server (several
//! servers share a process in tests and in `lienthong demo`), written in
//! the Prometheus text format by `metrics-exporter-prometheus`.
//!
//! Exchanges are counted where every exchange ends — its final log record
//! ([`MeteredLog`]) — so they agree with the log by construction. Values
//! other parts of the server keep (listener counters, the message log's
//! self-audit, the configuration's age) are read when scraped.
//!
//! Every family is described here ([`FAMILIES`]) with its help text, in
//! base units (seconds, bytes), so that `promtool check metrics` is clean.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use metrics::{Histogram, Recorder, SharedString, Unit, counter, gauge};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::message_log::{Appended, CommitHistograms, LogRecord, MessageLog, Phase, Role};
use lienthong_proto::time::unix_ms;

/// The exposition's content type (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the exchange latency histogram, seconds.
const EXCHANGE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];
/// Upper bounds of the group-commit time histogram, seconds.
const COMMIT_BUCKETS: [f64; 10] = [
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0,
];
/// Upper bounds of the histogram of a commit's CPU on an appender's
/// thread, seconds (a lone commit takes about 50–100 µs here).
const COMMIT_CPU_BUCKETS: [f64; 10] = [
    0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.1,
];
/// Upper bounds of the group-commit size histogram, records.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Histograms are drained into their buckets every this many exchanges,
/// so that memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: u64 = 4096;

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every `lienthong_*` family: name, kind, unit, help.
const FAMILIES: &[(&str, Kind, Option<Unit>, &str)] = &[
    (
        "lienthong_build_info",
        Kind::Gauge,
        None,
        "Always 1; the labels name the running build.",
    ),
    (
        "lienthong_exchanges_total",
        Kind::Counter,
        None,
        "Exchanges ended, by side, client, service and fault (empty = success).",
    ),
    (
        "lienthong_exchange_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time from a call's arrival to its end, per side.",
    ),
    (
        "lienthong_log_commits_total",
        Kind::Counter,
        None,
        "Group commits of the message log (one write and fsync each).",
    ),
    (
        "lienthong_log_records_total",
        Kind::Counter,
        None,
        "Records committed to the message log.",
    ),
    (
        "lienthong_log_cpu_seconds_total",
        Kind::Counter,
        Some(Unit::Seconds),
        "CPU time (user and system, whole seconds) of the message log: its own threads, its writer and its indexer, and the commits it makes on the threads of calls awaiting them; beside process_cpu_seconds_total, the log's share of the server's CPU.",
    ),
    (
        "lienthong_log_largest_batch",
        Kind::Gauge,
        None,
        "The most records one group commit has held.",
    ),
    (
        "lienthong_log_index_lag_records",
        Kind::Gauge,
        None,
        "Durable message-log records not yet in its index (built behind the writer).",
    ),
    (
        "lienthong_log_commit_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "Time to write and fsync one group commit.",
    ),
    (
        "lienthong_log_commit_records",
        Kind::Histogram,
        None,
        "Records per group commit.",
    ),
    (
        "lienthong_log_appender_commit_cpu_seconds",
        Kind::Histogram,
        Some(Unit::Seconds),
        "CPU time (user and system) of each group commit made on the thread of the call awaiting it, the log being quiet: the log's work its own threads do not show.",
    ),
    (
        "lienthong_log_audit_records_total",
        Kind::Counter,
        None,
        "Records checked against the tree by the self-audit.",
    ),
    (
        "lienthong_log_audit_mismatches",
        Kind::Gauge,
        None,
        "Distinct stored records or tree nodes found not to match.",
    ),
    (
        "lienthong_log_append_failing",
        Kind::Gauge,
        None,
        "1 while the last append to the message log failed (exchanges are refused).",
    ),
    (
        "lienthong_configuration_version",
        Kind::Gauge,
        None,
        "Version of the global configuration in use.",
    ),
    (
        "lienthong_configuration_age_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Time since the registry created the configuration in use.",
    ),
    (
        "lienthong_configuration_expires_in_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Time until the configuration in use expires (traffic stops then).",
    ),
    (
        "lienthong_auth_certificate_expires_in_seconds",
        Kind::Gauge,
        Some(Unit::Seconds),
        "Time until this server's auth (TLS) certificate expires.",
    ),
    (
        "lienthong_peer_connections",
        Kind::Gauge,
        None,
        "Open TLS connections from other security servers.",
    ),
    (
        "lienthong_open_connections",
        Kind::Gauge,
        None,
        "Connections open on each listener.",
    ),
    (
        "lienthong_connections_refused_total",
        Kind::Counter,
        None,
        "Connections closed unserved: the listener or the peer address held its most connections, or no request came within the header timeout.",
    ),
    (
        "lienthong_tls_refused_total",
        Kind::Counter,
        None,
        "TLS peers refused in the handshake, by fault, SHA-256 fingerprint of the certificate presented (none if none) and address.",
    ),
    (
        "lienthong_calls_shed_total",
        Kind::Counter,
        None,
        "Provider calls shed because their peer had its most calls in progress (server.serverproxy.too_many_calls).",
    ),
    (
        "lienthong_maintenance",
        Kind::Gauge,
        None,
        "1 in maintenance mode (health answers 503 so load balancers drain the server).",
    ),
];

/// The names of every `lienthong_*` family this server can export.
pub fn family_names() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|(name, ..)| *name)
}

/// Exchange counters and latencies, and the recorder everything else is
/// written to when scraped.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Exchange latency, consumer then provider side.
    latency: [Histogram; 2],
    observed: AtomicU64,
    process: metrics_process::Collector,
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

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("lienthong_exchange_seconds".into()),
                &EXCHANGE_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("lienthong_log_commit_seconds".into()),
                    &COMMIT_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("lienthong_log_commit_records".into()),
                    &BATCH_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("lienthong_log_appender_commit_cpu_seconds".into()),
                    &COMMIT_CPU_BUCKETS,
                )
            })
            .expect("the bucket lists are non-empty constants")
            .build_recorder();
        for (name, kind, unit, help) in FAMILIES {
            let (name, help) = ((*name).into(), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(name, *unit, help),
                Kind::Gauge => recorder.describe_gauge(name, *unit, help),
                Kind::Histogram => recorder.describe_histogram(name, *unit, help),
            }
        }
        let process = metrics_process::Collector::default();
        let latency = metrics::with_local_recorder(&recorder, || {
            process.describe();
            gauge!(
                "lienthong_build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "rust_version" => env!("CARGO_PKG_RUST_VERSION"),
            )
            .set(1.0);
            ["consumer", "provider"]
                .map(|side| metrics::histogram!("lienthong_exchange_seconds", "side" => side))
        });
        Metrics {
            handle: recorder.handle(),
            recorder,
            latency,
            observed: AtomicU64::new(0),
            process,
            consumer_listener: Default::default(),
            provider_listener: Default::default(),
            calls_shed: Default::default(),
            log_failing: AtomicBool::new(false),
            log_failure: Mutex::new(None),
        }
    }
}

impl Metrics {
    fn observe(&self, r: &LogRecord) {
        if r.phase == Phase::Request {
            return;
        }
        let (side, latency) = match r.role {
            Role::Consumer => ("consumer", &self.latency[0]),
            Role::Provider => ("provider", &self.latency[1]),
        };
        self.record(|| {
            counter!(
                "lienthong_exchanges_total",
                "side" => side,
                "client" => r.client.clone(),
                "service" => r.service.clone(),
                "fault" => r.fault.clone(),
            )
            .increment(1)
        });
        latency.record(r.duration_us as f64 / 1e6);
        if self.observed.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.handle.run_upkeep();
        }
    }

    /// Runs `f` with this server's recorder behind the `metrics` macros.
    pub(crate) fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// The histograms the message log's group commits are reported to.
    pub fn commit_histograms(&self) -> CommitHistograms {
        self.record(|| CommitHistograms {
            seconds: metrics::histogram!("lienthong_log_commit_seconds"),
            records: metrics::histogram!("lienthong_log_commit_records"),
            appender_cpu_seconds: metrics::histogram!("lienthong_log_appender_commit_cpu_seconds"),
        })
    }

    /// Reads the process's own figures and renders every family.
    pub(crate) fn render(&self) -> String {
        self.record(|| self.process.collect());
        self.handle.render()
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family the server writes is described (HELP and TYPE come
    /// from [`FAMILIES`]), in base units.
    #[test]
    fn every_family_has_help_and_a_base_unit() {
        let m = Metrics::default();
        m.record(|| {
            counter!("lienthong_exchanges_total", "side" => "consumer").increment(1);
            gauge!("lienthong_auth_certificate_expires_in_seconds").set(5.0);
        });
        let text = m.render();
        for family in [
            "lienthong_build_info",
            "lienthong_exchanges_total",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family}: {text}"
            );
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family}: {text}"
            );
        }
        for (name, ..) in FAMILIES {
            assert!(!name.contains("_days") && !name.contains("_ms"), "{name}");
        }
        assert!(text.contains("lienthong_build_info{version=\""), "{text}");
    }
}
