//! Contract tests of the [`Store`] trait. Each takes a fresh store from
//! [`stores`], so another backend runs the same suite by adding itself there.

use lienthong_certs::{Fingerprint, KeyAlgorithm, PrivateKey, csr};
use lienthong_proto::id::{MemberClass, MemberId, ServerId};

use super::postgres::TestDatabase as _;
use super::*;
use crate::model::*;

mod faults;
mod moving;
mod publication;
use publication::{LONG, record};

fn settings() -> InstanceSettings {
    InstanceSettings {
        instance: "VN".parse().unwrap(),
        addresses: vec!["127.0.0.1:4400".into()],
        configuration_validity_secs: 600,
        poll_interval_secs: 60,
        auto_approve: false,
    }
}

/// The test database, when `LIENTHONG_TEST_DATABASE_URL` names one
/// (`.ci/run` starts a PostgreSQL cluster and sets it).
fn pg_target() -> Option<PgTarget> {
    let url = std::env::var("LIENTHONG_TEST_DATABASE_URL").ok()?;
    Some(PgTarget::parse(&url).expect("LIENTHONG_TEST_DATABASE_URL"))
}

/// Every backend under test, fresh: SQLite always, PostgreSQL (in a schema
/// of its own) when a test database is set.
fn stores() -> Vec<Box<dyn Store>> {
    let mut v: Vec<Box<dyn Store>> = vec![Box::new(SqliteStore::in_memory(&settings()).unwrap())];
    if let Some(t) = pg_target() {
        v.push(Box::new(
            PgStore::create(&t.scratch().unwrap(), &settings()).unwrap(),
        ));
    }
    v
}

/// Two nodes on one fresh store of each backend: two SQLite connections
/// to one file, two PostgreSQL pools on one schema.
struct Nodes {
    a: Box<dyn Store>,
    b: Box<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn node_pairs() -> Vec<Nodes> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    let mut v = vec![Nodes {
        a: Box::new(SqliteStore::create(&path, &settings()).unwrap()),
        b: Box::new(SqliteStore::open(&path).unwrap()),
        _dir: Some(dir),
    }];
    if let Some(t) = pg_target() {
        let t = t.scratch().unwrap();
        v.push(Nodes {
            a: Box::new(PgStore::create(&t, &settings()).unwrap()),
            b: Box::new(PgStore::open(&t).unwrap()),
            _dir: None,
        });
    }
    v
}

/// Runs `a` and `b` at the same instant on two threads.
fn at_once<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let ha = s.spawn(|| {
            start.wait();
            a()
        });
        let hb = s.spawn(|| {
            start.wait();
            b()
        });
        (ha.join().unwrap(), hb.join().unwrap())
    })
}

fn member(code: &str) -> MemberId {
    MemberId::new("VN", "GOV", code).unwrap()
}

fn base() -> Vec<Change> {
    vec![
        Change::AddMemberClass {
            code: MemberClass::new("GOV").unwrap(),
            description: "Government".into(),
        },
        Change::AddMember {
            id: member("000102"),
            name: "Bộ Công an".into(),
        },
        Change::AddSubsystem {
            id: member("000102").subsystem("population").unwrap(),
        },
    ]
}

fn csr_for(member: Option<MemberId>) -> CsrFor {
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
    let der = csr::create(&key, "t").unwrap();
    CsrFor {
        public_key: csr::verify(&der).unwrap().public_key_der(),
        csr: der,
        member,
        consent: None,
    }
}

fn server() -> ServerId {
    member("000102").server("ss1").unwrap()
}

fn auth_request(token: [u8; 32]) -> NewRequest {
    NewRequest {
        kind: RequestKind::AuthCertificate,
        server: server(),
        subsystem: None,
        address: Some("127.0.0.1:5500".into()),
        auth_csr: Some(csr_for(None)),
        signing_csrs: vec![csr_for(Some(member("000102")))],
        enrollment_token: Some(token),
    }
}

/// Everything but the audit log, for "nothing changed" checks.
fn state(s: &dyn Store) -> String {
    let snap = s.snapshot().unwrap();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        snap.seq,
        snap.members
            .iter()
            .map(|m| (&m.id, &m.subsystems, m.signing_certs.len()))
            .collect::<Vec<_>>(),
        snap.servers
            .iter()
            .map(|s| (&s.id, &s.address, &s.auth_certs, &s.clients))
            .collect::<Vec<_>>(),
        snap.services,
        snap.groups
            .iter()
            .map(|g| (&g.id, &g.members))
            .collect::<Vec<_>>(),
        snap.trusted_cas,
        snap.revoked,
        snap.trace_portal,
        s.requests(None).unwrap(),
    )
}

fn issue(req: &NewRequest) -> Issued {
    // The store does not check certificate contents; any DER-ish bytes do.
    Issued {
        auth: req.auth_csr.as_ref().map(|c| IssuedCert {
            der: [b"auth".as_slice(), &c.public_key].concat(),
            public_key: c.public_key.clone(),
        }),
        signing: req
            .signing_csrs
            .iter()
            .map(|c| {
                (
                    c.member.clone().unwrap(),
                    IssuedCert {
                        der: [b"sign".as_slice(), &c.public_key].concat(),
                        public_key: c.public_key.clone(),
                    },
                )
            })
            .collect(),
    }
}

fn token(s: &dyn Store, t: [u8; 32]) {
    s.apply(
        "officer",
        &Change::CreateEnrollmentToken {
            server: server(),
            token_hash: t,
            expires_at_ms: now_ms() + 60_000,
        },
    )
    .unwrap();
}

#[test]
fn refused_changes_leave_the_store_unchanged() {
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        let before = state(s.as_ref());
        let refused = [
            base()[1].clone(), // duplicate member
            Change::AddMember {
                id: MemberId::new("VN", "COM", "1").unwrap(),
                name: "x".into(),
            }, // unknown class
            Change::AddSubsystem {
                id: member("999").subsystem("x").unwrap(),
            }, // unknown owner
            Change::AddService {
                personal_data: false,
                id: member("000102")
                    .subsystem("nope")
                    .unwrap()
                    .service("a.B", None)
                    .unwrap(),
                description: String::new(),
            },
            Change::RemoveService {
                id: member("000102")
                    .subsystem("population")
                    .unwrap()
                    .service("a.B", None)
                    .unwrap(),
            },
            Change::Reject {
                id: 42,
                note: String::new(),
            },
        ];
        for c in &refused {
            let err = s.apply("officer", c).unwrap_err();
            assert!(!err.to_string().is_empty());
            assert_eq!(state(s.as_ref()), before, "{c:?} changed the store");
        }
        // A bulk apply whose last change fails applies none of them.
        let mut bulk = vec![Change::AddSubsystem {
            id: member("000102").subsystem("tax").unwrap(),
        }];
        bulk.push(refused[0].clone());
        assert!(s.apply_all("officer", &bulk).is_err());
        assert_eq!(state(s.as_ref()), before);
    }
}

#[test]
fn registration_lifecycle_and_key_reuse() {
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        token(s.as_ref(), [1; 32]);
        let req = auth_request([1; 32]);
        let id = s
            .apply("server", &Change::Submit(Box::new(req.clone())))
            .unwrap()
            .request_id
            .unwrap();
        // The token is single-use.
        let mut again = auth_request([1; 32]);
        again.auth_csr = Some(csr_for(None));
        assert!(matches!(
            s.apply("server", &Change::Submit(Box::new(again))),
            Err(StoreError::Conflict(_))
        ));
        let issued = issue(&req);
        s.apply(
            "officer",
            &Change::Approve {
                id,
                note: "ok".into(),
                issued: issued.clone(),
            },
        )
        .unwrap();
        let stored = s.request(id).unwrap().unwrap();
        assert_eq!(stored.state, RequestState::Approved);
        assert_eq!(
            stored.issued_auth.as_ref(),
            Some(&issued.auth.as_ref().unwrap().der)
        );
        assert_eq!(stored.issued_signing.len(), 1);
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.servers.len(), 1);
        assert_eq!(snap.servers[0].auth_certs.len(), 1);
        assert_eq!(snap.members[0].signing_certs.len(), 1);
        // Approving twice is refused.
        assert!(matches!(
            s.apply(
                "officer",
                &Change::Approve {
                    id,
                    note: String::new(),
                    issued: Issued::default()
                }
            ),
            Err(StoreError::Conflict(_))
        ));

        // Revoke the auth certificate: it leaves the server's pins and
        // joins the revoked list; its key can never come back.
        let fp = Fingerprint::of(&issued.auth.as_ref().unwrap().der);
        s.apply(
            "officer",
            &Change::Revoke {
                fingerprint: fp,
                reason: "lost".into(),
            },
        )
        .unwrap();
        let snap = s.snapshot().unwrap();
        assert!(snap.servers[0].auth_certs.is_empty());
        assert_eq!(snap.revoked, vec![fp]);
        token(s.as_ref(), [2; 32]);
        let mut reuse = auth_request([2; 32]);
        reuse.auth_csr = req.auth_csr.clone();
        let err = s
            .apply("server", &Change::Submit(Box::new(reuse)))
            .unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
    }
}

#[test]
fn server_removal_revokes_its_certificates() {
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        token(s.as_ref(), [1; 32]);
        let req = auth_request([1; 32]);
        let id = s
            .apply("server", &Change::Submit(Box::new(req.clone())))
            .unwrap()
            .request_id
            .unwrap();
        s.apply(
            "officer",
            &Change::Approve {
                id,
                note: String::new(),
                issued: issue(&req),
            },
        )
        .unwrap();
        let client = NewRequest {
            kind: RequestKind::Client,
            server: server(),
            subsystem: Some(member("000102").subsystem("population").unwrap()),
            address: None,
            auth_csr: None,
            signing_csrs: vec![],
            enrollment_token: None,
        };
        let cid = s
            .apply("server", &Change::Submit(Box::new(client)))
            .unwrap()
            .request_id
            .unwrap();
        s.apply(
            "officer",
            &Change::Approve {
                id: cid,
                note: String::new(),
                issued: Issued::default(),
            },
        )
        .unwrap();
        assert_eq!(s.snapshot().unwrap().servers[0].clients.len(), 1);
        let removal = NewRequest {
            kind: RequestKind::ServerRemoval,
            server: server(),
            subsystem: None,
            address: None,
            auth_csr: None,
            signing_csrs: vec![],
            enrollment_token: None,
        };
        let rid = s
            .apply("server", &Change::Submit(Box::new(removal)))
            .unwrap()
            .request_id
            .unwrap();
        s.apply(
            "officer",
            &Change::Approve {
                id: rid,
                note: String::new(),
                issued: Issued::default(),
            },
        )
        .unwrap();
        let snap = s.snapshot().unwrap();
        assert!(snap.servers.is_empty());
        assert!(snap.members[0].signing_certs.is_empty());
        assert_eq!(
            snap.revoked.len(),
            2,
            "auth and signing certificates revoked"
        );
    }
}

#[test]
fn audit_is_queryable_by_actor_and_time() {
    for s in stores() {
        s.apply_all("alice", &base()).unwrap();
        s.record_refusal(
            "bob",
            "AddMember",
            "VN/GOV/1",
            "member class GOV does not exist",
        )
        .unwrap();
        let all = s
            .audit(&AuditFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 3 + 1);
        let bob = s
            .audit(&AuditFilter {
                actor: Some("bob".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(bob.len(), 1);
        assert!(bob[0].result.contains("does not exist"));
        // A person acting with an operator's token is found by either name,
        // and neither name finds another that merely starts the same.
        s.record_refusal("lan (via console-officer)", "AddMember", "", "x")
            .unwrap();
        s.record_refusal("lan.other", "AddMember", "", "x").unwrap();
        for name in ["lan", "console-officer"] {
            let found = s
                .audit(&AuditFilter {
                    actor: Some(name.into()),
                    limit: 100,
                    ..Default::default()
                })
                .unwrap();
            let actors: Vec<&str> = found.iter().map(|a| a.actor.as_str()).collect();
            assert_eq!(actors, ["lan (via console-officer)"], "{name}");
        }
        let future = s
            .audit(&AuditFilter {
                since_ms: Some(now_ms() + 60_000),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert!(future.is_empty());
        let limited = s
            .audit(&AuditFilter {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(limited.len(), 2);
    }
}

/// Creates a store, changes it, and checks that reopening it keeps its
/// state and publications and that creating it again is refused.
fn keeps_state_across_reopening(
    create: impl Fn() -> Result<Box<dyn Store>, StoreError>,
    open: impl Fn() -> Result<Box<dyn Store>, StoreError>,
) {
    {
        let s = create().unwrap();
        s.apply_all("officer", &base()).unwrap();
        assert!(s.take_lease("node-a", LONG).unwrap());
        s.record_publication("node-a", &record(7), b"seven")
            .unwrap();
        assert!(
            s.record_publication("node-a", &record(7), b"seven again")
                .is_err()
        );
    }
    assert!(create().is_err(), "never overwrites");
    let s = open().unwrap();
    assert_eq!(s.settings().unwrap(), settings());
    assert_eq!(s.snapshot().unwrap().members.len(), 1);
    assert_eq!(s.last_publication().unwrap().unwrap().version, 7);
    assert_eq!(s.publication_after(6).unwrap().unwrap().signed, b"seven");
}

#[test]
fn reopening_keeps_state_and_publication_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    keeps_state_across_reopening(
        || Ok(Box::new(SqliteStore::create(&path, &settings())?)),
        || Ok(Box::new(SqliteStore::open(&path)?)),
    );
    assert!(SqliteStore::open(&dir.path().join("missing.db")).is_err());
}

#[test]
fn tokens_of_another_server_or_expired_are_refused() {
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        s.apply(
            "officer",
            &Change::CreateEnrollmentToken {
                server: member("000102").server("other").unwrap(),
                token_hash: [5; 32],
                expires_at_ms: now_ms() + 60_000,
            },
        )
        .unwrap();
        s.apply(
            "officer",
            &Change::CreateEnrollmentToken {
                server: server(),
                token_hash: [6; 32],
                expires_at_ms: now_ms() - 1,
            },
        )
        .unwrap();
        let before = state(s.as_ref());
        for t in [[5; 32], [6; 32], [7; 32]] {
            assert!(
                s.apply("server", &Change::Submit(Box::new(auth_request(t))))
                    .is_err()
            );
        }
        assert_eq!(state(s.as_ref()), before);
    }
}

#[test]
fn only_usable_enrollment_tokens_are_listed() {
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        // Expired, used, and usable.
        s.apply(
            "officer",
            &Change::CreateEnrollmentToken {
                server: member("000102").server("old").unwrap(),
                token_hash: [6; 32],
                expires_at_ms: now_ms() - 1,
            },
        )
        .unwrap();
        token(s.as_ref(), [8; 32]);
        s.apply("server", &Change::Submit(Box::new(auth_request([8; 32]))))
            .unwrap();
        s.apply(
            "officer",
            &Change::CreateEnrollmentToken {
                server: member("000102").server("next").unwrap(),
                token_hash: [9; 32],
                expires_at_ms: now_ms() + 60_000,
            },
        )
        .unwrap();
        let usable = s.usable_enrollments(now_ms()).unwrap();
        let servers: Vec<String> = usable.iter().map(|e| e.server.to_string()).collect();
        assert_eq!(servers, ["VN/GOV/000102/next"]);
        assert!(usable[0].expires_at_ms > now_ms());
    }
}

#[test]
fn one_key_one_certificate() {
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        // One key for the auth and the signing certificate of one request.
        token(s.as_ref(), [1; 32]);
        let mut twice = auth_request([1; 32]);
        twice.signing_csrs[0].public_key = twice.auth_csr.as_ref().unwrap().public_key.clone();
        let before = state(s.as_ref());
        let err = s
            .apply("server", &Change::Submit(Box::new(twice)))
            .unwrap_err();
        assert!(err.to_string().contains("one key"), "{err}");
        assert_eq!(state(s.as_ref()), before);

        // A key already in a pending request, asked for again.
        let first = auth_request([1; 32]);
        let id = s
            .apply("server", &Change::Submit(Box::new(first.clone())))
            .unwrap()
            .request_id
            .unwrap();
        s.apply(
            "officer",
            &Change::CreateEnrollmentToken {
                server: member("000102").server("ss2").unwrap(),
                token_hash: [2; 32],
                expires_at_ms: now_ms() + 60_000,
            },
        )
        .unwrap();
        let mut other = auth_request([2; 32]);
        other.server = member("000102").server("ss2").unwrap();
        other.auth_csr = first.auth_csr.clone();
        let before = state(s.as_ref());
        let err = s
            .apply("server", &Change::Submit(Box::new(other)))
            .unwrap_err();
        assert!(err.to_string().contains("pending request"), "{err}");
        assert_eq!(state(s.as_ref()), before);

        // Certificates: the store refuses a second certificate on one key
        // even when a caller skips the checks above.
        let mut issued = issue(&first);
        issued.signing[0].1.public_key = issued.auth.as_ref().unwrap().public_key.clone();
        let before = state(s.as_ref());
        let err = s
            .apply(
                "officer",
                &Change::Approve {
                    id,
                    note: String::new(),
                    issued,
                },
            )
            .unwrap_err();
        assert!(
            err.to_string().contains("already has a certificate"),
            "{err}"
        );
        assert_eq!(state(s.as_ref()), before);
    }
}

#[test]
fn witness_judges_and_records_in_one_transaction() {
    use crate::witness::{History, Submitted, Verdict};
    for s in stores() {
        let cp = |size: u64, root: u8, at: i64| Submitted {
            checkpoint: WitnessedCheckpoint {
                tree_size: size,
                root: [root; 32],
                created_at_ms: at,
            },
            proof_from: 0,
            proof: Vec::new(),
        };
        let mut seen = Vec::new();
        let (v, _) = s
            .witness(&server(), &cp(5, 1, 10), b"sig", &mut |h: &History| {
                seen.push(h.clone());
                Verdict::Accept
            })
            .unwrap();
        assert_eq!(v, Verdict::Accept);
        assert_eq!(seen[0], History::default());
        // The judge sees what was recorded, with its signature, and the
        // checkpoint the proof starts from.
        let (_, h) = s
            .witness(&server(), &cp(9, 2, 20), b"sig2", &mut |_| Verdict::Accept)
            .unwrap();
        assert_eq!(h.last.as_ref().unwrap().1, b"sig".to_vec());
        let mut stale = cp(12, 3, 30);
        stale.proof_from = 5;
        let (v, h) = s
            .witness(&server(), &stale, b"sig3", &mut |_| Verdict::Stale)
            .unwrap();
        assert_eq!(v, Verdict::Stale);
        assert_eq!(h.last.as_ref().unwrap().0.tree_size, 9);
        assert_eq!(h.base.as_ref().unwrap().tree_size, 5);
        assert_eq!(s.last_checkpoint(&server()).unwrap().unwrap().tree_size, 9);
        // An alarm is recorded with the refusal, and nothing else.
        s.witness(&server(), &cp(12, 4, 40), b"x", &mut |_| {
            Verdict::Alarm("rewritten".into())
        })
        .unwrap();
        assert_eq!(s.alarms().unwrap()[0].reason, "rewritten");
        assert_eq!(s.last_checkpoint(&server()).unwrap().unwrap().tree_size, 9);
        // The same size with another root is never recorded, whatever a
        // judge says; the same tree later moves the date forward.
        assert!(
            s.witness(&server(), &cp(9, 7, 50), b"x", &mut |_| Verdict::Accept)
                .is_err()
        );
        s.witness(&server(), &cp(9, 2, 60), b"x", &mut |_| Verdict::Accept)
            .unwrap();
        assert_eq!(
            s.last_checkpoint(&server()).unwrap().unwrap().created_at_ms,
            60
        );
    }
}

#[test]
fn one_token_redeemed_twice_at_once_serves_one_request() {
    for n in node_pairs() {
        n.a.apply_all("officer", &base()).unwrap();
        for round in 0..5u8 {
            let t = [100 + round; 32];
            token(n.a.as_ref(), t);
            let (ra, rb) = at_once(
                || {
                    n.a.apply("server", &Change::Submit(Box::new(auth_request(t))))
                },
                || {
                    n.b.apply("server", &Change::Submit(Box::new(auth_request(t))))
                },
            );
            let (won, lost) = match (ra, rb) {
                (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
                other => panic!("exactly one redemption must win: {other:?}"),
            };
            assert!(matches!(lost, StoreError::Conflict(_)), "{lost}");
            let id = won.request_id.unwrap();
            assert_eq!(
                n.b.enrollment(&t).unwrap().unwrap().used_by_request,
                Some(id)
            );
            let with_token: Vec<_> =
                n.a.requests(None)
                    .unwrap()
                    .into_iter()
                    .filter(|r| r.request.enrollment_token == Some(t))
                    .collect();
            assert_eq!(with_token.len(), 1, "one request holds the token");
        }
    }
}

#[test]
fn conflicting_checkpoints_witnessed_on_two_nodes_at_once_one_wins() {
    use crate::witness::{History, Submitted, Verdict};
    let cp = |size: u64, root: u8| Submitted {
        checkpoint: WitnessedCheckpoint {
            tree_size: size,
            root: [root; 32],
            created_at_ms: 10,
        },
        proof_from: 0,
        proof: Vec::new(),
    };
    // A judge that accepts only a first checkpoint, as the real one does
    // for a proof from an empty log: whichever node records second must
    // see the other's checkpoint and raise an alarm, never record a fork.
    let first_only = |h: &History| match &h.last {
        None => Verdict::Accept,
        Some(_) => Verdict::Alarm("fork".into()),
    };
    for n in node_pairs() {
        for round in 0..5u64 {
            let who = member("000102").server(&format!("w{round}")).unwrap();
            let (ra, rb) = at_once(
                || {
                    n.a.witness(&who, &cp(10, 1), b"a", &mut |h: &History| first_only(h))
                },
                || {
                    n.b.witness(&who, &cp(12, 2), b"b", &mut |h: &History| first_only(h))
                },
            );
            let (va, vb) = (ra.unwrap().0, rb.unwrap().0);
            let winner = match (&va, &vb) {
                (Verdict::Accept, Verdict::Alarm(_)) => 10,
                (Verdict::Alarm(_), Verdict::Accept) => 12,
                other => panic!("exactly one checkpoint must be accepted: {other:?}"),
            };
            let last = n.b.last_checkpoint(&who).unwrap().unwrap();
            assert_eq!(last.tree_size, winner);
            let alarms = n.a.alarms().unwrap();
            assert_eq!(alarms.iter().filter(|a| a.server == who).count(), 1);
        }
    }
}

#[test]
fn two_officers_approving_one_request_at_once_approve_it_once() {
    for n in node_pairs() {
        n.a.apply_all("officer", &base()).unwrap();
        for round in 0..3u8 {
            let t = [200 + round; 32];
            token(n.a.as_ref(), t);
            let mut req = auth_request(t);
            req.signing_csrs.clear();
            let id =
                n.a.apply("server", &Change::Submit(Box::new(req.clone())))
                    .unwrap()
                    .request_id
                    .unwrap();
            let approve = |who: &str, s: &dyn Store| {
                s.apply(
                    who,
                    &Change::Approve {
                        id,
                        note: who.into(),
                        issued: issue(&req),
                    },
                )
            };
            let (ra, rb) = at_once(
                || approve("alice", n.a.as_ref()),
                || approve("bob", n.b.as_ref()),
            );
            let lost = match (ra, rb) {
                (Ok(_), Err(l)) | (Err(l), Ok(_)) => l,
                other => panic!("exactly one approval must win: {other:?}"),
            };
            assert!(matches!(lost, StoreError::Conflict(_)), "{lost}");
            let stored = n.b.request(id).unwrap().unwrap();
            assert_eq!(stored.state, RequestState::Approved);
            assert!(stored.issued_auth.is_some());
            let approvals =
                n.a.audit(&AuditFilter {
                    limit: 1000,
                    ..Default::default()
                })
                .unwrap()
                .into_iter()
                .filter(|e| {
                    e.action == "ApproveRequest" && e.detail.starts_with(&format!("request {id} "))
                })
                .count();
            assert_eq!(approvals, 1, "one approval audited");
        }
    }
}

#[test]
fn postgres_store_keeps_state_refuses_overwrite_and_newer_schemas() {
    let Some(t) = pg_target() else { return };
    let t = t.scratch().unwrap();
    assert!(
        PgStore::open(&t)
            .unwrap_err()
            .to_string()
            .contains("registry init"),
        "an empty database holds no registry"
    );
    keeps_state_across_reopening(
        || Ok(Box::new(PgStore::create(&t, &settings())?)),
        || Ok(Box::new(PgStore::open(&t)?)),
    );
    t.execute("UPDATE schema_version SET version = 99").unwrap();
    let err = PgStore::open(&t).unwrap_err().to_string();
    assert!(
        err.contains("99") && err.contains(&MIGRATIONS.len().to_string()),
        "{err}"
    );
}

#[test]
fn a_store_of_a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    drop(SqliteStore::create(&path, &settings()).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("99") && err.contains(&MIGRATIONS.len().to_string()),
        "{err}"
    );
}

#[test]
fn database_urls_are_parsed_and_never_shown_with_their_password() {
    let t = PgTarget::parse(
        "postgres://reg:s3cret@db1:5432,db2:5433/registry?target_session_attrs=read-write",
    )
    .unwrap();
    let shown = format!("{} {:?}", t.shown(), t);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("db1:5432,db2:5433/registry"), "{shown}");
    for bad in [
        "mysql://x@h/db",
        "postgres://h/db",
        "postgres://u@h/db?sslmode=require",
        "postgres://u@h/db?no_such_option=1",
    ] {
        let err = PgTarget::parse(bad).unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
    let missing = PgTarget::parse("postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent.pem")
        .unwrap()
        .tls()
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("/nonexistent.pem"), "{missing}");
}

#[test]
fn descriptor_sets_are_kept_by_digest_while_a_service_names_them() {
    let population = member("000102").subsystem("population").unwrap();
    let registry = population
        .service("population.v1.PersonRegistry", None)
        .unwrap();
    let describe = |bytes: &[u8]| Change::DescribeService {
        id: registry.clone(),
        sha256: lienthong_proto::sha256(bytes),
        descriptor_set: bytes.to_vec(),
        defines: vec!["population.v1.PersonRegistry".into()],
    };
    let digest_of = |s: &dyn Store| {
        s.snapshot()
            .unwrap()
            .services
            .iter()
            .find(|x| x.id == registry)
            .and_then(|x| x.descriptor_sha256)
    };
    for s in stores() {
        s.apply_all("officer", &base()).unwrap();
        // Only a registered service is described.
        let refused = s.apply("officer", &describe(b"first")).unwrap_err();
        assert!(matches!(refused, StoreError::Missing(_)), "{refused}");
        s.apply(
            "officer",
            &Change::AddService {
                id: registry.clone(),
                description: String::new(),
                personal_data: false,
            },
        )
        .unwrap();
        assert_eq!(digest_of(s.as_ref()), None);

        s.apply("officer", &describe(b"first")).unwrap();
        let first = lienthong_proto::sha256(b"first");
        assert_eq!(digest_of(s.as_ref()), Some(first));
        assert_eq!(
            s.descriptor_set(&first).unwrap().as_deref(),
            Some(&b"first"[..])
        );

        // A new set replaces the old, which no service names any more.
        s.apply("officer", &describe(b"second")).unwrap();
        let second = lienthong_proto::sha256(b"second");
        assert_eq!(digest_of(s.as_ref()), Some(second));
        assert_eq!(s.descriptor_set(&first).unwrap(), None);
        assert_eq!(
            s.descriptor_set(&second).unwrap().as_deref(),
            Some(&b"second"[..])
        );

        let audit = s
            .audit(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert!(
            audit.iter().any(|a| a.action == "DescribeService"
                && a.detail.contains(&hex::encode(second))
                && a.detail.contains("6 bytes")),
            "{audit:?}"
        );

        s.apply(
            "officer",
            &Change::RemoveService {
                id: registry.clone(),
            },
        )
        .unwrap();
        assert_eq!(s.descriptor_set(&second).unwrap(), None);
    }
}
