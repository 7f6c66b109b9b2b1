//! `lienthong.trace.v1.TracePortal`: the trace portal's query as a gRPC
//! service, for the web page citizens use. Each call runs [`super::portal::trace`]
//! against the newest configuration of the portal's security server.

use std::sync::Arc;
use std::time::Duration;

use lienthong_proto::id::SubsystemId;
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::trace::v1 as pb;
use lienthong_proto::pb::trace::v1::trace_portal_server::TracePortal;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::portal::{self, TraceReport};
use crate::conf_client::ConfClient;

/// The portal service.
#[derive(Clone)]
pub struct PortalApi {
    consumer: Channel,
    portal: SubsystemId,
    conf: Arc<ConfClient>,
    anchor: Anchor,
    timeout: Duration,
    /// The portal's security server's TLS identity, to ask the registry
    /// which checkpoints it witnessed last.
    identity: Option<Arc<lienthong_certs::tls::Identity>>,
}

impl std::fmt::Debug for PortalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalApi")
            .field("portal", &self.portal)
            .finish_non_exhaustive()
    }
}

impl PortalApi {
    /// Asks through `consumer` (the portal's security server) as `portal`,
    /// with the configuration `conf` keeps current.
    pub fn new(
        consumer: Channel,
        portal: SubsystemId,
        conf: Arc<ConfClient>,
        anchor: Anchor,
        timeout: Duration,
        identity: Option<Arc<lienthong_certs::tls::Identity>>,
    ) -> Self {
        PortalApi {
            consumer,
            portal,
            conf,
            anchor,
            timeout,
            identity,
        }
    }
}

/// The report on the wire.
pub fn to_proto(r: &TraceReport) -> pb::TraceReport {
    let problem = |(server, reason): &(lienthong_proto::id::ServerId, String)| pb::ServerProblem {
        server: Some(server.into()),
        reason: reason.clone(),
    };
    pb::TraceReport {
        exchanges: r
            .exchanges
            .iter()
            .map(|e| pb::TracedExchange {
                message_id: e.message_id.clone(),
                at_unix_ms: e.at_ms,
                client: e.client.clone(),
                service: e.service.clone(),
                method: e.method.clone(),
                purpose: e.purpose.clone(),
                user_id: e.user_id.clone(),
                grpc_status: e.grpc_status,
                fault: e.fault.clone(),
                logged_by: e
                    .logged_by
                    .iter()
                    .map(|(s, side)| pb::LoggedBy {
                        server: Some(s.into()),
                        side: *side as i32,
                    })
                    .collect(),
                verified: e.verified,
                status: e.status.to_proto() as i32,
                problem: e.status.problem().to_owned(),
            })
            .collect(),
        unanswered: r.unanswered.iter().map(problem).collect(),
        failures: r.failures.iter().map(problem).collect(),
        withheld: r
            .withheld
            .iter()
            .map(|(until, count)| pb::WithheldCount {
                until_unix_ms: *until,
                count: *count,
                // The citizen sees counts, never which exchanges.
                message_ids: Vec::new(),
            })
            .collect(),
        unwitnessed: r.unwitnessed,
    }
}

#[tonic::async_trait]
impl TracePortal for PortalApi {
    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceReport>, Status> {
        let subject = request.into_inner().data_subject;
        super::check_subject(&subject).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let view = self.conf.view().ok_or_else(|| {
            Status::unavailable("the portal's security server has no configuration yet")
        })?;
        let witnessed = match &self.identity {
            Some(identity) => portal::Witnessed::ask(&self.anchor, identity, &view).await,
            None => portal::Witnessed::unknown(),
        };
        let report = portal::trace(
            self.consumer.clone(),
            &self.portal,
            &view,
            &self.anchor,
            &subject,
            self.timeout,
            &witnessed,
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(to_proto(&report)))
    }
}
