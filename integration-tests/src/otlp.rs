//! An OTLP/gRPC collector in the test process: keeps every span it
//! receives, with its resource's `service.name`.

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span;

/// A running collector.
#[derive(Clone, Default)]
pub struct Collector {
    /// (service.name, span), in arrival order.
    pub spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Collector {
    /// Starts a collector on `127.0.0.1:0` on `rt`; returns it and its
    /// endpoint (`http://…`, for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn start(rt: &tokio::runtime::Runtime) -> (Self, String) {
        let collector = Collector::default();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        rt.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, endpoint)
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// Exports one span of service `marker` to the collector at
    /// `endpoint` and returns once it is filed, with the number of spans
    /// filed before it. An exporter finishes its exports before its
    /// process exits, so after a process has exited, what it sent is
    /// before the marker: a test can then say that nothing arrived
    /// without waiting for a guessed time.
    pub fn mark(&self, rt: &tokio::runtime::Runtime, endpoint: &str, marker: &str) -> usize {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(marker.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: marker.into(),
                        trace_id: vec![1; 16],
                        span_id: vec![1; 8],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        rt.block_on(async {
            TraceServiceClient::connect(endpoint.to_owned())
                .await
                .expect("the collector accepts connections")
                .export(request)
                .await
                .expect("the collector files the marker");
        });
        self.spans()
            .iter()
            .position(|(service, _)| service == marker)
            .expect("the marker is filed before the export returns")
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("not poisoned");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A span's attribute, as text.
pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}
