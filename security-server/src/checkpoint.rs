//! Checkpoints of the message log: the server signs (tree size, root,
//! time) with its owner's key and has the registry witness it, proving the
//! tree extends the last witnessed one. Every record in a witnessed tree
//! can then be shown to a citizen with a proof no agency can fake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_certs::CertError;
use lienthong_proto::canonical;
use lienthong_proto::pb::registry::v1::checkpoint_witness_client::CheckpointWitnessClient;
use lienthong_proto::pb::registry::v1::{Checkpoint, WitnessRequest, WitnessedCheckpoint};
use lienthong_registry_client::{ClientError, Registries};
use prost::Message;

use crate::keys::Keys;
use crate::message_log::{LogError, LogReader, StoredCheckpoint};
use lienthong_proto::time::unix_ms;

/// Why a checkpoint was not witnessed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the registry answered a stale base twice")]
    StaleBaseTwice,
    #[error("the registry's latest names no checkpoint")]
    LatestNamesNoCheckpoint,
    #[error("the registry's latest witnessed checkpoint of {0} records is not this log's tree")]
    LatestNotOurTree(u64),
    #[error("the registry's latest is not countersigned")]
    LatestNotCountersigned,
    #[error("the registry's latest witnessed checkpoint: {0}")]
    UnreadableLatest(#[source] prost::DecodeError),
    #[error("no signing key for the owner")]
    NoOwnerKey,
    #[error("the registry refused the checkpoint: {}", .0.message())]
    Refused(Box<tonic::Status>),
    #[error("the registry did not countersign")]
    NotCountersigned,
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Sign(#[from] CertError),
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// How often a checkpoint is made when the log has grown.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// The registry's fault code for a proof from an older witnessed checkpoint.
const STALE_BASE: &str = "registry.witness.stale_base";

/// What one submission got.
enum Submitted {
    /// The latest witnessed checkpoint (the new one, or none yet).
    Witnessed(Option<StoredCheckpoint>),
    /// The registry witnessed a later checkpoint than the proof's base.
    StaleBase(Box<WitnessedCheckpoint>),
}

/// Makes and submits checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    reader: Arc<LogReader>,
    keys: Arc<Keys>,
    /// The registry's addresses, the anchor's and the configuration's (the
    /// configuration client keeps them up to date).
    registries: Arc<Registries>,
}

impl Checkpointer {
    pub fn new(reader: Arc<LogReader>, keys: Arc<Keys>, registries: Arc<Registries>) -> Self {
        Checkpointer {
            reader,
            keys,
            registries,
        }
    }

    /// Checkpoints the log as it is now, if it grew since the last
    /// witnessed checkpoint; returns the latest witnessed checkpoint. When
    /// the registry witnessed a later checkpoint than this server recorded
    /// (a reply was lost), it answers with that one: it is recorded and
    /// the checkpoint proved from it.
    pub async fn checkpoint_now(&self) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        match self.submit().await? {
            Submitted::Witnessed(stored) => Ok(stored),
            Submitted::StaleBase(latest) => {
                self.record_latest(*latest).await?;
                match self.submit().await? {
                    Submitted::Witnessed(stored) => Ok(stored),
                    Submitted::StaleBase(_) => Err(CheckpointError::StaleBaseTwice),
                }
            }
        }
    }

    /// Records the registry's latest witnessed checkpoint of this log, if
    /// it is of this log's tree.
    async fn record_latest(&self, latest: WitnessedCheckpoint) -> Result<(), CheckpointError> {
        let cp = latest
            .checkpoint
            .ok_or(CheckpointError::LatestNamesNoCheckpoint)?;
        let reader = self.reader.clone();
        let size = cp.tree_size;
        let ours = tokio::task::spawn_blocking(move || reader.root(size)).await??;
        if ours.as_slice() != cp.root_hash.as_slice() {
            return Err(CheckpointError::LatestNotOurTree(size));
        }
        let stored = StoredCheckpoint {
            tree_size: size,
            root: ours,
            created_at_ms: cp.created_at_unix_ms,
            signature: cp.signature.map(|s| s.encode_to_vec()).unwrap_or_default(),
            countersignature: latest
                .countersignature
                .map(|s| s.encode_to_vec())
                .ok_or(CheckpointError::LatestNotCountersigned)?,
            witnessed_at_ms: latest.witnessed_at_unix_ms,
        };
        self.reader.record_checkpoint(&stored)?;
        tracing::info!(
            tree_size = size,
            "recorded the registry's latest witnessed checkpoint"
        );
        Ok(())
    }

    async fn submit(&self) -> Result<Submitted, CheckpointError> {
        let reader = self.reader.clone();
        let (size, root, last) = tokio::task::spawn_blocking(move || {
            let size = reader.tree_size()?;
            Ok::<_, crate::message_log::LogError>((
                size,
                reader.root(size)?,
                reader.latest_checkpoint()?,
            ))
        })
        .await??;
        if size == 0 || last.as_ref().is_some_and(|l| l.tree_size == size) {
            return Ok(Submitted::Witnessed(last));
        }
        let previous = last.as_ref().map_or(0, |l| l.tree_size);
        let proof = if previous == 0 {
            Vec::new()
        } else {
            self.reader.consistency_proof(previous, size)?
        };
        let owner = self
            .keys
            .signer(&self.keys.server.owner)
            .ok_or(CheckpointError::NoOwnerKey)?;
        let mut checkpoint = Checkpoint {
            server: Some((&self.keys.server).into()),
            tree_size: size,
            root_hash: root.to_vec(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
            signature: None,
        };
        let digest = canonical::digest(&canonical::checkpoint(&checkpoint));
        let signature = owner.sign_digest(&digest)?;
        checkpoint.signature = Some(signature.clone());
        let channel = self.registries.connect(Some(&self.keys.auth)).await?;
        let reply = CheckpointWitnessClient::new(channel)
            .witness(WitnessRequest {
                checkpoint: Some(checkpoint.clone()),
                consistency_proof: proof.iter().map(|h| h.to_vec()).collect(),
                previous_tree_size: previous,
            })
            .await;
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(s)
                if s.metadata()
                    .get("lt-fault")
                    .is_some_and(|f| f == STALE_BASE) =>
            {
                let latest = WitnessedCheckpoint::decode(s.details())
                    .map_err(CheckpointError::UnreadableLatest)?;
                return Ok(Submitted::StaleBase(Box::new(latest)));
            }
            Err(s) => return Err(CheckpointError::Refused(Box::new(s))),
        };
        let stored = StoredCheckpoint {
            tree_size: size,
            root,
            created_at_ms: checkpoint.created_at_unix_ms,
            signature: signature.encode_to_vec(),
            countersignature: reply
                .countersignature
                .map(|s| s.encode_to_vec())
                .ok_or(CheckpointError::NotCountersigned)?,
            witnessed_at_ms: reply.witnessed_at_unix_ms,
        };
        self.reader.record_checkpoint(&stored)?;
        tracing::info!(tree_size = size, "message log checkpoint witnessed");
        Ok(Submitted::Witnessed(Some(stored)))
    }

    /// Checkpoints every `interval` until dropped.
    pub async fn run(self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(e) = self.checkpoint_now().await {
                tracing::warn!(error = %e, "checkpoint failed; retrying at the next interval");
            }
        }
    }
}
