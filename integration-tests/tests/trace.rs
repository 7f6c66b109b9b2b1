//! A citizen asks who looked at their data: the portal asks every server,
//! verifies every record against witnessed checkpoints, and shows both
//! sides of each exchange; tampering is flagged, withheld records counted.

#[path = "support/tamper.rs"]
mod tamper;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::wait::{PATIENCE, refuses_connections, wait_until};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::trace::v1::ExchangeStatus;
use lienthong_proto::pb::trace::v1::{LogLeaf, Side};
use lienthong_security_server::access::{AccessRule, Subject};
use lienthong_security_server::keys::ServerDir;
use lienthong_security_server::trace::pairing::Status;
use lienthong_security_server::trace::portal::Outcome;
use prost::Message;

const CITIZEN: &str = "001099012345";
const SOMEONE_ELSE: &str = "079201000001";

fn with_subject(
    client: &lienthong_proto::id::SubsystemId,
    subject: &str,
) -> tonic::metadata::MetadataMap {
    let mut m = call_metadata(client, &population());
    m.insert("lt-data-subject", subject.parse().unwrap());
    m
}

/// Business reads the citizen twice, tax once (and once more, withheld);
/// someone else is read too. Every server checkpoints.
async fn scenario() -> Federation {
    let f = Federation::start().await;
    for p in &f.population {
        p.server()
            .grant(&AccessRule {
                subject: Subject::Group(investigators()),
                provider: population(),
                service: PERSON_REGISTRY.into(),
                method: Some("GetPerson".into()),
            })
            .unwrap();
    }
    let business_is = f.business.client().await;
    let tax_is = f.tax.client().await;
    for _ in 0..2 {
        business_is
            .unary("GetPerson", with_subject(&business(), CITIZEN), CITIZEN)
            .await
            .unwrap();
    }
    tax_is
        .unary("GetPerson", with_subject(&tax(), CITIZEN), CITIZEN)
        .await
        .unwrap();
    business_is
        .unary(
            "GetPerson",
            with_subject(&business(), SOMEONE_ELSE),
            SOMEONE_ELSE,
        )
        .await
        .unwrap();
    let tomorrow = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 24 * 3600 * 1000;
    let mut hidden = with_subject(&tax(), CITIZEN);
    hidden.insert("lt-withheld-until", tomorrow.to_string().parse().unwrap());
    tax_is.unary("GetPerson", hidden, CITIZEN).await.unwrap();
    f.checkpoint_all().await;
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_sees_exactly_who_read_their_data() {
    let f = scenario().await;
    let report = f.trace(CITIZEN).await.unwrap();
    assert!(report.unanswered.is_empty(), "{:?}", report.unanswered);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.exchanges.len(), 3, "{:#?}", report.exchanges);
    assert!(report.exchanges.iter().all(|e| e.verified));
    let clients: Vec<&str> = report.exchanges.iter().map(|e| e.client.as_str()).collect();
    assert_eq!(
        clients
            .iter()
            .filter(|c| **c == business().to_string())
            .count(),
        2
    );
    assert_eq!(
        clients.iter().filter(|c| **c == tax().to_string()).count(),
        1
    );
    for e in &report.exchanges {
        assert_eq!(e.method, "GetPerson");
        assert_eq!(e.user_id, "officer-7");
        assert_eq!(e.grpc_status, 0);
        assert!(e.service.ends_with(PERSON_REGISTRY));
        let sides: Vec<Side> = e.logged_by.iter().map(|(_, s)| *s).collect();
        assert!(
            sides.contains(&Side::Consumer) && sides.contains(&Side::Provider),
            "{e:?}"
        );
    }
    // One withheld exchange, logged by its two servers, counted once.
    assert_eq!(
        report.withheld.values().sum::<u32>(),
        1,
        "{:?}",
        report.withheld
    );
    assert!(
        report
            .exchanges
            .iter()
            .all(|e| e.status == Status::Verified),
        "{:#?}",
        report.exchanges
    );
    assert_eq!(report.outcome(), Outcome::Complete);

    // Someone else's trace shows only their exchange.
    let other = f.trace(SOMEONE_ELSE).await.unwrap();
    assert_eq!(other.exchanges.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_edited_in_a_servers_store_is_flagged() {
    let f = scenario().await;
    // Edit the purpose of one of the citizen's records on the business server.
    let server = f.business.server();
    let found = server
        .log_reader()
        .about(CITIZEN, 0, i64::MAX, 0, 10)
        .unwrap();
    let victim = &found[0];
    // The operator, with the server's own keys, rewrites it in place.
    let index = victim.leaf_index;
    tamper::reseal(&f.business, index, |stored| {
        let mut leaf = LogLeaf::decode(stored.leaf.as_slice()).unwrap();
        let len = leaf.purpose.len();
        leaf.purpose = format!("{:<len$}", "routine check");
        leaf.purpose.truncate(len);
        stored.leaf = leaf.encode_to_vec();
    });

    let report = f.trace(CITIZEN).await.unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].0, f.business.id);
    assert!(
        report.failures[0]
            .1
            .contains("changed after it was written")
    );
    assert_eq!(report.exchanges.iter().filter(|e| !e.verified).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_history_is_refused_by_the_registry_and_raised() {
    let mut f = scenario().await;
    let size = f.business.server().log_reader().tree_size().unwrap();
    // Cut the last commits and write new ones in their place, removing the
    // local record of the witnessed checkpoints too (with it, the server
    // refuses to start on a log shorter than what was witnessed).
    f.business.stop();
    assert!(tamper::cut_tail(&f.business, size - 2) < size);
    std::fs::remove_file(tamper::log_dir(&f.business).join("checkpoints.db")).unwrap();
    f.business.start().await;
    let business_is = f.business.client().await;
    for _ in 0..2 {
        business_is
            .unary("GetPerson", with_subject(&business(), SOMEONE_ELSE), "x")
            .await
            .unwrap();
    }
    // Without its own record of what was witnessed, the server proves from
    // an empty tree; the registry knows better.
    let refused = f.business.server().checkpoint_now().await.unwrap_err();
    assert!(
        matches!(
            &refused,
            lienthong_security_server::checkpoint::CheckpointError::Refused(_)
        ),
        "{refused}"
    );
    let refused = refused.to_string();
    assert!(
        refused.contains("registry.witness.alarm") && refused.contains("never witnessed"),
        "{refused}"
    );
    let alarms = f
        .registry
        .officer()
        .await
        .list_alarms(pb::ListAlarmsRequest {})
        .await
        .unwrap()
        .into_inner()
        .alarms;
    assert_eq!(alarms.len(), 1);
    assert_eq!(
        alarms[0].server,
        Some((&f.business.id).into()),
        "{alarms:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_portal_may_ask_and_personal_ids_are_checked() {
    let f = scenario().await;
    // The business registry pretends to be a portal.
    let is = f.business.client().await;
    let mut grpc = tonic::client::Grpc::new(is.channel.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(lienthong_proto::pb::trace::v1::FindUsageRequest {
        data_subject: CITIZEN.into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("lt-client", business().to_string().parse().unwrap());
    req.metadata_mut()
        .insert("lt-server", f.population[0].id.to_string().parse().unwrap());
    let status = grpc
        .unary::<_, lienthong_proto::pb::trace::v1::FindUsageReply, _>(
            req,
            "/lienthong.trace.v1.AccessTrace/FindUsage".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        fault_of(&status),
        "server.serverproxy.access_denied",
        "{status:?}"
    );

    use lienthong_security_server::trace::portal::TraceError;
    let bad = f.trace("not a personal id!").await.unwrap_err();
    assert!(matches!(bad, TraceError::Subject(_)), "{bad}");
    assert!(bad.to_string().contains("VN-CCCD"), "{bad}");
    let spaced = f.trace(" 001099012345").await.unwrap_err();
    assert!(spaced.to_string().contains("matches none"), "{spaced}");

    // A server that is down is reported, not waited for forever.
    let mut f = f;
    f.tax.stop();
    let gone = f.tax.provider_addr;
    wait_until(PATIENCE, "the stopped server's port to close", || {
        refuses_connections(gone)
    })
    .await;
    let report = f.trace(CITIZEN).await.unwrap();
    assert_eq!(report.unanswered.len(), 1, "{:?}", report.unanswered);
    assert_eq!(report.unanswered[0].0, f.tax.id);
    assert_eq!(
        report.exchanges.len(),
        3,
        "the provider side still shows every exchange"
    );
    // Tax's exchange is not confirmed by its consumer end; never verified.
    let unconfirmed: Vec<_> = report
        .exchanges
        .iter()
        .filter(|e| matches!(e.status, Status::Unconfirmed(_)))
        .collect();
    assert_eq!(unconfirmed.len(), 1, "{:#?}", report.exchanges);
    assert_eq!(unconfirmed[0].client, tax().to_string());
    assert!(!unconfirmed[0].verified);
    assert_eq!(report.outcome(), Outcome::Incomplete);
}

/// An exchange's records deleted from a server's index.
fn delete_exchange(agency: &Agency, message_id: &str) -> usize {
    tamper::delete_exchange_from_index(agency, message_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_whose_records_vanished_is_a_discrepancy() {
    let f = scenario().await;
    let before = f.trace(CITIZEN).await.unwrap();
    let business_reads: Vec<_> = before
        .exchanges
        .iter()
        .filter(|e| e.client == business().to_string())
        .collect();
    let (first, second) = (&business_reads[0].message_id, &business_reads[1].message_id);
    // The provider's rows of one exchange deleted, the consumer's of another.
    let provider = f
        .population
        .iter()
        .find(|p| business_reads[0].logged_by.iter().any(|(s, _)| *s == p.id))
        .unwrap();
    assert!(delete_exchange(provider, first) > 0);
    assert!(delete_exchange(&f.business, second) > 0);

    let report = f.trace(CITIZEN).await.unwrap();
    let status_of = |id: &str| {
        report
            .exchanges
            .iter()
            .find(|e| e.message_id == id)
            .map(|e| (e.status.clone(), e.verified))
            .unwrap()
    };
    let (s, verified) = status_of(first);
    assert!(!verified);
    match s {
        Status::Discrepancy(why) => assert!(
            why.contains(&format!("provider's server {}", provider.id)),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let (s, verified) = status_of(second);
    assert!(!verified);
    match s {
        Status::Discrepancy(why) => assert!(
            why.contains(&format!("consumer's server {}", f.business.id)),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.outcome(), Outcome::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portals_grpc_api_answers_a_web_page() {
    use lienthong_proto::pb::trace::v1::trace_portal_client::TracePortalClient;
    use lienthong_proto::pb::trace::v1::trace_portal_server::TracePortalServer;
    use lienthong_security_server::trace::portal_api::PortalApi;

    let f = scenario().await;
    let consumer = f.portal.client().await.channel;
    let api = PortalApi::new(
        consumer,
        portal(),
        f.portal.server().conf().clone(),
        f.registry.anchor.clone(),
        Duration::from_secs(5),
        Some(std::sync::Arc::new(
            lienthong_security_server::keys::auth_identity(&ServerDir(
                f.portal.dir.path().to_owned(),
            ))
            .unwrap(),
        )),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TracePortalServer::new(api))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut web = TracePortalClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let report = web
        .trace(lienthong_proto::pb::trace::v1::TraceRequest {
            data_subject: CITIZEN.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.exchanges.len(), 3);
    assert!(
        report
            .exchanges
            .iter()
            .all(|e| e.verified && e.logged_by.len() >= 2)
    );
    assert_eq!(report.withheld.iter().map(|w| w.count).sum::<u32>(), 1);
    assert!(report.withheld.iter().all(|w| w.message_ids.is_empty()));
    assert!(
        report
            .exchanges
            .iter()
            .all(|e| e.status == ExchangeStatus::Verified as i32 && e.problem.is_empty())
    );
    let bad = web
        .trace(lienthong_proto::pb::trace::v1::TraceRequest {
            data_subject: "'; drop table".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// Every record of the business server marked pruned in its index (as
/// retention would leave them, without retention's marker): the trace is
/// not complete, never silently short of that server's exchanges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_entries_marked_pruned_hide_nothing() {
    let f = scenario().await;
    let before = f.trace(CITIZEN).await.unwrap();
    assert_eq!(before.outcome(), Outcome::Complete);
    assert!(tamper::mark_every_record_pruned(&f.business) > 0);
    // The server's own answer fails rather than come back short...
    let own = f
        .business
        .server()
        .log_reader()
        .about(CITIZEN, 0, i64::MAX, 0, 100);
    assert!(own.is_err(), "{:?}", own.map(|r| r.len()));
    // ...and the trace says so.
    let report = f.trace(CITIZEN).await.unwrap();
    assert_ne!(
        report.outcome(),
        Outcome::Complete,
        "{:#?}",
        report.exchanges
    );
    assert!(
        report.failures.iter().any(|(id, _)| *id == f.business.id)
            || report.exchanges.iter().any(|e| !e.verified),
        "{:#?} {:#?}",
        report.failures,
        report.exchanges
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_member_can_put_words_in_another_members_trace() {
    let f = scenario().await;
    let before = f.trace(CITIZEN).await.unwrap();
    // Tax's information system claims to be business on tax's server.
    let mut forged = with_subject(&business(), CITIZEN);
    forged.insert("lt-purpose", "forged-by-tax".parse().unwrap());
    let status = f
        .tax
        .client()
        .await
        .unary("GetPerson", forged, CITIZEN)
        .await
        .unwrap_err();
    assert_eq!(fault_of(&status), "client.client_not_on_this_server");
    // Tax's server signs an envelope naming business as the client, hiding
    // it for ten years, straight to the provider.
    let peer = RawPeer::new(&f.registry, &f.tax, &f.population[0], None)
        .await
        .unwrap();
    let mut header = peer.header(
        &business(),
        &PersonRequest {
            personal_id: CITIZEN.into(),
        },
    );
    header.purpose = "forged-by-tax".into();
    header.withheld_until_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 10 * 365 * 86_400_000;
    let envelope = peer.sign(header, &member("000201"));
    let status = peer
        .send(
            Some(envelope),
            PersonRequest {
                personal_id: CITIZEN.into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(fault_of(&status), "server.serverproxy.client_not_owned");
    f.checkpoint_all().await;

    let after = f.trace(CITIZEN).await.unwrap();
    assert!(
        after.exchanges.iter().all(|e| e.purpose != "forged-by-tax"),
        "{:#?}",
        after.exchanges
    );
    assert_eq!(after.exchanges.len(), before.exchanges.len());
    assert_eq!(after.withheld, before.withheld);
    assert_eq!(after.outcome(), Outcome::Complete, "{:#?}", after.exchanges);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_reserves_the_bus_s_own_service_names() {
    let f = Federation::start().await;
    let e = f
        .registry
        .officer()
        .await
        .add_service(pb::AddServiceRequest {
            id: Some(
                (&population()
                    .service("lienthong.trace.v1.AccessTrace", None)
                    .unwrap())
                    .into(),
            ),
            description: "a look-alike".into(),
            personal_data: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("reserved"), "{e:?}");
}

/// Tax reads the citizen for an investigation ("điều tra vụ án 2026/7"),
/// withheld from them until `until_ms`; every server checkpoints.
async fn tax_reads_the_citizen_withheld_until(f: &Federation, until_ms: i64) {
    let mut hidden = with_subject(&tax(), CITIZEN);
    hidden.insert("lt-withheld-until", until_ms.to_string().parse().unwrap());
    hidden.insert("lt-purpose", "điều tra vụ án 2026/7".parse().unwrap());
    f.tax
        .client()
        .await
        .unary("GetPerson", hidden, CITIZEN)
        .await
        .unwrap();
    f.checkpoint_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_exchange_is_proven_while_hidden_and_revealed_on_release() {
    let f = scenario().await;
    let soon = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 2_000;
    tax_reads_the_citizen_withheld_until(&f, soon).await;

    // Withheld: counted, proven and judged against the grant, never shown;
    // no file of either server holds its purpose in clear.
    let report = f.trace(CITIZEN).await.unwrap();
    assert_eq!(
        report.withheld.values().sum::<u32>(),
        2,
        "{:?}",
        report.withheld
    );
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        report
            .exchanges
            .iter()
            .all(|e| e.purpose != "điều tra vụ án 2026/7")
    );
    for agency in [&f.tax, &f.population[0], &f.population[1]] {
        for entry in std::fs::read_dir(tamper::log_dir(agency)).unwrap() {
            let p = entry.unwrap().path();
            if let Ok(bytes) = std::fs::read(&p) {
                let needle = "điều tra vụ án".as_bytes();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{p:?} holds the purpose in clear"
                );
            }
        }
    }

    // Released: shown with its purpose, verified at both ends.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let released = loop {
        let report = f.trace(CITIZEN).await.unwrap();
        if let Some(e) = report
            .exchanges
            .iter()
            .find(|e| e.purpose == "điều tra vụ án 2026/7")
        {
            break (e.clone(), report);
        }
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (exchange, report) = released;
    assert!(exchange.verified, "{exchange:#?}");
    assert_eq!(exchange.status, Status::Verified);
    assert_eq!(exchange.user_id, "officer-7");
    assert_eq!(report.withheld.values().sum::<u32>(), 1, "the other one");
    assert_eq!(report.outcome(), Outcome::Complete, "{:?}", report.failures);
}

/// Every file of every server, and the registry's, after exchanges about
/// the citizen (one withheld) and their trace: none holds the citizen's
/// id, the official's, a purpose, or the id's SHA-256 (raw or hex), in any
/// file — stores, logs, indexes, write-ahead logs, configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_a_server_writes_holds_personal_data() {
    let f = scenario().await;
    let tomorrow = lienthong_proto::time::now_ms() + 24 * 3600 * 1000;
    tax_reads_the_citizen_withheld_until(&f, tomorrow).await;
    assert_eq!(f.trace(CITIZEN).await.unwrap().outcome(), Outcome::Complete);
    let digest = lienthong_proto::sha256(CITIZEN.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let needles: [(&str, &[u8]); 6] = [
        ("the citizen's id", CITIZEN.as_bytes()),
        ("the official's id", b"officer-7"),
        ("the purpose", b"business registration 2026-114"),
        ("the withheld purpose", "điều tra vụ án".as_bytes()),
        ("the id's SHA-256", &digest),
        ("the id's SHA-256 in hex", hex.as_bytes()),
    ];
    fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut all = Vec::new();
    for agency in f.all() {
        files(agency.dir.path(), &mut all);
    }
    files(f.registry.dir.path(), &mut all);
    assert!(all.len() > 30, "{all:?}");
    for path in &all {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == *needle),
                "{} holds {what}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_showing_an_older_checkpoint_cannot_keep_records_pending() {
    let f = scenario().await;
    f.business
        .client()
        .await
        .unary("GetPerson", with_subject(&business(), CITIZEN), CITIZEN)
        .await
        .unwrap();
    f.checkpoint_all().await;
    assert_eq!(f.trace(CITIZEN).await.unwrap().outcome(), Outcome::Complete);
    // The business server forgets its newest checkpoint: it now answers
    // with the one before, and the newest exchange's records are beyond it.
    let db =
        rusqlite::Connection::open(tamper::log_dir(&f.business).join("checkpoints.db")).unwrap();
    assert_eq!(
        db.execute(
            "DELETE FROM checkpoints WHERE tree_size = (SELECT max(tree_size) FROM checkpoints)",
            [],
        )
        .unwrap(),
        1
    );
    let report = f.trace(CITIZEN).await.unwrap();
    assert!(
        report
            .failures
            .iter()
            .any(|(s, why)| *s == f.business.id && why.contains("older checkpoint")),
        "{:?}",
        report.failures
    );
    assert_eq!(report.unwitnessed, 0, "nothing is left pending");
    assert_eq!(report.outcome(), Outcome::Failed);
}

/// A server whose log the SQLite era wrote, and whose checkpoint of it the
/// registry witnessed, moves it into segments when it starts; its first
/// checkpoint after the move — the old records, the move's own record of
/// what it found pruned, and new exchanges — is
/// accepted by the registry's witness as extending the old one, with no
/// alarm ("history rewritten" or other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_accepts_the_first_checkpoint_after_a_log_moves_from_the_sqlite_era() {
    use lienthong_message_log::legacy::fixture;
    use lienthong_message_log::{LogRecord, StoredCheckpoint};
    use lienthong_proto::canonical;
    use lienthong_proto::merkle;
    use lienthong_proto::pb::registry::v1::checkpoint_witness_client::CheckpointWitnessClient;

    let mut f = Federation::start().await;
    f.business.stop();
    let dir = ServerDir(f.business.dir.path().to_owned());
    std::fs::remove_dir_all(dir.message_log()).unwrap();
    let keys =
        lienthong_security_server::keys::log_keys(&dir, None, &f.business.id.to_string()).unwrap();
    let now = lienthong_proto::time::now_ms();
    let records: Vec<LogRecord> = (0..40)
        .map(|i| LogRecord {
            at_ms: now - 60_000 + i,
            message_id: format!("sqlite-era-{i}"),
            client: business().to_string(),
            service: population().to_string(),
            method: "GetPerson".into(),
            data_subject: CITIZEN.into(),
            purpose: "business registration 2026-114".into(),
            user_id: "officer-7".into(),
            ..Default::default()
        })
        .collect();
    let leaves = fixture::write(&dir.legacy_message_log(), &keys, &records, |i| i < 5);
    let hashes: Vec<_> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();

    // The registry witnesses the old log at 30 records, as the server of
    // that era would have asked it to.
    let server_keys = lienthong_security_server::keys::Keys::load(
        &dir,
        &f.business.id,
        anchor_ca(&f.registry).as_ref(),
        SystemTime::now(),
    )
    .unwrap();
    let mut cp = pb::Checkpoint {
        server: Some((&f.business.id).into()),
        tree_size: 30,
        root_hash: merkle::root(&hashes[..30]).to_vec(),
        created_at_unix_ms: now - 30_000,
        signature: None,
    };
    let signature = server_keys
        .signer(&f.business.id.owner)
        .unwrap()
        .sign_digest(&canonical::digest(&canonical::checkpoint(&cp)))
        .unwrap();
    cp.signature = Some(signature.clone());
    let identity = lienthong_security_server::keys::auth_identity(&dir).unwrap();
    let reply = CheckpointWitnessClient::new(f.registry.channel_as(&identity).await)
        .witness(pb::WitnessRequest {
            checkpoint: Some(cp.clone()),
            consistency_proof: Vec::new(),
            previous_tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    fixture::add_checkpoint(
        &dir.legacy_message_log(),
        &StoredCheckpoint {
            tree_size: 30,
            root: merkle::root(&hashes[..30]),
            created_at_ms: cp.created_at_unix_ms,
            signature: signature.encode_to_vec(),
            countersignature: reply.countersignature.unwrap().encode_to_vec(),
            witnessed_at_ms: reply.witnessed_at_unix_ms,
        },
    );
    let alarms = || f.registry.registry().store().alarms().unwrap().len();
    let alarms_before = alarms();

    // The server starts on it (the move), serves, and checkpoints.
    f.business.start().await;
    assert!(!dir.legacy_message_log().exists(), "moved");
    f.business
        .client()
        .await
        .business_gets_person()
        .await
        .expect("the exchange succeeds");
    let witnessed = f
        .business
        .server()
        .checkpoint_now()
        .await
        .expect("the witness accepts the first checkpoint after the move")
        .expect("a checkpoint");
    assert_eq!(
        witnessed.tree_size, 43,
        "40 moved records, the move's record of the 5 it found pruned, an exchange's two"
    );
    let reader = f.business.server().log_reader();
    assert_eq!(reader.root(30).unwrap(), merkle::root(&hashes[..30]));
    assert_eq!(reader.leaf(39).unwrap().as_ref(), Some(&leaves[39]));
    assert_eq!(alarms(), alarms_before, "no alarm raised");
    let audit = f.business.server().audit_now().await.unwrap();
    assert!(audit.mismatches.is_empty(), "{audit:?}");
}
