//! The registry attacked as a member's security server (valid mTLS and
//! signing keys) or an outsider would, over real sockets. Every attack is
//! refused (or, at the witness, alarmed), audited, and leaves the store and
//! the configuration as they were.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_central_registry::init::{self, InitOptions};
use lienthong_central_registry::{Registry, RegistryOptions};
use lienthong_certs::signing::Signer;
use lienthong_certs::tls::Identity;
use lienthong_certs::{Fingerprint, KeyAlgorithm, PrivateKey, csr};
use lienthong_integration_tests::registry::TestRegistry;
use lienthong_proto::canonical;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::checkpoint_witness_client::CheckpointWitnessClient;
use lienthong_proto::pb::registry::v1::registration_client::RegistrationClient;
use lienthong_registry_client::{self as client, ClientError};
use prost::Message;
use rustls_pki_types::CertificateDer;
use tonic::Code;

fn member(code: &str) -> MemberId {
    MemberId::new("VN", "GOV", code).unwrap()
}

fn server_of(code: &str) -> ServerId {
    member(code).server("ss1").unwrap()
}

fn business() -> SubsystemId {
    member("000305").subsystem("business").unwrap()
}

async fn populate(reg: &TestRegistry) {
    let mut op = reg.officer().await;
    op.add_member_class(pb::AddMemberClassRequest {
        code: "GOV".into(),
        description: "Government agencies".into(),
    })
    .await
    .unwrap();
    for code in ["000102", "000305"] {
        op.add_member(pb::AddMemberRequest {
            id: Some((&member(code)).into()),
            name: format!("agency {code}"),
        })
        .await
        .unwrap();
    }
    for s in [
        member("000102").subsystem("population").unwrap(),
        business(),
    ] {
        op.add_subsystem(pb::AddSubsystemRequest {
            id: Some((&s).into()),
        })
        .await
        .unwrap();
    }
}

async fn token_for(reg: &TestRegistry, server: &ServerId) -> String {
    reg.officer()
        .await
        .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
            server: Some(server.into()),
            valid_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// A registered server: its TLS identity and its owner's signing key.
struct Joined {
    identity: Identity,
    owner: Signer,
    owner_cert: Vec<u8>,
}

async fn join(reg: &TestRegistry, server: &ServerId) -> Joined {
    let token = token_for(reg, server).await;
    let auth_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let owner_key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let req =
        client::first_request(server, "127.0.0.1:5500", &token, &auth_key, &owner_key).unwrap();
    let mut c = RegistrationClient::new(reg.channel().await);
    let id = c.submit(req).await.unwrap().into_inner().id;
    reg.officer()
        .await
        .approve_request(pb::DecideRequest {
            id,
            note: String::new(),
        })
        .await
        .unwrap();
    let got = c
        .get_request(pb::GetRequestRequest {
            id,
            enrollment_token: token,
        })
        .await
        .unwrap()
        .into_inner();
    let owner_cert = got.signing_certificates[0].clone();
    Joined {
        identity: Identity {
            chain: vec![CertificateDer::from(got.auth_certificate)],
            key: auth_key,
        },
        owner: Signer::new(&owner_key, &owner_cert).unwrap(),
        owner_cert,
    }
}

/// Everything in the store but the audit log and alarms: what "nothing
/// changed" compares.
fn state(reg: &TestRegistry) -> String {
    let store = reg.registry().store();
    let last: Vec<_> = ["000102", "000305"]
        .iter()
        .map(|c| store.last_checkpoint(&server_of(c)).unwrap())
        .collect();
    // The snapshot is everything a configuration is built from, with the
    // change sequence number.
    format!(
        "{:?}|{:?}|{:?}",
        store.snapshot().unwrap(),
        store.requests(None).unwrap(),
        last,
    )
}

fn refusals_in_audit(reg: &TestRegistry) -> Vec<lienthong_central_registry::model::AuditEntry> {
    reg.registry()
        .store()
        .audit(&lienthong_central_registry::model::AuditFilter {
            limit: 100_000,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .filter(|a| a.result != "ok")
        .collect()
}

#[tokio::test]
async fn signing_certificates_only_for_the_own_member_or_with_consent() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let a = join(&reg, &server_of("000102")).await;
    let b = join(&reg, &server_of("000305")).await;
    let mut as_a = RegistrationClient::new(reg.channel_as(&a.identity).await);

    // Attack 1: 000102's server asks for a signing certificate of 000305
    // for a key it holds, signed with its own key only.
    let stolen_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let member_305 = member("000305");
    let attack = client::client_request(
        &server_of("000102"),
        &business(),
        Some((&member_305, &stolen_key)),
        &a.owner,
    )
    .unwrap();
    let before = state(&reg);
    let err = as_a.submit(attack).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("consent"), "{}", err.message());
    assert_eq!(state(&reg), before);
    let audited = refusals_in_audit(&reg);
    let last = audited.last().unwrap();
    assert_eq!(last.actor, "server VN/GOV/000102/ss1");
    assert!(last.detail.contains("from 127.0.0.1:"), "{last:?}");
    assert!(last.result.contains("consent"), "{last:?}");

    // The consent signed by 000102's own key is no consent of 000305.
    let forged = client::client_request_with_consent(
        &server_of("000102"),
        &business(),
        &stolen_key,
        &a.owner,
        &a.owner,
    )
    .unwrap();
    let err = as_a.submit(forged).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(state(&reg), before);

    // A signing CSR for a member that does not exist.
    let ghost = member("000999").subsystem("x").unwrap();
    let ghost_member = ghost.member.clone();
    let req = client::client_request(
        &server_of("000102"),
        &ghost,
        Some((&ghost_member, &stolen_key)),
        &a.owner,
    )
    .unwrap();
    let err = as_a.submit(req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("does not exist"),
        "{}",
        err.message()
    );
    assert_eq!(state(&reg), before);

    // With 000305's consent (its current signing key) it is accepted, and
    // the officer sees whom each CSR is for, its key and the consent.
    let hosted_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let consented = client::client_request_with_consent(
        &server_of("000102"),
        &business(),
        &hosted_key,
        &b.owner,
        &a.owner,
    )
    .unwrap();
    let id = as_a.submit(consented).await.unwrap().into_inner().id;
    let mut op = reg.officer().await;
    let listed = op
        .list_requests(pb::ListRequestsRequest {
            state: pb::RequestState::Pending as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    let summary = listed.iter().find(|r| r.id == id).unwrap();
    assert_eq!(summary.csrs.len(), 1);
    let c = &summary.csrs[0];
    assert!(!c.auth);
    assert_eq!(c.member, Some((&member_305).into()));
    assert_eq!(c.key_type, "ECDSA P-256");
    let spki = csr::verify(&csr::create(&hosted_key, "x").unwrap())
        .unwrap()
        .public_key_der();
    assert_eq!(c.public_key_sha256, lienthong_proto::sha256(&spki).to_vec());
    assert_eq!(
        c.consent_certificate_sha256,
        Fingerprint::of(&b.owner_cert).0.to_vec()
    );
    op.reject_request(pb::DecideRequest {
        id,
        note: "test".into(),
    })
    .await
    .unwrap();

    // A consent signed by a revoked signing key of 000305 is refused.
    op.revoke_certificate(pb::RevokeCertificateRequest {
        certificate_sha256: Fingerprint::of(&b.owner_cert).0.to_vec(),
        reason: "key compromised".into(),
    })
    .await
    .unwrap();
    let before = state(&reg);
    let other_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let req = client::client_request_with_consent(
        &server_of("000102"),
        &business(),
        &other_key,
        &b.owner,
        &a.owner,
    )
    .unwrap();
    let err = as_a.submit(req).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    assert_eq!(state(&reg), before);
}

#[tokio::test]
async fn one_key_one_certificate() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;

    // Attack 2: the same key for the auth and the signing certificate.
    let token = token_for(&reg, &server_of("000102")).await;
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let req =
        client::first_request(&server_of("000102"), "127.0.0.1:5500", &token, &key, &key).unwrap();
    let before = state(&reg);
    let err = RegistrationClient::new(reg.channel().await)
        .submit(req)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("one key"), "{}", err.message());
    assert_eq!(state(&reg), before);

    // One auth key in two servers' requests submitted at the same time:
    // exactly one is accepted.
    let shared = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let mut reqs = Vec::new();
    for code in ["000102", "000305"] {
        let server = server_of(code);
        let token = token_for(&reg, &server).await;
        let owner = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        reqs.push(
            client::first_request(&server, "127.0.0.1:5500", &token, &shared, &owner).unwrap(),
        );
    }
    let mut c1 = RegistrationClient::new(reg.channel().await);
    let mut c2 = RegistrationClient::new(reg.channel().await);
    let (r1, r2) = tokio::join!(c1.submit(reqs[0].clone()), c2.submit(reqs[1].clone()));
    let (ok, err) = match (r1, r2) {
        (Ok(ok), Err(e)) | (Err(e), Ok(ok)) => (ok.into_inner(), e),
        other => panic!("exactly one must be accepted: {other:?}"),
    };
    assert!(err.message().contains("one key"), "{}", err.message());
    reg.officer()
        .await
        .approve_request(pb::DecideRequest {
            id: ok.id,
            note: String::new(),
        })
        .await
        .unwrap();
    let pending = reg
        .registry()
        .store()
        .requests(Some(
            lienthong_central_registry::model::RequestState::Pending,
        ))
        .unwrap();
    assert!(pending.is_empty(), "{pending:?}");
}

#[tokio::test]
async fn the_key_policy_is_enforced_and_named() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let cases: [(&[u8], &str); 5] = [
        (include_bytes!("../../certs/testdata/rsa512.der"), "RSA-512"),
        (
            include_bytes!("../../certs/testdata/rsa2048.der"),
            "RSA-2048",
        ),
        (
            include_bytes!("../../certs/testdata/p384.der"),
            "ECDSA P-384",
        ),
        (
            include_bytes!("../../certs/testdata/secp256k1.der"),
            "1.3.132.0.10",
        ),
        (
            include_bytes!("../../certs/testdata/brainpool.der"),
            "1.3.36.3.3.2.8.1.1.7",
        ),
    ];
    let token = token_for(&reg, &server_of("000102")).await;
    let before = state(&reg);
    for (der, name) in cases {
        let auth = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let owner = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let mut req = client::first_request(
            &server_of("000102"),
            "127.0.0.1:5500",
            &token,
            &auth,
            &owner,
        )
        .unwrap();
        req.auth_csr.as_mut().unwrap().csr = der.to_vec();
        let signer = Signer::for_csr(&owner, &req.signing_csrs[0].csr).unwrap();
        let req = client::sign_submission(req, &signer).unwrap();
        let err = RegistrationClient::new(reg.channel().await)
            .submit(req)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("key policy") && err.message().contains(name),
            "{}",
            err.message()
        );
    }
    assert_eq!(state(&reg), before);
}

#[tokio::test]
async fn undecodable_bodies_are_invalid_argument() {
    let reg = TestRegistry::start(false).await;
    // Field 1 of SubmitRequest is an enum; sent as bytes it cannot decode.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Garbage {
        #[prost(bytes = "vec", tag = "1")]
        junk: Vec<u8>,
    }
    let mut grpc = tonic::client::Grpc::new(reg.channel().await);
    grpc.ready().await.unwrap();
    let before = state(&reg);
    let err = grpc
        .unary::<_, pb::SubmitReply, _>(
            tonic::Request::new(Garbage {
                junk: vec![0xff; 40],
            }),
            "/lienthong.registry.v1.Registration/Submit"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.metadata().get("lt-fault").unwrap(),
        "registry.bad_request_body"
    );
    assert_eq!(state(&reg), before);
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn leaves(n: u64, salt: u8) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(&[&i.to_be_bytes()[..], &[salt]].concat()))
        .collect()
}

fn checkpoint(
    s: &Joined,
    server: &ServerId,
    tree: &[Hash],
    at: i64,
    from: usize,
) -> pb::WitnessRequest {
    let mut cp = pb::Checkpoint {
        server: Some(server.into()),
        tree_size: tree.len() as u64,
        root_hash: merkle::root(tree).to_vec(),
        created_at_unix_ms: at,
        signature: None,
    };
    cp.signature = Some(
        s.owner
            .sign_digest(&canonical::digest(&canonical::checkpoint(&cp)))
            .unwrap(),
    );
    pb::WitnessRequest {
        checkpoint: Some(cp),
        consistency_proof: if from == 0 {
            Vec::new()
        } else {
            merkle::consistency_proof(tree, from)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect()
        },
        previous_tree_size: from as u64,
    }
}

#[tokio::test]
async fn the_witness_only_moves_forward_and_cannot_be_raced() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let server = server_of("000102");
    let s = join(&reg, &server).await;
    let channel = reg.channel_as(&s.identity).await;
    let mut w = CheckpointWitnessClient::new(channel.clone());
    let log = leaves(20, 0);
    let t0 = now_ms() - 10_000;
    w.witness(checkpoint(&s, &server, &log[..4], t0 - 1_000, 0))
        .await
        .unwrap();
    w.witness(checkpoint(&s, &server, &log[..8], t0, 4))
        .await
        .unwrap();
    let alarms = || reg.registry().store().alarms().unwrap().len();

    // Attack 3: backdated to 1970, and dated exactly at the last one.
    for at in [0, t0 - 60_000, t0] {
        let before = (state(&reg), alarms());
        let err = w
            .witness(checkpoint(&s, &server, &log[..10], at, 8))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(
            err.metadata().get("lt-fault").unwrap(),
            "registry.witness.alarm"
        );
        assert_eq!(state(&reg), before.0, "at {at}");
        assert_eq!(alarms(), before.1 + 1);
    }
    // The same checkpoint again (a retry) is countersigned again.
    w.witness(checkpoint(&s, &server, &log[..8], t0, 4))
        .await
        .unwrap();

    // A consistent proof from an older witnessed size (a lost reply) is
    // answered with the latest witnessed checkpoint, not an alarm.
    let before = (state(&reg), alarms());
    let err = w
        .witness(checkpoint(&s, &server, &log[..12], t0 + 1_000, 4))
        .await
        .unwrap_err();
    assert_eq!(
        err.metadata().get("lt-fault").unwrap(),
        "registry.witness.stale_base",
        "{err:?}"
    );
    let latest = pb::WitnessedCheckpoint::decode(err.details()).unwrap();
    let cp = latest.checkpoint.unwrap();
    assert_eq!(cp.tree_size, 8);
    assert_eq!(cp.root_hash, merkle::root(&log[..8]).to_vec());
    assert!(latest.countersignature.is_some());
    assert_eq!((state(&reg), alarms()), before);
    // The same proof from a rewritten history is an alarm.
    let mut forged = log.clone();
    forged[1] = merkle::leaf_hash(b"edited");
    let err = w
        .witness(checkpoint(&s, &server, &forged[..12], t0 + 1_000, 4))
        .await
        .unwrap_err();
    assert_eq!(
        err.metadata().get("lt-fault").unwrap(),
        "registry.witness.alarm"
    );
    assert_eq!(alarms(), before.1 + 1);

    // Tree sizes beyond what the store holds.
    let mut huge = checkpoint(&s, &server, &log[..12], t0 + 1_000, 8);
    huge.checkpoint.as_mut().unwrap().tree_size = 1 << 63;
    let err = w.witness(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Attack 5: two conflicting checkpoints (a fork) submitted together:
    // exactly one is countersigned, the other raises an alarm.
    let fork = leaves(20, 1);
    let mut left_tree = log[..8].to_vec();
    left_tree.extend_from_slice(&log[8..14]);
    let mut right_tree = log[..8].to_vec();
    right_tree.extend_from_slice(&fork[8..14]);
    let before_alarms = alarms();
    let mut w2 = CheckpointWitnessClient::new(reg.channel_as(&s.identity).await);
    let (l, r) = tokio::join!(
        w.witness(checkpoint(&s, &server, &left_tree, t0 + 2_000, 8)),
        w2.witness(checkpoint(&s, &server, &right_tree, t0 + 2_000, 8)),
    );
    assert!(l.is_ok() != r.is_ok(), "exactly one: {l:?} {r:?}");
    assert_eq!(alarms(), before_alarms + 1);
    let witnessed = reg
        .registry()
        .store()
        .last_checkpoint(&server)
        .unwrap()
        .unwrap();
    let winner = if l.is_ok() { &left_tree } else { &right_tree };
    assert_eq!(witnessed.root, merkle::root(winner));
}

#[tokio::test]
async fn refusals_are_audited_counted_and_throttled() {
    let reg = TestRegistry::start(false).await;
    populate(&reg).await;
    let server = server_of("000102");
    let before = state(&reg);

    // Operator calls without a token or with an unknown one are audited.
    let mut nobody =
        lienthong_proto::pb::registry::v1::registry_operator_client::RegistryOperatorClient::new(
            reg.channel_from(IpAddr::from([127, 0, 0, 3])).await,
        );
    let err = nobody
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = reg
        .operator("lt_guessed")
        .await
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let audited = refusals_in_audit(&reg);
    assert!(audited.iter().any(|a| a.actor == "anonymous"
        && a.action == "ListAudit"
        && a.detail.starts_with("from 127.0.0.3:")));
    assert!(
        audited
            .iter()
            .any(|a| a.actor.starts_with("operator-token sha256:") && !a.actor.contains("guessed"))
    );

    // 10,000 wrong enrollment tokens from one address: the first few are
    // refused by the registry (and audited), then the address is refused
    // at the door (throttled) and the rest never reach it.
    let auth = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let owner = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
    let template = client::first_request(&server, "127.0.0.1:5500", "lt_x", &auth, &owner).unwrap();
    let signer = Signer::for_csr(&owner, &template.signing_csrs[0].csr).unwrap();
    let guess = |i: usize| {
        let mut r = template.clone();
        r.enrollment_token = format!("lt_{i:064x}");
        client::sign_submission(r, &signer).unwrap()
    };
    let attacker = reg.channel_from(IpAddr::from([127, 0, 0, 2])).await;
    let started = std::time::Instant::now();
    let mut throttled = 0;
    let mut refused = 0;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..50 {
        let reqs: Vec<_> = (0..200).map(|i| guess(chunk * 200 + i)).collect();
        let mut c = RegistrationClient::new(attacker.clone());
        tasks.spawn(async move {
            let mut codes = Vec::new();
            for r in reqs {
                codes.push(c.submit(r).await.unwrap_err().code());
            }
            codes
        });
    }
    while let Some(codes) = tasks.join_next().await {
        for code in codes.unwrap() {
            match code {
                Code::ResourceExhausted => throttled += 1,
                _ => refused += 1,
            }
        }
    }
    let took = started.elapsed();
    assert_eq!(throttled + refused, 10_000);
    assert!(refused <= 30 + 50, "{refused} reached the registry");
    println!(
        "10,000 guesses from one address: {refused} refused by the registry, {throttled} throttled, in {took:?}"
    );
    let audited = refusals_in_audit(&reg);
    let guesses = audited
        .iter()
        .filter(|a| a.action == "Submit" && a.actor.starts_with("enrollment-token sha256:"))
        .count();
    assert_eq!(guesses, refused);
    assert!(
        audited
            .iter()
            .any(|a| a.action == "Throttle" && a.actor == "source 127.0.0.2")
    );
    let counts = reg.registry().refusals().snapshot();
    let submit_throttled = counts
        .iter()
        .find(|((m, c), _)| m.ends_with("/Submit") && c == "ResourceExhausted")
        .map(|(_, n)| *n)
        .unwrap();
    assert_eq!(submit_throttled, throttled as u64);
    assert_eq!(state(&reg), before);

    // The throttled address is refused even with a valid token; another
    // address is not slowed down.
    let token = token_for(&reg, &server).await;
    let good = client::first_request(&server, "127.0.0.1:5500", &token, &auth, &owner).unwrap();
    let err = RegistrationClient::new(attacker.clone())
        .submit(good.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.metadata().get("lt-fault").unwrap(),
        "registry.throttled"
    );

    // The same from 100 addresses: each is throttled on its own.
    let before = state(&reg);
    let mut tasks = tokio::task::JoinSet::new();
    for host in 0..100u8 {
        let reqs: Vec<_> = (0..100)
            .map(|i| guess(20_000 + host as usize * 100 + i))
            .collect();
        let channel = reg.channel_from(IpAddr::from([127, 0, 1, host + 1])).await;
        tasks.spawn(async move {
            let mut c = RegistrationClient::new(channel);
            let started = std::time::Instant::now();
            let mut reached = 0;
            for r in reqs {
                if c.submit(r).await.unwrap_err().code() != Code::ResourceExhausted {
                    reached += 1;
                }
            }
            (reached, started.elapsed())
        });
    }
    let mut reached = 0;
    while let Some(done) = tasks.join_next().await {
        let (n, took) = done.unwrap();
        // The burst, and what the refill forgave meanwhile (0.5 a second).
        let bound = 30 + (took.as_secs_f64() * 0.5).ceil() as usize;
        assert!(
            n <= bound,
            "{n} guesses of one address reached the registry in {took:?}"
        );
        reached += n;
    }
    println!("10,000 guesses from 100 addresses: {reached} reached the registry");

    // Nothing changed; a fresh address still registers with its token.
    assert_eq!(state(&reg), before);
    let ok = RegistrationClient::new(reg.channel_from(IpAddr::from([127, 0, 0, 9])).await)
        .submit(good)
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test]
async fn another_registrys_anchor_is_named_as_such() {
    let ours = TestRegistry::start(false).await;
    let theirs = TestRegistry::start(false).await;
    let mut wrong = theirs.anchor.clone();
    wrong.registry_addresses = ours.anchor.registry_addresses.clone();
    let err = client::connect(&wrong, None).await.unwrap_err();
    assert!(matches!(err, ClientError::NotThisRegistry { .. }), "{err}");
    assert!(
        err.to_string().contains("not the one your anchor names"),
        "{err}"
    );
}

#[tokio::test]
async fn the_store_is_readable_by_the_registry_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("registry");
    init::initialise(&home, &InitOptions::new("VN", "127.0.0.1:4400")).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("registry.db")), 0o600);
    let listen = "127.0.0.1:0".parse().unwrap();
    for (path, bad) in [(home.join("registry.db"), 0o644), (home.clone(), 0o755)] {
        let good = mode(&path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bad)).unwrap();
        let err = Registry::start(RegistryOptions::new(&home, listen))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("chmod"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(good)).unwrap();
    }
    let r = Registry::start(RegistryOptions::new(&home, listen))
        .await
        .unwrap();
    r.shutdown().await;
}
