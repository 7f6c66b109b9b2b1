//! Which methods the caller may call (X-Road's allowedMethods): the
//! built-in `lienthong.allowedmethods.v1.AllowedMethods` service every
//! security server offers over the bus, answered from the provider's own
//! access rights.
//!
//! The caller is the verified client subsystem of the exchange; it learns
//! about itself only: for each service that the configuration lists as
//! offered by a subsystem this server serves, the grants that name it or
//! a global group it belongs to. A grant of a whole service answers
//! `all_methods`, with the methods of the service's descriptor set in the
//! service catalogue when the server holds one. Any registered client may
//! ask ([`authorized`]); the decision itself is [`allowed`], pure.
//!
//! The service is the tonic service generated from
//! `lienthong/allowedmethods/v1/allowed_methods.proto`, one per server
//! (like operational data), behind the provider's built-in router
//! ([`crate::builtin`]), which hands it the verified client after the
//! provider side's stages (signature, freshness, access, replay, log).

use std::collections::BTreeSet;
use std::sync::Arc;

use lienthong_proto::id::{ServerId, SubsystemId};
use lienthong_proto::pb::allowedmethods::v1 as pb;
use lienthong_proto::pb::allowedmethods::v1::allowed_methods_server::AllowedMethods;

use crate::access::{AccessRule, Subject};
use crate::builtin::Caller;
use crate::conf_client::{ConfClient, ConfView};

/// The built-in service's gRPC name.
pub const SERVICE: &str = "lienthong.allowedmethods.v1.AllowedMethods";

/// Whether `client` may ask: any registered client may, about itself.
pub fn authorized(_client: &SubsystemId) -> bool {
    true
}

/// Reads the access rights in force (the provider's policy).
pub type Rules = Arc<dyn Fn() -> Vec<AccessRule> + Send + Sync>;

/// The built-in service: answered from the configuration and the access
/// rights in force when each call arrives.
#[derive(Clone)]
pub struct AllowedMethodsService {
    server: ServerId,
    conf: Arc<ConfClient>,
    rules: Rules,
}

impl std::fmt::Debug for AllowedMethodsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowedMethodsService")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl AllowedMethodsService {
    /// The service of `server`, reading its configuration from `conf` and
    /// its access rights with `rules` (e.g. `move || policies.current().rules.clone()`).
    pub fn new(
        server: ServerId,
        conf: Arc<ConfClient>,
        rules: impl Fn() -> Vec<AccessRule> + Send + Sync + 'static,
    ) -> Self {
        AllowedMethodsService {
            server,
            conf,
            rules: Arc::new(rules),
        }
    }
}

#[tonic::async_trait]
impl AllowedMethods for AllowedMethodsService {
    async fn list(
        &self,
        request: tonic::Request<pb::ListAllowedMethodsRequest>,
    ) -> Result<tonic::Response<pb::ListAllowedMethodsReply>, tonic::Status> {
        let client = Caller::of(&request)?.clone();
        let provider = match &request.get_ref().provider {
            Some(p) => Some(
                SubsystemId::try_from(p)
                    .map_err(|e| tonic::Status::invalid_argument(format!("provider: {e}")))?,
            ),
            None => None,
        };
        let view = self.conf.view().ok_or_else(|| {
            tonic::Status::unavailable("the provider's server has no global configuration yet")
        })?;
        let rules = (self.rules)();
        Ok(tonic::Response::new(pb::ListAllowedMethodsReply {
            services: allowed(&self.server, &view, &rules, &client, provider.as_ref()),
        }))
    }
}

/// What `client` may call of the services `server` provides (only
/// `provider`'s when given), ordered by service identifier.
pub fn allowed(
    server: &ServerId,
    view: &ConfView,
    rules: &[AccessRule],
    client: &SubsystemId,
    provider: Option<&SubsystemId>,
) -> Vec<pb::AllowedService> {
    let groups = view.groups_of(client);
    let names_client = |r: &AccessRule| match &r.subject {
        Subject::Subsystem(s) => s == client,
        Subject::Group(g) => groups.is_some_and(|gs| gs.contains(g)),
    };
    let mut offered: Vec<&(SubsystemId, String)> = view
        .services()
        .filter(|(p, _)| provider.is_none_or(|want| want == p) && view.serves(server, p))
        .collect();
    offered.sort_by_key(|(p, s)| (p.to_string(), s.clone()));
    let mut answer = Vec::new();
    for (p, service) in offered {
        let grants: Vec<&AccessRule> = rules
            .iter()
            .filter(|r| &r.provider == p && &r.service == service && names_client(r))
            .collect();
        if grants.is_empty() {
            continue;
        }
        let all_methods = grants.iter().any(|r| r.method.is_none());
        let methods: Vec<String> = if all_methods {
            catalogue_methods(view, p, service).unwrap_or_default()
        } else {
            let named: BTreeSet<&str> = grants.iter().filter_map(|r| r.method.as_deref()).collect();
            named.into_iter().map(str::to_owned).collect()
        };
        let Ok(id) = p.service(service, None) else {
            continue;
        };
        answer.push(pb::AllowedService {
            service: Some((&id).into()),
            all_methods,
            methods,
        });
    }
    answer
}

/// The methods of `provider`'s `service` by its descriptor set in the
/// catalogue, when the server holds one.
fn catalogue_methods(
    view: &ConfView,
    provider: &SubsystemId,
    service: &str,
) -> Option<Vec<String>> {
    let d = view
        .described()
        .iter()
        .find(|d| &d.provider == provider && d.service == service)?;
    view.descriptor_set(&d.sha256)?.methods(service)
}

#[cfg(test)]
mod tests;
