//! The services a security server answers itself, over the bus: the
//! citizens' access trace ([`crate::trace::TraceService`]), operational
//! data ([`crate::operational::OperationalService`]) and the methods a
//! client may call ([`crate::allowed_methods::AllowedMethodsService`]). They are generated
//! tonic services behind one in-process router; a request reaches them only
//! after the provider side's stages (signature, freshness, payload, access,
//! replay, log), with the verified caller in its extensions ([`Caller`]).

use http::{HeaderMap, Request, Response};
use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::allowedmethods::v1::allowed_methods_server::AllowedMethodsServer;
use lienthong_proto::pb::operational::v1::operational_data_server::OperationalDataServer;
use lienthong_proto::pb::trace::v1::access_trace_server::AccessTraceServer;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt;

use crate::allowed_methods::AllowedMethodsService;
use crate::body::Chunks;
use crate::operational::OperationalService;
use crate::trace::TraceService;

/// The client whose signed request a built-in service answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub SubsystemId);

impl Caller {
    /// The verified caller of `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&SubsystemId, tonic::Status> {
        request
            .extensions()
            .get::<Caller>()
            .map(|c| &c.0)
            .ok_or_else(|| tonic::Status::unauthenticated("no verified caller"))
    }
}

/// The built-in services, routed by gRPC path.
#[derive(Debug, Clone)]
pub struct BuiltIn {
    routes: Routes,
}

impl BuiltIn {
    pub fn new(
        trace: TraceService,
        operational: OperationalService,
        allowed_methods: AllowedMethodsService,
    ) -> Self {
        BuiltIn {
            routes: Routes::new(AccessTraceServer::new(trace))
                .add_service(OperationalDataServer::new(operational))
                .add_service(AllowedMethodsServer::new(allowed_methods)),
        }
    }

    /// Answers `client`'s call to `path` (already checked and logged).
    pub async fn call(
        &self,
        client: &SubsystemId,
        path: &str,
        headers: HeaderMap,
        payload: &Chunks,
    ) -> Response<Body> {
        let mut request = Request::new(Body::new(payload.body()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = path.parse().unwrap_or_default();
        *request.headers_mut() = headers;
        request.extensions_mut().insert(Caller(client.clone()));
        match self.routes.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
