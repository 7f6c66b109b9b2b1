use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_proto::catalogue::DescriptorSet;
use lienthong_proto::id::{GlobalGroupId, ServiceId};
use lienthong_proto::pb::globalconf::v1::{
    GlobalConfiguration, GlobalGroup, SecurityServer, Service,
};
use prost::Message;
use prost_types_min::*;

use super::*;

/// The fields of `google.protobuf.FileDescriptorSet` a service with
/// methods needs.
mod prost_types_min {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileSet {
        #[prost(message, repeated, tag = "1")]
        pub file: Vec<File>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct File {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub package: String,
        #[prost(message, repeated, tag = "4")]
        pub message_type: Vec<Msg>,
        #[prost(message, repeated, tag = "6")]
        pub service: Vec<Svc>,
        #[prost(string, tag = "12")]
        pub syntax: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Msg {
        #[prost(string, tag = "1")]
        pub name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Svc {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub method: Vec<Method>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Method {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub input_type: String,
        #[prost(string, tag = "3")]
        pub output_type: String,
    }
}

const REGISTRY: &str = "population.v1.PersonRegistry";
const HOUSEHOLDS: &str = "population.v1.Households";

fn sub(s: &str) -> SubsystemId {
    s.parse().unwrap()
}
fn population() -> SubsystemId {
    sub("VN/GOV/000102/population")
}
fn business() -> SubsystemId {
    sub("VN/GOV/000305/business")
}
fn tax() -> SubsystemId {
    sub("VN/GOV/000201/tax")
}
fn investigators() -> GlobalGroupId {
    "VN/investigators".parse().unwrap()
}
fn ss1() -> ServerId {
    "VN/GOV/000102/ss1".parse().unwrap()
}

/// PersonRegistry with GetPerson and FindPeople.
fn registry_descriptor() -> Vec<u8> {
    let method = |name: &str| Method {
        name: name.into(),
        input_type: ".population.v1.Person".into(),
        output_type: ".population.v1.Person".into(),
    };
    FileSet {
        file: vec![File {
            name: "population.proto".into(),
            package: "population.v1".into(),
            message_type: vec![Msg {
                name: "Person".into(),
            }],
            service: vec![Svc {
                name: "PersonRegistry".into(),
                method: vec![method("GetPerson"), method("FindPeople")],
            }],
            syntax: "proto3".into(),
        }],
    }
    .encode_to_vec()
}

fn service(provider: &SubsystemId, name: &str, descriptor: Option<&[u8]>) -> Service {
    Service {
        id: Some((&provider.service(name, None).unwrap()).into()),
        descriptor_set_sha256: descriptor
            .map(|d| lienthong_proto::sha256(d).to_vec())
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// ss1 serves the population registry (PersonRegistry, described in the
/// catalogue, and Households); tax is served elsewhere; business is an
/// investigator.
fn view() -> Arc<ConfView> {
    let now = SystemTime::now();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let descriptor = registry_descriptor();
    let conf = GlobalConfiguration {
        instance: "VN".into(),
        version: 3,
        created_at_unix_ms: now_ms - 1000,
        expires_at_unix_ms: now_ms + 600_000,
        security_servers: vec![
            SecurityServer {
                id: Some((&ss1()).into()),
                clients: vec![(&population()).into()],
                ..Default::default()
            },
            SecurityServer {
                id: Some((&"VN/GOV/000201/ss1".parse::<ServerId>().unwrap()).into()),
                clients: vec![(&tax()).into()],
                ..Default::default()
            },
        ],
        services: vec![
            service(&population(), REGISTRY, Some(&descriptor)),
            service(&population(), HOUSEHOLDS, None),
            service(&tax(), "tax.v1.TaxRecords", None),
        ],
        global_groups: vec![GlobalGroup {
            id: Some((&investigators()).into()),
            subsystems: vec![(&business()).into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let set = DescriptorSet::parse(descriptor).unwrap();
    let sets = BTreeMap::from([(set.sha256(), set)]);
    Arc::new(
        ConfView::build(&conf, now)
            .unwrap()
            .with_descriptor_sets(&sets),
    )
}

fn rule(
    subject: Subject,
    provider: SubsystemId,
    service: &str,
    method: Option<&str>,
) -> AccessRule {
    AccessRule {
        subject,
        provider,
        service: service.into(),
        method: method.map(Into::into),
    }
}

fn rules() -> Vec<AccessRule> {
    vec![
        rule(
            Subject::Group(investigators()),
            population(),
            REGISTRY,
            None,
        ),
        rule(
            Subject::Subsystem(business()),
            population(),
            HOUSEHOLDS,
            Some("List"),
        ),
        rule(
            Subject::Subsystem(business()),
            population(),
            HOUSEHOLDS,
            Some("Get"),
        ),
        rule(
            Subject::Subsystem(business()),
            population(),
            HOUSEHOLDS,
            Some("Get"),
        ),
        rule(Subject::Subsystem(tax()), population(), HOUSEHOLDS, None),
        // Not served by this server: never answered here.
        rule(
            Subject::Subsystem(business()),
            tax(),
            "tax.v1.TaxRecords",
            None,
        ),
        // Granted, but no longer offered by the configuration.
        rule(
            Subject::Subsystem(business()),
            population(),
            "population.v1.Gone",
            None,
        ),
    ]
}

fn summary(services: &[pb::AllowedService]) -> Vec<(String, bool, Vec<String>)> {
    services
        .iter()
        .map(|s| {
            let id = ServiceId::try_from(s.service.as_ref().unwrap()).unwrap();
            (id.to_string(), s.all_methods, s.methods.clone())
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_client_learns_its_own_grants_on_the_services_this_server_provides() {
    let view = view();
    let rules = rules();
    let for_business = allowed(&ss1(), &view, &rules, &business(), None);
    assert_eq!(
        summary(&for_business),
        [
            (
                format!("{}/{HOUSEHOLDS}", population()),
                false,
                strings(&["Get", "List"])
            ),
            // Through its group, the whole service: its methods from the
            // catalogue's descriptor set.
            (
                format!("{}/{REGISTRY}", population()),
                true,
                strings(&["FindPeople", "GetPerson"])
            ),
        ]
    );
    // Tax: the whole of Households, which has no descriptor set.
    assert_eq!(
        summary(&allowed(&ss1(), &view, &rules, &tax(), None)),
        [(format!("{}/{HOUSEHOLDS}", population()), true, vec![])]
    );
    // Nobody granted: nothing.
    assert!(allowed(&ss1(), &view, &rules, &sub("VN/GOV/000001/portal"), None).is_empty());
    // Asked about one provider only.
    assert!(allowed(&ss1(), &view, &rules, &business(), Some(&tax())).is_empty());
    assert_eq!(
        allowed(&ss1(), &view, &rules, &business(), Some(&population())).len(),
        2
    );
    // Another server of the instance provides none of these.
    let other: ServerId = "VN/GOV/000102/ss9".parse().unwrap();
    assert!(allowed(&other, &view, &rules, &business(), None).is_empty());
}

/// A call as the built-in router hands it over: with its verified caller.
fn ask(
    caller: Option<SubsystemId>,
    provider: Option<SubsystemId>,
) -> tonic::Request<pb::ListAllowedMethodsRequest> {
    let mut request = tonic::Request::new(pb::ListAllowedMethodsRequest {
        provider: provider.as_ref().map(Into::into),
    });
    if let Some(c) = caller {
        request.extensions_mut().insert(Caller(c));
    }
    request
}

#[tokio::test]
async fn the_generated_service_answers_the_verified_client_only() {
    let dir = tempfile::tempdir().unwrap();
    let conf = Arc::new(ConfClient::new(
        Default::default(),
        dir.path().join("configuration.bin"),
        ConfClient::empty_trust(),
    ));
    let service = AllowedMethodsService::new(ss1(), conf.clone(), rules);
    // No configuration yet: nothing to answer from.
    let e = service.list(ask(Some(business()), None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    conf.install_view(Some(view()));
    let reply = service
        .list(ask(Some(business()), Some(population())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary(&reply.services).len(), 2);
    // Not through the bus: no verified caller, no answer.
    let e = service.list(ask(None, None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
}
