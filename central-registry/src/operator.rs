//! The operator API: registration officers write, observers read.
//!
//! Every call is authenticated by a bearer token and checked against the
//! caller's role ([`crate::auth::allows`]). A write is parsed into a
//! [`Change`] (identifiers of this instance only, bounded text), applied
//! with its audit record in one transaction, and answered with the
//! configuration version that includes it. A refused write changes nothing
//! and is audited with the reason.

use std::sync::Arc;
use std::time::SystemTime;

use lienthong_certs::{Fingerprint, InstanceCa};
use lienthong_proto::catalogue::{DescriptorSet, DescriptorSetError};
use lienthong_proto::id::{
    GlobalGroupId, Instance, MemberClass, MemberId, ServerId, ServiceId, SubsystemId,
};
use lienthong_proto::pb::globalconf::v1::GlobalConfiguration;
use lienthong_proto::pb::registry::v1 as pb;
use lienthong_proto::pb::registry::v1::registry_operator_server::RegistryOperator;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::auth::{self, Access};
use crate::error::{RegistryError, blocking};
use crate::model::*;
use crate::publisher::Publisher;
use crate::refusals::Refusals;
use crate::registration::{self, expiry_ms};
use crate::store::Store;

/// Default lifetime of an enrollment token.
pub const DEFAULT_ENROLLMENT_TOKEN_SECS: u32 = 24 * 3600;
/// Longest lifetime of an enrollment token.
pub const MAX_ENROLLMENT_TOKEN_SECS: u32 = 30 * 24 * 3600;
/// Most audit records one call returns.
pub const MAX_AUDIT_RECORDS: usize = 1000;
/// Most certificates one `GetCertificates` call asks for.
pub const MAX_CERTIFICATES_ASKED: usize = 1000;

/// Checks free text: length in characters, no control characters.
pub fn check_text(what: &str, s: &str, min: usize, max: usize) -> Result<String, RegistryError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(RegistryError::invalid(format!(
            "{what} has {n} characters; {min}..={max} are accepted"
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(RegistryError::invalid(format!(
            "{what} contains a control character"
        )));
    }
    Ok(s.to_owned())
}

/// Parses an optional protobuf identifier into its newtype.
fn required<'a, P, T>(what: &str, p: &'a Option<P>) -> Result<T, RegistryError>
where
    T: TryFrom<&'a P, Error = lienthong_proto::id::IdError>,
{
    let p = p
        .as_ref()
        .ok_or_else(|| RegistryError::invalid(format!("{what} is missing")))?;
    Ok(T::try_from(p)?)
}

/// Refuses identifiers of another instance.
fn local(
    instance: &Instance,
    found: &Instance,
    id: &dyn std::fmt::Display,
) -> Result<(), RegistryError> {
    if found != instance {
        return Err(RegistryError::invalid(format!(
            "{id} is not of this registry's instance {instance}"
        )));
    }
    Ok(())
}

/// The `RegistryOperator` service.
#[derive(Clone)]
pub struct OperatorApi {
    store: Arc<dyn Store>,
    ca: Arc<InstanceCa>,
    publisher: Arc<Publisher>,
    instance: Instance,
    cert_validity: std::time::Duration,
    refusals: Refusals,
}

impl std::fmt::Debug for OperatorApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorApi")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

type Reply = Result<Response<pb::OperatorReply>, Status>;

impl OperatorApi {
    pub fn new(
        store: Arc<dyn Store>,
        ca: Arc<InstanceCa>,
        publisher: Arc<Publisher>,
        instance: Instance,
        cert_validity: std::time::Duration,
    ) -> Self {
        OperatorApi {
            refusals: Refusals::new(store.clone()),
            store,
            ca,
            publisher,
            instance,
            cert_validity,
        }
    }

    /// Authenticates the caller and checks the role for `access`.
    async fn operator<T>(
        &self,
        request: &Request<T>,
        action: &'static str,
        access: Access,
    ) -> Result<Operator, Status> {
        let source = request.remote_addr();
        let Some(token) = auth::bearer(request.metadata()) else {
            let msg = "operator calls need `authorization: Bearer <token>` (see `lienthong registry operator add`)";
            self.refusals
                .record(source, None, None, action, "no operator token", msg)
                .await;
            return Err(Status::unauthenticated(msg));
        };
        let person = auth::on_behalf_of(request.metadata());
        let hash = auth::hash_token(token);
        let store = self.store.clone();
        let Some(mut op) = blocking(move || Ok(store.operator_by_token(&hash)?)).await? else {
            let msg = "unknown operator token";
            self.refusals
                .record(
                    source,
                    None,
                    Some(("operator", token.to_owned())),
                    action,
                    "",
                    msg,
                )
                .await;
            return Err(Status::unauthenticated(msg));
        };
        // A person acting with the token (a console's officer signed in
        // by OpenID Connect) is named in every audit record from here on.
        match person {
            Ok(person) => op.name = auth::actor(&op.name, person.as_deref()),
            Err(e) => {
                let msg = e.to_string();
                self.audit_refusal(&op, action, "", &msg).await;
                return Err(Status::invalid_argument(msg));
            }
        }
        if !auth::allows(op.role, access) {
            let msg = format!(
                "operator {} has the {} role, which may not call {action}",
                op.name,
                op.role.as_str()
            );
            self.audit_refusal(&op, action, "", &msg).await;
            return Err(Status::permission_denied(msg));
        }
        Ok(op)
    }

    async fn audit_refusal(&self, op: &Operator, action: &str, detail: &str, error: &str) {
        let (store, actor, action, detail, error) = (
            self.store.clone(),
            op.name.clone(),
            action.to_owned(),
            detail.to_owned(),
            error.to_owned(),
        );
        let recorded =
            blocking(move || Ok(store.record_refusal(&actor, &action, &detail, &error)?)).await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "could not audit a refused operator action");
        }
    }

    /// Authenticates, parses, applies and answers one write.
    async fn write<T>(
        &self,
        request: Request<T>,
        action: &'static str,
        parse: impl FnOnce(&Self, T) -> Result<Change, RegistryError>,
    ) -> Reply {
        let op = self.operator(&request, action, Access::Write).await?;
        let change = match parse(self, request.into_inner()) {
            Ok(c) => c,
            Err(e) => {
                self.audit_refusal(&op, action, "", &e.to_string()).await;
                return Err(e.into());
            }
        };
        let (store, actor, c) = (self.store.clone(), op.name.clone(), change.clone());
        match blocking(move || Ok(store.apply(&actor, &c)?)).await {
            Ok(applied) => self.reply(applied).await,
            Err(e) => {
                self.audit_refusal(&op, action, &change.to_string(), &e.to_string())
                    .await;
                Err(e.into())
            }
        }
    }

    async fn reply(&self, applied: Applied) -> Reply {
        let version = self.publisher.version_including(applied.seq).await;
        Ok(Response::new(pb::OperatorReply {
            audit_id: applied.audit_id,
            configuration_version: version.unwrap_or(0),
        }))
    }

    fn member(
        &self,
        p: &Option<lienthong_proto::pb::identifiers::v1::MemberId>,
    ) -> Result<MemberId, RegistryError> {
        let id: MemberId = required("member id", p)?;
        local(&self.instance, &id.instance, &id)?;
        Ok(id)
    }

    fn subsystem(
        &self,
        p: &Option<lienthong_proto::pb::identifiers::v1::SubsystemId>,
    ) -> Result<SubsystemId, RegistryError> {
        let id: SubsystemId = required("subsystem id", p)?;
        local(&self.instance, &id.member.instance, &id)?;
        Ok(id)
    }

    fn service(
        &self,
        p: &Option<lienthong_proto::pb::identifiers::v1::ServiceId>,
    ) -> Result<ServiceId, RegistryError> {
        let id: ServiceId = required("service id", p)?;
        local(&self.instance, &id.provider.member.instance, &id)?;
        Ok(id)
    }

    fn group(
        &self,
        p: &Option<lienthong_proto::pb::identifiers::v1::GlobalGroupId>,
    ) -> Result<GlobalGroupId, RegistryError> {
        let id: GlobalGroupId = required("global group id", p)?;
        local(&self.instance, &id.instance, &id)?;
        Ok(id)
    }

    fn server(
        &self,
        p: &Option<lienthong_proto::pb::identifiers::v1::SecurityServerId>,
    ) -> Result<ServerId, RegistryError> {
        let id: ServerId = required("security server id", p)?;
        local(&self.instance, &id.owner.instance, &id)?;
        Ok(id)
    }

    /// Approves or rejects a request: both are audited writes.
    async fn decide(&self, request: Request<pb::DecideRequest>, approve: bool) -> Reply {
        let action = if approve {
            "ApproveRequest"
        } else {
            "RejectRequest"
        };
        let op = self.operator(&request, action, Access::Write).await?;
        let req = request.into_inner();
        let note = match check_text("decision note", &req.note, 0, MAX_NOTE_CHARS) {
            Ok(n) => n,
            Err(e) => {
                self.audit_refusal(&op, action, "", &e.to_string()).await;
                return Err(e.into());
            }
        };
        let (store, ca, validity, actor) = (
            self.store.clone(),
            self.ca.clone(),
            self.cert_validity,
            op.name.clone(),
        );
        let id = req.id;
        let note2 = note.clone();
        let result = blocking(move || {
            if approve {
                registration::approve(store.as_ref(), &ca, validity, &actor, id, &note2)
            } else {
                Ok(store.apply(&actor, &Change::Reject { id, note: note2 })?)
            }
        })
        .await;
        match result {
            Ok(applied) => self.reply(applied).await,
            Err(e) => {
                let detail = format!("request {id} {note:?}");
                self.audit_refusal(&op, action, &detail, &e.to_string())
                    .await;
                Err(e.into())
            }
        }
    }
}

/// The catalogue entry of `id`: `bytes` parsed, bounded and checked to
/// define the service (see [`DescriptorSet::parse`]).
pub fn describe(id: ServiceId, bytes: Vec<u8>) -> Result<Change, RegistryError> {
    let invalid = |e: DescriptorSetError| RegistryError::invalid(format!("{id}: {e}"));
    let set = DescriptorSet::parse(bytes).map_err(invalid)?;
    set.require_service(&id.service.to_string())
        .map_err(invalid)?;
    Ok(Change::DescribeService {
        sha256: set.sha256(),
        defines: set.services(),
        descriptor_set: set.into_bytes(),
        id,
    })
}

fn csr_summary(c: &CsrFor) -> pb::CsrSummary {
    pb::CsrSummary {
        auth: c.member.is_none(),
        member: c.member.as_ref().map(Into::into),
        public_key_sha256: lienthong_proto::sha256(&c.public_key).to_vec(),
        key_type: lienthong_certs::key_policy::spki_key_type(&c.public_key)
            .map(|k| k.to_string())
            .unwrap_or_else(|e| format!("unreadable key: {e}")),
        consent_certificate_sha256: c.consent.map(|f| f.0.to_vec()).unwrap_or_default(),
    }
}

fn summary(r: StoredRequest) -> pb::RequestSummary {
    let csrs = r
        .request
        .auth_csr
        .iter()
        .chain(&r.request.signing_csrs)
        .map(csr_summary)
        .collect();
    pb::RequestSummary {
        csrs,
        id: r.id,
        kind: r.request.kind.code() as i32,
        server: Some((&r.request.server).into()),
        subsystem: r.request.subsystem.as_ref().map(Into::into),
        state: r.state.code() as i32,
        submitted_at_unix_ms: r.submitted_at_ms,
        decision_note: r.decision_note,
    }
}

#[tonic::async_trait]
impl RegistryOperator for OperatorApi {
    async fn add_member_class(&self, request: Request<pb::AddMemberClassRequest>) -> Reply {
        self.write(request, "AddMemberClass", |_, r| {
            Ok(Change::AddMemberClass {
                code: MemberClass::new(r.code)?,
                description: check_text("description", &r.description, 0, MAX_DESCRIPTION_CHARS)?,
            })
        })
        .await
    }

    async fn add_member(&self, request: Request<pb::AddMemberRequest>) -> Reply {
        self.write(request, "AddMember", |this, r| {
            Ok(Change::AddMember {
                id: this.member(&r.id)?,
                name: check_text("member name", &r.name, 1, MAX_NAME_CHARS)?,
            })
        })
        .await
    }

    async fn add_subsystem(&self, request: Request<pb::AddSubsystemRequest>) -> Reply {
        self.write(request, "AddSubsystem", |this, r| {
            Ok(Change::AddSubsystem {
                id: this.subsystem(&r.id)?,
            })
        })
        .await
    }

    async fn add_service(&self, request: Request<pb::AddServiceRequest>) -> Reply {
        self.write(request, "AddService", |this, r| {
            let id = this.service(&r.id)?;
            // The bus's own services: a provider's service of the same name
            // could pass for them (e.g. be left out of citizens' traces).
            if id.service.to_string().starts_with("lienthong.") {
                return Err(RegistryError::invalid(format!(
                    "service names under lienthong.* are reserved for the bus itself: {}",
                    id.service
                )));
            }
            Ok(Change::AddService {
                id,
                description: check_text("description", &r.description, 0, MAX_DESCRIPTION_CHARS)?,
                personal_data: r.personal_data,
            })
        })
        .await
    }

    async fn describe_service(&self, request: Request<pb::DescribeServiceRequest>) -> Reply {
        self.write(request, "DescribeService", |this, r| {
            describe(this.service(&r.id)?, r.descriptor_set)
        })
        .await
    }

    async fn remove_service(&self, request: Request<pb::RemoveServiceRequest>) -> Reply {
        self.write(request, "RemoveService", |this, r| {
            Ok(Change::RemoveService {
                id: this.service(&r.id)?,
            })
        })
        .await
    }

    async fn add_global_group(&self, request: Request<pb::AddGlobalGroupRequest>) -> Reply {
        self.write(request, "AddGlobalGroup", |this, r| {
            Ok(Change::AddGlobalGroup {
                id: this.group(&r.id)?,
                description: check_text("description", &r.description, 0, MAX_DESCRIPTION_CHARS)?,
            })
        })
        .await
    }

    async fn add_group_member(&self, request: Request<pb::GroupMemberRequest>) -> Reply {
        self.write(request, "AddGroupMember", |this, r| {
            Ok(Change::AddGroupMember {
                group: this.group(&r.group)?,
                subsystem: this.subsystem(&r.subsystem)?,
            })
        })
        .await
    }

    async fn remove_group_member(&self, request: Request<pb::GroupMemberRequest>) -> Reply {
        self.write(request, "RemoveGroupMember", |this, r| {
            Ok(Change::RemoveGroupMember {
                group: this.group(&r.group)?,
                subsystem: this.subsystem(&r.subsystem)?,
            })
        })
        .await
    }

    async fn set_trace_portal(&self, request: Request<pb::SetTracePortalRequest>) -> Reply {
        self.write(request, "SetTracePortal", |this, r| {
            Ok(Change::SetTracePortal {
                portal: this.subsystem(&r.portal)?,
            })
        })
        .await
    }

    async fn set_withholding_group(
        &self,
        request: Request<pb::SetWithholdingGroupRequest>,
    ) -> Reply {
        self.write(request, "SetWithholdingGroup", |this, r| {
            let max_duration_ms = i64::try_from(r.max_duration_seconds)
                .ok()
                .and_then(|s| s.checked_mul(1000))
                .filter(|ms| (1..=crate::model::MAX_WITHHOLDING_MS).contains(ms))
                .ok_or_else(|| {
                    RegistryError::invalid(
                        "max_duration_seconds must be 1 s to 50 years: how long one exchange may stay withheld",
                    )
                })?;
            let valid_until_ms = match r.valid_until_unix_ms {
                0 => None,
                t if t > lienthong_proto::time::now_ms() =>
                {
                    Some(t)
                }
                _ => {
                    return Err(RegistryError::invalid(
                        "valid_until_unix_ms must be in the future (or 0: until replaced)",
                    ));
                }
            };
            Ok(Change::SetWithholdingGroup {
                group: this.group(&r.group)?,
                max_duration_ms,
                valid_until_ms,
            })
        })
        .await
    }

    async fn set_data_subject_formats(
        &self,
        request: Request<pb::SetDataSubjectFormatsRequest>,
    ) -> Reply {
        self.write(request, "SetDataSubjectFormats", |_, r| {
            let formats: Vec<(String, String)> = r
                .formats
                .iter()
                .map(|f| (f.name.clone(), f.mask.clone()))
                .collect();
            lienthong_proto::fields::DataSubjectFormats::new(
                formats
                    .iter()
                    .map(|(n, m)| lienthong_proto::fields::DataSubjectFormat::new(n, m))
                    .collect::<Result<_, _>>()
                    .map_err(|e| RegistryError::invalid(e.to_string()))?,
            )
            .map_err(|e| RegistryError::invalid(e.to_string()))?;
            Ok(Change::SetDataSubjectFormats { formats })
        })
        .await
    }

    async fn add_trusted_ca(&self, request: Request<pb::AddTrustedCaRequest>) -> Reply {
        self.write(request, "AddTrustedCa", |_, r| {
            let info = lienthong_certs::verify::parse(&r.certificate)?;
            if !info.is_ca || !info.key_cert_sign {
                return Err(RegistryError::invalid(format!(
                    "certificate {:?} is not a CA certificate (basic constraints CA and keyCertSign required)",
                    info.common_name
                )));
            }
            lienthong_certs::key_policy::check_certificate(
                &r.certificate,
                lienthong_certs::key_policy::KeyPurpose::Ca,
            )?;
            Ok(Change::AddTrustedCa { der: r.certificate })
        })
        .await
    }

    async fn create_enrollment_token(
        &self,
        request: Request<pb::CreateEnrollmentTokenRequest>,
    ) -> Result<Response<pb::CreateEnrollmentTokenReply>, Status> {
        let (token, hash) = auth::new_token();
        let mut expires = 0;
        let reply = self
            .write(request, "CreateEnrollmentToken", |this, r| {
                let secs = match r.valid_seconds {
                    0 => DEFAULT_ENROLLMENT_TOKEN_SECS,
                    s if s > MAX_ENROLLMENT_TOKEN_SECS => {
                        return Err(RegistryError::invalid(format!(
                            "valid_seconds {s}; at most {MAX_ENROLLMENT_TOKEN_SECS} (30 days)"
                        )));
                    }
                    s => s,
                };
                expires = expiry_ms(SystemTime::now(), secs);
                Ok(Change::CreateEnrollmentToken {
                    server: this.server(&r.server)?,
                    token_hash: hash,
                    expires_at_ms: expires,
                })
            })
            .await?;
        drop(reply);
        Ok(Response::new(pb::CreateEnrollmentTokenReply {
            token,
            expires_at_unix_ms: expires,
        }))
    }

    async fn list_requests(
        &self,
        request: Request<pb::ListRequestsRequest>,
    ) -> Result<Response<pb::ListRequestsReply>, Status> {
        self.operator(&request, "ListRequests", Access::Read)
            .await?;
        let state = match request.get_ref().state {
            0 => None,
            s => Some(RequestState::from_code(i64::from(s)).ok_or_else(|| {
                Status::invalid_argument(format!("request state {s} is unknown"))
            })?),
        };
        let store = self.store.clone();
        let requests = blocking(move || Ok(store.requests(state)?)).await?;
        Ok(Response::new(pb::ListRequestsReply {
            requests: requests.into_iter().map(summary).collect(),
        }))
    }

    async fn approve_request(&self, request: Request<pb::DecideRequest>) -> Reply {
        self.decide(request, true).await
    }

    async fn reject_request(&self, request: Request<pb::DecideRequest>) -> Reply {
        self.decide(request, false).await
    }

    async fn revoke_certificate(&self, request: Request<pb::RevokeCertificateRequest>) -> Reply {
        self.write(request, "RevokeCertificate", |_, r| {
            let fingerprint = Fingerprint::from_slice(&r.certificate_sha256).ok_or_else(|| {
                RegistryError::invalid(format!(
                    "certificate_sha256 has {} bytes; a SHA-256 fingerprint has 32",
                    r.certificate_sha256.len()
                ))
            })?;
            Ok(Change::Revoke {
                fingerprint,
                reason: check_text("revocation reason", &r.reason, 1, MAX_NOTE_CHARS)?,
            })
        })
        .await
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditReply>, Status> {
        self.operator(&request, "ListAudit", Access::Read).await?;
        let r = request.into_inner();
        let filter = AuditFilter {
            since_ms: (r.since_unix_ms > 0).then_some(r.since_unix_ms),
            until_ms: (r.until_unix_ms > 0).then_some(r.until_unix_ms),
            actor: (!r.actor.is_empty()).then(|| r.actor.chars().take(MAX_NAME_CHARS).collect()),
            limit: match r.limit as usize {
                0 => MAX_AUDIT_RECORDS,
                n => n.min(MAX_AUDIT_RECORDS),
            },
        };
        let store = self.store.clone();
        let records = blocking(move || Ok(store.audit(&filter)?)).await?;
        Ok(Response::new(pb::ListAuditReply {
            records: records
                .into_iter()
                .map(|a| pb::AuditRecord {
                    id: a.id,
                    at_unix_ms: a.at_ms,
                    actor: a.actor,
                    action: a.action,
                    detail: a.detail,
                    result: a.result,
                })
                .collect(),
        }))
    }

    async fn get_current_configuration(
        &self,
        request: Request<pb::GetCurrentConfigurationRequest>,
    ) -> Result<Response<GlobalConfiguration>, Status> {
        self.operator(&request, "GetCurrentConfiguration", Access::Read)
            .await?;
        let current = self
            .publisher
            .current()
            .ok_or_else(|| Status::unavailable("no configuration has been published yet"))?;
        let conf =
            GlobalConfiguration::decode(current.signed.configuration.as_slice()).map_err(|e| {
                Status::internal(format!("published configuration does not decode: {e}"))
            })?;
        Ok(Response::new(conf))
    }

    async fn list_enrollment_tokens(
        &self,
        request: Request<pb::ListEnrollmentTokensRequest>,
    ) -> Result<Response<pb::ListEnrollmentTokensReply>, Status> {
        self.operator(&request, "ListEnrollmentTokens", Access::Read)
            .await?;
        let store = self.store.clone();
        let now = lienthong_proto::time::now_ms();
        let usable = blocking(move || Ok(store.usable_enrollments(now)?)).await?;
        Ok(Response::new(pb::ListEnrollmentTokensReply {
            tokens: usable
                .into_iter()
                .map(|e| pb::EnrollmentTokenSummary {
                    server: Some((&e.server).into()),
                    expires_at_unix_ms: e.expires_at_ms,
                })
                .collect(),
        }))
    }

    async fn get_certificates(
        &self,
        request: Request<pb::GetCertificatesRequest>,
    ) -> Result<Response<pb::GetCertificatesReply>, Status> {
        self.operator(&request, "GetCertificates", Access::Read)
            .await?;
        let wanted = request.into_inner().certificate_sha256;
        if wanted.len() > MAX_CERTIFICATES_ASKED {
            return Err(Status::invalid_argument(format!(
                "{} fingerprints asked; at most {MAX_CERTIFICATES_ASKED}",
                wanted.len()
            )));
        }
        let fingerprints = wanted
            .iter()
            .map(|f| {
                Fingerprint::from_slice(f).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "a fingerprint has {} bytes; SHA-256 has 32",
                        f.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.store.clone();
        let found = blocking(move || {
            let mut found = Vec::new();
            for fp in &fingerprints {
                if let Some(c) = store.certificate(fp)? {
                    found.push(c);
                }
            }
            Ok(found)
        })
        .await?;
        Ok(Response::new(pb::GetCertificatesReply {
            certificates: found
                .into_iter()
                .map(|c| pb::IssuedCertificate {
                    certificate_sha256: c.fingerprint.0.to_vec(),
                    der: c.der,
                    revoked: c.revoked,
                })
                .collect(),
        }))
    }

    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsReply>, Status> {
        self.operator(&request, "ListAlarms", Access::Read).await?;
        let store = self.store.clone();
        let alarms = blocking(move || Ok(store.alarms()?)).await?;
        Ok(Response::new(pb::ListAlarmsReply {
            alarms: alarms
                .into_iter()
                .map(|a| pb::CheckpointAlarm {
                    server: Some((&a.server).into()),
                    at_unix_ms: a.at_ms,
                    reason: a.reason,
                })
                .collect(),
        }))
    }
}
