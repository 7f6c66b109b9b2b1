//! Log records: the `LogLeaf` protobuf a trace portal or an auditor
//! decodes (round trip through `leaf_bytes`, visibility and operational
//! records), the built-in services' requests read from the log's
//! callers (`FindUsageRequest`, `OperationalQuery` and the admin port's
//! query into a `Selection`), and a record sealed and opened again with
//! any leaf and envelope, request-shaped ones among them (what is cut
//! from the sealed leaf comes back byte for byte). Input: `mode: u8`, then the bytes.

#![no_main]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use lienthong_fuzz::Input;
use lienthong_proto::pb::operational::v1::OperationalQuery;
use lienthong_proto::pb::trace::v1::{FindUsageRequest, LogLeaf, Phase as PbPhase, Side};
use lienthong_proto::time::unix_ms;
use lienthong_security_server::message_log::leaf::{leaf_bytes, phase_name, side_name};
use lienthong_security_server::message_log::record::{SegmentKey, Stored};
use lienthong_security_server::message_log::{LogKeys, LogRecord, Phase, Role};
use lienthong_security_server::operational::{self, Selection, Viewer};
use lienthong_security_server::trace;
use prost::Message;

const WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

fn selection_in_window(s: &Selection, now: i64) {
    assert!(s.since_ms >= now - WINDOW.as_millis() as i64);
    assert!((1..=operational::MAX_LIMIT).contains(&s.limit));
    if let Some(id) = &s.message_id {
        assert!(lienthong_security_server::metadata::check_message_id(id).is_ok());
    }
}

/// A request record as a server seals one: its envelope's header names
/// a client, a service and a data subject (the parts split from `text` at
/// `/`), and its leaf (`leaf`, then those names and the subject's
/// commitment under `salt`) restates them, so the cuts that name them
/// again from the envelope are taken — or, where the parts are not what
/// the leaf says, not.
fn request_shaped(leaf: &[u8], text: &[u8], salt: &[u8; 32]) -> Stored {
    use lienthong_proto::pb::exchange::v1 as ex;
    use lienthong_proto::pb::identifiers::v1 as id;
    let text = String::from_utf8_lossy(text);
    let parts: Vec<&str> = text.split('/').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or("").to_owned();
    let subsystem = |at: usize| id::SubsystemId {
        member: Some(id::MemberId {
            instance: part(at),
            member_class: part(at + 1),
            member_code: part(at + 2),
        }),
        subsystem_code: part(at + 3),
    };
    let subject = part(9);
    let envelope = ex::RequestEnvelope {
        header: Some(ex::RequestHeader {
            client: Some(subsystem(0)),
            service: Some(id::ServiceId {
                provider: Some(subsystem(4)),
                service_code: part(8),
                version: String::new(),
            }),
            data_subject: subject.clone(),
            ..Default::default()
        }),
        signature: None,
    }
    .encode_to_vec();
    let mut leaf = leaf.to_vec();
    let mut field = |number: u32, value: &[u8]| {
        prost::encoding::encode_key(
            number,
            prost::encoding::WireType::LengthDelimited,
            &mut leaf,
        );
        prost::encoding::encode_varint(value.len() as u64, &mut leaf);
        leaf.extend_from_slice(value);
    };
    field(5, parts[..parts.len().min(4)].join("/").as_bytes());
    field(
        6,
        parts[parts.len().min(4)..parts.len().min(9)]
            .join("/")
            .as_bytes(),
    );
    if !subject.is_empty() {
        field(
            21,
            &lienthong_proto::canonical::subject_commitment(salt, &subject),
        );
    }
    Stored {
        leaf,
        envelope,
        data_subject: subject,
        subject_salt: salt.to_vec(),
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mode = input.byte() % 4;
    let bytes = input.rest();
    let now = unix_ms(SystemTime::now());
    match mode {
        0 => {
            let Ok(leaf) = LogLeaf::decode(bytes) else {
                return;
            };
            assert_eq!(
                LogLeaf::decode(leaf.encode_to_vec().as_slice()).as_ref(),
                Ok(&leaf)
            );
            let _ = (side_name(leaf.side), phase_name(leaf.phase));
            let member = leaf
                .client
                .parse::<lienthong_proto::id::SubsystemId>()
                .map(|c| c.member);
            if let Ok(m) = member {
                assert!(operational::visible(&Viewer::Member(m), &leaf));
            }
            assert!(operational::visible(&Viewer::Owner, &leaf));
            let r = operational::record(1, &leaf);
            assert_eq!(
                (r.message_id.as_str(), r.at_unix_ms),
                (leaf.message_id.as_str(), leaf.at_unix_ms)
            );

            // The record a server would write for this leaf writes this leaf.
            let role = match Side::try_from(leaf.side) {
                Ok(Side::Consumer) => Role::Consumer,
                Ok(Side::Provider) => Role::Provider,
                _ => return,
            };
            let phase = match PbPhase::try_from(leaf.phase) {
                Ok(PbPhase::Request) => Phase::Request,
                Ok(PbPhase::Response) => Phase::Response,
                Ok(PbPhase::Fault) => Phase::Fault,
                _ => return,
            };
            let subject: Option<[u8; 32]> = match leaf.data_subject_commitment.len() {
                0 => None,
                _ => match leaf.data_subject_commitment.as_slice().try_into() {
                    Ok(h) => Some(h),
                    Err(_) => return,
                },
            };
            let record = LogRecord {
                role,
                phase,
                at_ms: leaf.at_unix_ms,
                message_id: leaf.message_id.clone(),
                client: leaf.client.clone(),
                service: leaf.service.clone(),
                method: leaf.method.clone(),
                user_id: leaf.user_id.clone(),
                purpose: leaf.purpose.clone(),
                peer: leaf.peer.clone(),
                request_digest: leaf.request_digest.clone(),
                payload_digest: leaf.payload_digest.clone(),
                payload_size: leaf.payload_size,
                grpc_status: leaf.grpc_status,
                fault: leaf.fault.clone(),
                withheld_until_ms: leaf.withheld_until_unix_ms,
                duration_us: leaf.duration_us,
                ..Default::default()
            };
            let hidden: Option<[u8; 32]> = leaf.hidden_commitment.as_slice().try_into().ok();
            let written = LogLeaf::decode(leaf_bytes(&record, subject, hidden).as_slice())
                .expect("own leaf decodes");
            let mut want = leaf.clone();
            want.envelope_digest.clear();
            // New leaves commit to the subject; the keyed hash is only in
            // leaves of the SQLite era. Only retention records name a range.
            want.data_subject_hash.clear();
            want.pruned_from = 0;
            want.pruned_to = 0;
            want.pruned_leaves_digest.clear();
            want.pruned_through_unix_ms = 0;
            // A withheld record's leaf commits to the official and purpose
            // instead of naming them.
            match hidden {
                Some(_) => {
                    want.user_id.clear();
                    want.purpose.clear();
                }
                None => want.hidden_commitment.clear(),
            }
            assert_eq!(written, want);
        }
        1 => {
            // The message as the built-in services' generated code decodes it.
            let message = Bytes::copy_from_slice(bytes);
            if let Ok(q) = FindUsageRequest::decode(message.clone())
                && trace::check_subject(&q.data_subject).is_ok()
            {
                assert!(!q.data_subject.is_empty() && q.data_subject.len() <= 64);
            }
            if let Ok(q) = OperationalQuery::decode(message)
                && let Ok(s) = Selection::within_window(
                    q.since_unix_ms,
                    q.until_unix_ms,
                    &q.message_id,
                    q.limit.into(),
                    now,
                    WINDOW,
                )
            {
                selection_in_window(&s, now);
            }
        }
        3 => {
            // A record sealed and opened: leaf and envelope split at a
            // point the input names, the envelope often restating the
            // leaf's tail so that values are cut from it.
            let mut input = Input(bytes);
            let split = usize::from(input.u16());
            let restate = input.byte();
            let rest = input.rest();
            let (leaf, tail) = rest.split_at(split.min(rest.len()));
            let mut envelope = tail.to_vec();
            if restate & 1 != 0 {
                envelope.extend_from_slice(leaf);
            }
            let keys = LogKeys::new("VN/GOV/000102/ss1", vec![1; 32], [2; 32]);
            let key = SegmentKey::derive(&keys, 1, &[3; 32]).expect("key 1 is there");
            let index = u64::from(restate);
            let stored = if restate & 2 != 0 {
                request_shaped(leaf, tail, &key.subject_salt(index))
            } else {
                Stored {
                    leaf: leaf.to_vec(),
                    envelope,
                    ..Default::default()
                }
            };
            let mut sealed = Vec::new();
            key.seal_into(index, &stored, &mut sealed)
                .expect("any record seals");
            assert_eq!(key.open(index, &sealed), Some(stored));
        }
        _ => {
            // The admin port's query, as its parameters arrive.
            let mut input = Input(bytes);
            let flags = input.byte();
            let since_hours = u32::from_be_bytes([input.byte(), input.byte(), 0, 0]);
            let limit = u64::from(input.u16());
            let query = operational::OperationalQuery {
                since_hours: (flags & 1 != 0).then_some(since_hours),
                message_id: (flags & 2 != 0)
                    .then(|| String::from_utf8_lossy(input.rest()).into_owned()),
                limit: (flags & 4 != 0).then_some(limit),
            };
            if let Ok(s) = Selection::from_query(&query, now, WINDOW) {
                selection_in_window(&s, now);
            }
        }
    }
});
