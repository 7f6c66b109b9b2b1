//! Logs and distributed traces.
//!
//! Every exchange is one trace: the information system's span (if it sent
//! a W3C `traceparent`), the consumer server's SERVER span, its CLIENT span
//! for the call to the provider server, the provider server's SERVER span
//! and the backend's. The consumer puts its CLIENT span's context into the
//! signed envelope; the provider adopts it as parent and hands its own
//! span's context to the backend in `traceparent`.
//!
//! Spans follow the OpenTelemetry semantic conventions for RPC: named
//! `package.Service/Method`, with `rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`, `server.address` and
//! `server.port` (the provider server called, on the CLIENT span), the side
//! as `lt.side`, and `service.instance.id` = the server's id in the
//! resource when one server runs in the process. The consumer answers the
//! information system with `traceresponse` (W3C Trace Context Level 2) so
//! it can find the trace of a call it did not trace itself.
//!
//! Spans carry the client, service, method, message id, gRPC status and
//! fault code — never payloads, user ids, purposes or data subjects.
//!
//! Spans are exported over OTLP/gRPC only when the standard OpenTelemetry
//! variables ask for it ([`otlp_requested`]); otherwise no span is even
//! built, and the information system's trace context is passed through
//! unchanged.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::metadata::{TRACEPARENT, TRACESTATE};

/// W3C Trace Context Level 2 response header naming the consumer server's
/// span.
pub const TRACERESPONSE: &str = "traceresponse";

/// Which side of an exchange a span is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Consumer,
    Provider,
}

impl Side {
    /// The side's name, as `lt.side` says it.
    pub fn name(self) -> &'static str {
        match self {
            Side::Consumer => "consumer",
            Side::Provider => "provider",
        }
    }
}

/// A new SERVER span for one exchange on one side, named after the side
/// until [`describe`] names it after the method. Disabled (and free)
/// unless spans are exported.
pub fn exchange_span(side: Side, server: &dyn std::fmt::Display) -> Span {
    let name = match side {
        Side::Consumer => "lienthong consumer",
        Side::Provider => "lienthong provider",
    };
    tracing::info_span!(
        target: "lienthong::exchange",
        "exchange",
        otel.name = name,
        otel.kind = "server",
        lt.side = side.name(),
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = tracing::field::Empty,
        rpc.method = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
        lt.server = %server,
        lt.client = tracing::field::Empty,
        lt.message_id = tracing::field::Empty,
        lt.fault = tracing::field::Empty,
    )
}

/// Records what the exchange is (never who it is about), and names the
/// span `package.Service/Method`.
pub fn describe(span: &Span, client: &dyn std::fmt::Display, service: &str, method: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.name", format!("{service}/{method}"));
    span.record("lt.client", tracing::field::display(client));
    span.record("rpc.service", service);
    span.record("rpc.method", method);
}

/// The consumer's CLIENT span for its call to a provider server, a child
/// of the consumer's SERVER span `parent`; its context is what the
/// envelope carries. Disabled when `parent` is.
pub fn client_span(parent: &Span, service: &str, method: &str) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: "lienthong::exchange",
        parent: parent,
        "forward",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        lt.side = Side::Consumer.name(),
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        server.address = tracing::field::Empty,
        server.port = tracing::field::Empty,
        lt.fault = tracing::field::Empty,
    )
}

/// Records the provider server called (`host:port`) on a CLIENT span.
pub fn server_address(span: &Span, address: &str) {
    if span.is_disabled() {
        return;
    }
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (address, None),
    };
    span.record(
        "server.address",
        host.trim_start_matches('[').trim_end_matches(']'),
    );
    if let Some(port) = port {
        span.record("server.port", i64::from(port));
    }
}

/// Records the message id.
pub fn message_id(span: &Span, id: &str) {
    if !span.is_disabled() {
        span.record("lt.message_id", id);
    }
}

/// Records how the exchange ended: the gRPC status and, for a refusal,
/// the fault code.
pub fn outcome(span: &Span, grpc_status: i32, fault: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", grpc_status);
    if !fault.is_empty() {
        span.record("lt.fault", fault);
    }
    if grpc_status != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Makes `span` a child of the W3C trace context the caller sent. Call it
/// before [`propagate`]: a span's parent is fixed once its context is read.
pub fn adopt(span: &Span, traceparent: &str, tracestate: &str) {
    if span.is_disabled() || traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([
        (TRACEPARENT.to_owned(), traceparent.to_owned()),
        (TRACESTATE.to_owned(), tracestate.to_owned()),
    ]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace context naming `span`, as (`traceparent`, `tracestate`), when
/// spans are exported; `None` otherwise (pass the caller's on unchanged).
pub fn propagate(span: &Span) -> Option<(String, String)> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let traceparent = carrier.remove(TRACEPARENT)?;
    Some((traceparent, carrier.remove(TRACESTATE).unwrap_or_default()))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where spans go, when exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otlp {
    /// The collector's OTLP/gRPC endpoint; `None` reads the standard
    /// variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, headers, timeout, compression).
    pub endpoint: Option<String>,
    /// `service.name` of every span.
    pub service_name: String,
    /// `service.instance.id`: the security server's id when the process
    /// runs one server.
    pub instance_id: Option<String>,
}

/// Whether the standard OpenTelemetry variables ask for span export: an
/// OTLP endpoint is set, the SDK is not disabled (`OTEL_SDK_DISABLED`) and
/// the traces exporter (`OTEL_TRACES_EXPORTER`) is OTLP or unset. With
/// `default_service`, the `service.name` unless `OTEL_SERVICE_NAME` says.
pub fn otlp_requested(var: impl Fn(&str) -> Option<String>, default_service: &str) -> Option<Otlp> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return None;
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| !v.trim().eq_ignore_ascii_case("otlp")) {
        return None;
    }
    set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))?;
    Some(Otlp {
        endpoint: None,
        service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()),
        instance_id: None,
    })
}

/// Installed logging and tracing; flushes exported spans when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Drives the exporter's connection, apart from the exchanges'.
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans that ended so far.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Why logging or span export could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("logging is already installed: {0}")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
    #[error("cannot start the span exporter: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("invalid OTLP exporter settings: {0}")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// Installs the process's logging (`filter` as in `RUST_LOG`, to stderr,
/// in colour only when stderr is a terminal) and, with `otlp`, span export for exchanges. Once per process.
pub fn install(
    format: LogFormat,
    filter: &str,
    otlp: Option<Otlp>,
) -> Result<Telemetry, TelemetryError> {
    // Colour only for a person at a terminal: a file or a journal gets
    // plain text, not escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    }
    // Exchange spans are for span export only: log lines would gain
    // nothing from them, and formatting their fields costs every exchange.
    .with_filter(
        tracing_subscriber::EnvFilter::new(filter).add_directive(
            "lienthong::exchange=off"
                .parse()
                .expect("a valid directive"),
        ),
    );

    let (spans, provider, runtime) = match otlp {
        None => (None, None, None),
        Some(otlp) => {
            let (provider, runtime) = otlp_provider(&otlp)?;
            let tracer = provider.tracer("lienthong");
            // Only the conventions' attributes: no code location, thread,
            // target or busy/idle times.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_level(false)
                .with_tracked_inactivity(false)
                .with_filter(
                    tracing_subscriber::filter::Targets::new()
                        .with_target("lienthong::exchange", tracing::Level::INFO),
                );
            (Some(layer), Some(provider), Some(runtime))
        }
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider, runtime })
}

fn otlp_provider(
    otlp: &Otlp,
) -> Result<(SdkTracerProvider, tokio::runtime::Runtime), TelemetryError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(TelemetryError::Runtime)?;
    let exporter = runtime.block_on(async {
        let builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        let builder = match &otlp.endpoint {
            Some(e) => opentelemetry_otlp::WithExportConfig::with_endpoint(builder, e.clone()),
            None => builder,
        };
        builder.build()
    });
    let exporter = exporter.map_err(TelemetryError::Exporter)?;
    let mut resource =
        opentelemetry_sdk::Resource::builder().with_service_name(otlp.service_name.clone());
    if let Some(id) = &otlp.instance_id {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            id.clone(),
        ));
    }
    let resource = resource.build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok((provider, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(otlp_requested(env(&[]), "ss"), None);
        assert_eq!(
            otlp_requested(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), "ss"),
            None
        );
        assert_eq!(
            otlp_requested(env(&[("OTEL_SERVICE_NAME", "x")]), "ss"),
            None
        );
    }

    #[test]
    fn an_endpoint_asks_for_export_unless_disabled() {
        let on = otlp_requested(
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]),
            "lienthong-server",
        );
        assert_eq!(
            on,
            Some(Otlp {
                endpoint: None,
                service_name: "lienthong-server".into(),
                instance_id: None,
            })
        );
        let traces_only = otlp_requested(
            env(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317"),
                ("OTEL_SERVICE_NAME", "ss-population"),
            ]),
            "lienthong-server",
        );
        assert_eq!(traces_only.unwrap().service_name, "ss-population");
        for off in [
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                otlp_requested(
                    env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), off]),
                    "ss"
                ),
                None,
                "{off:?}"
            );
        }
        assert!(
            otlp_requested(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_TRACES_EXPORTER", "otlp")
                ]),
                "ss"
            )
            .is_some()
        );
    }

    #[test]
    fn without_export_spans_are_free_and_context_passes_through() {
        let span = exchange_span(Side::Consumer, &"VN/GOV/1/ss1");
        adopt(
            &span,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "",
        );
        assert!(propagate(&span).is_none());
    }
}
