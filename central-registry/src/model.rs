//! The registry's domain: operators and their roles, the changes an
//! operator or a security server can make, and the snapshot a configuration
//! is built from. Identifiers are the parsed newtypes of
//! `lienthong_proto::id`; nothing here holds a raw identifier string.

use std::fmt;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{GlobalGroupId, MemberClass, MemberId, ServerId, ServiceId, SubsystemId};

/// Longest legal name of a member, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest description of a class, service or group, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest decision note or revocation reason, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;
/// Longest `host:port` address.
pub const MAX_ADDRESS_LEN: usize = 261;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Registration officer: reads and writes.
    Officer,
    /// Observer: reads only.
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Observer => "observer",
        }
    }
}

/// A role's name that is neither `officer` nor `observer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; use `officer` (reads and writes) or `observer` (reads)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "officer" => Ok(Role::Officer),
            "observer" => Ok(Role::Observer),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: Role,
}

/// The kinds of registration request (mirrors `RequestKind` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    AuthCertificate,
    Client,
    AddressChange,
    ServerRemoval,
}

impl RequestKind {
    pub fn code(self) -> i64 {
        match self {
            RequestKind::AuthCertificate => 1,
            RequestKind::Client => 2,
            RequestKind::AddressChange => 3,
            RequestKind::ServerRemoval => 4,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => RequestKind::AuthCertificate,
            2 => RequestKind::Client,
            3 => RequestKind::AddressChange,
            4 => RequestKind::ServerRemoval,
            _ => return None,
        })
    }
}

/// The states of a registration request (mirrors `RequestState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Pending,
    Approved,
    Rejected,
}

impl RequestState {
    pub fn code(self) -> i64 {
        match self {
            RequestState::Pending => 1,
            RequestState::Approved => 2,
            RequestState::Rejected => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            1 => RequestState::Pending,
            2 => RequestState::Approved,
            3 => RequestState::Rejected,
            _ => return None,
        })
    }
}

/// A certificate's public key, SPKI DER: what "reuse of a key" compares.
pub type PublicKey = Vec<u8>;

/// A CSR as submitted, with the identity it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrFor {
    pub csr: Vec<u8>,
    pub public_key: PublicKey,
    /// The member a signing key signs for; `None` for the auth key.
    pub member: Option<MemberId>,
    /// The signing certificate of `member` that consented to this CSR
    /// (signing CSRs for a member other than the server's owner only).
    pub consent: Option<Fingerprint>,
}

/// A checked registration request, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub kind: RequestKind,
    pub server: ServerId,
    pub subsystem: Option<SubsystemId>,
    pub address: Option<String>,
    pub auth_csr: Option<CsrFor>,
    pub signing_csrs: Vec<CsrFor>,
    /// The enrollment token (hash) consumed by this request, first contact only.
    pub enrollment_token: Option<[u8; 32]>,
}

/// A stored registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    pub id: u64,
    pub request: NewRequest,
    pub state: RequestState,
    pub submitted_at_ms: i64,
    pub decision_note: String,
    /// Certificates issued on approval: auth (if asked) then signing, in CSR order.
    pub issued_auth: Option<Vec<u8>>,
    pub issued_signing: Vec<Vec<u8>>,
}

/// A certificate the CA issued for an approved request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub der: Vec<u8>,
    pub public_key: PublicKey,
}

/// What the registry's CA issued for one approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issued {
    pub auth: Option<IssuedCert>,
    pub signing: Vec<(MemberId, IssuedCert)>,
}

/// The longest a withholding grant may let one exchange be withheld.
pub const MAX_WITHHOLDING_MS: i64 = 50 * 365 * 24 * 3600 * 1000;

/// Every write the registry knows. Each is applied in one transaction
/// together with its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddMemberClass {
        code: MemberClass,
        description: String,
    },
    AddMember {
        id: MemberId,
        name: String,
    },
    AddSubsystem {
        id: SubsystemId,
    },
    AddService {
        id: ServiceId,
        description: String,
        personal_data: bool,
    },
    /// Publishes (or replaces) the service's descriptor set in the
    /// catalogue; parsed by [`lienthong_proto::catalogue::DescriptorSet`]
    /// before it becomes a change.
    DescribeService {
        id: ServiceId,
        sha256: [u8; 32],
        descriptor_set: Vec<u8>,
        /// The gRPC services the set defines, for the audit record.
        defines: Vec<String>,
    },
    RemoveService {
        id: ServiceId,
    },
    AddGlobalGroup {
        id: GlobalGroupId,
        description: String,
    },
    AddGroupMember {
        group: GlobalGroupId,
        subsystem: SubsystemId,
    },
    RemoveGroupMember {
        group: GlobalGroupId,
        subsystem: SubsystemId,
    },
    SetTracePortal {
        portal: SubsystemId,
    },
    /// Starts a withholding grant now, ending the one in force.
    SetWithholdingGroup {
        group: GlobalGroupId,
        max_duration_ms: i64,
        /// `None`: until replaced.
        valid_until_ms: Option<i64>,
    },
    /// `(name, mask)` pairs, checked by [`lienthong_proto::fields::DataSubjectFormat::new`].
    SetDataSubjectFormats {
        formats: Vec<(String, String)>,
    },
    AddTrustedCa {
        der: Vec<u8>,
    },
    CreateEnrollmentToken {
        server: ServerId,
        token_hash: [u8; 32],
        expires_at_ms: i64,
    },
    Revoke {
        fingerprint: Fingerprint,
        reason: String,
    },
    Submit(Box<NewRequest>),
    Approve {
        id: u64,
        note: String,
        issued: Issued,
    },
    Reject {
        id: u64,
        note: String,
    },
    AddOperator {
        name: String,
        role: Role,
        token_hash: [u8; 32],
    },
}

impl Change {
    /// The action name recorded in the audit log.
    pub fn action(&self) -> &'static str {
        match self {
            Change::AddMemberClass { .. } => "AddMemberClass",
            Change::AddMember { .. } => "AddMember",
            Change::AddSubsystem { .. } => "AddSubsystem",
            Change::AddService { .. } => "AddService",
            Change::DescribeService { .. } => "DescribeService",
            Change::RemoveService { .. } => "RemoveService",
            Change::AddGlobalGroup { .. } => "AddGlobalGroup",
            Change::AddGroupMember { .. } => "AddGroupMember",
            Change::RemoveGroupMember { .. } => "RemoveGroupMember",
            Change::SetTracePortal { .. } => "SetTracePortal",
            Change::SetWithholdingGroup { .. } => "SetWithholdingGroup",
            Change::SetDataSubjectFormats { .. } => "SetDataSubjectFormats",
            Change::AddTrustedCa { .. } => "AddTrustedCa",
            Change::CreateEnrollmentToken { .. } => "CreateEnrollmentToken",
            Change::Revoke { .. } => "RevokeCertificate",
            Change::Submit(_) => "SubmitRequest",
            Change::Approve { .. } => "ApproveRequest",
            Change::Reject { .. } => "RejectRequest",
            Change::AddOperator { .. } => "AddOperator",
        }
    }
}

/// The audit detail: the arguments in text form, never a secret (token
/// hashes and key material are left out).
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddMemberClass { code, description } => write!(f, "{code} {description:?}"),
            Change::AddMember { id, name } => write!(f, "{id} {name:?}"),
            Change::AddSubsystem { id } => write!(f, "{id}"),
            Change::AddService {
                id,
                description,
                personal_data,
            } => write!(
                f,
                "{id} {description:?}{}",
                if *personal_data { " personal-data" } else { "" }
            ),
            Change::DescribeService {
                id,
                sha256,
                descriptor_set,
                defines,
            } => write!(
                f,
                "{id} descriptor set sha256 {} ({} bytes) defining {}",
                hex::encode(sha256),
                descriptor_set.len(),
                defines.join(", ")
            ),
            Change::RemoveService { id } => write!(f, "{id}"),
            Change::AddGlobalGroup { id, description } => write!(f, "{id} {description:?}"),
            Change::AddGroupMember { group, subsystem }
            | Change::RemoveGroupMember { group, subsystem } => write!(f, "{group} {subsystem}"),
            Change::SetTracePortal { portal } => write!(f, "{portal}"),
            Change::SetWithholdingGroup {
                group,
                max_duration_ms,
                valid_until_ms,
            } => {
                write!(f, "{group} max {} s", max_duration_ms / 1000)?;
                match valid_until_ms {
                    Some(t) => write!(f, " until {}", lienthong_certs::verify::fmt_time(t / 1000)),
                    None => Ok(()),
                }
            }
            Change::SetDataSubjectFormats { formats } => {
                let list: Vec<String> = formats.iter().map(|(n, m)| format!("{n}={m}")).collect();
                write!(f, "{}", list.join(" "))
            }
            Change::AddTrustedCa { der } => write!(f, "CA {}", Fingerprint::of(der)),
            Change::CreateEnrollmentToken {
                server,
                expires_at_ms,
                ..
            } => write!(
                f,
                "{server} until {}",
                lienthong_certs::verify::fmt_time(expires_at_ms / 1000)
            ),
            Change::Revoke {
                fingerprint,
                reason,
            } => write!(f, "{fingerprint} {reason:?}"),
            Change::Submit(r) => {
                write!(f, "{:?} for {}", r.kind, r.server)?;
                if let Some(s) = &r.subsystem {
                    write!(f, " client {s}")?;
                }
                if let Some(a) = &r.address {
                    write!(f, " address {a}")?;
                }
                Ok(())
            }
            Change::Approve { id, note, .. } | Change::Reject { id, note } => {
                write!(f, "request {id} {note:?}")
            }
            Change::AddOperator { name, role, .. } => write!(f, "{name} as {}", role.as_str()),
        }
    }
}

/// What applying a change produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The audit record of the change.
    pub audit_id: u64,
    /// The store's change sequence number after the change; a configuration
    /// built from a snapshot at or after it includes the change.
    pub seq: u64,
    /// The new request's id (`Submit` only).
    pub request_id: Option<u64>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
    pub result: String,
}

/// Which audit records to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub actor: Option<String>,
    pub limit: usize,
}

/// An enrollment token as stored (by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    pub server: ServerId,
    pub expires_at_ms: i64,
    /// The request that consumed it, if any.
    pub used_by_request: Option<u64>,
}

/// A certificate the registry issued, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCert {
    pub fingerprint: Fingerprint,
    pub der: Vec<u8>,
    pub auth_server: Option<ServerId>,
    pub signing_member: Option<MemberId>,
    pub revoked: bool,
}

/// Per-instance settings, fixed at `registry init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSettings {
    pub instance: lienthong_proto::id::Instance,
    /// Registry addresses (`host:port`) servers download from.
    pub addresses: Vec<String>,
    /// How long a configuration is valid after creation, seconds.
    pub configuration_validity_secs: u32,
    /// How often servers should poll, seconds.
    pub poll_interval_secs: u32,
    /// Approve registration requests without an officer (test instances).
    pub auto_approve: bool,
}

/// Everything a global configuration is built from, read in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The change sequence number the snapshot reflects.
    pub seq: u64,
    pub members: Vec<SnapshotMember>,
    pub servers: Vec<SnapshotServer>,
    pub services: Vec<SnapshotService>,
    pub groups: Vec<SnapshotGroup>,
    pub trusted_cas: Vec<Vec<u8>>,
    pub revoked: Vec<Fingerprint>,
    pub trace_portal: Option<SubsystemId>,
    /// Every withholding grant ever in force, oldest first.
    pub withholding_grants: Vec<WithholdingGrant>,
    /// `(name, mask)`; empty = the default format.
    pub data_subject_formats: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotService {
    pub id: ServiceId,
    pub description: String,
    pub personal_data: bool,
    /// SHA-256 of its descriptor set in the catalogue, if one was published.
    pub descriptor_sha256: Option<[u8; 32]>,
}

/// Members of `group` may withhold exchanges made in `[valid_from_ms,
/// valid_until_ms)` for at most `max_duration_ms` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithholdingGrant {
    pub group: GlobalGroupId,
    pub max_duration_ms: i64,
    pub valid_from_ms: i64,
    pub valid_until_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct SnapshotMember {
    pub id: MemberId,
    pub name: String,
    pub subsystems: Vec<String>,
    /// Unrevoked signing certificates (DER).
    pub signing_certs: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct SnapshotServer {
    pub id: ServerId,
    pub address: String,
    /// Unrevoked auth certificate fingerprints.
    pub auth_certs: Vec<Fingerprint>,
    pub clients: Vec<SubsystemId>,
}

#[derive(Debug, Clone)]
pub struct SnapshotGroup {
    pub id: GlobalGroupId,
    pub description: String,
    pub members: Vec<SubsystemId>,
}

/// A message-log checkpoint the registry witnessed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    pub tree_size: u64,
    pub root: [u8; 32],
    pub created_at_ms: i64,
}

/// A checkpoint the registry refused: an operator should look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub server: ServerId,
    pub at_ms: i64,
    pub reason: String,
}
