//! Configuration distribution: "give me the configuration if newer than V".
//!
//! Open to anyone who reaches the registry: the document is verified with
//! the anchor, not by the transport. An idle poll costs one comparison.
//! Every node serves the bytes it last read from the store (the publisher
//! reads its own versions back too), so all nodes hand out the same
//! document for a version, whichever node signed it.

use std::sync::Arc;

use lienthong_proto::pb::registry::v1::configuration_distribution_server::ConfigurationDistribution;
use lienthong_proto::pb::registry::v1::{GetConfigurationReply, GetConfigurationRequest};
use tonic::{Request, Response, Status};

use crate::publisher::Publisher;

/// The `ConfigurationDistribution` service.
#[derive(Debug, Clone)]
pub struct Distribution {
    publisher: Arc<Publisher>,
}

impl Distribution {
    pub fn new(publisher: Arc<Publisher>) -> Self {
        Distribution { publisher }
    }
}

#[tonic::async_trait]
impl ConfigurationDistribution for Distribution {
    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationReply>, Status> {
        let held = request.get_ref().if_newer_than;
        let current = self.publisher.current().ok_or_else(|| {
            Status::unavailable("the registry has not published a configuration yet; retry shortly")
        })?;
        let configuration = (current.version > held).then(|| current.signed.clone());
        Ok(Response::new(GetConfigurationReply {
            configuration,
            current_version: current.version,
        }))
    }
}
