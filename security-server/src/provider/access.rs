//! Stage 6: the access rights — the provider's operator granted the
//! client (or a group it is in) this service and method; the built-in
//! access trace only to the instance's trace portal.

use super::policy::Policy;
use super::signature::Verified;
use crate::access::{self, Call};
use crate::conf_client::ConfView;
use crate::faults::{Fault, FaultError};
use crate::metadata::Target;
use lienthong_proto::id::SubsystemId;

/// Whether the access rights in `policy` allow `verified`.
pub fn check(verified: &Verified, policy: &Policy) -> Result<(), FaultError> {
    let facts = &verified.facts;
    let service = facts
        .header
        .service
        .as_ref()
        .map_or("", |s| s.service_code.as_str());
    authorize(
        &verified.view,
        policy,
        &facts.client,
        &facts.target,
        service,
        &facts.header.method,
    )
}

/// Whether the client may call `service`/`method` of `target`.
pub fn authorize(
    view: &ConfView,
    policy: &Policy,
    client: &SubsystemId,
    target: &Target,
    service: &str,
    method: &str,
) -> Result<(), FaultError> {
    let allowed = match target {
        Target::Provider(provider) => access::authorize(
            &policy.rules,
            &Call {
                client,
                client_groups: view.groups_of(client),
                provider,
                service,
                method,
            },
        ),
        // Any member may ask for operational data; it sees its own only.
        Target::Server(_) if service == crate::operational::SERVICE => true,
        // Any client may ask what it may call; it learns of itself only.
        Target::Server(_) if service == crate::allowed_methods::SERVICE => {
            crate::allowed_methods::authorized(client)
        }
        Target::Server(_) => view.trace_portal.as_ref() == Some(client),
    };
    if allowed {
        return Ok(());
    }
    Err(Fault::AccessDenied.with(match target {
        Target::Provider(p) => format!(
            "{client} may not call {p}/{service}/{method}; the provider's operator grants access with `lienthong server acl grant`"
        ),
        Target::Server(_) => {
            format!("only the instance's trace portal may call {service}; {client} is not it")
        }
    }))
}
