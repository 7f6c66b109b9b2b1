//! Batch signatures: envelopes waiting to be signed at the same moment
//! share one signature over the Merkle root of their digests, each carrying
//! its path (`lienthong_proto::merkle`, X-Road signs batches too). Under
//! load this divides the signing cost by the batch size; the verifier
//! remembers a verified batch, so its other envelopes cost only hashes.
//! A lone envelope gets a plain signature.

use std::collections::HashMap;
use std::sync::Arc;

use lienthong_certs::signing::{MAX_BATCH, Signer};
use lienthong_proto::id::MemberId;
use lienthong_proto::pb::exchange::v1::Signature;
use tokio::sync::{mpsc, oneshot};

/// Why a digest was not signed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignError {
    /// The key refused the batch (shared by every envelope of the batch).
    #[error(transparent)]
    Key(Arc<lienthong_certs::CertError>),
    #[error("the signing task has stopped")]
    Stopped,
}

type Job = ([u8; 32], oneshot::Sender<Result<Signature, SignError>>);

/// Signs digests for one member, batching those that arrive together.
#[derive(Debug, Clone)]
pub struct BatchSigner {
    tx: mpsc::UnboundedSender<Job>,
}

impl BatchSigner {
    /// Starts the signing task (needs a Tokio runtime).
    pub fn start(signer: Arc<Signer>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Let requests arriving at the same moment join the batch.
                tokio::task::yield_now().await;
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH as usize {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let digests: Vec<[u8; 32]> = batch.iter().map(|(d, _)| *d).collect();
                match signer.sign_batch(&digests) {
                    Ok(sigs) => {
                        for ((_, done), sig) in batch.into_iter().zip(sigs) {
                            let _ = done.send(Ok(sig));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for (_, done) in batch {
                            let _ = done.send(Err(SignError::Key(e.clone())));
                        }
                    }
                }
            }
        });
        BatchSigner { tx }
    }

    /// Signs `digest` (alone or in a batch).
    pub async fn sign(&self, digest: [u8; 32]) -> Result<Signature, SignError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((digest, done))
            .map_err(|_| SignError::Stopped)?;
        wait.await.map_err(|_| SignError::Stopped)?
    }
}

/// One batch signer per member this server signs for.
#[derive(Debug, Clone, Default)]
pub struct Signers(HashMap<MemberId, BatchSigner>);

impl Signers {
    /// Starts a batch signer for every member key in `keys`.
    pub fn start(keys: &crate::keys::Keys) -> Self {
        Signers(
            keys.signers()
                .map(|(m, s)| (m.clone(), BatchSigner::start(s.clone())))
                .collect(),
        )
    }

    pub fn get(&self, member: &MemberId) -> Option<&BatchSigner> {
        self.0.get(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lienthong_certs::signing::VerifyingKey;
    use lienthong_certs::{InstanceCa, KeyAlgorithm, PrivateKey, Validity, csr};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_digests_share_batches_and_each_verifies() {
        let ca_key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let ca = InstanceCa::create("VN", ca_key, Validity::days(1)).unwrap();
        let key = PrivateKey::generate(KeyAlgorithm::Ed25519).unwrap();
        let v = csr::verify(&csr::create(&key, "m").unwrap()).unwrap();
        let cert = ca
            .issue_signing(&v, &"VN/GOV/1".parse().unwrap(), Validity::days(1))
            .unwrap();
        let signer = BatchSigner::start(Arc::new(Signer::new(&key, &cert).unwrap()));
        let verifier = VerifyingKey::from_cert(&cert).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u8 {
            let s = signer.clone();
            tasks.push(tokio::spawn(async move {
                ([i; 32], s.sign([i; 32]).await.unwrap())
            }));
        }
        let mut batched = 0;
        for t in tasks {
            let (d, sig) = t.await.unwrap();
            verifier.verify(&sig, &d).unwrap();
            batched += usize::from(sig.batch.is_some());
        }
        assert!(batched > 0, "concurrent requests were batched");
    }
}
