//! The service catalogue's distribution: a service's descriptor set by the
//! SHA-256 the configuration names it by.
//!
//! Open like configuration distribution: descriptor sets are public within
//! the instance, and the configuration's signature covers their digests,
//! which every downloader checks. Officers publish them through the
//! operator API (`AddService`, `DescribeService`).

use std::sync::Arc;

use lienthong_proto::pb::registry::v1::service_catalogue_server::ServiceCatalogue;
use lienthong_proto::pb::registry::v1::{GetDescriptorSetReply, GetDescriptorSetRequest};
use tonic::{Request, Response, Status};

use crate::error::blocking;
use crate::store::Store;

/// The `ServiceCatalogue` service.
#[derive(Debug, Clone)]
pub struct Catalogue {
    store: Arc<dyn Store>,
}

impl Catalogue {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Catalogue { store }
    }
}

#[tonic::async_trait]
impl ServiceCatalogue for Catalogue {
    async fn get_descriptor_set(
        &self,
        request: Request<GetDescriptorSetRequest>,
    ) -> Result<Response<GetDescriptorSetReply>, Status> {
        let digest = <[u8; 32]>::try_from(request.get_ref().sha256.as_slice()).map_err(|_| {
            Status::invalid_argument(format!(
                "a descriptor set is named by its SHA-256 (32 bytes), not {} bytes",
                request.get_ref().sha256.len()
            ))
        })?;
        let store = self.store.clone();
        match blocking(move || Ok(store.descriptor_set(&digest)?)).await? {
            Some(descriptor_set) => Ok(Response::new(GetDescriptorSetReply { descriptor_set })),
            None => Err(Status::not_found(format!(
                "the catalogue holds no descriptor set with SHA-256 {} (replaced since? a newer configuration names the current one)",
                hex::encode(digest)
            ))),
        }
    }
}
