//! A whole federation on loopback: a registry, security servers that joined
//! it through the real registration workflow, a population-registry
//! backend, and a gRPC client that calls through the bus the way an
//! agency's information system does.
//!
//! Agencies: the population registry `VN/GOV/000102` (servers `ss1` and
//! `ss2`, subsystem `population`), the business registry `VN/GOV/000305`
//! (server `ss1`, subsystem `business`) and the tax department
//! `VN/GOV/000201` (server `ss1`, subsystem `tax`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_security_server::access::{AccessRule, Subject};
use lienthong_security_server::join::{self, JoinState};
use lienthong_security_server::store::Backend;
use lienthong_security_server::{SecurityServer, ServerOptions};
use tokio::net::TcpListener;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use crate::registry::TestRegistry;

pub const PERSON_REGISTRY: &str = "population.v1.PersonRegistry";

/// The backend's request and response messages.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PersonRequest {
    #[prost(string, tag = "1")]
    pub personal_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Person {
    #[prost(string, tag = "1")]
    pub personal_id: String,
    #[prost(string, tag = "2")]
    pub full_name: String,
    /// The client the backend was told about (`lt-client`).
    #[prost(string, tag = "3")]
    pub seen_client: String,
}

pub fn member(code: &str) -> MemberId {
    MemberId::new("VN", "GOV", code).expect("valid member")
}
pub fn population() -> SubsystemId {
    member("000102").subsystem("population").expect("valid")
}
pub fn business() -> SubsystemId {
    member("000305").subsystem("business").expect("valid")
}
pub fn tax() -> SubsystemId {
    member("000201").subsystem("tax").expect("valid")
}
/// The national portal, the instance's trace portal.
pub fn portal() -> SubsystemId {
    member("000001").subsystem("portal").expect("valid")
}
/// How long the fixture's withholding grant lets one exchange be withheld.
pub const WITHHOLDING_MAX_SECS: u64 = 365 * 86_400;

/// The withholding group; `tax` is in it.
pub fn investigators() -> lienthong_proto::id::GlobalGroupId {
    "VN/investigators".parse().expect("valid")
}

// === the backend ===

/// A population-registry backend speaking raw gRPC over h2c. Methods:
/// `GetPerson` (unary), `ListRelatives` (3 streamed answers), `Missing`
/// (NOT_FOUND with custom metadata, trailers-only), `Slow` (answers after
/// 3 s), `Huge` (a name of as many bytes as the id says). Counts every call it receives.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    /// The `traceparent` of every call, in order (empty when none came).
    pub traceparents: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn grpc_frame(msg: &impl prost::Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u8(0);
    b.put_u32(body.len() as u32);
    b.put_slice(&body);
    b.freeze()
}

fn ok_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t
}

type BackendBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn backend_call(
    calls: Arc<AtomicUsize>,
    traceparents: Arc<std::sync::Mutex<Vec<String>>>,
    req: Request<Incoming>,
) -> Response<BackendBody> {
    calls.fetch_add(1, Ordering::SeqCst);
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    traceparents.lock().expect("not poisoned").push(traceparent);
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let seen_client = req
        .headers()
        .get("lt-client")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let personal_id = if body.len() >= 5 {
        body.advance(5);
        <PersonRequest as prost::Message>::decode(body)
            .map(|r| r.personal_id)
            .unwrap_or_default()
    } else {
        String::new()
    };
    let person = |i: usize| Person {
        personal_id: format!(
            "{personal_id}{}",
            if i == 0 {
                String::new()
            } else {
                format!("-{i}")
            }
        ),
        full_name: "Nguyễn Văn An".into(),
        seen_client: seen_client.clone(),
    };
    let frames: Vec<Frame<Bytes>> = match method.as_str() {
        "GetPerson" => vec![
            Frame::data(grpc_frame(&person(0))),
            Frame::trailers(ok_trailers()),
        ],
        "ListRelatives" => (1..=3)
            .map(|i| Frame::data(grpc_frame(&person(i))))
            .chain([Frame::trailers(ok_trailers())])
            .collect(),
        // A person whose name is as many bytes as the request's id says.
        "Huge" => {
            let mut p = person(0);
            p.full_name = "x".repeat(personal_id.parse().unwrap_or(0));
            vec![Frame::data(grpc_frame(&p)), Frame::trailers(ok_trailers())]
        }
        "Slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            vec![
                Frame::data(grpc_frame(&person(0))),
                Frame::trailers(ok_trailers()),
            ]
        }
        _ => {
            let mut r = Response::new(Full::new(Bytes::new()).boxed());
            let h = r.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/grpc"));
            h.insert("grpc-status", HeaderValue::from_static("5"));
            h.insert("grpc-message", HeaderValue::from_static("no such person"));
            h.insert(
                "x-registry-note",
                HeaderValue::from_static("checked 2026 archive"),
            );
            return r;
        }
    };
    let stream = tokio_stream::iter(frames.into_iter().map(Ok::<_, Infallible>));
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// Starts the backend on `127.0.0.1:0`.
pub async fn start_backend() -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let traceparents = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (counter, seen) = (calls.clone(), traceparents.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (calls, seen) = (counter.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (calls, seen) = (calls.clone(), seen.clone());
                    async move { Ok::<_, Infallible>(backend_call(calls, seen, req).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    TestBackend {
        addr,
        calls,
        traceparents,
        task,
    }
}

// === security servers ===

/// A security server that joined the federation, and its home.
pub struct Agency {
    pub id: ServerId,
    pub dir: tempfile::TempDir,
    pub provider_addr: SocketAddr,
    pub server: Option<SecurityServer>,
    /// The provider port, held from before the join until the first start.
    reserved: Option<std::net::TcpListener>,
}

impl Agency {
    pub fn server(&self) -> &SecurityServer {
        self.server.as_ref().expect("server is running")
    }

    /// A client of this server's consumer side (an information system).
    pub async fn client(&self) -> InformationSystem {
        let addr = self.server().consumer_addr();
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid")
            .connect()
            .await
            .expect("consumer side reachable");
        InformationSystem { channel }
    }

    /// An information system reaching this server's consumer side over
    /// TLS (the server's auth certificate, checked against the instance
    /// CA), presenting `identity` when given.
    pub async fn tls_client(
        &self,
        reg: &TestRegistry,
        identity: Option<&lienthong_certs::tls::Identity>,
    ) -> Result<InformationSystem, String> {
        let addr = self.server().consumer_addr();
        let config = lienthong_certs::tls::registry_client_config(&anchor_ca(reg), identity)
            .map_err(|e| e.to_string())?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_with_connector(lienthong_certs::net::TlsConnectorService::new(Arc::new(
                config,
            )))
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(InformationSystem { channel })
    }

    /// (Re)starts the server on its directory and provider address.
    pub async fn start(&mut self) {
        self.start_with(lienthong_security_server::consumer::tls::ConsumerTransport::Plain)
            .await
    }

    /// (Re)starts the server with information systems connecting over `transport`.
    pub async fn start_with(
        &mut self,
        transport: lienthong_security_server::consumer::tls::ConsumerTransport,
    ) {
        self.restart_with(|o| o.consumer_transport = transport)
            .await
    }

    /// (Re)starts the server with the fixture's options as `configure`
    /// changes them.
    pub async fn restart_with(&mut self, configure: impl FnOnce(&mut ServerOptions)) {
        self.server = None;
        let mut opts = ServerOptions::new(self.dir.path());
        opts.consumer_listen = "127.0.0.1:0".parse().expect("valid");
        opts.provider_listen = self.provider_addr;
        opts.poll_interval = Some(Duration::from_millis(200));
        opts.admin_listen = Some("127.0.0.1:0".parse().expect("valid"));
        configure(&mut opts);
        let mut reserved = self
            .reserved
            .take()
            .filter(|l| l.local_addr().ok() == Some(self.provider_addr));
        // The server just dropped lets go of its listeners once the runtime
        // drops its aborted tasks, a moment later: until then its provider
        // address is still taken.
        let started = std::time::Instant::now();
        self.server = Some(loop {
            match SecurityServer::start_on(opts.clone(), reserved.take()).await {
                Ok(server) => break server,
                Err(e)
                    if std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<std::io::Error>())
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
                        && started.elapsed() < Duration::from_secs(5) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("server starts: {e:?}"),
            }
        });
    }

    /// Hands over a bound listener for the next start (after a move).
    pub fn reserve(&mut self, listener: std::net::TcpListener) {
        self.reserved = Some(listener);
    }

    /// A token of a new operator `name` of this server (admin port and console).
    pub fn operator_token(
        &self,
        name: &str,
        role: lienthong_security_server::admin::operators::Role,
    ) -> String {
        let store = lienthong_security_server::store::ServerStore::open(
            &lienthong_security_server::keys::ServerDir(self.dir.path().to_owned()).store(),
        )
        .expect("the server's store opens");
        lienthong_security_server::admin::operators::add_operator(&store, name, role)
            .expect("operator added")
    }

    /// Stops the server (an outage).
    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// A listener on a fresh loopback port, held until the server starts.
pub fn reserve_port() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// Joins `server` to the (auto-approving) registry, registers `clients`
/// on it, and starts it.
pub async fn join(reg: &TestRegistry, server: &ServerId, clients: &[SubsystemId]) -> Agency {
    let token = reg
        .officer()
        .await
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some(server.into()),
            valid_seconds: 0,
        })
        .await
        .expect("token")
        .into_inner()
        .token;
    let dir = tempfile::tempdir().expect("tempdir");
    let (reserved, provider_addr) = reserve_port();
    join::submit_join(
        dir.path(),
        &reg.anchor,
        server,
        &provider_addr.to_string(),
        &token,
    )
    .await
    .expect("join submitted");
    assert_eq!(
        join::poll_join(dir.path()).await.expect("poll"),
        JoinState::Approved
    );
    for c in clients {
        let id = join::submit_client(dir.path(), c)
            .await
            .expect("client submitted");
        assert_eq!(
            join::poll_client(dir.path(), id).await.expect("poll"),
            JoinState::Approved
        );
    }
    let mut agency = Agency {
        id: server.clone(),
        dir,
        provider_addr,
        server: None,
        reserved: Some(reserved),
    };
    agency.start().await;
    agency
}

/// The standard federation of the module documentation.
pub struct Federation {
    pub registry: TestRegistry,
    pub backend: TestBackend,
    /// Population's servers ss1 and ss2.
    pub population: Vec<Agency>,
    pub business: Agency,
    pub tax: Agency,
    /// The national portal's server, serving the trace portal subsystem.
    pub portal: Agency,
}

impl Federation {
    /// Starts everything; `business` may call `GetPerson`, `ListRelatives`,
    /// `Missing`, `Slow` and `Huge`; `tax` may call nothing.
    pub async fn start() -> Self {
        Self::start_with(TestRegistry::start(true).await).await
    }

    pub async fn start_with(registry: TestRegistry) -> Self {
        let mut op = registry.officer().await;
        op.add_member_class(pb::AddMemberClassRequest {
            code: "GOV".into(),
            description: "Government".into(),
        })
        .await
        .expect("class");
        for (code, name) in [
            ("000102", "Bộ Công an"),
            ("000305", "Sở Kế hoạch và Đầu tư"),
            ("000201", "Tổng cục Thuế"),
            ("000001", "Cổng Dịch vụ công Quốc gia"),
        ] {
            op.add_member(pb::AddMemberRequest {
                id: Some((&member(code)).into()),
                name: name.into(),
            })
            .await
            .expect("member");
        }
        for s in [population(), business(), tax(), portal()] {
            op.add_subsystem(pb::AddSubsystemRequest {
                id: Some((&s).into()),
            })
            .await
            .expect("subsystem");
        }
        op.set_trace_portal(pb::SetTracePortalRequest {
            portal: Some((&portal()).into()),
        })
        .await
        .expect("trace portal");
        op.add_global_group(pb::AddGlobalGroupRequest {
            id: Some((&investigators()).into()),
            description: "May withhold exchanges from a suspect's trace".into(),
        })
        .await
        .expect("group");
        op.add_group_member(pb::GroupMemberRequest {
            group: Some((&investigators()).into()),
            subsystem: Some((&tax()).into()),
        })
        .await
        .expect("group member");
        op.set_withholding_group(pb::SetWithholdingGroupRequest {
            group: Some((&investigators()).into()),
            max_duration_seconds: WITHHOLDING_MAX_SECS,
            valid_until_unix_ms: 0,
        })
        .await
        .expect("withholding group");
        op.add_service(pb::AddServiceRequest {
            id: Some((&population().service(PERSON_REGISTRY, None).expect("valid")).into()),
            description: "Persons by personal ID".into(),
            personal_data: false,
        })
        .await
        .expect("service");

        let backend = start_backend().await;
        let mut pop = Vec::new();
        for code in ["ss1", "ss2"] {
            pop.push(
                join(
                    &registry,
                    &member("000102").server(code).expect("valid"),
                    &[population()],
                )
                .await,
            );
        }
        let business_agency = join(
            &registry,
            &member("000305").server("ss1").expect("valid"),
            &[business()],
        )
        .await;
        let tax_agency = join(
            &registry,
            &member("000201").server("ss1").expect("valid"),
            &[tax()],
        )
        .await;
        let portal_agency = join(
            &registry,
            &member("000001").server("ss1").expect("valid"),
            &[portal()],
        )
        .await;
        let f = Federation {
            registry,
            backend,
            population: pop,
            business: business_agency,
            tax: tax_agency,
            portal: portal_agency,
        };
        for p in &f.population {
            p.server()
                .set_backend(&Backend {
                    provider: population(),
                    service: PERSON_REGISTRY.into(),
                    url: format!("http://{}", f.backend.addr),
                    timeout: Duration::from_secs(1),
                })
                .expect("backend");
            p.server()
                .grant(&AccessRule {
                    subject: Subject::Subsystem(business()),
                    provider: population(),
                    service: PERSON_REGISTRY.into(),
                    method: None,
                })
                .expect("grant");
        }
        f.refresh_all().await;
        f
    }

    /// Makes every server fetch the newest configuration now.
    pub async fn refresh_all(&self) {
        for a in self.all() {
            if let Some(s) = &a.server {
                let _ = s.conf().refresh().await;
            }
        }
    }

    /// Every agency's server.
    pub fn all(&self) -> impl Iterator<Item = &Agency> {
        self.population
            .iter()
            .chain([&self.business, &self.tax, &self.portal])
    }

    /// Has every running server checkpoint its log now.
    pub async fn checkpoint_all(&self) {
        for a in self.all() {
            if let Some(s) = &a.server {
                s.checkpoint_now().await.expect("checkpoint witnessed");
            }
        }
    }

    /// Asks every server, through the portal's server, about `subject`.
    pub async fn trace(
        &self,
        subject: &str,
    ) -> Result<
        lienthong_security_server::trace::portal::TraceReport,
        lienthong_security_server::trace::portal::TraceError,
    > {
        let portal_server = self.portal.server();
        let view = portal_server.conf().view().expect("configuration");
        let is = self.portal.client().await;
        let identity = lienthong_security_server::keys::auth_identity(
            &lienthong_security_server::keys::ServerDir(self.portal.dir.path().to_owned()),
        )
        .expect("the portal's server joined, so it holds its auth identity");
        let witnessed = lienthong_security_server::trace::portal::Witnessed::ask(
            &self.registry.anchor,
            &identity,
            &view,
        )
        .await;
        lienthong_security_server::trace::portal::trace(
            is.channel,
            &portal(),
            &view,
            &self.registry.anchor,
            subject,
            Duration::from_secs(5),
            &witnessed,
        )
        .await
    }

    /// How many calls reached the backend.
    pub fn backend_calls(&self) -> usize {
        self.backend.calls.load(Ordering::SeqCst)
    }
}

// === the information system ===

/// An agency's information system calling through its security server
/// with tonic's generic client, knowing only the provider's proto.
pub struct InformationSystem {
    pub channel: Channel,
}

/// The metadata an information system adds.
pub fn call_metadata(client: &SubsystemId, provider: &SubsystemId) -> MetadataMap {
    let mut m = MetadataMap::new();
    m.insert("lt-client", client.to_string().parse().expect("ascii"));
    m.insert("lt-service", provider.to_string().parse().expect("ascii"));
    m.insert("lt-user-id", "officer-7".parse().expect("ascii"));
    m.insert(
        "lt-purpose",
        "business registration 2026-114".parse().expect("ascii"),
    );
    m.insert("lt-data-subject", "001099012345".parse().expect("ascii"));
    m
}

impl InformationSystem {
    /// Calls a unary method of the person registry.
    pub async fn unary(
        &self,
        method: &str,
        metadata: MetadataMap,
        personal_id: &str,
    ) -> Result<tonic::Response<Person>, tonic::Status> {
        self.unary_with_deadline(method, metadata, personal_id, None)
            .await
    }

    /// The fixture's standard call: the business registry asks the
    /// population registry for the person 001099012345 with
    /// [`call_metadata`].
    pub async fn business_gets_person(&self) -> Result<tonic::Response<Person>, tonic::Status> {
        self.unary(
            "GetPerson",
            call_metadata(&business(), &population()),
            "001099012345",
        )
        .await
    }

    /// As [`unary`](Self::unary), with a deadline (`grpc-timeout`).
    pub async fn unary_with_deadline(
        &self,
        method: &str,
        metadata: MetadataMap,
        personal_id: &str,
        deadline: Option<Duration>,
    ) -> Result<tonic::Response<Person>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path: http::uri::PathAndQuery = format!("/{PERSON_REGISTRY}/{method}")
            .parse()
            .expect("valid path");
        let mut request = tonic::Request::new(PersonRequest {
            personal_id: personal_id.into(),
        });
        *request.metadata_mut() = metadata;
        if let Some(d) = deadline {
            request.set_timeout(d);
        }
        grpc.unary(request, path, tonic_prost::ProstCodec::default())
            .await
    }

    /// Calls the server-streaming `ListRelatives`, collecting every answer.
    pub async fn stream(
        &self,
        metadata: MetadataMap,
        personal_id: &str,
    ) -> Result<Vec<Person>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path: http::uri::PathAndQuery = format!("/{PERSON_REGISTRY}/ListRelatives")
            .parse()
            .expect("valid path");
        let mut request = tonic::Request::new(PersonRequest {
            personal_id: personal_id.into(),
        });
        *request.metadata_mut() = metadata;
        let mut stream = grpc
            .server_streaming(request, path, tonic_prost::ProstCodec::default())
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(p) = stream.message().await? {
            out.push(p);
        }
        Ok(out)
    }
}

/// The `lt-fault` of a refusal.
pub fn fault_of(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("lt-fault")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned()
}

/// Reads an anchor's CA for raw peers.
pub fn anchor_ca(reg: &TestRegistry) -> rustls_pki_types::CertificateDer<'static> {
    rustls_pki_types::CertificateDer::from(reg.anchor.instance_ca_certificate.clone())
}

// === a raw peer: a security server speaking to a provider directly ===

/// A security server's identity used by hand, to send provider sides
/// requests a well-behaved consumer side never would.
pub struct RawPeer {
    pub keys: lienthong_security_server::keys::Keys,
    channel: Channel,
}

/// The auth certificate fingerprint of an agency's server.
pub fn auth_fingerprint(agency: &Agency) -> lienthong_certs::Fingerprint {
    let dir = lienthong_security_server::keys::ServerDir(agency.dir.path().to_owned());
    let chain = lienthong_certs::pem::read_certs(&dir.auth_cert()).expect("auth certificate");
    lienthong_certs::Fingerprint::of(&chain[0])
}

impl RawPeer {
    /// `from`'s keys, connected to `to`'s provider side with a TLS identity
    /// (by default `from`'s own).
    pub async fn new(
        reg: &TestRegistry,
        from: &Agency,
        to: &Agency,
        identity: Option<lienthong_certs::tls::Identity>,
    ) -> Result<Self, String> {
        let dir = lienthong_security_server::keys::ServerDir(from.dir.path().to_owned());
        let keys = lienthong_security_server::keys::Keys::load(
            &dir,
            &from.id,
            &reg.anchor.instance_ca_certificate,
            std::time::SystemTime::now(),
        )
        .map_err(|e| e.to_string())?;
        let identity = match identity {
            Some(i) => i,
            None => lienthong_certs::tls::Identity {
                chain: keys.auth.chain.clone(),
                key: lienthong_certs::pem::read_key(&dir.auth_key()).map_err(|e| e.to_string())?,
            },
        };
        let trust = lienthong_certs::tls::TrustStore::new(
            lienthong_certs::tls::Trust::new(&[anchor_ca(reg)], [auth_fingerprint(to)])
                .map_err(|e| e.to_string())?,
        );
        let config = lienthong_certs::tls::client_config(&identity, trust, Some(to.id.clone()))
            .map_err(|e| e.to_string())?;
        let channel = Endpoint::from_shared(format!("http://{}", to.provider_addr))
            .map_err(|e| e.to_string())?
            .connect_with_connector(lienthong_certs::net::TlsConnectorService::new(Arc::new(
                config,
            )))
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(RawPeer { keys, channel })
    }

    /// A request header for `client` calling `GetPerson` with `request`.
    pub fn header(
        &self,
        client: &SubsystemId,
        request: &PersonRequest,
    ) -> lienthong_proto::pb::exchange::v1::RequestHeader {
        let payload = grpc_frame(request);
        lienthong_proto::pb::exchange::v1::RequestHeader {
            message_id: lienthong_security_server::consumer::new_message_id(),
            client: Some(client.into()),
            service: Some(lienthong_proto::pb::identifiers::v1::ServiceId {
                provider: Some((&population()).into()),
                service_code: PERSON_REGISTRY.into(),
                version: String::new(),
            }),
            method: "GetPerson".into(),
            user_id: "officer-7".into(),
            purpose: "test".into(),
            data_subject: request.personal_id.clone(),
            created_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_millis() as i64,
            payload_digest: lienthong_proto::sha256(&payload).to_vec(),
            payload_size: payload.len() as u64,
            ..Default::default()
        }
    }

    /// Signs `header` with the key of its client's member held by `from`.
    pub fn sign(
        &self,
        header: lienthong_proto::pb::exchange::v1::RequestHeader,
        member: &MemberId,
    ) -> Vec<u8> {
        let signer = self
            .keys
            .signer(member)
            .expect("this server holds the member's key");
        prost::Message::encode_to_vec(&signer.sign_request(header).expect("signing works"))
    }

    /// Sends `GetPerson(request)` with `envelope` (raw bytes) as `lt-envelope-bin`.
    pub async fn send(
        &self,
        envelope: Option<Vec<u8>>,
        request: PersonRequest,
    ) -> Result<tonic::Response<Person>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(request);
        if let Some(env) = envelope {
            req.metadata_mut().insert_bin(
                "lt-envelope-bin",
                tonic::metadata::MetadataValue::from_bytes(&env),
            );
        }
        let path: http::uri::PathAndQuery = format!("/{PERSON_REGISTRY}/GetPerson")
            .parse()
            .expect("valid path");
        grpc.unary(req, path, tonic_prost::ProstCodec::default())
            .await
    }
}

/// A plain HTTP/1.1 request to an admin port: (status, body).
pub async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    admin_request_as(addr, None, method, path, body).await
}

/// An admin port request with an operator's token ([`Agency::operator_token`]).
pub async fn admin_request_as(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin port reachable");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.expect("request sent");
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.expect("response read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}
