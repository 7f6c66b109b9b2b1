//! Stage 2: the call against the global configuration — current, the
//! client registered on this server, the service offered, its fields
//! within what the instance accepts.

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_proto::id::ServerId;
use tonic::body::Body;

use super::Facts;
use super::call::Call;
use crate::conf_client::{ConfClient, ConfView};
use crate::faults::{Fault, FaultError};
use crate::metadata::{self, CallMetadata, Target};
use crate::refusal::Refusal;
use lienthong_proto::time::unix_ms;

/// A call this server may make, under the configuration in `view`.
pub struct Checked {
    pub facts: Facts,
    pub meta: CallMetadata,
    pub view: Arc<ConfView>,
    pub parts: http::request::Parts,
    pub body: Body,
}

/// Checks `call` against the configuration in force on `server`.
pub fn against_configuration(
    call: Call,
    conf: &ConfClient,
    server: &ServerId,
) -> Result<Checked, Refusal> {
    let Call {
        facts,
        meta,
        parts,
        body,
    } = call;
    let checked = current_view(conf, SystemTime::now())
        .and_then(|view| check_call(&view, server, &meta, &facts.service).map(|()| view));
    match checked {
        Ok(view) => Ok(Checked {
            facts,
            meta,
            view,
            parts,
            body,
        }),
        Err(fault) => Err(facts.refused(fault, None)),
    }
}

/// The configuration in force, if it is current.
pub fn current_view(conf: &ConfClient, now: SystemTime) -> Result<Arc<ConfView>, FaultError> {
    let view = conf.view().ok_or_else(|| {
        Fault::ConsumerConfExpired.with("no global configuration has been downloaded yet")
    })?;
    if view.is_expired(now) {
        return Err(Fault::ConsumerConfExpired.with(format!(
            "configuration version {} expired at {}; the registry has not been reachable — check `lienthong server status`",
            view.version,
            lienthong_certs::verify::fmt_time(view.expires_at_ms / 1000)
        )));
    }
    Ok(view)
}

/// Whether `server` may make `call` to `service` under `view`.
pub fn check_call(
    view: &ConfView,
    server: &ServerId,
    call: &CallMetadata,
    service: &str,
) -> Result<(), FaultError> {
    if !view.serves(server, &call.client) {
        if view.knows_subsystem(&call.client) {
            return Err(Fault::ClientNotOnThisServer.with(format!(
                "{} is registered on another security server, not on {server}",
                call.client
            )));
        }
        return Err(Fault::UnknownClient.with(format!(
            "{} is not a registered client of any security server",
            call.client
        )));
    }
    if let Err(refusal) = crate::withholding::check(
        view.withholding_grants(),
        view.groups_of(&call.client),
        unix_ms(SystemTime::now()),
        call.withheld_until_ms,
    ) {
        return Err(Fault::WithholdingNotAllowed.with(format!(
            "{} may not withhold this exchange until unix ms {}: {refusal}",
            call.client, call.withheld_until_ms
        )));
    }
    let offered = match &call.target {
        Target::Provider(p) => view.offers(p, service) && !view.servers_of(p).is_empty(),
        Target::Server(s) => {
            metadata::BUILTIN_SERVICES.contains(&service) && view.server(s).is_some()
        }
    };
    if !offered {
        return Err(Fault::UnknownService.with(format!(
            "{} does not offer {service} over the bus",
            call.target
        )));
    }
    crate::fields::check_call(view, call, service)
}
