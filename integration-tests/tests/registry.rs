//! The central registry driven through its gRPC APIs over real sockets:
//! operators build the instance, a security server registers with an
//! enrollment token, an officer approves, the server fetches its
//! certificates, and every change shows in a newly signed configuration
//! that verifies with only the anchor.

use std::time::SystemTime;

use lienthong_central_registry::init;
use lienthong_central_registry::model::Role;
use lienthong_certs::signing::Signer;
use lienthong_certs::tls::Identity;
use lienthong_certs::verify::{self, Usage};
use lienthong_certs::{Fingerprint, KeyAlgorithm, PrivateKey, conf};
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_proto::id::{MemberId, ServerId, ServiceId, SubsystemId};
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use lienthong_proto::pb::identifiers::v1 as idpb;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::registration_client::RegistrationClient;
use lienthong_registry_client as client;
use rustls_pki_types::CertificateDer;
use tonic::Code;

fn member(code: &str) -> MemberId {
    MemberId::new("VN", "GOV", code).unwrap()
}

fn ss1() -> ServerId {
    member("000102").server("ss1").unwrap()
}

fn population() -> SubsystemId {
    member("000102").subsystem("population").unwrap()
}

/// Adds the member class, two members and their subsystems.
async fn populate(reg: &TestRegistry) {
    let mut op = reg.officer().await;
    op.add_member_class(pb::AddMemberClassRequest {
        code: "GOV".into(),
        description: "Government agencies".into(),
    })
    .await
    .unwrap();
    for (code, name) in [
        ("000102", "Bộ Công an"),
        ("000305", "Sở Kế hoạch và Đầu tư"),
    ] {
        op.add_member(pb::AddMemberRequest {
            id: Some((&member(code)).into()),
            name: name.into(),
        })
        .await
        .unwrap();
    }
    for s in [
        population(),
        member("000305").subsystem("business").unwrap(),
    ] {
        op.add_subsystem(pb::AddSubsystemRequest {
            id: Some((&s).into()),
        })
        .await
        .unwrap();
    }
}

/// Downloads the configuration newer than `held` and verifies it with only
/// the anchor.
async fn fetch(reg: &TestRegistry, held: u64) -> Option<GlobalConfiguration> {
    let mut dist = client::distribution_client(reg.channel().await);
    let reply = dist
        .get_configuration(pb::GetConfigurationRequest {
            if_newer_than: held,
        })
        .await
        .unwrap()
        .into_inner();
    let signed = reply.configuration?;
    let held = (held > 0).then_some(held);
    Some(conf::verify_configuration(&reg.anchor, &signed, held, SystemTime::now()).unwrap())
}

/// A security server's keys and, once approved, its certificates.
struct Joiner {
    auth_key: PrivateKey,
    owner_key: PrivateKey,
    request_id: u64,
    token: String,
}

async fn submit_first(reg: &TestRegistry, server: &ServerId) -> Result<Joiner, tonic::Status> {
    let mut op = reg.officer().await;
    let token = op
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some(server.into()),
            valid_seconds: 0,
        })
        .await?
        .into_inner()
        .token;
    let auth_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let owner_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let req =
        client::first_request(server, "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    let mut reg_client = RegistrationClient::new(reg.channel().await);
    let reply = reg_client.submit(req).await?.into_inner();
    Ok(Joiner {
        auth_key,
        owner_key,
        request_id: reply.id,
        token,
    })
}

async fn get_request(reg: &TestRegistry, j: &Joiner) -> pb::GetRequestReply {
    let mut c = RegistrationClient::new(reg.channel().await);
    c.get_request(pb::GetRequestRequest {
        id: j.request_id,
        enrollment_token: j.token.clone(),
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn whole_registration_workflow_shows_in_signed_configurations() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let mut op = reg.officer().await;

    // 1. A server joins with its enrollment token: pending until approved.
    let joiner = submit_first(&reg, &ss1()).await.unwrap();
    let pending = get_request(&reg, &joiner).await;
    assert_eq!(pending.state, pb::RequestState::Pending as i32);
    assert!(pending.auth_certificate.is_empty());
    let listed = op
        .list_requests(pb::ListRequestsRequest {
            state: pb::RequestState::Pending as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, pb::RequestKind::AuthCertificate as i32);

    // 2. The officer approves; the certificates are issued at once.
    let approved = op
        .approve_request(pb::DecideRequest {
            id: joiner.request_id,
            note: "checked by phone with the agency".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(approved.configuration_version > 0);
    let issued = get_request(&reg, &joiner).await;
    assert_eq!(issued.state, pb::RequestState::Approved as i32);
    let ca = CertificateDer::from(issued.ca_chain[0].clone());
    let anchors = verify::anchors(std::slice::from_ref(&ca)).unwrap();
    let auth_cert = CertificateDer::from(issued.auth_certificate.clone());
    let id = verify::verify_auth_cert(
        &auth_cert,
        &anchors,
        SystemTime::now(),
        Usage::TlsClient,
        Some(&ss1()),
    )
    .unwrap();
    assert_eq!(id, ss1());
    let signing_cert = issued.signing_certificates[0].clone();
    verify::verify_signing_cert(
        &CertificateDer::from(signing_cert.clone()),
        &anchors,
        SystemTime::now(),
        Some(&member("000102")),
    )
    .unwrap();

    // 3. The configuration lists the server, its pin and the signing cert.
    let c1 = fetch(&reg, 0).await.expect("a configuration");
    assert!(c1.version >= approved.configuration_version);
    let server = c1
        .security_servers
        .iter()
        .find(|s| s.id == Some((&ss1()).into()))
        .expect("server listed");
    assert_eq!(server.address, "127.0.0.1:5500");
    assert_eq!(
        server.auth_certificate_sha256,
        vec![Fingerprint::of(&auth_cert).0.to_vec()]
    );
    let owner = c1
        .members
        .iter()
        .find(|m| m.id == Some((&member("000102")).into()))
        .unwrap();
    assert_eq!(owner.signing_certificates, vec![signing_cert.clone()]);
    assert!(
        fetch(&reg, c1.version).await.is_none(),
        "idle poll gets nothing"
    );

    // 4. Over mutual TLS, the server asks to serve its population subsystem.
    let identity = Identity {
        chain: vec![auth_cert.clone()],
        key: joiner.auth_key,
    };
    let owner_signer = Signer::new(&joiner.owner_key, &signing_cert).unwrap();
    let req = client::client_request(&ss1(), &population(), None, &owner_signer).unwrap();
    let mut as_server = RegistrationClient::new(reg.channel_as(&identity).await);
    let client_req = as_server.submit(req.clone()).await.unwrap().into_inner();
    // Anonymous, the same request is refused.
    let anon = RegistrationClient::new(reg.channel().await)
        .submit(req)
        .await
        .unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated, "{anon:?}");
    op.approve_request(pb::DecideRequest {
        id: client_req.id,
        note: String::new(),
    })
    .await
    .unwrap();

    // 5. Publish a service.
    let service: ServiceId = "VN/GOV/000102/population/population.v1.PersonRegistry"
        .parse()
        .unwrap();
    op.add_service(pb::AddServiceRequest {
        id: Some((&service).into()),
        description: "Look up a person by personal ID".into(),
        personal_data: true,
    })
    .await
    .unwrap();
    let c2 = fetch(&reg, c1.version)
        .await
        .expect("a newer configuration");
    let server = c2
        .security_servers
        .iter()
        .find(|s| s.id == Some((&ss1()).into()))
        .unwrap();
    assert_eq!(server.clients, vec![idpb::SubsystemId::from(&population())]);
    assert!(c2.services.iter().any(|s| s.id == Some((&service).into())));

    // 6. Revoke the signing certificate: it leaves the member's list.
    op.revoke_certificate(pb::RevokeCertificateRequest {
        certificate_sha256: Fingerprint::of(&signing_cert).0.to_vec(),
        reason: "key compromised".into(),
    })
    .await
    .unwrap();
    let c3 = fetch(&reg, c2.version)
        .await
        .expect("a newer configuration");
    let owner = c3
        .members
        .iter()
        .find(|m| m.id == Some((&member("000102")).into()))
        .unwrap();
    assert!(owner.signing_certificates.is_empty());
    assert!(
        c3.revoked_certificate_sha256
            .contains(&Fingerprint::of(&signing_cert).0.to_vec())
    );

    // 7. An old configuration is refused as a rollback.
    let mut dist = client::distribution_client(reg.channel().await);
    let latest = dist
        .get_configuration(pb::GetConfigurationRequest { if_newer_than: 0 })
        .await
        .unwrap()
        .into_inner()
        .configuration
        .unwrap();
    let err = conf::verify_configuration(
        &reg.anchor,
        &latest,
        Some(c3.version + 100),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not newer"), "{err}");

    // 8. The audit log has every action, by actor.
    let audit = op
        .list_audit(pb::ListAuditRequest {
            actor: "admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for want in [
        "AddMemberClass",
        "AddMember",
        "CreateEnrollmentToken",
        "ApproveRequest",
        "AddService",
        "RevokeCertificate",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    assert!(
        audit.iter().all(|a| !a.detail.contains(&joiner.token)),
        "no secrets in the audit log"
    );
}

#[tokio::test]
async fn bad_operator_input_is_refused_and_changes_nothing() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let observer_token = init::add_operator(&reg.path(), "auditor", Role::Observer).unwrap();
    let store = reg.registry().store();
    let seq = store.seq().unwrap();
    let mut op = reg.officer().await;

    let dup = op
        .add_member(pb::AddMemberRequest {
            id: Some((&member("000102")).into()),
            name: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup:?}");

    let bad_chars = op
        .add_member(pb::AddMemberRequest {
            id: Some(idpb::MemberId {
                instance: "VN".into(),
                member_class: "GOV".into(),
                member_code: "00/01".into(),
            }),
            name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_chars.code(), Code::InvalidArgument);
    assert!(bad_chars.message().contains('/'), "{}", bad_chars.message());

    let oversized = op
        .add_member(pb::AddMemberRequest {
            id: Some((&member("000999")).into()),
            name: "x".repeat(256),
        })
        .await
        .unwrap_err();
    assert_eq!(oversized.code(), Code::InvalidArgument);

    let unknown_owner = op
        .add_subsystem(pb::AddSubsystemRequest {
            id: Some((&member("777").subsystem("x").unwrap()).into()),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown_owner.code(), Code::NotFound);
    assert!(
        unknown_owner.message().contains("VN/GOV/777"),
        "{}",
        unknown_owner.message()
    );

    let other_instance = op
        .add_member(pb::AddMemberRequest {
            id: Some((&MemberId::new("EE", "GOV", "1").unwrap()).into()),
            name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(other_instance.code(), Code::InvalidArgument);

    // An observer reads but may not write; no token at all is refused.
    let mut observer = reg.operator(&observer_token).await;
    observer
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap();
    let denied = observer
        .add_member_class(pb::AddMemberClassRequest {
            code: "COM".into(),
            description: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut anonymous =
        lienthong_proto::pb::registry::v1::registry_operator_client::RegistryOperatorClient::new(
            reg.channel().await,
        );
    let anon = anonymous
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);
    let wrong = reg
        .operator("lt_0000")
        .await
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);

    assert_eq!(store.seq().unwrap(), seq, "nothing was written");
    // Each refusal is audited with its reason.
    let refusals: Vec<_> = op
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .records
        .into_iter()
        .filter(|a| a.result != "ok")
        .collect();
    assert!(refusals.len() >= 6, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .any(|a| a.actor == "auditor" && a.result.contains("observer"))
    );
}

#[tokio::test]
async fn bad_registration_requests_are_refused() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let store = reg.registry().store();
    let mut anon = RegistrationClient::new(reg.channel().await);
    let auth_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let owner_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();

    // No enrollment token.
    let req = client::first_request(&ss1(), "127.0.0.1:5500", "", &auth_key, &owner_key).unwrap();
    assert_eq!(
        anon.submit(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A token nobody issued.
    let req = client::first_request(
        &ss1(),
        "127.0.0.1:5500",
        "lt_made_up",
        &auth_key,
        &owner_key,
    )
    .unwrap();
    let err = anon.submit(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let mut op = reg.officer().await;
    let token = op
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some((&ss1()).into()),
            valid_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let seq = store.seq().unwrap();

    // A CSR whose proof of possession fails.
    let mut req =
        client::first_request(&ss1(), "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    let csr = &mut req.auth_csr.as_mut().unwrap().csr;
    let n = csr.len();
    csr[n - 5] ^= 0x55;
    let err = anon.submit(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The token is for ss1; using it for another server of the member fails.
    let ss2 = member("000102").server("ss2").unwrap();
    let req = client::first_request(&ss2, "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    assert_eq!(
        anon.submit(req).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // A request for an identity the requester does not own: signing CSR
    // for another member.
    let mut req =
        client::first_request(&ss1(), "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    req.signing_csrs[0].member = Some((&member("000305")).into());
    assert_eq!(
        anon.submit(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // A signature that does not match the request (address changed after signing).
    let mut req =
        client::first_request(&ss1(), "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    req.address = "10.0.0.9:5500".into();
    assert_eq!(
        anon.submit(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A bad address.
    let req =
        client::first_request(&ss1(), "not an address", &token, &auth_key, &owner_key).unwrap();
    assert_eq!(
        anon.submit(req).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    assert_eq!(store.seq().unwrap(), seq, "nothing was written");
    // The token is still usable after all those refusals.
    let req =
        client::first_request(&ss1(), "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    anon.submit(req).await.unwrap();

    // Someone else's request cannot be read.
    let mut other = RegistrationClient::new(reg.channel().await);
    let err = other
        .get_request(pb::GetRequestRequest {
            id: 1,
            enrollment_token: "lt_guess".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn auto_approve_and_revoked_key_reuse() {
    let reg = TestRegistry::start(true).await;
    populate(&reg).await;
    let joiner = submit_first(&reg, &ss1()).await.unwrap();
    let got = get_request(&reg, &joiner).await;
    assert_eq!(
        got.state,
        pb::RequestState::Approved as i32,
        "auto-approved"
    );
    let auth = got.auth_certificate.clone();

    let mut op = reg.officer().await;
    op.revoke_certificate(pb::RevokeCertificateRequest {
        certificate_sha256: Fingerprint::of(&auth).0.to_vec(),
        reason: "server decommissioned".into(),
    })
    .await
    .unwrap();
    // The same auth key asks again with a fresh token: refused.
    let token = op
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some((&ss1()).into()),
            valid_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let fresh_owner = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let req = client::first_request(
        &ss1(),
        "127.0.0.1:5500",
        &token,
        &joiner.auth_key,
        &fresh_owner,
    )
    .unwrap();
    let err = RegistrationClient::new(reg.channel().await)
        .submit(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("revoked"), "{}", err.message());
}

#[tokio::test]
async fn restart_keeps_state_and_versions_keep_increasing() {
    let mut reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let before = fetch(&reg, 0).await.unwrap();
    reg.restart().await;
    let after = fetch(&reg, 0).await.unwrap();
    assert!(
        after.version > before.version,
        "{} then {}",
        before.version,
        after.version
    );
    assert_eq!(after.members.len(), 2);
    assert!(after.created_at_unix_ms >= before.created_at_unix_ms);
    // The configuration held before the restart is still refused as older.
    assert!(fetch(&reg, after.version).await.is_none());
    // And the operator token still works.
    reg.officer()
        .await
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn address_change_and_removal_over_mutual_tls() {
    let reg = TestRegistry::start(true).await;
    populate(&reg).await;
    let joiner = submit_first(&reg, &ss1()).await.unwrap();
    let got = get_request(&reg, &joiner).await;
    let identity = Identity {
        chain: vec![CertificateDer::from(got.auth_certificate.clone())],
        key: joiner.auth_key,
    };
    let owner = Signer::new(&joiner.owner_key, &got.signing_certificates[0]).unwrap();
    let mut as_server = RegistrationClient::new(reg.channel_as(&identity).await);

    let moved = client::server_request(&ss1(), Some("10.1.2.3:5500"), &owner).unwrap();
    as_server.submit(moved).await.unwrap();
    let c = fetch(&reg, 0).await.unwrap();
    let server = c
        .security_servers
        .iter()
        .find(|s| s.id == Some((&ss1()).into()))
        .unwrap();
    assert_eq!(server.address, "10.1.2.3:5500");

    // Signed by a key that is not the owner's registered one: refused.
    let stranger_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let stranger_csr = lienthong_certs::csr::create(&stranger_key, "x").unwrap();
    let stranger = Signer::for_csr(&stranger_key, &stranger_csr).unwrap();
    let forged = client::server_request(&ss1(), None, &stranger).unwrap();
    let err = as_server.submit(forged).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let removal = client::server_request(&ss1(), None, &owner).unwrap();
    let removed = as_server.submit(removal).await.unwrap().into_inner();
    let c = fetch(&reg, c.version).await.unwrap();
    assert!(c.security_servers.is_empty());
    assert!(
        c.revoked_certificate_sha256
            .contains(&Fingerprint::of(&got.auth_certificate).0.to_vec())
    );
    // The removed server's certificate no longer opens anything.
    let mut after = RegistrationClient::new(reg.channel_as(&identity).await);
    let err = after
        .get_request(pb::GetRequestRequest {
            id: removed.id,
            enrollment_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
