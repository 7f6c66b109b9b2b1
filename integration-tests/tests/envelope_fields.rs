//! Every field of an envelope is held to one canonical form at both ends,
//! and withholding is enforced where the data is: a member signs its own
//! envelopes, so what its consumer side would refuse must be refused by
//! the provider's server too, before its backend or its log sees it.

use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_integration_tests::federation::*;
use lienthong_integration_tests::wait::{PATIENCE, wait_until};
use lienthong_proto::pb::exchange::v1::RequestHeader;
use lienthong_proto::pb::registry::v1 as pb;
use tonic::metadata::MetadataValue;

const CITIZEN: &str = "001099012345";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn person(id: &str) -> PersonRequest {
    PersonRequest {
        personal_id: id.into(),
    }
}

/// Which envelope field a case sets.
#[derive(Debug, Clone, Copy)]
enum Field {
    UserId,
    Purpose,
    DataSubject,
}

impl Field {
    fn header(self) -> &'static str {
        match self {
            Field::UserId => "lt-user-id",
            Field::Purpose => "lt-purpose",
            Field::DataSubject => "lt-data-subject",
        }
    }

    fn set(self, h: &mut RequestHeader, value: &str) {
        match self {
            Field::UserId => h.user_id = value.into(),
            Field::Purpose => h.purpose = value.into(),
            Field::DataSubject => h.data_subject = value.into(),
        }
    }
}

/// Whether a call succeeded, or the fault it was refused with; and
/// whether the backend was reached.
async fn outcome(
    f: &Federation,
    call: impl std::future::Future<Output = Result<tonic::Response<Person>, tonic::Status>>,
) -> (Result<(), String>, bool) {
    let before = f.backend_calls();
    let r = call.await.map(|_| ()).map_err(|s| fault_of(&s));
    (r, f.backend_calls() > before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_accept_exactly_the_same_values() {
    let f = Federation::start().await;
    let is = f.business.client().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let cases: Vec<(Field, String, bool)> = vec![
        (Field::UserId, "officer-7".into(), true),
        (Field::UserId, "Nguyễn Văn Ánh".into(), true),
        (Field::UserId, "x".repeat(255), true),
        (Field::UserId, "x".repeat(3000), false),
        (Field::UserId, "ad\u{202E}nimda".into(), false),
        (Field::UserId, "a\u{1b}[31mred".into(), false),
        (
            Field::Purpose,
            "hồ sơ 2026/114 · 审核 · проверка · ตรวจสอบ".into(),
            true,
        ),
        (Field::Purpose, "x".repeat(5000), false),
        (Field::Purpose, "case\u{200B}7".into(), false),
        (Field::Purpose, "private \u{E000}".into(), false),
        (Field::DataSubject, CITIZEN.into(), true),
        (Field::DataSubject, format!(" {CITIZEN}"), false),
        (Field::DataSubject, "0010990\u{200B}12345".into(), false),
        (Field::DataSubject, "００１０９９０１２３４５".into(), false),
        (Field::DataSubject, "9".repeat(10_000), false),
        (Field::DataSubject, "1".into(), false),
    ];
    for (field, value, ok) in cases {
        // From the information system, through the consumer's server.
        let consumer = match MetadataValue::try_from(value.as_bytes()) {
            Ok(v) => {
                let mut m = call_metadata(&business(), &population());
                m.insert(field.header(), v);
                Some(outcome(&f, is.unary("GetPerson", m, CITIZEN)).await)
            }
            // Not even a header value (ESC): no IS can send it.
            Err(_) => None,
        };
        // Signed into an envelope by hand, straight to the provider.
        let mut header = peer.header(&business(), &person(CITIZEN));
        field.set(&mut header, &value);
        let envelope = peer.sign(header, &member("000305"));
        let provider = outcome(&f, peer.send(Some(envelope), person(CITIZEN))).await;

        let what = format!("{field:?} {:?}", value.chars().take(40).collect::<String>());
        if ok {
            assert_eq!(provider, (Ok(()), true), "provider, {what}");
            if let Some(c) = consumer {
                assert_eq!(c, (Ok(()), true), "consumer, {what}");
            }
        } else {
            assert_eq!(
                provider,
                (Err("server.serverproxy.bad_field".into()), false),
                "provider, {what}"
            );
            if let Some((c, reached)) = consumer {
                assert!(!reached, "consumer reached the backend, {what}");
                assert_eq!(c, Err("client.bad_request".into()), "consumer, {what}");
            }
        }
    }

    // Decomposed Vietnamese: the consumer sends it composed (NFC); the
    // provider refuses the decomposed form it would never have sent.
    let nfd = "Vie\u{0323}\u{0302}t";
    let mut m = call_metadata(&business(), &population());
    m.insert(
        "lt-purpose",
        MetadataValue::try_from(nfd.as_bytes()).unwrap(),
    );
    assert_eq!(
        outcome(&f, is.unary("GetPerson", m, CITIZEN)).await,
        (Ok(()), true)
    );
    let mut header = peer.header(&business(), &person(CITIZEN));
    header.purpose = nfd.into();
    let envelope = peer.sign(header, &member("000305"));
    assert_eq!(
        outcome(&f, peer.send(Some(envelope), person(CITIZEN))).await,
        (Err("server.serverproxy.bad_field".into()), false)
    );

    // Nothing refused reached the provider's log: the only records that
    // name a bad value are none.
    let reader = f.population[0].server().log_reader();
    let size = reader.tree_size().unwrap();
    for i in 0..size {
        if let Some(leaf) = reader.leaf(i).unwrap() {
            let leaf = <lienthong_proto::pb::trace::v1::LogLeaf as prost::Message>::decode(
                leaf.as_slice(),
            )
            .unwrap();
            for text in [&leaf.user_id, &leaf.purpose] {
                assert!(
                    lienthong_proto::fields::check_canonical_text("", text, 1000).is_ok(),
                    "a refused value reached the log: {text:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_handling_personal_data_needs_a_data_subject() {
    let f = Federation::start().await;
    let mut officer = f.registry.officer().await;
    let service = population().service(PERSON_REGISTRY, None).unwrap();
    officer
        .remove_service(pb::RemoveServiceRequest {
            id: Some((&service).into()),
        })
        .await
        .unwrap();
    officer
        .add_service(pb::AddServiceRequest {
            id: Some((&service).into()),
            description: "Persons by personal ID".into(),
            personal_data: true,
        })
        .await
        .unwrap();
    f.refresh_all().await;

    let is = f.business.client().await;
    let mut m = call_metadata(&business(), &population());
    m.remove("lt-data-subject");
    assert_eq!(
        outcome(&f, is.unary("GetPerson", m, CITIZEN)).await,
        (Err("client.data_subject_required".into()), false)
    );
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let mut header = peer.header(&business(), &person(CITIZEN));
    header.data_subject.clear();
    let envelope = peer.sign(header, &member("000305"));
    assert_eq!(
        outcome(&f, peer.send(Some(envelope), person(CITIZEN))).await,
        (Err("server.serverproxy.bad_field".into()), false)
    );
    // Naming the subject, the same call goes through.
    assert_eq!(outcome(&f, is.business_gets_person()).await, (Ok(()), true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_enforces_withholding_grants() {
    let f = Federation::start().await;
    let peer = RawPeer::new(&f.registry, &f.business, &f.population[0], None)
        .await
        .unwrap();
    let send = |until: i64| {
        let mut header = peer.header(&business(), &person(CITIZEN));
        header.withheld_until_unix_ms = until;
        let envelope = peer.sign(header, &member("000305"));
        outcome(&f, peer.send(Some(envelope), person(CITIZEN)))
    };
    let refused = (
        Err("server.serverproxy.withholding_refused".to_string()),
        false,
    );
    let year_ms = WITHHOLDING_MAX_SECS as i64 * 1000;

    // Business is in no withholding group: its own signature hides nothing.
    assert_eq!(send(now_ms() + 10 * 365 * 86_400_000).await, refused);
    assert_eq!(send(now_ms() + 60_000).await, refused);
    // Its consumer side refuses too.
    let mut m = call_metadata(&business(), &population());
    m.insert(
        "lt-withheld-until",
        (now_ms() + 60_000).to_string().parse().unwrap(),
    );
    let is = f.business.client().await;
    assert_eq!(
        outcome(&f, is.unary("GetPerson", m, CITIZEN)).await,
        (Err("client.withholding_not_allowed".into()), false)
    );

    // Put into the withholding group, within the grant's bounds only.
    let mut officer = f.registry.officer().await;
    officer
        .add_group_member(pb::GroupMemberRequest {
            group: Some((&investigators()).into()),
            subsystem: Some((&business()).into()),
        })
        .await
        .unwrap();
    f.refresh_all().await;
    assert_eq!(send(now_ms() + 60_000).await, (Ok(()), true));
    assert_eq!(
        send(now_ms() + year_ms).await,
        (Ok(()), true),
        "at the maximum"
    );
    assert_eq!(send(now_ms() + year_ms + 60_000).await, refused, "over it");
    assert_eq!(send(now_ms() + 10 * year_ms).await, refused, "ten years");
    assert_eq!(send(now_ms() - 1000).await, refused, "in the past");

    // A grant that has ended covers nothing: an exchange dated once its
    // end has passed (by the clock the envelope is dated with) is refused.
    let grant_ends = now_ms() + 5000;
    officer
        .set_withholding_group(pb::SetWithholdingGroupRequest {
            group: Some((&investigators()).into()),
            max_duration_seconds: WITHHOLDING_MAX_SECS,
            valid_until_unix_ms: grant_ends,
        })
        .await
        .unwrap();
    f.refresh_all().await;
    assert_eq!(send(now_ms() + 60_000).await, (Ok(()), true));
    wait_until(PATIENCE, "the grant's end", || now_ms() > grant_ends).await;
    assert_eq!(send(now_ms() + 60_000).await, refused, "grant expired");

    // The registry refuses grants without bounds.
    for (max, until) in [(0, 0), (u64::MAX, 0), (60, now_ms() - 1000)] {
        let e = officer
            .set_withholding_group(pb::SetWithholdingGroupRequest {
                group: Some((&investigators()).into()),
                max_duration_seconds: max,
                valid_until_unix_ms: until,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
}
