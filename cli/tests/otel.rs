//! The real binary exports spans when, and only when, the standard
//! OpenTelemetry variables ask: `lienthong demo --once` pointed at an
//! in-process OTLP collector.

use std::process::Command;

use lienthong_integration_tests::otlp::{Collector, Span, attr};

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[test]
fn the_demo_exports_linked_spans_to_the_collector_named_by_otel_variables() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, endpoint) = Collector::start(&rt);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--once", "--log", "debug", "--dir"])
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
    // The process finished its exports before it exited: once a marker
    // sent now is filed, every span it sent is.
    let filed = collector.mark(&rt, &endpoint, "marker");
    let spans = collector.spans()[..filed].to_vec();
    assert!(
        spans.iter().all(|(service, _)| service == "lienthong-demo"),
        "service.name defaults to the command"
    );
    // Every provider SERVER span's parent is the consumer's CLIENT span,
    // whose parent is the consumer's SERVER span, all of one trace and
    // named after the method.
    let parent_of = |child: &Span| -> Span {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.span_id == child.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {child:#?} arrived"))
            .clone()
    };
    let providers: Vec<_> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| attr(s, "lt.side").as_deref() == Some("provider"))
        .collect();
    assert!(providers.len() >= 2, "the scenario's exchanges: {spans:#?}");
    for p in &providers {
        let client = parent_of(p);
        let consumer = parent_of(&client);
        assert_eq!(
            (p.kind, client.kind, consumer.kind),
            (SERVER, CLIENT, SERVER)
        );
        assert_eq!(attr(&client, "lt.side").as_deref(), Some("consumer"));
        assert_eq!(attr(&consumer, "lt.side").as_deref(), Some("consumer"));
        for s in [*p, &client, &consumer] {
            assert_eq!(s.trace_id, p.trace_id);
            assert_eq!(s.name, p.name);
            assert!(p.name.contains('.') && p.name.contains('/'), "{}", p.name);
        }
        assert_eq!(attr(&consumer, "lt.message_id"), attr(p, "lt.message_id"));
    }
    // Neither spans nor log lines (at debug) name the data subject, the
    // purpose or the official the demo's calls carry.
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.lines().count() > 5, "debug logging is on: {logs}");
    // Written to a pipe, not a terminal: no colour codes.
    assert!(!logs.contains('\x1b'), "ANSI escapes in piped logs: {logs}");
    for secret in [
        "001190012345",
        "chuyenvien.hoa",
        "Dang ky doanh nghiep",
        "curiosity",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs: {logs}");
        for (_, s) in &spans {
            assert!(!format!("{s:?}").contains(secret), "{secret} in {s:#?}");
        }
    }
    // The refused, ungranted call is marked with its fault.
    assert!(
        spans.iter().any(
            |(_, s)| attr(s, "lt.fault").as_deref() == Some("server.serverproxy.access_denied")
        ),
        "{spans:#?}"
    );

    // Turned off by the standard switch, nothing is sent (with no
    // endpoint at all, the unit tests of `otlp_requested` show the same):
    // between a marker before the run and one after it, the collector
    // filed nothing.
    let before = collector.mark(&rt, &endpoint, "before the quiet run") + 1;
    let quiet = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(["demo", "--once", "--dir"])
        .arg(quiet.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .expect("binary runs");
    assert!(out.status.success());
    let after = collector.mark(&rt, &endpoint, "after the quiet run");
    assert_eq!(
        after,
        before,
        "sent with OTEL_SDK_DISABLED: {:#?}",
        &collector.spans()[before..after]
    );
}
