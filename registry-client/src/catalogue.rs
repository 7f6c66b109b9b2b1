//! The service catalogue from a downloader's side: a service's descriptor
//! set fetched by the SHA-256 the verified configuration names it by, and
//! accepted only when its bytes hash to that digest and parse as a
//! descriptor set (so the configuration's signature covers it).

use lienthong_proto::catalogue::{DescriptorSet, DescriptorSetError, MAX_DESCRIPTOR_SET_BYTES};
use lienthong_proto::pb::registry::v1::GetDescriptorSetRequest;
use lienthong_proto::pb::registry::v1::service_catalogue_client::ServiceCatalogueClient;
use tonic::transport::Channel;

use crate::ClientError;

/// Why a downloaded descriptor set was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the registry's descriptor set for SHA-256 {wanted} hashes to {got}; refused")]
    WrongDigest { wanted: String, got: String },
    #[error("the descriptor set with SHA-256 {digest}: {detail}")]
    Unusable {
        digest: String,
        detail: DescriptorSetError,
    },
}

/// Downloads the descriptor set named `sha256` over `channel` (a
/// connection to the registry, e.g. from [`crate::Registries::connect`])
/// and checks it against the digest.
pub async fn download(
    channel: Channel,
    sha256: &[u8; 32],
) -> Result<DescriptorSet, CatalogueError> {
    let reply = ServiceCatalogueClient::new(channel)
        .max_decoding_message_size(MAX_DESCRIPTOR_SET_BYTES + 1024)
        .get_descriptor_set(GetDescriptorSetRequest {
            sha256: sha256.to_vec(),
        })
        .await
        .map_err(|s| ClientError::refused("the registry refused the descriptor set", &s))?
        .into_inner();
    accept(sha256, reply.descriptor_set)
}

/// `bytes` as the descriptor set named `sha256`: the digest matches and
/// the set parses (a copy read back from disk is checked the same way).
pub fn accept(sha256: &[u8; 32], bytes: Vec<u8>) -> Result<DescriptorSet, CatalogueError> {
    let got = lienthong_proto::sha256(&bytes);
    if &got != sha256 {
        return Err(CatalogueError::WrongDigest {
            wanted: hex::encode(sha256),
            got: hex::encode(got),
        });
    }
    DescriptorSet::parse(bytes).map_err(|detail| CatalogueError::Unusable {
        digest: hex::encode(sha256),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bytes_of_the_named_digest_that_parse_are_accepted() {
        let garbage = b"not a descriptor set".to_vec();
        let digest = lienthong_proto::sha256(&garbage);
        let e = accept(&lienthong_proto::sha256(b"other"), garbage.clone()).unwrap_err();
        assert!(matches!(e, CatalogueError::WrongDigest { .. }), "{e}");
        let e = accept(&digest, garbage).unwrap_err();
        assert!(matches!(e, CatalogueError::Unusable { .. }), "{e}");
    }
}
