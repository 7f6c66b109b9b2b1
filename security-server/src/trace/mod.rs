//! The citizens' access trace.
//!
//! * [`TraceService`] — `lienthong.trace.v1.AccessTrace`, built into every
//!   security server and reached over the bus like any service (so mutual
//!   TLS, signatures and logging apply); the provider side lets only the
//!   instance's trace portal call it. `FindUsage` answers with this
//!   server's records about one data subject, newest first, each with its
//!   inclusion proof against the latest checkpoint the registry witnessed.
//! * [`portal`] — the portal's side: fan out to every server, verify every
//!   proof, checkpoint and countersignature, merge both sides of each
//!   exchange.

pub mod pairing;
pub mod portal;
pub mod portal_api;

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_proto::id::ServerId;
use lienthong_proto::pb::exchange::v1::Signature;
use lienthong_proto::pb::registry::v1::{Checkpoint, WitnessReply};
use lienthong_proto::pb::trace::v1 as pb;
use prost::Message;

use crate::message_log::LogReader;
use lienthong_proto::time::unix_ms;

/// The built-in service's gRPC name.
pub const SERVICE: &str = "lienthong.trace.v1.AccessTrace";
/// Records per page unless asked otherwise.
pub const DEFAULT_PAGE: u32 = 100;
/// Most records per page.
pub const MAX_PAGE: u32 = 1000;

/// A personal ID that is not one; holds at most its first 80 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("personal ID {0:?} must be 1..=64 letters, digits or '-'")]
pub struct BadSubject(pub String);

/// Checks a personal ID: 1..=64 characters of letters, digits and `-`.
pub fn check_subject(s: &str) -> Result<(), BadSubject> {
    let ok =
        !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(BadSubject(s.chars().take(80).collect()))
    }
}

/// Runs a built-in service's store reads off the async workers: its
/// answer, or the status it failed with.
pub async fn blocking<M, F>(answer: F) -> Result<tonic::Response<M>, tonic::Status>
where
    F: FnOnce() -> Result<M, (tonic::Code, String)> + Send + 'static,
    M: Send + 'static,
{
    match tokio::task::spawn_blocking(answer).await {
        Ok(Ok(reply)) => Ok(tonic::Response::new(reply)),
        Ok(Err((code, msg))) => Err(tonic::Status::new(code, msg)),
        Err(e) => Err(tonic::Status::internal(e.to_string())),
    }
}

/// `lienthong.trace.v1.AccessTrace` of one server.
#[derive(Debug, Clone)]
pub struct TraceService {
    server: ServerId,
    reader: Arc<LogReader>,
}

impl TraceService {
    pub fn new(server: ServerId, reader: Arc<LogReader>) -> Self {
        TraceService { server, reader }
    }

    fn find_usage(
        &self,
        req: pb::FindUsageRequest,
    ) -> Result<pb::FindUsageReply, (tonic::Code, String)> {
        let invalid = |m: String| (tonic::Code::InvalidArgument, m);
        let internal = |e: crate::message_log::LogError| (tonic::Code::Internal, e.to_string());
        check_subject(&req.data_subject).map_err(|e| invalid(e.to_string()))?;
        let page = match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as u64;
        let offset: u64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token
                .parse()
                .map_err(|_| invalid("the page token is not one this server issued".into()))?
        };
        let until = if req.until_unix_ms > 0 {
            req.until_unix_ms
        } else {
            i64::MAX
        };
        let now = unix_ms(SystemTime::now());
        let checkpoint = self.reader.latest_checkpoint().map_err(internal)?;
        let size = checkpoint.as_ref().map_or(0, |c| c.tree_size);
        let found = self
            .reader
            .about(
                &req.data_subject,
                req.since_unix_ms,
                until,
                offset,
                page + 1,
            )
            .map_err(internal)?;
        let more = found.len() as u64 > page;
        let mut records = Vec::new();
        let mut withheld_records = Vec::new();
        // Withheld exchanges are counted once per message id and release date.
        let mut withheld: std::collections::BTreeSet<(i64, String)> = Default::default();
        let proof_of = |index: u64| -> Result<Vec<Vec<u8>>, (tonic::Code, String)> {
            Ok(if index < size {
                self.reader
                    .inclusion_proof(index, size)
                    .map_err(internal)?
                    .iter()
                    .map(|h| h.to_vec())
                    .collect()
            } else {
                Vec::new()
            })
        };
        for rec in found.into_iter().take(page as usize) {
            let Ok(leaf) = pb::LogLeaf::decode(rec.leaf.as_slice()) else {
                continue;
            };
            // The leaf, which the tree binds, says until when; an index
            // column edited to hide a record changes nothing. The portal
            // gets the withheld leaf (official and purpose behind its
            // commitment) and its proof, to check it against the grant of
            // its time; the citizen only a count.
            if leaf.withheld_until_unix_ms > now {
                let proof = proof_of(rec.leaf_index)?;
                withheld_records.push(usage_record(
                    &leaf,
                    rec.leaf_index,
                    rec.leaf,
                    proof,
                    None,
                    rec.subject_salt,
                ));
                withheld.insert((leaf.withheld_until_unix_ms, leaf.message_id));
                continue;
            }
            // Only the portal's own trace queries (the built-in service,
            // exactly); a provider's service cannot borrow the name, the
            // registry reserves `lienthong.*`.
            if leaf.method == "FindUsage"
                && leaf
                    .service
                    .rsplit_once('/')
                    .is_some_and(|(_, code)| code == SERVICE)
            {
                // Trace queries are logged, but not shown as uses of the data.
                continue;
            }
            let proof = proof_of(rec.leaf_index)?;
            // Released: what the leaf committed to is revealed.
            let opening = rec
                .hidden
                .as_deref()
                .and_then(|h| pb::HiddenOpening::decode(h).ok());
            records.push(usage_record(
                &leaf,
                rec.leaf_index,
                rec.leaf,
                proof,
                opening,
                rec.subject_salt,
            ));
        }
        // What retention took last, on the first page: the portal tells a
        // record retention took from one someone hid.
        let mut retention_records = Vec::new();
        if offset == 0
            && let Some((index, bytes)) = self.reader.latest_retention(size).map_err(internal)?
            && let Ok(leaf) = pb::LogLeaf::decode(bytes.as_slice())
        {
            let proof = proof_of(index)?;
            retention_records.push(usage_record(&leaf, index, bytes, proof, None, Vec::new()));
        }
        let (checkpoint, witness) = match checkpoint {
            Some(c) => (
                Some(Checkpoint {
                    server: Some((&self.server).into()),
                    tree_size: c.tree_size,
                    root_hash: c.root.to_vec(),
                    created_at_unix_ms: c.created_at_ms,
                    signature: Signature::decode(c.signature.as_slice()).ok(),
                }),
                Some(WitnessReply {
                    countersignature: Signature::decode(c.countersignature.as_slice()).ok(),
                    witnessed_at_unix_ms: c.witnessed_at_ms,
                }),
            ),
            None => (None, None),
        };
        Ok(pb::FindUsageReply {
            records,
            withheld: {
                let mut per_date: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
                for (until, message_id) in withheld {
                    per_date.entry(until).or_default().push(message_id);
                }
                per_date
                    .into_iter()
                    .map(|(until_unix_ms, message_ids)| pb::WithheldCount {
                        until_unix_ms,
                        count: message_ids.len() as u32,
                        message_ids,
                    })
                    .collect()
            },
            checkpoint,
            witness,
            next_page_token: if more {
                (offset + page).to_string()
            } else {
                String::new()
            },
            withheld_records,
            retention_records,
        })
    }
}

#[tonic::async_trait]
impl pb::access_trace_server::AccessTrace for TraceService {
    /// Answers the trace portal (the bus has checked who is asking).
    async fn find_usage(
        &self,
        request: tonic::Request<pb::FindUsageRequest>,
    ) -> Result<tonic::Response<pb::FindUsageReply>, tonic::Status> {
        let this = self.clone();
        let req = request.into_inner();
        blocking(move || this.find_usage(req)).await
    }
}

fn usage_record(
    leaf: &pb::LogLeaf,
    index: u64,
    bytes: Vec<u8>,
    proof: Vec<Vec<u8>>,
    opening: Option<pb::HiddenOpening>,
    subject_salt: Vec<u8>,
) -> pb::UsageRecord {
    pb::UsageRecord {
        message_id: leaf.message_id.clone(),
        side: leaf.side,
        at_unix_ms: leaf.at_unix_ms,
        client: leaf
            .client
            .parse::<lienthong_proto::id::SubsystemId>()
            .ok()
            .map(|c| (&c).into()),
        service: leaf
            .service
            .parse::<lienthong_proto::id::ServiceId>()
            .ok()
            .map(|s| (&s).into()),
        method: leaf.method.clone(),
        purpose: leaf.purpose.clone(),
        user_id: leaf.user_id.clone(),
        grpc_status: leaf.grpc_status,
        fault: leaf.fault.clone(),
        leaf_index: index,
        leaf: bytes,
        inclusion_proof: proof,
        opening,
        subject_salt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message_log::writer::Options;
    use crate::message_log::{LogKeys, LogRecord, MessageLog, SegmentLog, StoredCheckpoint};

    const CITIZEN: &str = "001099012345";
    const DAY_MS: i64 = 86_400_000;

    /// FindUsage answers, on its first page only, the newest retention
    /// record with its proof: what retention took, up to when, and when.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_page_carries_the_newest_retention_record_with_its_proof() {
        let dir = tempfile::tempdir().unwrap();
        let keys = || LogKeys::new("VN/GOV/000102/ss1", b"subject key".to_vec(), [7; 32]);
        let log = SegmentLog::open_with(
            dir.path(),
            keys(),
            Options {
                segment_bytes: 2048,
            },
        )
        .unwrap();
        let now = unix_ms(SystemTime::now());
        let long_ago = now - 400 * DAY_MS;
        for i in 0..40 {
            log.append(LogRecord {
                at_ms: long_ago + i,
                message_id: format!("m-{i}"),
                client: "VN/GOV/000305/business".into(),
                service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
                method: "GetPerson".into(),
                data_subject: CITIZEN.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let reader = Arc::new(LogReader::open(dir.path(), keys()).unwrap());
        let cutoff = now - 180 * DAY_MS;
        let plan = reader.plan_prune(cutoff, now).unwrap().expect("old enough");
        log.append(plan.record(now)).await.unwrap();
        reader.prune(&plan.marker).unwrap();
        let size = reader.tree_size().unwrap();
        reader
            .record_checkpoint(&StoredCheckpoint {
                tree_size: size,
                root: reader.root(size).unwrap(),
                created_at_ms: now,
                signature: Vec::new(),
                countersignature: Vec::new(),
                witnessed_at_ms: now,
            })
            .unwrap();

        let service = TraceService::new("VN/GOV/000102/ss1".parse().unwrap(), reader.clone());
        let ask = |page_token: &str| {
            service
                .find_usage(pb::FindUsageRequest {
                    data_subject: CITIZEN.into(),
                    page_size: 5,
                    page_token: page_token.into(),
                    ..Default::default()
                })
                .unwrap()
        };
        let first = ask("");
        let [retention] = first.retention_records.as_slice() else {
            panic!("one retention record: {:?}", first.retention_records);
        };
        let leaf = pb::LogLeaf::decode(retention.leaf.as_slice()).unwrap();
        assert_eq!(leaf.phase, pb::Phase::Retention as i32);
        assert_eq!(
            (leaf.pruned_to, leaf.pruned_through_unix_ms, leaf.at_unix_ms),
            (plan.marker.to, long_ago + plan.marker.to as i64 - 1, now)
        );
        let proof: Vec<lienthong_proto::merkle::Hash> = retention
            .inclusion_proof
            .iter()
            .map(|h| h.as_slice().try_into().unwrap())
            .collect();
        assert!(lienthong_proto::merkle::verify_inclusion(
            &lienthong_proto::merkle::leaf_hash(&retention.leaf),
            retention.leaf_index,
            size,
            &proof,
            &reader.root(size).unwrap(),
        ));
        assert!(!first.next_page_token.is_empty());
        let second = ask(&first.next_page_token);
        assert!(second.retention_records.is_empty(), "first page only");
        log.close();
    }
}
