//! Checkpoints of the message log: the server signs (tree size, root,
//! time) with its owner's key and has the registry witness it, proving the
//! tree extends the last witnessed one. Every record in a witnessed tree
//! can then be shown to a citizen with a proof no agency can fake.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_proto::canonical;
use lienthong_proto::pb::registry::v1::checkpoint_witness_client::CheckpointWitnessClient;
use lienthong_proto::pb::registry::v1::{Checkpoint, WitnessRequest, WitnessedCheckpoint};
use lienthong_registry_client::Registries;
use prost::Message;

use crate::keys::Keys;
use crate::message_log::{LogReader, StoredCheckpoint};
use lienthong_proto::time::unix_ms;

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
    pub async fn checkpoint_now(&self) -> Result<Option<StoredCheckpoint>, String> {
        match self.submit().await? {
            Submitted::Witnessed(stored) => Ok(stored),
            Submitted::StaleBase(latest) => {
                self.record_latest(*latest).await?;
                match self.submit().await? {
                    Submitted::Witnessed(stored) => Ok(stored),
                    Submitted::StaleBase(_) => {
                        Err("the registry answered a stale base twice".into())
                    }
                }
            }
        }
    }

    /// Records the registry's latest witnessed checkpoint of this log, if
    /// it is of this log's tree.
    async fn record_latest(&self, latest: WitnessedCheckpoint) -> Result<(), String> {
        let cp = latest
            .checkpoint
            .ok_or("the registry's latest names no checkpoint")?;
        let reader = self.reader.clone();
        let size = cp.tree_size;
        let ours = tokio::task::spawn_blocking(move || reader.root(size))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if ours.as_slice() != cp.root_hash.as_slice() {
            return Err(format!(
                "the registry's latest witnessed checkpoint of {size} records is not this log's tree"
            ));
        }
        let stored = StoredCheckpoint {
            tree_size: size,
            root: ours,
            created_at_ms: cp.created_at_unix_ms,
            signature: cp.signature.map(|s| s.encode_to_vec()).unwrap_or_default(),
            countersignature: latest
                .countersignature
                .map(|s| s.encode_to_vec())
                .ok_or("the registry's latest is not countersigned")?,
            witnessed_at_ms: latest.witnessed_at_unix_ms,
        };
        self.reader
            .record_checkpoint(&stored)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            tree_size = size,
            "recorded the registry's latest witnessed checkpoint"
        );
        Ok(())
    }

    async fn submit(&self) -> Result<Submitted, String> {
        let reader = self.reader.clone();
        let (size, root, last) = tokio::task::spawn_blocking(move || {
            let size = reader.tree_size()?;
            Ok::<_, crate::message_log::LogError>((
                size,
                reader.root(size)?,
                reader.latest_checkpoint()?,
            ))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if size == 0 || last.as_ref().is_some_and(|l| l.tree_size == size) {
            return Ok(Submitted::Witnessed(last));
        }
        let previous = last.as_ref().map_or(0, |l| l.tree_size);
        let proof = if previous == 0 {
            Vec::new()
        } else {
            self.reader
                .consistency_proof(previous, size)
                .map_err(|e| e.to_string())?
        };
        let owner = self
            .keys
            .signer(&self.keys.server.owner)
            .ok_or("no signing key for the owner")?;
        let mut checkpoint = Checkpoint {
            server: Some((&self.keys.server).into()),
            tree_size: size,
            root_hash: root.to_vec(),
            created_at_unix_ms: unix_ms(SystemTime::now()),
            signature: None,
        };
        let digest = canonical::digest(&canonical::checkpoint(&checkpoint));
        let signature = owner.sign_digest(&digest).map_err(|e| e.to_string())?;
        checkpoint.signature = Some(signature.clone());
        let channel = self
            .registries
            .connect(Some(&self.keys.auth))
            .await
            .map_err(|e| e.to_string())?;
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
                    .map_err(|e| format!("the registry's latest witnessed checkpoint: {e}"))?;
                return Ok(Submitted::StaleBase(Box::new(latest)));
            }
            Err(s) => {
                return Err(format!(
                    "the registry refused the checkpoint: {}",
                    s.message()
                ));
            }
        };
        let stored = StoredCheckpoint {
            tree_size: size,
            root,
            created_at_ms: checkpoint.created_at_unix_ms,
            signature: signature.encode_to_vec(),
            countersignature: reply
                .countersignature
                .map(|s| s.encode_to_vec())
                .ok_or("the registry did not countersign")?,
            witnessed_at_ms: reply.witnessed_at_unix_ms,
        };
        self.reader
            .record_checkpoint(&stored)
            .map_err(|e| e.to_string())?;
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
