//! The service catalogue: an officer publishes a service's descriptor set
//! with the registry, the signed configuration names it by digest, every
//! security server downloads and checks it, and the consumer port's
//! reflection lists and describes the service with no `.proto` at hand;
//! a provider's server tells a client which of its methods it may call
//! (AllowedMethods, over the bus).

use lienthong_integration_tests::federation::*;
use lienthong_proto::pb::allowedmethods::v1::ListAllowedMethodsRequest;
use lienthong_proto::pb::allowedmethods::v1::allowed_methods_client::AllowedMethodsClient;
use lienthong_proto::pb::registry::v1 as pb;
use prost::Message;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The demo's population and tax services, compiled from their `.proto`
/// files as `protoc --include_imports --descriptor_set_out` would.
fn demo_descriptor_set() -> Vec<u8> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../cli/proto");
    protox::compile(
        ["population/v1/population.proto", "tax/v1/tax.proto"],
        [root],
    )
    .expect("the demo's .proto files compile")
    .encode_to_vec()
}

/// One reflection question, as grpcurl asks it, with `lt-client` as the
/// issue's grpcurl command sends it.
async fn reflect(channel: Channel, question: MessageRequest) -> MessageResponse {
    let mut request = tonic::Request::new(tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    }]));
    request
        .metadata_mut()
        .insert("lt-client", business().to_string().parse().unwrap());
    ServerReflectionClient::new(channel)
        .server_reflection_info(request)
        .await
        .expect("reflection answers")
        .into_inner()
        .message()
        .await
        .expect("an answer")
        .expect("one answer")
        .message_response
        .expect("a response")
}

async fn listed(channel: Channel) -> Vec<String> {
    let MessageResponse::ListServicesResponse(list) =
        reflect(channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

/// The `google.protobuf.FileDescriptorProto` fields a description shows.
#[derive(Clone, PartialEq, prost::Message)]
struct FileDescription {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescription>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceDescription {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescription>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MethodDescription {
    #[prost(string, tag = "1")]
    name: String,
}

async fn describe(
    op: &mut lienthong_registry_client::OperatorClient,
    service: &str,
    descriptor_set: Vec<u8>,
) -> Result<pb::OperatorReply, tonic::Status> {
    op.describe_service(pb::DescribeServiceRequest {
        id: Some((&population().service(service, None).unwrap()).into()),
        descriptor_set,
    })
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_descriptor_set_is_listed_and_described_on_every_consumer_port() {
    let f = Federation::start().await;
    let mut op = f.registry.officer().await;

    // What is no usable descriptor set is refused, saying why, and audited.
    let garbage = describe(&mut op, PERSON_REGISTRY, b"syntax = \"proto3\";".to_vec())
        .await
        .expect_err("a .proto file is no descriptor set");
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    assert!(
        garbage.message().contains("not a protobuf descriptor set")
            && garbage.message().contains("--descriptor_set_out"),
        "{garbage:?}"
    );
    let too_large = describe(&mut op, PERSON_REGISTRY, vec![0; 1024 * 1024 + 1])
        .await
        .expect_err("too large");
    assert!(
        too_large.message().contains("at most 1048576"),
        "{too_large:?}"
    );
    let wrong = describe(&mut op, "population.v1.Households", demo_descriptor_set())
        .await
        .expect_err("not a registered service");
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument, "{wrong:?}");
    assert!(
        wrong
            .message()
            .contains("does not define population.v1.Households (it defines population.v1.PersonRegistry, tax.v1.TaxRegistry)"),
        "{wrong:?}"
    );

    // Before: the consumer port lists only itself.
    let channel = f.business.client().await.channel;
    assert_eq!(
        listed(channel.clone()).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );

    let set = demo_descriptor_set();
    let digest = lienthong_proto::sha256(&set);
    let reply = describe(&mut op, PERSON_REGISTRY, set)
        .await
        .expect("published");
    assert!(reply.configuration_version > 0);
    let audit = op
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r.action == "DescribeService")
        .map(|r| (r.result.as_str(), r.detail.as_str()))
        .collect();
    assert_eq!(
        actions.len(),
        4,
        "three refusals and the change: {actions:?}"
    );
    assert!(
        actions.iter().any(|(result, detail)| *result == "ok"
            && detail.contains(&hex::encode(digest))
            && detail.contains("defining population.v1.PersonRegistry, tax.v1.TaxRegistry")),
        "{actions:?}"
    );

    // The configuration names it by digest, and is signed: servers take it
    // with their next poll and download the set.
    let conf = op
        .get_current_configuration(pb::GetCurrentConfigurationRequest {})
        .await
        .unwrap()
        .into_inner();
    let entry = conf
        .services
        .iter()
        .find(|s| {
            s.id.as_ref()
                .is_some_and(|i| i.service_code == PERSON_REGISTRY)
        })
        .unwrap();
    assert_eq!(entry.descriptor_set_sha256, digest);
    f.refresh_all().await;
    let home = f.business.dir.path();
    let kept = home
        .join("catalogue")
        .join(format!("{}.binpb", hex::encode(digest)));
    assert!(kept.exists(), "{} missing", kept.display());

    // Listed: exactly the registered service, not the tax service the same
    // set defines (the registry offers it under no subsystem).
    assert_eq!(
        listed(channel.clone()).await,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            PERSON_REGISTRY,
        ]
    );
    // Described, as `grpcurl describe` asks.
    let MessageResponse::FileDescriptorResponse(files) = reflect(
        channel.clone(),
        MessageRequest::FileContainingSymbol(PERSON_REGISTRY.into()),
    )
    .await
    else {
        panic!("no file descriptor");
    };
    let file = FileDescription::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.name, "population/v1/population.proto");
    assert_eq!(file.service[0].name, "PersonRegistry");
    assert_eq!(file.service[0].method[0].name, "GetPerson");

    // A server restarted with the registry down serves it from its copy.
    drop(channel);
    let mut f = f;
    f.registry.stop().await;
    f.business.restart_with(|_| {}).await;
    let channel = f.business.client().await.channel;
    assert!(listed(channel).await.contains(&PERSON_REGISTRY.to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asks_the_providers_server_which_methods_it_may_call() {
    let f = Federation::start().await;
    let mut op = f.registry.officer().await;
    describe(&mut op, PERSON_REGISTRY, demo_descriptor_set())
        .await
        .expect("published");
    f.refresh_all().await;
    let ask = |client: &lienthong_proto::id::SubsystemId| {
        let mut request = tonic::Request::new(ListAllowedMethodsRequest { provider: None });
        let m = request.metadata_mut();
        m.insert("lt-client", client.to_string().parse().unwrap());
        m.insert("lt-server", f.population[0].id.to_string().parse().unwrap());
        request
    };

    // The business registry holds a grant of the whole PersonRegistry: its
    // methods come from the catalogue's descriptor set.
    let business_is = f.business.client().await;
    let answer = AllowedMethodsClient::new(business_is.channel.clone())
        .list(ask(&business()))
        .await
        .expect("answered over the bus")
        .into_inner();
    assert_eq!(answer.services.len(), 1, "{answer:?}");
    let allowed = &answer.services[0];
    let id = allowed.service.as_ref().unwrap();
    assert_eq!(id.service_code, PERSON_REGISTRY);
    assert!(allowed.all_methods);
    assert_eq!(allowed.methods, ["GetPerson"]);

    // The tax department holds none: an empty answer, not a refusal.
    let tax_is = f.tax.client().await;
    let answer = AllowedMethodsClient::new(tax_is.channel.clone())
        .list(ask(&tax()))
        .await
        .expect("answered over the bus")
        .into_inner();
    assert!(answer.services.is_empty(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_server_describes_the_services_of_its_own_clients_only() {
    use lienthong_proto::pb::registry::v1::service_catalogue_client::ServiceCatalogueClient;
    use lienthong_security_server::keys::{ServerDir, auth_identity};
    let f = Federation::start().await;
    let as_server =
        |agency: &Agency| auth_identity(&ServerDir(agency.dir.path().to_owned())).unwrap();
    let request = || pb::DescribeServiceRequest {
        id: Some((&population().service(PERSON_REGISTRY, None).unwrap()).into()),
        descriptor_set: demo_descriptor_set(),
    };

    // Without an auth certificate: refused.
    let anonymous = ServiceCatalogueClient::new(f.registry.channel().await)
        .describe_provided_service(request())
        .await
        .expect_err("anonymous");
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous:?}"
    );

    // Another member's server: refused, and audited in its name.
    let business_server = f.registry.channel_as(&as_server(&f.business)).await;
    let foreign = ServiceCatalogueClient::new(business_server)
        .describe_provided_service(request())
        .await
        .expect_err("not its client");
    assert_eq!(foreign.code(), tonic::Code::PermissionDenied, "{foreign:?}");
    assert!(
        foreign
            .message()
            .contains("does not serve VN/GOV/000102/population"),
        "{foreign:?}"
    );

    // The population registry's own server: published.
    let own = f.registry.channel_as(&as_server(&f.population[0])).await;
    let reply = ServiceCatalogueClient::new(own)
        .describe_provided_service(request())
        .await
        .expect("its own client's service")
        .into_inner();
    assert!(reply.configuration_version > 0);
    let audit = f
        .registry
        .officer()
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records;
    let audited = |actor: String, ok: bool| {
        audit.iter().any(|r| {
            r.action == "DescribeService"
                && r.actor == actor
                && (r.result == "ok") == ok
                && r.detail.contains(PERSON_REGISTRY)
        })
    };
    assert!(
        audited(format!("server {}", f.population[0].id), true),
        "{audit:?}"
    );
    assert!(
        audited(format!("server {}", f.business.id), false),
        "{audit:?}"
    );
    f.refresh_all().await;
    let channel = f.business.client().await.channel;
    assert!(listed(channel).await.contains(&PERSON_REGISTRY.to_owned()));
}
