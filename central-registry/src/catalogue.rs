//! The service catalogue's API: a service's descriptor set by the SHA-256
//! the configuration names it by, and its publication by the provider's
//! own security server.
//!
//! Reading is open like configuration distribution: descriptor sets are
//! public within the instance, and the configuration's signature covers
//! their digests, which every downloader checks. Officers publish sets
//! through the operator API (`DescribeService`); a provider's security
//! server may publish those of the services of the subsystems it serves
//! (`DescribeProvidedService`, mutual TLS with its auth certificate), with
//! the same checks and an audit record in its name.

use std::sync::Arc;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{Instance, ServerId, ServiceId};
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::service_catalogue_server::ServiceCatalogue;
use tonic::{Request, Response, Status};

use crate::error::{RegistryError, blocking};
use crate::model::Change;
use crate::publisher::Publisher;
use crate::store::Store;

/// The audit action of a publication, whoever makes it.
const ACTION: &str = "DescribeService";

/// The `ServiceCatalogue` service.
#[derive(Debug, Clone)]
pub struct Catalogue {
    store: Arc<dyn Store>,
    publisher: Arc<Publisher>,
    instance: Instance,
}

impl Catalogue {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<Publisher>, instance: Instance) -> Self {
        Catalogue {
            store,
            publisher,
            instance,
        }
    }

    /// The server whose registered, unrevoked auth certificate the TLS
    /// peer presents.
    fn server_of(&self, peer: Option<&[u8]>) -> Result<ServerId, RegistryError> {
        let unknown = || {
            RegistryError::Unauthenticated(
                "a provider's server describes its services over mutual TLS with its registered auth certificate".into(),
            )
        };
        let peer = peer.ok_or_else(unknown)?;
        let cert = self.store.certificate(&Fingerprint::of(peer))?;
        match cert {
            Some(c) if !c.revoked => c.auth_server.ok_or_else(unknown),
            _ => Err(unknown()),
        }
    }

    /// `server`'s publication of `wire`: the service is of a subsystem
    /// the server serves; the set passes the officer's checks.
    fn describe_provided(
        &self,
        server: &ServerId,
        wire: pb::DescribeServiceRequest,
    ) -> Result<Change, RegistryError> {
        let id = wire
            .id
            .as_ref()
            .ok_or_else(|| RegistryError::invalid("service id is missing"))?;
        let id = ServiceId::try_from(id)?;
        if id.provider.member.instance != self.instance {
            return Err(RegistryError::invalid(format!(
                "{id} is not of this registry's instance {}",
                self.instance
            )));
        }
        let serves = self
            .store
            .snapshot()?
            .servers
            .iter()
            .any(|s| &s.id == server && s.clients.contains(&id.provider));
        if !serves {
            return Err(RegistryError::PermissionDenied(format!(
                "{server} does not serve {}: a server describes only the services of its own clients (the registry officer can: `lienthong registry service describe`)",
                id.provider
            )));
        }
        crate::operator::describe(id, wire.descriptor_set)
    }
}

fn first_peer_cert<T>(request: &Request<T>) -> Option<Vec<u8>> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.to_vec()))
}

#[tonic::async_trait]
impl ServiceCatalogue for Catalogue {
    async fn get_descriptor_set(
        &self,
        request: Request<pb::GetDescriptorSetRequest>,
    ) -> Result<Response<pb::GetDescriptorSetReply>, Status> {
        let digest = <[u8; 32]>::try_from(request.get_ref().sha256.as_slice()).map_err(|_| {
            Status::invalid_argument(format!(
                "a descriptor set is named by its SHA-256 (32 bytes), not {} bytes",
                request.get_ref().sha256.len()
            ))
        })?;
        let store = self.store.clone();
        match blocking(move || Ok(store.descriptor_set(&digest)?)).await? {
            Some(descriptor_set) => Ok(Response::new(pb::GetDescriptorSetReply { descriptor_set })),
            None => Err(Status::not_found(format!(
                "the catalogue holds no descriptor set with SHA-256 {} (replaced since? a newer configuration names the current one)",
                hex::encode(digest)
            ))),
        }
    }

    async fn describe_provided_service(
        &self,
        request: Request<pb::DescribeServiceRequest>,
    ) -> Result<Response<pb::OperatorReply>, Status> {
        let peer = first_peer_cert(&request);
        let wire = request.into_inner();
        let this = self.clone();
        let applied = blocking(move || {
            let server = this.server_of(peer.as_deref())?;
            let actor = format!("server {server}");
            let detail = wire
                .id
                .as_ref()
                .and_then(|i| ServiceId::try_from(i).ok())
                .map_or_else(|| "no valid service".to_owned(), |i| i.to_string());
            let change = this.describe_provided(&server, wire);
            let applied = change.and_then(|c| Ok(this.store.apply(&actor, &c)?));
            if let Err(e) = &applied {
                // The refusal of a known server is audited in its name.
                if let Err(audit) =
                    this.store
                        .record_refusal(&actor, ACTION, &detail, &e.to_string())
                {
                    tracing::error!(error = %audit, "could not audit a refused description");
                }
            }
            applied
        })
        .await?;
        let version = self.publisher.version_including(applied.seq).await;
        Ok(Response::new(pb::OperatorReply {
            audit_id: applied.audit_id,
            configuration_version: version.unwrap_or(0),
        }))
    }
}
