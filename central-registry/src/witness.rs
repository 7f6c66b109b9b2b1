//! The checkpoint witness: security servers submit signed checkpoints of
//! their message logs; the registry countersigns one only if it extends the
//! server's previous checkpoint (RFC 6962 consistency proof). A checkpoint
//! that goes back in size, or whose history differs, is refused and raised
//! as an alarm (`lienthong registry alarms`): someone rewrote a log.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_certs::Fingerprint;
use lienthong_certs::signing::VerifyingKey;
use lienthong_proto::canonical;
use lienthong_proto::id::ServerId;
use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::checkpoint_witness_server::CheckpointWitness;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::error::{RegistryError, blocking};
use crate::model::WitnessedCheckpoint;
use crate::publisher::Publisher;
use crate::store::Store;

/// Longest consistency proof accepted (a tree of 2^64 leaves needs 128).
const MAX_PROOF: usize = 130;
/// How far in the future a checkpoint may be dated.
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Why a checkpoint is refused (pure decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Extends the previous one (or is the first): witness it.
    Accept,
    /// The log went back: refuse and raise an alarm.
    RolledBack { from: u64, to: u64 },
    /// The proof does not connect the previous tree to this one.
    Inconsistent(String),
}

/// Whether `new` (size, root) consistently extends `previous`.
pub fn judge(
    previous: Option<&WitnessedCheckpoint>,
    new_size: u64,
    new_root: &Hash,
    proof_from: u64,
    proof: &[Hash],
) -> Verdict {
    let Some(prev) = previous else {
        return Verdict::Accept;
    };
    if new_size < prev.tree_size {
        return Verdict::RolledBack {
            from: prev.tree_size,
            to: new_size,
        };
    }
    if proof_from != prev.tree_size {
        return Verdict::Inconsistent(format!(
            "the proof starts at tree size {proof_from}, the last witnessed checkpoint has {}",
            prev.tree_size
        ));
    }
    if merkle::verify_consistency(prev.tree_size, new_size, &prev.root, new_root, proof) {
        Verdict::Accept
    } else {
        Verdict::Inconsistent(format!(
            "tree of {new_size} records does not extend the witnessed tree of {} records: history was rewritten",
            prev.tree_size
        ))
    }
}

/// The `CheckpointWitness` service.
#[derive(Clone)]
pub struct Witness {
    store: Arc<dyn Store>,
    publisher: Arc<Publisher>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Witness")
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Witness {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<Publisher>) -> Self {
        Witness { store, publisher }
    }

    fn witness_blocking(
        &self,
        req: pb::WitnessRequest,
        peer: Option<Fingerprint>,
    ) -> Result<pb::WitnessReply, RegistryError> {
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
        if cp.created_at_unix_ms > now_ms() + MAX_SKEW_MS {
            return Err(RegistryError::invalid(
                "the checkpoint is dated in the future",
            ));
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

        let previous = self.store.last_checkpoint(&server)?;
        match judge(
            previous.as_ref(),
            cp.tree_size,
            &root,
            req.previous_tree_size,
            &proof,
        ) {
            Verdict::Accept => {}
            Verdict::RolledBack { from, to } => {
                let reason = format!("tree size went back from {from} to {to}");
                self.store.record_alarm(&server, &reason)?;
                tracing::error!(%server, %reason, "checkpoint refused");
                return Err(crate::store::StoreError::Conflict(reason).into());
            }
            Verdict::Inconsistent(reason) => {
                self.store.record_alarm(&server, &reason)?;
                tracing::error!(%server, %reason, "checkpoint refused");
                return Err(crate::store::StoreError::Conflict(reason).into());
            }
        }
        let witnessed = WitnessedCheckpoint {
            tree_size: cp.tree_size,
            root,
            created_at_ms: cp.created_at_unix_ms,
        };
        self.store
            .record_checkpoint(&server, &witnessed, &sig.encode_to_vec())?;
        Ok(pb::WitnessReply {
            countersignature: Some(self.publisher.countersign(&digest)?),
            witnessed_at_unix_ms: now_ms(),
        })
    }
}

#[tonic::async_trait]
impl CheckpointWitness for Witness {
    async fn witness(
        &self,
        request: Request<pb::WitnessRequest>,
    ) -> Result<Response<pb::WitnessReply>, Status> {
        let peer = request
            .peer_certs()
            .and_then(|c| c.first().map(|c| Fingerprint::of(c)));
        let req = request.into_inner();
        let this = self.clone();
        Ok(Response::new(
            blocking(move || this.witness_blocking(req, peer)).await?,
        ))
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

    #[test]
    fn judgement_table() {
        let l = leaves(10);
        let prev = WitnessedCheckpoint {
            tree_size: 6,
            root: merkle::root(&l[..6]),
            created_at_ms: 0,
        };
        let root10 = merkle::root(&l);
        let proof = merkle::consistency_proof(&l, 6).unwrap();
        assert_eq!(judge(None, 10, &root10, 0, &[]), Verdict::Accept);
        assert_eq!(judge(Some(&prev), 10, &root10, 6, &proof), Verdict::Accept);
        assert_eq!(
            judge(Some(&prev), 6, &prev.root, 6, &[]),
            Verdict::Accept,
            "the same tree again"
        );
        assert_eq!(
            judge(Some(&prev), 4, &merkle::root(&l[..4]), 6, &[]),
            Verdict::RolledBack { from: 6, to: 4 }
        );
        let mut forged = l.clone();
        forged[2] = merkle::leaf_hash(b"edited");
        let forged_root = merkle::root(&forged);
        let forged_proof = merkle::consistency_proof(&forged, 6).unwrap();
        assert!(matches!(
            judge(Some(&prev), 10, &forged_root, 6, &forged_proof),
            Verdict::Inconsistent(_)
        ));
        assert!(matches!(
            judge(Some(&prev), 10, &root10, 5, &proof),
            Verdict::Inconsistent(_)
        ));
    }
}
