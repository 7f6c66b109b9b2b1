//! One exchange is one distributed trace: the information system's span,
//! the consumer server's, the provider server's and the backend's, linked
//! parent to child across both servers, exported over OTLP to a real
//! (in-process) collector.
//!
//! Its own test binary: span export is installed once per process.

use std::time::Duration;

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::otlp::{Collector, Span, attr};
use lienthong_security_server::telemetry::{self, LogFormat, Otlp};

/// (trace id, parent span id) of a `traceparent`.
fn parse_traceparent(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {tp}");
    (parts[1].to_owned(), parts[2].to_owned())
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const IS_SPAN_ID: &str = "00f067aa0ba902b7";

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[test]
fn one_exchange_is_one_trace_across_both_servers() {
    // The collector runs on its own runtime, as a real one would.
    let collector_rt = tokio::runtime::Runtime::new().unwrap();
    let (collector, endpoint) = Collector::start(&collector_rt);

    let telemetry = telemetry::install(
        LogFormat::Text,
        "warn",
        Some(Otlp {
            endpoint: Some(endpoint),
            service_name: "lienthong-test".into(),
            instance_id: None,
        }),
    )
    .expect("telemetry installs");
    assert!(telemetry.exporting());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (traceresponse, backend_traceparent, refused_message, business_server, provider_ports) = rt
        .block_on(async {
            let f = Federation::start().await;
            let is = f.business.client().await;
            let mut md = call_metadata(&business(), &population());
            md.insert(
                "traceparent",
                format!("00-{TRACE_ID}-{IS_SPAN_ID}-01").parse().unwrap(),
            );
            let answer = is
                .unary("GetPerson", md, "001099012345")
                .await
                .expect("the exchange succeeds");
            let traceresponse = answer
                .metadata()
                .get("traceresponse")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .expect("the consumer server answers with traceresponse");
            let backend_traceparent = f.backend.traceparents.lock().unwrap()[0].clone();

            // A refusal on the consumer side is a span with its fault code.
            let refused = is
                .unary(
                    "GetPerson",
                    call_metadata(&population(), &population()),
                    "001099012345",
                )
                .await
                .unwrap_err();
            let provider_ports: Vec<String> = f
                .population
                .iter()
                .map(|a| a.provider_addr.port().to_string())
                .collect();
            (
                traceresponse,
                backend_traceparent,
                fault_of(&refused),
                f.business.id.to_string(),
                provider_ports,
            )
        });
    telemetry.flush();

    // Spans arrive in batches; wait for the consumer's refusal too.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = collector.spans();
        let done = spans.iter().filter(|(_, s)| s.trace_id.len() == 16).count() >= 4
            && spans
                .iter()
                .any(|(_, s)| attr(s, "lt.fault").as_deref() == Some(refused_message.as_str()));
        if done || std::time::Instant::now() > deadline {
            break spans;
        }
        telemetry.flush();
        std::thread::sleep(Duration::from_millis(100));
    };

    let in_trace: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .collect();
    let one = |side: &str, kind: i32| -> &Span {
        let found: Vec<&&Span> = in_trace
            .iter()
            .filter(|s| s.kind == kind && attr(s, "lt.side").as_deref() == Some(side))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {side} span of kind {kind} in the trace: {in_trace:#?}"
        );
        found[0]
    };
    let consumer = one("consumer", SERVER);
    let client = one("consumer", CLIENT);
    let provider = one("provider", SERVER);

    // Information system → consumer server → its call → provider server →
    // backend.
    assert_eq!(hex::encode(&consumer.parent_span_id), IS_SPAN_ID);
    assert_eq!(client.parent_span_id, consumer.span_id);
    assert_eq!(provider.parent_span_id, client.span_id);

    // The RPC conventions: `package.Service/Method`, rpc.*, the provider
    // server called, and nothing of the exporter's own.
    let service = attr(provider, "rpc.service").expect("rpc.service");
    assert!(
        service.contains('.') && service.ends_with("PersonRegistry"),
        "{service}"
    );
    for span in [consumer, client, provider] {
        assert_eq!(span.name, format!("{service}/GetPerson"), "{span:#?}");
        assert_eq!(attr(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attr(span, "rpc.service").as_deref(), Some(service.as_str()));
        assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("0"));
    }
    assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
    let port = attr(client, "server.port").expect("server.port");
    assert!(
        provider_ports.contains(&port),
        "{port} of {provider_ports:?}"
    );
    for (_, span) in &spans {
        for a in &span.attributes {
            assert!(
                ["rpc.", "server.", "lt."]
                    .iter()
                    .any(|p| a.key.starts_with(p)),
                "{} is not a convention's attribute: {span:#?}",
                a.key
            );
        }
    }
    let (backend_trace, backend_parent) = parse_traceparent(&backend_traceparent);
    assert_eq!(backend_trace, TRACE_ID, "the backend is in the same trace");
    assert_eq!(backend_parent, hex::encode(&provider.span_id));
    let (answer_trace, answer_span) = parse_traceparent(&traceresponse);
    assert_eq!(answer_trace, TRACE_ID);
    assert_eq!(answer_span, hex::encode(&consumer.span_id));

    // Each span says which server, client, service and method, and which
    // message — and nothing about the person or the official.
    assert_eq!(attr(consumer, "lt.server"), Some(business_server));
    for span in [consumer, provider] {
        assert_eq!(
            attr(span, "lt.client").as_deref(),
            Some(business().to_string().as_str())
        );
        assert_eq!(
            attr(span, "rpc.method").as_deref(),
            Some("GetPerson"),
            "{span:#?}"
        );
        assert!(attr(span, "rpc.service").is_some_and(|s| s.ends_with("PersonRegistry")));
        assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("0"));
        assert_eq!(attr(consumer, "lt.message_id"), attr(span, "lt.message_id"));
        assert!(attr(span, "lt.message_id").is_some_and(|id| id.len() == 32));
        assert_eq!(attr(span, "lt.fault"), None);
    }
    for (_, span) in &spans {
        let all = format!("{span:?}");
        for secret in ["001099012345", "officer-7", "business registration"] {
            assert!(!all.contains(secret), "{secret} leaked into {span:#?}");
        }
    }
    assert!(
        spans.iter().all(|(service, _)| service == "lienthong-test"),
        "service.name from the settings"
    );

    // The refusal: its own trace, the fault code, an error status.
    let refusal = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| attr(s, "lt.fault").is_some())
        .expect("the refused call has a span");
    assert_eq!(refusal.name, format!("{service}/GetPerson"));
    assert_eq!(attr(refusal, "lt.side").as_deref(), Some("consumer"));
    assert_eq!(
        attr(refusal, "lt.fault").as_deref(),
        Some(refused_message.as_str())
    );
    assert_eq!(refusal.status.as_ref().map(|s| s.code), Some(2), "error");
    drop(rt);
}
