//! The real binary exports spans when, and only when, the standard
//! OpenTelemetry variables ask: `lienthong demo --once` pointed at an
//! in-process OTLP collector.

use std::process::Command;
use std::time::{Duration, Instant};

use lienthong_integration_tests::otlp::{Collector, attr};

#[test]
fn the_demo_exports_linked_spans_to_the_collector_named_by_otel_variables() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, endpoint) = Collector::start(&rt);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--once", "--dir"])
        .arg(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The process flushed its spans before it exited; give the collector
    // a moment to file the last batch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans = collector.spans();
        let providers = spans
            .iter()
            .filter(|(_, s)| s.name == "lienthong provider")
            .count();
        if providers >= 2 || Instant::now() > deadline {
            break spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        spans.iter().all(|(service, _)| service == "lienthong-demo"),
        "service.name defaults to the command"
    );
    // Every provider span has a consumer span of the same trace as parent.
    let providers: Vec<_> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "lienthong provider")
        .collect();
    assert!(providers.len() >= 2, "the scenario's exchanges: {spans:#?}");
    for p in &providers {
        let parent = spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.span_id == p.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {p:#?} arrived"));
        assert_eq!(parent.name, "lienthong consumer");
        assert_eq!(parent.trace_id, p.trace_id);
        assert_eq!(attr(parent, "lt.message_id"), attr(p, "lt.message_id"));
    }
    // The refused, ungranted call is marked with its fault.
    assert!(
        spans.iter().any(
            |(_, s)| attr(s, "lt.fault").as_deref() == Some("server.serverproxy.access_denied")
        ),
        "{spans:#?}"
    );

    // Turned off by the standard switch, nothing is sent (with no
    // endpoint at all, the unit tests of `otlp_requested` show the same).
    let before = collector.spans().len();
    let quiet = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--once", "--dir"])
        .arg(quiet.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(collector.spans().len(), before);
}
