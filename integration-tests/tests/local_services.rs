//! What the consumer port answers itself: grpc.health.v1 and server
//! reflection for calls that name no provider, as grpcurl and health
//! probes call them; a call that names one goes over the bus.

use lienthong_integration_tests::federation::*;
use lienthong_security_server::consumer::local::DESCRIPTORS_DIR;
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The fields of `google.protobuf.FileDescriptorSet` a listing needs.
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

fn overall() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_on_the_consumer_port() {
    let mut f = Federation::start().await;
    // The business registry's operator publishes the descriptors of the
    // services its information systems call.
    let descriptors = f.business.dir.path().join(DESCRIPTORS_DIR);
    std::fs::create_dir_all(&descriptors).unwrap();
    let set = FileSet {
        file: vec![File {
            name: "population/v1/population.proto".into(),
            package: "population.v1".into(),
            service: vec![Service {
                name: "PersonRegistry".into(),
            }],
        }],
    };
    std::fs::write(descriptors.join("population.binpb"), set.encode_to_vec()).unwrap();
    f.business.restart_with(|_| {}).await;
    let channel = f.business.client().await.channel;

    let status = HealthClient::new(channel.clone())
        .check(overall())
        .await
        .expect("health answers")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([ask]))
        .await
        .expect("reflection answers")
        .into_inner();
    let answer = answers.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list: {answer:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "population.v1.PersonRegistry",
        ]
    );

    // Naming a provider, the call is the provider's: over the bus, where
    // the population registry offers no health service.
    let mut request = tonic::Request::new(overall());
    let m = request.metadata_mut();
    m.insert(
        "lt-client",
        MetadataValue::try_from(business().to_string()).unwrap(),
    );
    m.insert(
        "lt-service",
        MetadataValue::try_from(population().to_string()).unwrap(),
    );
    let refused = HealthClient::new(channel)
        .check(request)
        .await
        .expect_err("not answered locally");
    assert_eq!(fault_of(&refused), "client.unknown_service", "{refused:?}");
}
