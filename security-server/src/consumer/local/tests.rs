use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::UNIX_EPOCH;

use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use prost::Message;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use super::*;

const SERVING: i32 = health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = health_check_response::ServingStatus::NotServing as i32;

/// A configuration in force until `expires_in_ms` from now.
fn view(expires_in_ms: i64) -> Arc<ConfView> {
    let now = SystemTime::now();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let conf = GlobalConfiguration {
        instance: "VN-TEST".into(),
        version: 7,
        created_at_unix_ms: now_ms - 1_000,
        expires_at_unix_ms: now_ms + expires_in_ms,
        ..Default::default()
    };
    Arc::new(ConfView::build(&conf, now).unwrap())
}

/// The local services as a gRPC channel, in process (no sockets).
#[derive(Clone)]
struct InProcess(Arc<LocalServices>);

impl tower::Service<Request<Body>> for InProcess {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let local = self.0.clone();
        Box::pin(async move { Ok(local.call(req).await) })
    }
}

fn start(
    view: Option<Arc<ConfView>>,
    sets: &[Vec<u8>],
) -> (watch::Sender<Option<Arc<ConfView>>>, InProcess) {
    let (views, receiver) = watch::channel(view);
    let local = LocalServices::start(receiver, sets).unwrap();
    (views, InProcess(Arc::new(local)))
}

fn request(path: &str, lt_service: Option<&str>) -> Request<()> {
    let mut r = Request::builder().uri(path);
    if let Some(s) = lt_service {
        r = r.header(metadata::SERVICE, s);
    }
    r.body(()).unwrap()
}

#[test]
fn only_local_services_naming_no_provider_are_claimed() {
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        assert!(LocalServices::claims(&request(path, None)), "{path}");
        assert!(
            !LocalServices::claims(&request(path, Some("VN/GOV/000102/population"))),
            "{path} naming a provider goes over the bus"
        );
    }
    for path in [
        "/population.v1.PersonRegistry/GetPerson",
        "/grpc.health.v1.Health",
        "/grpc.health.v1.HealthX/Check",
        "/",
    ] {
        assert!(!LocalServices::claims(&request(path, None)), "{path}");
    }
}

async fn overall(client: &mut HealthClient<InProcess>) -> i32 {
    let check = HealthCheckRequest {
        service: String::new(),
    };
    client.check(check).await.unwrap().into_inner().status
}

#[tokio::test]
async fn serving_exactly_while_the_configuration_is_current() {
    let (views, channel) = start(None, &[]);
    let mut client = HealthClient::new(channel);
    let mut watch = client
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("a status change arrives")
            .unwrap()
            .unwrap()
            .status
    };
    // No configuration yet: exchanges would be refused.
    let mut first = next().await;
    if first == SERVING {
        // The reporter's initial state, before the follower's first word.
        first = next().await;
    }
    assert_eq!(first, NOT_SERVING);
    assert_eq!(overall(&mut client).await, NOT_SERVING);

    // A configuration that expires shortly: serving, then not, unasked.
    views.send_replace(Some(view(400)));
    assert_eq!(next().await, SERVING);
    assert_eq!(next().await, NOT_SERVING);
    assert_eq!(overall(&mut client).await, NOT_SERVING);

    views.send_replace(Some(view(600_000)));
    assert_eq!(next().await, SERVING);
    assert_eq!(overall(&mut client).await, SERVING);
}

/// The fields of `google.protobuf.FileDescriptorSet` a reflection listing
/// needs: one file with one service.
#[derive(Clone, PartialEq, prost::Message)]
struct FileSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<File>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct File {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "6")]
    service: Vec<Service>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Service {
    #[prost(string, tag = "1")]
    name: String,
}

fn descriptor_set(package: &str, service: &str) -> Vec<u8> {
    FileSet {
        file: vec![File {
            name: format!("{package}.proto"),
            package: package.into(),
            service: vec![Service {
                name: service.into(),
            }],
        }],
    }
    .encode_to_vec()
}

async fn listed(channel: InProcess) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_lists_health_itself_and_the_descriptor_sets_services() {
    let (_views, channel) = start(Some(view(600_000)), &[]);
    assert_eq!(
        listed(channel).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
    let sets = [
        descriptor_set("population.v1", "PersonRegistry"),
        descriptor_set("tax.v1", "TaxRegistry"),
    ];
    let (_views, channel) = start(Some(view(600_000)), &sets);
    assert_eq!(
        listed(channel).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "population.v1.PersonRegistry",
            "tax.v1.TaxRegistry",
        ]
    );
}

#[test]
fn descriptor_sets_are_read_in_name_order_and_garbage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join(DESCRIPTORS_DIR);
    assert!(read_descriptor_sets(&missing).unwrap().is_empty());
    std::fs::create_dir(&missing).unwrap();
    let tax = descriptor_set("tax.v1", "TaxRegistry");
    let population = descriptor_set("population.v1", "PersonRegistry");
    std::fs::write(missing.join("b-tax.binpb"), &tax).unwrap();
    std::fs::write(missing.join("a-population.protoset"), &population).unwrap();
    std::fs::write(missing.join("notes.txt"), b"not a descriptor set").unwrap();
    assert_eq!(read_descriptor_sets(&missing).unwrap(), [population, tax]);
    std::fs::write(missing.join("c-broken.pb"), b"\xff\xff\xff").unwrap();
    let e = read_descriptor_sets(&missing).unwrap_err();
    assert!(
        matches!(&e, LocalServiceError::NotADescriptorSet { path, .. } if path.ends_with("c-broken.pb")),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("c-broken.pb: not a protobuf descriptor set"),
        "{e}"
    );
}

/// A current configuration in which the population registry offers its
/// PersonRegistry with `set` in the catalogue, held when `held`.
fn view_with_catalogue(set: &[u8], held: bool) -> Arc<ConfView> {
    use lienthong_proto::catalogue::DescriptorSet;
    use lienthong_proto::id::SubsystemId;
    use lienthong_proto::pb::globalconf::v1::Service as ServiceEntry;
    let population: SubsystemId = "VN-TEST/GOV/000102/population".parse().unwrap();
    let now = SystemTime::now();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let conf = GlobalConfiguration {
        instance: "VN-TEST".into(),
        version: 8,
        created_at_unix_ms: now_ms - 1_000,
        expires_at_unix_ms: now_ms + 600_000,
        services: vec![ServiceEntry {
            id: Some(
                (&population
                    .service("population.v1.PersonRegistry", None)
                    .unwrap())
                    .into(),
            ),
            descriptor_set_sha256: lienthong_proto::sha256(set).to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let conf_view = ConfView::build(&conf, now).unwrap();
    let mut sets = std::collections::BTreeMap::new();
    if held {
        let parsed = DescriptorSet::parse(set.to_vec()).unwrap();
        sets.insert(parsed.sha256(), parsed);
    }
    Arc::new(conf_view.with_descriptor_sets(&sets))
}

#[tokio::test]
async fn reflection_follows_the_catalogue_of_the_configuration_in_force() {
    let population = descriptor_set("population.v1", "PersonRegistry");
    let tax = descriptor_set("tax.v1", "TaxRegistry");
    let own = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "tax.v1.TaxRegistry",
    ];
    // Not held yet (still downloading): not listed.
    let (views, channel) = start(
        Some(view_with_catalogue(&population, false)),
        std::slice::from_ref(&tax),
    );
    assert_eq!(listed(channel.clone()).await, own);

    // Held: listed beside the server's own descriptors, and described.
    views.send_replace(Some(view_with_catalogue(&population, true)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listed(channel.clone()).await.len() != 4 {
        assert!(tokio::time::Instant::now() < deadline, "never listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        listed(channel.clone()).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "population.v1.PersonRegistry",
            "tax.v1.TaxRegistry",
        ]
    );
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "population.v1.PersonRegistry".into(),
        )),
    };
    let answer = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        panic!("no file: {answer:?}");
    };
    let file = File::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name, "population.v1.proto");

    // A configuration without it: no longer listed.
    views.send_replace(Some(view(600_000)));
    while listed(channel.clone()).await.len() != 3 {
        assert!(tokio::time::Instant::now() < deadline, "still listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed(channel).await, own);
}
