//! The checkpoint witness: security servers submit signed checkpoints of
//! their message logs; the registry countersigns one only if it extends the
//! server's latest witnessed checkpoint (RFC 6962 consistency proof) and is
//! dated after it, within [`MAX_SKEW_MS`] ahead of and the configured
//! maximum age behind the registry's clock. A checkpoint that goes back in
//! size or time, or whose history differs, is refused and raised as an
//! alarm (`lienthong registry alarms`). A proof from an older witnessed
//! checkpoint that is consistent with it (a server that lost a reply) is
//! answered with the latest witnessed checkpoint instead.
//!
//! The decision is the pure [`judge`]; the store runs it and records the
//! outcome in one transaction ([`Store::witness`]).

use std::sync::Arc;
use std::time::Duration;

use lienthong_certs::Fingerprint;
use lienthong_certs::signing::VerifyingKey;
use lienthong_proto::canonical;
use lienthong_proto::id::ServerId;
use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::exchange::v1::Signature;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::checkpoint_witness_server::CheckpointWitness;
use lienthong_proto::time::now_ms;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::error::{RegistryError, blocking};
use crate::model::WitnessedCheckpoint;
use crate::publisher::Publisher;
use crate::refusals::Refusals;
use crate::store::{Store, StoreError};

/// Longest consistency proof accepted (a tree of 2^64 leaves needs 128).
const MAX_PROOF: usize = 130;
/// How far in the future a checkpoint may be dated.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// How far in the past a checkpoint may be dated: two of the security
/// servers' default checkpoint intervals (60 s).
pub const DEFAULT_MAX_CHECKPOINT_AGE: Duration = Duration::from_secs(120);
/// Largest tree size the store can hold (SQLite integers are `i64`).
pub const MAX_TREE_SIZE: u64 = i64::MAX as u64;
/// The fault code of a proof from an older witnessed checkpoint.
pub const FAULT_STALE_BASE: &str = "registry.witness.stale_base";
/// The fault code of a refused checkpoint (an alarm was raised).
pub const FAULT_ALARM: &str = "registry.witness.alarm";

/// A submitted checkpoint and its proof, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub checkpoint: WitnessedCheckpoint,
    pub proof_from: u64,
    pub proof: Vec<Hash>,
}

/// The time bounds a checkpoint's date must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    pub now_ms: i64,
    pub max_age_ms: i64,
    pub max_skew_ms: i64,
}

/// What the registry knows of a server's witnessed history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The latest witnessed checkpoint and the server's signature over it.
    pub last: Option<(WitnessedCheckpoint, Vec<u8>)>,
    /// The witnessed checkpoint the proof starts from, when it is not the latest.
    pub base: Option<WitnessedCheckpoint>,
}

/// The witness's decision about one checkpoint (pure: [`judge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Extends the latest (or is the first): record and countersign it.
    Accept,
    /// Is the latest, again (a retry): countersign, record nothing.
    Repeat,
    /// Consistent with an older witnessed checkpoint the proof starts
    /// from: answer with the latest, record nothing, raise nothing.
    Stale,
    /// Refused, with an alarm: the reason.
    Alarm(String),
}

fn secs(ms: i64) -> String {
    lienthong_certs::verify::fmt_time(ms.div_euclid(1000))
}

/// Whether `new` may be witnessed after `history`: forward in time (after
/// the latest, within `rules`), forward in size, and consistent.
pub fn judge(history: &History, new: &Submitted, rules: &TimeRules) -> Verdict {
    let cp = &new.checkpoint;
    if cp.created_at_ms > rules.now_ms.saturating_add(rules.max_skew_ms) {
        return Verdict::Alarm(format!(
            "checkpoint dated {} is in the future (more than {} s ahead of the registry); check the server's clock",
            secs(cp.created_at_ms),
            rules.max_skew_ms / 1000
        ));
    }
    if cp.created_at_ms < rules.now_ms.saturating_sub(rules.max_age_ms) {
        return Verdict::Alarm(format!(
            "checkpoint dated {} is older than the bound of {} s",
            secs(cp.created_at_ms),
            rules.max_age_ms / 1000
        ));
    }
    let Some((last, _)) = &history.last else {
        return Verdict::Accept;
    };
    if cp == last {
        return Verdict::Repeat;
    }
    if cp.created_at_ms <= last.created_at_ms {
        return Verdict::Alarm(format!(
            "checkpoint dated {} is not after the last witnessed one ({}); checkpoints only move forward in time",
            secs(cp.created_at_ms),
            secs(last.created_at_ms)
        ));
    }
    if cp.tree_size < last.tree_size {
        return Verdict::Alarm(format!(
            "tree size went back from {} to {}",
            last.tree_size, cp.tree_size
        ));
    }
    let rewritten = |from: u64| {
        Verdict::Alarm(format!(
            "tree of {} records does not extend the witnessed tree of {from} records: history was rewritten",
            cp.tree_size
        ))
    };
    if new.proof_from == last.tree_size {
        return if merkle::verify_consistency(
            last.tree_size,
            cp.tree_size,
            &last.root,
            &cp.root,
            &new.proof,
        ) {
            Verdict::Accept
        } else {
            rewritten(last.tree_size)
        };
    }
    if new.proof_from > last.tree_size {
        return Verdict::Alarm(format!(
            "the proof starts at tree size {}, beyond the last witnessed checkpoint's {}",
            new.proof_from, last.tree_size
        ));
    }
    // The proof starts from an older witnessed checkpoint.
    if cp.tree_size == last.tree_size {
        return if cp.root == last.root {
            Verdict::Accept
        } else {
            Verdict::Alarm(format!(
                "a different tree of the witnessed size {}: the log forked",
                last.tree_size
            ))
        };
    }
    match &history.base {
        Some(base)
            if merkle::verify_consistency(
                base.tree_size,
                cp.tree_size,
                &base.root,
                &cp.root,
                &new.proof,
            ) =>
        {
            Verdict::Stale
        }
        Some(base) => rewritten(base.tree_size),
        None => Verdict::Alarm(format!(
            "the proof starts at tree size {}, which was never witnessed",
            new.proof_from
        )),
    }
}

/// The `CheckpointWitness` service.
#[derive(Clone)]
pub struct Witness {
    store: Arc<dyn Store>,
    publisher: Arc<Publisher>,
    max_age: Duration,
    refusals: Refusals,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Witness")
    }
}

/// A refusal of the witness: a status with its fault code.
fn fault(code: tonic::Code, fault: &'static str, message: String, details: Vec<u8>) -> Status {
    let mut status = Status::with_details(code, message, details.into());
    status.metadata_mut().insert(
        "lt-fault",
        tonic::metadata::MetadataValue::from_static(fault),
    );
    status
}

impl Witness {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<Publisher>, max_age: Duration) -> Self {
        Witness {
            refusals: Refusals::new(store.clone()),
            store,
            publisher,
            max_age,
        }
    }

    fn witness_blocking(
        &self,
        req: pb::WitnessRequest,
        peer: Option<Fingerprint>,
    ) -> Result<Result<pb::WitnessReply, Status>, RegistryError> {
        let unauth = |m: String| RegistryError::Unauthenticated(m);
        let cp = req
            .checkpoint
            .as_ref()
            .ok_or_else(|| RegistryError::invalid("no checkpoint"))?;
        let server = ServerId::try_from(
            cp.server
                .as_ref()
                .ok_or_else(|| RegistryError::invalid("the checkpoint names no server"))?,
        )?;
        // The caller is the server, over mutual TLS with its auth certificate.
        let peer_cert = match peer {
            Some(fp) => self.store.certificate(&fp)?,
            None => None,
        };
        if !peer_cert.is_some_and(|c| !c.revoked && c.auth_server.as_ref() == Some(&server)) {
            return Err(unauth(format!(
                "checkpoints of {server} come over mutual TLS with its auth certificate"
            )));
        }
        let root: Hash = cp
            .root_hash
            .as_slice()
            .try_into()
            .map_err(|_| RegistryError::invalid("the root hash is not 32 bytes"))?;
        if cp.tree_size > MAX_TREE_SIZE || req.previous_tree_size > MAX_TREE_SIZE {
            return Err(RegistryError::invalid(format!(
                "tree sizes above {MAX_TREE_SIZE} (2^63 - 1) are not accepted"
            )));
        }
        if req.consistency_proof.len() > MAX_PROOF {
            return Err(RegistryError::invalid("the consistency proof is too long"));
        }
        let proof: Vec<Hash> = req
            .consistency_proof
            .iter()
            .map(|h| h.as_slice().try_into())
            .collect::<Result<_, _>>()
            .map_err(|_| RegistryError::invalid("a proof hash is not 32 bytes"))?;
        // Signed by the owner's registered signing certificate.
        let sig = cp
            .signature
            .as_ref()
            .ok_or_else(|| unauth("the checkpoint is not signed".into()))?;
        let signer = Fingerprint::from_slice(&sig.signer_certificate_sha256)
            .and_then(|fp| self.store.certificate(&fp).ok().flatten())
            .filter(|c| !c.revoked && c.signing_member.as_ref() == Some(&server.owner))
            .ok_or_else(|| {
                unauth(format!(
                    "the checkpoint is not signed with a registered signing certificate of {}",
                    server.owner
                ))
            })?;
        let digest = canonical::digest(&canonical::checkpoint(cp));
        VerifyingKey::from_cert(&signer.der)?
            .verify(sig, &digest)
            .map_err(|e| unauth(format!("the checkpoint signature does not verify: {e}")))?;

        let submitted = Submitted {
            checkpoint: WitnessedCheckpoint {
                tree_size: cp.tree_size,
                root,
                created_at_ms: cp.created_at_unix_ms,
            },
            proof_from: req.previous_tree_size,
            proof,
        };
        let rules = TimeRules {
            now_ms: now_ms(),
            max_age_ms: i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX),
            max_skew_ms: MAX_SKEW_MS,
        };
        // Judged and recorded in one transaction: of two conflicting
        // checkpoints submitted together, one is witnessed first and the
        // other judged against it.
        let (verdict, history) = self.store.witness(
            &server,
            &submitted,
            &sig.encode_to_vec(),
            &mut |h: &History| judge(h, &submitted, &rules),
        )?;
        match verdict {
            Verdict::Accept | Verdict::Repeat => Ok(Ok(pb::WitnessReply {
                countersignature: Some(self.publisher.countersign(&digest)?),
                witnessed_at_unix_ms: now_ms(),
            })),
            Verdict::Stale => {
                let (last, signature) = history.last.ok_or_else(|| {
                    RegistryError::Store(StoreError::Internal(
                        "a stale proof was judged without a witnessed checkpoint".into(),
                    ))
                })?;
                let latest = pb::Checkpoint {
                    server: Some((&server).into()),
                    tree_size: last.tree_size,
                    root_hash: last.root.to_vec(),
                    created_at_unix_ms: last.created_at_ms,
                    signature: Signature::decode(signature.as_slice()).ok(),
                };
                let countersignature = self
                    .publisher
                    .countersign(&canonical::digest(&canonical::checkpoint(&latest)))?;
                let details = pb::WitnessedCheckpoint {
                    checkpoint: Some(latest),
                    countersignature: Some(countersignature),
                    witnessed_at_unix_ms: now_ms(),
                };
                Ok(Err(fault(
                    tonic::Code::FailedPrecondition,
                    FAULT_STALE_BASE,
                    format!(
                        "{FAULT_STALE_BASE}: the proof starts at tree size {}, but the latest witnessed checkpoint has {} records; it is in this status's details: prove from it",
                        req.previous_tree_size, last.tree_size
                    ),
                    details.encode_to_vec(),
                )))
            }
            Verdict::Alarm(reason) => {
                tracing::error!(%server, %reason, "checkpoint refused; alarm raised");
                Ok(Err(fault(
                    tonic::Code::FailedPrecondition,
                    FAULT_ALARM,
                    format!("{FAULT_ALARM}: {reason}"),
                    Vec::new(),
                )))
            }
        }
    }
}

/// Most servers one `LatestCheckpoints` call may ask about.
pub const MAX_LATEST: usize = 10_000;

impl Witness {
    fn latest_blocking(
        &self,
        req: pb::LatestCheckpointsRequest,
        peer: Option<Fingerprint>,
    ) -> Result<pb::LatestCheckpointsReply, RegistryError> {
        let caller = match peer {
            Some(fp) => self.store.certificate(&fp)?,
            None => None,
        };
        if !caller.is_some_and(|c| !c.revoked && c.auth_server.is_some()) {
            return Err(RegistryError::Unauthenticated(
                "latest checkpoints are answered to registered security servers over mutual TLS"
                    .into(),
            ));
        }
        if req.servers.len() > MAX_LATEST {
            return Err(RegistryError::invalid(format!(
                "at most {MAX_LATEST} servers per call"
            )));
        }
        let mut checkpoints = Vec::new();
        for s in &req.servers {
            let server = ServerId::try_from(s)?;
            if let Some(c) = self.store.last_checkpoint(&server)? {
                checkpoints.push(pb::LatestCheckpoint {
                    server: Some((&server).into()),
                    tree_size: c.tree_size,
                    root_hash: c.root.to_vec(),
                    created_at_unix_ms: c.created_at_ms,
                });
            }
        }
        Ok(pb::LatestCheckpointsReply { checkpoints })
    }
}

#[tonic::async_trait]
impl CheckpointWitness for Witness {
    async fn latest_checkpoints(
        &self,
        request: Request<pb::LatestCheckpointsRequest>,
    ) -> Result<Response<pb::LatestCheckpointsReply>, Status> {
        let peer = request
            .peer_certs()
            .and_then(|c| c.first().map(|c| Fingerprint::of(c)));
        let req = request.into_inner();
        let this = self.clone();
        let reply = blocking(move || this.latest_blocking(req, peer))
            .await
            .map_err(Status::from)?;
        Ok(Response::new(reply))
    }

    async fn witness(
        &self,
        request: Request<pb::WitnessRequest>,
    ) -> Result<Response<pb::WitnessReply>, Status> {
        let cert = request
            .peer_certs()
            .and_then(|c| c.first().map(|c| c.clone().into_owned()));
        let peer = cert.as_ref().map(|c| Fingerprint::of(c));
        let source = request.remote_addr();
        let req = request.into_inner();
        let what = req
            .checkpoint
            .as_ref()
            .map(|c| format!("checkpoint of {} records", c.tree_size))
            .unwrap_or_default();
        let this = self.clone();
        let result = match blocking(move || this.witness_blocking(req, peer)).await {
            Ok(r) => r,
            Err(e) => Err(Status::from(e)),
        };
        if let Err(status) = &result {
            self.refusals
                .record(source, cert, None, "Witness", &what, status.message())
                .await;
        }
        Ok(Response::new(result?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    const NOW: i64 = 1_800_000_000_000;
    const RULES: TimeRules = TimeRules {
        now_ms: NOW,
        max_age_ms: 120_000,
        max_skew_ms: MAX_SKEW_MS,
    };

    fn cp(tree: &[Hash], at: i64) -> WitnessedCheckpoint {
        WitnessedCheckpoint {
            tree_size: tree.len() as u64,
            root: merkle::root(tree),
            created_at_ms: at,
        }
    }

    fn sub(tree: &[Hash], at: i64, from: &[Hash], full: &[Hash]) -> Submitted {
        Submitted {
            checkpoint: cp(tree, at),
            proof_from: from.len() as u64,
            proof: if from.is_empty() {
                Vec::new()
            } else {
                merkle::consistency_proof(full, from.len()).unwrap()
            },
        }
    }

    fn is_alarm(v: &Verdict, words: &str) -> bool {
        matches!(v, Verdict::Alarm(r) if r.contains(words))
    }

    #[test]
    fn judgement_table() {
        let l = leaves(12);
        let mut forged = l.clone();
        forged[2] = merkle::leaf_hash(b"edited");
        let t0 = NOW - 10_000;
        // Witnessed: 4 records at t0 - 5 s, then 6 records at t0.
        let h = History {
            last: Some((cp(&l[..6], t0), Vec::new())),
            base: None,
        };
        let with_base = History {
            base: Some(cp(&l[..4], t0 - 5_000)),
            ..h.clone()
        };
        let later = t0 + 1_000;
        let none = History::default();
        type Case<'a> = (&'a str, &'a History, Submitted, fn(&Verdict) -> bool);
        let cases: Vec<Case> = vec![
            ("first", &none, sub(&l[..6], t0, &[], &l), |v| {
                *v == Verdict::Accept
            }),
            (
                "extends",
                &h,
                sub(&l[..10], later, &l[..6], &l[..10]),
                |v| *v == Verdict::Accept,
            ),
            (
                "same tree, later",
                &h,
                sub(&l[..6], later, &l[..6], &l[..6]),
                |v| *v == Verdict::Accept,
            ),
            (
                "the latest again",
                &h,
                sub(&l[..6], t0, &l[..6], &l[..6]),
                |v| *v == Verdict::Repeat,
            ),
            (
                "dated at the latest",
                &h,
                sub(&l[..10], t0, &l[..6], &l[..10]),
                |v| is_alarm(v, "forward in time"),
            ),
            (
                "backdated to 1970",
                &h,
                sub(&l[..10], 0, &l[..6], &l[..10]),
                |v| is_alarm(v, "older than the bound"),
            ),
            (
                "older than the bound",
                &h,
                sub(&l[..10], NOW - 121_000, &l[..6], &l[..10]),
                |v| is_alarm(v, "older than the bound"),
            ),
            (
                "in the future",
                &h,
                sub(&l[..10], NOW + MAX_SKEW_MS + 1, &l[..6], &l[..10]),
                |v| is_alarm(v, "future"),
            ),
            (
                "rolled back",
                &h,
                sub(&l[..4], later, &l[..4], &l[..4]),
                |v| is_alarm(v, "went back from 6 to 4"),
            ),
            (
                "rewritten",
                &h,
                sub(&forged[..10], later, &l[..6], &forged[..10]),
                |v| is_alarm(v, "rewritten"),
            ),
            (
                "proof beyond",
                &h,
                sub(&l[..10], later, &l[..8], &l[..10]),
                |v| is_alarm(v, "beyond"),
            ),
            (
                "stale base, consistent",
                &with_base,
                sub(&l[..10], later, &l[..4], &l[..10]),
                |v| *v == Verdict::Stale,
            ),
            (
                "stale base, rewritten",
                &with_base,
                sub(&forged[..10], later, &l[..4], &forged[..10]),
                |v| is_alarm(v, "rewritten"),
            ),
            (
                "stale base never witnessed",
                &h,
                sub(&l[..10], later, &l[..3], &l[..10]),
                |v| is_alarm(v, "never witnessed"),
            ),
            (
                "fork at the same size",
                &with_base,
                sub(&forged[..6], later, &l[..4], &forged[..6]),
                |v| is_alarm(v, "forked"),
            ),
        ];
        for (name, history, submitted, ok) in cases {
            let v = judge(history, &submitted, &RULES);
            assert!(ok(&v), "{name}: {v:?}");
        }
    }
}
