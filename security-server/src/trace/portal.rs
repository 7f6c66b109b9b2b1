//! The trace portal's side: ask every security server of the instance
//! about one data subject (concurrently, each within a timeout), verify
//! every answer, and merge both sides of each exchange.
//!
//! An answer counts only if its checkpoint is signed by the server's owner
//! and countersigned by the registry (the anchor's key), and each record's
//! leaf bytes hash into that checkpoint's tree by their inclusion proof.
//! What is shown comes from the verified leaf bytes, never from fields a
//! server could change beside them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use lienthong_certs::signing::VerifyingKey;
use lienthong_certs::{CertError, Fingerprint};
use lienthong_proto::canonical;
use lienthong_proto::id::{ServerId, SubsystemId};
use lienthong_proto::merkle::{self, Hash};
use lienthong_proto::pb::globalconf::v1::Anchor;
use lienthong_proto::pb::trace::v1 as pb;
use prost::Message;
use tonic::transport::Channel;

use super::SERVICE;
use super::pairing::{self, Proof, Record, Status};
use crate::conf_client::ConfView;
use crate::metadata;

/// Most pages read from one server.
pub const MAX_PAGES: usize = 50;

/// Why a server's answer, or one record in it, does not count.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("the leaf names no data subject")]
    NoSubject,
    #[error("the record is not about the data subject asked about")]
    OtherSubject,
    #[error("an opening for a leaf that commits to nothing")]
    OpeningForNothing,
    #[error("the leaf shows what it should commit to")]
    CommittedShown,
    #[error("released, but what its leaf commits to was not revealed")]
    NotRevealed,
    #[error("the revealed official and purpose are not what its leaf commits to")]
    OpeningMismatch,
    /// A record put into the trace in another member's name.
    #[error(
        "{server} returned a {side} record of message {message_id} for {named} that it does not serve"
    )]
    NotRightfulEnd {
        server: Box<ServerId>,
        /// `consumer`, `provider` or `unspecified`.
        side: String,
        message_id: String,
        /// The client (consumer side) or the service (provider side).
        named: String,
    },
    #[error("no witnessed checkpoint yet")]
    NoCheckpoint,
    #[error("the checkpoint is another server's")]
    OtherServersCheckpoint,
    #[error("the checkpoint is not signed")]
    CheckpointNotSigned,
    #[error("the checkpoint is not signed by the server's owner")]
    NotSignedByOwner,
    #[error("the checkpoint signature does not verify: {0}")]
    BadSignature(#[source] CertError),
    #[error("the checkpoint was not witnessed")]
    NotWitnessed,
    #[error("the checkpoint is not countersigned by the registry")]
    NotCountersigned,
    #[error("the registry's countersignature does not verify: {0}")]
    BadCountersignature(#[source] CertError),
    #[error("the checkpoint root is not 32 bytes")]
    BadRoot,
}

/// Why a server was not asked, or did not answer in full.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Unreachable(#[from] tonic::transport::Error),
    #[error("identifier is not ASCII")]
    NotAscii,
    /// The call was refused; `fault` is its `lt-fault` (if any).
    #[error("{}", format!("{fault} {message}").trim())]
    Refused { fault: String, message: String },
    #[error("the answer has more than {MAX_PAGES} pages; the trace is incomplete")]
    TooManyPages,
}

/// Why no trace report was made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The data subject is in none of the instance's formats.
    #[error(transparent)]
    Subject(#[from] lienthong_proto::fields::FieldError),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// One exchange as the citizen sees it, merged from both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedExchange {
    pub message_id: String,
    pub at_ms: i64,
    pub client: String,
    pub service: String,
    pub method: String,
    pub purpose: String,
    pub user_id: String,
    pub grpc_status: i32,
    pub fault: String,
    /// Which servers logged it, and as which side.
    pub logged_by: Vec<(ServerId, pb::Side)>,
    /// What pairing both ends' records showed.
    pub status: Status,
    /// Whether every record of it is proven and both ends agree
    /// ([`Status::is_verified`]).
    pub verified: bool,
}

/// The answer to one citizen's question.
#[derive(Debug, Clone, Default)]
pub struct TraceReport {
    /// Newest first.
    pub exchanges: Vec<TracedExchange>,
    /// Servers that did not answer, and why.
    pub unanswered: Vec<(ServerId, String)>,
    /// Records or checkpoints that failed verification, and why.
    pub failures: Vec<(ServerId, String)>,
    /// Withheld exchanges per release date (Unix ms), each counted once
    /// however many ends withhold it.
    pub withheld: BTreeMap<i64, u32>,
    /// Records newer than their server's last witnessed checkpoint.
    pub unwitnessed: u32,
}

/// How the whole answer stands, for a program's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every server answered and every exchange is verified.
    Complete,
    /// Nothing failed, but something is not yet known: a server did not
    /// answer, an exchange is unconfirmed or waits for a checkpoint.
    Incomplete,
    /// A record failed verification, or the ends disagree.
    Failed,
}

impl TraceReport {
    pub fn outcome(&self) -> Outcome {
        let failed = !self.failures.is_empty()
            || self
                .exchanges
                .iter()
                .any(|e| matches!(e.status, Status::Discrepancy(_) | Status::Failed(_)));
        if failed {
            return Outcome::Failed;
        }
        let incomplete = !self.unanswered.is_empty()
            || self.unwitnessed > 0
            || self.exchanges.iter().any(|e| !e.status.is_verified());
        if incomplete {
            Outcome::Incomplete
        } else {
            Outcome::Complete
        }
    }
}

/// How long a record may wait for a witnessed checkpoint before its
/// absence from one is a failure: two checkpoint intervals at the default
/// interval ([`crate::checkpoint::DEFAULT_CHECKPOINT_INTERVAL`]).
pub const PENDING_WINDOW_MS: i64 =
    2 * crate::checkpoint::DEFAULT_CHECKPOINT_INTERVAL.as_millis() as i64;

/// Whether a record dated `at_ms` may still wait for its checkpoint at
/// `now_ms`: younger than [`PENDING_WINDOW_MS`], or ahead of the clock by
/// at most the clock skew (a record dated further ahead is made up: it
/// would otherwise stay "young" for ever). The date is a peer's: any
/// `i64`, so the age saturates.
fn young(now_ms: i64, at_ms: i64) -> bool {
    let age = now_ms.saturating_sub(at_ms);
    (0..PENDING_WINDOW_MS).contains(&age)
        || (-crate::replay::DEFAULT_MAX_CLOCK_SKEW_MS..0).contains(&age)
}

/// The shortest retention the portal believes: a server that pruned
/// records sooner after their time than this is not believed when it says
/// retention took them (its exchanges missing there stay discrepancies).
/// The servers' default ([`crate::server::DEFAULT_RETENTION`]).
pub const MIN_BELIEVED_RETENTION_MS: i64 = crate::server::DEFAULT_RETENTION.as_millis() as i64;

/// One server's answer, verified.
#[derive(Debug, Default)]
struct Verified {
    /// The visible records.
    records: Vec<Record>,
    /// The withheld records (official and purpose behind commitments).
    withheld: Vec<Record>,
    failures: Vec<String>,
    unwitnessed: u32,
    /// Up to when (Unix ms) the server's proven retention took records,
    /// if it says so believably ([`pruned_through`]).
    pruned_through: Option<i64>,
}

/// Up to when (Unix ms) a server's retention took records, from the
/// retention records it answered with (pure): each must be a retention
/// leaf proven in the checkpoint `head` (size, root), dated no later than
/// the clock skew allows, and must have kept its records at least
/// [`MIN_BELIEVED_RETENTION_MS`]. A retention record that fails its
/// proof is a failure, as any record is; one that is merely unproven yet,
/// or pruned too soon, is not believed.
fn pruned_through(
    records: &[pb::UsageRecord],
    head: Option<(u64, &Hash)>,
    now_ms: i64,
    failures: &mut Vec<String>,
) -> Option<i64> {
    let mut through = None;
    for r in records {
        let Ok(leaf) = pb::LogLeaf::decode(r.leaf.as_slice()) else {
            failures.push(format!(
                "retention record {} is not a log leaf",
                r.leaf_index
            ));
            continue;
        };
        let Some((size, root)) = head.filter(|(size, _)| r.leaf_index < *size) else {
            continue;
        };
        let proof: Option<Vec<Hash>> = r
            .inclusion_proof
            .iter()
            .map(|h| h.as_slice().try_into().ok())
            .collect();
        let proven = proof.is_some_and(|p| {
            merkle::verify_inclusion(&merkle::leaf_hash(&r.leaf), r.leaf_index, size, &p, root)
        });
        if !proven {
            failures.push(format!(
                "retention record {} does not match the witnessed log: it was changed after it was written",
                r.leaf_index
            ));
            continue;
        }
        let kept = leaf.at_unix_ms.saturating_sub(leaf.pruned_through_unix_ms);
        if leaf.phase == pb::Phase::Retention as i32
            && leaf.at_unix_ms <= now_ms.saturating_add(crate::replay::DEFAULT_MAX_CLOCK_SKEW_MS)
            && kept >= MIN_BELIEVED_RETENTION_MS
        {
            through = through.max(Some(leaf.pruned_through_unix_ms));
        }
    }
    through
}

/// Verifies one server's answer: checkpoint signature and countersignature,
/// then every record's inclusion, and what a released record's leaf
/// committed to.
fn verify_reply(
    view: &ConfView,
    anchor: &Anchor,
    server: &ServerId,
    subject: &str,
    reply: &pb::FindUsageReply,
    now: SystemTime,
    latest_witnessed: Option<u64>,
) -> Verified {
    let mut failures = Vec::new();
    let (mut out, mut withheld_out) = (Vec::new(), Vec::new());
    let mut unwitnessed = 0;
    let now_ms = lienthong_proto::time::unix_ms(now);
    let head = checked_head(view, anchor, server, reply, now);
    // A record may wait for the next checkpoint only if the one answered
    // with is the latest the registry witnessed.
    let behind = match (&head, latest_witnessed) {
        (Ok((size, _)), Some(latest)) if latest > *size => Some(latest),
        (Err(_), Some(latest)) if latest > 0 => Some(latest),
        _ => None,
    };
    let all = reply
        .records
        .iter()
        .map(|r| (r, false))
        .chain(reply.withheld_records.iter().map(|r| (r, true)));
    for (r, is_withheld) in all {
        let Ok(mut leaf) = pb::LogLeaf::decode(r.leaf.as_slice()) else {
            failures.push(format!("record {} is not a log leaf", r.leaf_index));
            continue;
        };
        let out = if is_withheld {
            &mut withheld_out
        } else {
            &mut out
        };
        if let Err(why) = about_subject(&leaf, &r.subject_salt, subject)
            .and_then(|()| open_hidden(&mut leaf, r.opening.as_ref(), is_withheld))
        {
            failures.push(format!(
                "record {} (message {}): {why}",
                r.leaf_index, leaf.message_id
            ));
            out.push(Record {
                server: server.clone(),
                leaf,
                proof: Proof::Failed,
            });
            continue;
        }
        let young = young(now_ms, leaf.at_unix_ms);
        if let Err(why) = logged_by_rightful_end(view, server, &leaf) {
            failures.push(why.to_string());
            out.push(Record {
                server: server.clone(),
                leaf,
                proof: Proof::Failed,
            });
            continue;
        }
        let proof = match &head {
            _ if behind.is_some()
                && head
                    .as_ref()
                    .map_or(true, |(size, _)| r.leaf_index >= *size) =>
            {
                failures.push(format!(
                    "record {} (message {}) is in no checkpoint {server} showed, though the registry witnessed one of {} records: it answered with an older checkpoint",
                    r.leaf_index,
                    leaf.message_id,
                    behind.unwrap_or_default()
                ));
                Proof::Failed
            }
            Ok((size, _)) if r.leaf_index >= *size && young => {
                unwitnessed += 1;
                Proof::Pending
            }
            Ok((size, _)) if r.leaf_index >= *size => {
                failures.push(format!(
                    "record {} (message {}) is older than {} s and still in no witnessed checkpoint",
                    r.leaf_index,
                    leaf.message_id,
                    PENDING_WINDOW_MS / 1000
                ));
                Proof::Failed
            }
            Ok((size, root)) => {
                let proof: Option<Vec<Hash>> = r
                    .inclusion_proof
                    .iter()
                    .map(|h| h.as_slice().try_into().ok())
                    .collect();
                let ok = proof.is_some_and(|p| {
                    merkle::verify_inclusion(
                        &merkle::leaf_hash(&r.leaf),
                        r.leaf_index,
                        *size,
                        &p,
                        root,
                    )
                });
                if ok {
                    Proof::Proven
                } else {
                    failures.push(format!(
                        "record {} (message {}) does not match the witnessed log: it was changed after it was written",
                        r.leaf_index, leaf.message_id
                    ));
                    Proof::Failed
                }
            }
            // A server new enough to have no witnessed checkpoint yet.
            Err(_) if young => {
                unwitnessed += 1;
                Proof::Pending
            }
            Err(e) => {
                let e = e.to_string();
                if !failures.contains(&e) {
                    failures.push(e);
                }
                Proof::Failed
            }
        };
        out.push(Record {
            server: server.clone(),
            leaf,
            proof,
        });
    }
    let pruned_through = pruned_through(
        &reply.retention_records,
        head.as_ref().ok().map(|(size, root)| (*size, root)),
        now_ms,
        &mut failures,
    );
    Verified {
        records: out,
        withheld: withheld_out,
        failures,
        unwitnessed,
        pruned_through,
    }
}

/// Whether a record's leaf is about `subject`: its commitment opens with
/// the salt the server revealed. Leaves written before commitments carry
/// the server's keyed hash instead, which only that server can check.
fn about_subject(leaf: &pb::LogLeaf, salt: &[u8], subject: &str) -> Result<(), AnswerError> {
    if leaf.data_subject_commitment.is_empty() {
        return match leaf.data_subject_hash.len() {
            32 => Ok(()),
            _ => Err(AnswerError::NoSubject),
        };
    }
    let expected = lienthong_proto::canonical::subject_commitment(salt, subject);
    if salt.len() != 32 || expected.as_slice() != leaf.data_subject_commitment.as_slice() {
        return Err(AnswerError::OtherSubject);
    }
    Ok(())
}

/// Fills a released withheld record's official and purpose from their
/// opening, checked against the commitment its leaf carries. A withheld
/// record stays closed; a record with no commitment needs no opening.
fn open_hidden(
    leaf: &mut pb::LogLeaf,
    opening: Option<&pb::HiddenOpening>,
    still_withheld: bool,
) -> Result<(), AnswerError> {
    if leaf.hidden_commitment.is_empty() {
        // Never withheld, or withheld before leaves carried commitments.
        return match opening {
            None => Ok(()),
            Some(_) => Err(AnswerError::OpeningForNothing),
        };
    }
    if !leaf.user_id.is_empty() || !leaf.purpose.is_empty() {
        return Err(AnswerError::CommittedShown);
    }
    if still_withheld {
        return Ok(());
    }
    let o = opening.ok_or(AnswerError::NotRevealed)?;
    let expected = lienthong_proto::canonical::hidden_commitment(&o.salt, &o.user_id, &o.purpose);
    if o.salt.len() != 32 || expected.as_slice() != leaf.hidden_commitment.as_slice() {
        return Err(AnswerError::OpeningMismatch);
    }
    leaf.user_id = o.user_id.clone();
    leaf.purpose = o.purpose.clone();
    Ok(())
}

/// Whether `server` is an end that may log `leaf`: a consumer's record
/// only on a server the configuration lists for its client, a provider's
/// only on a server that serves the called subsystem (or is the server
/// whose built-in service was called). Anything else is a record put into
/// the trace in another member's name.
fn logged_by_rightful_end(
    view: &ConfView,
    server: &ServerId,
    leaf: &pb::LogLeaf,
) -> Result<(), AnswerError> {
    let side = pb::Side::try_from(leaf.side).unwrap_or(pb::Side::Unspecified);
    let rightful = match side {
        pb::Side::Consumer => leaf
            .client
            .parse::<SubsystemId>()
            .is_ok_and(|c| view.serves(server, &c)),
        pb::Side::Provider => leaf.service.rsplit_once('/').is_some_and(|(target, _)| {
            target == server.to_string()
                || target
                    .parse::<SubsystemId>()
                    .is_ok_and(|p| view.serves(server, &p))
        }),
        pb::Side::Unspecified => false,
    };
    if rightful {
        Ok(())
    } else {
        Err(AnswerError::NotRightfulEnd {
            server: Box::new(server.clone()),
            side: side
                .as_str_name()
                .trim_start_matches("SIDE_")
                .to_lowercase(),
            message_id: leaf.message_id.clone(),
            named: if side == pb::Side::Consumer {
                leaf.client.clone()
            } else {
                leaf.service.clone()
            },
        })
    }
}

/// The verified (tree size, root) of an answer's checkpoint.
fn checked_head(
    view: &ConfView,
    anchor: &Anchor,
    server: &ServerId,
    reply: &pb::FindUsageReply,
    now: SystemTime,
) -> Result<(u64, Hash), AnswerError> {
    let cp = reply.checkpoint.as_ref().ok_or(AnswerError::NoCheckpoint)?;
    if cp
        .server
        .as_ref()
        .and_then(|s| ServerId::try_from(s).ok())
        .as_ref()
        != Some(server)
    {
        return Err(AnswerError::OtherServersCheckpoint);
    }
    let digest = canonical::digest(&canonical::checkpoint(cp));
    let sig = cp
        .signature
        .as_ref()
        .ok_or(AnswerError::CheckpointNotSigned)?;
    let signer = Fingerprint::from_slice(&sig.signer_certificate_sha256)
        .and_then(|fp| view.signing_cert(&fp, now))
        .filter(|c| c.member == server.owner)
        .ok_or(AnswerError::NotSignedByOwner)?;
    signer
        .key
        .verify(sig, &digest)
        .map_err(AnswerError::BadSignature)?;
    let counter = reply
        .witness
        .as_ref()
        .and_then(|w| w.countersignature.as_ref())
        .ok_or(AnswerError::NotWitnessed)?;
    let registry = anchor
        .configuration_signing_certificates
        .iter()
        .find(|c| Fingerprint::of(c).0.as_slice() == counter.signer_certificate_sha256.as_slice())
        .ok_or(AnswerError::NotCountersigned)?;
    VerifyingKey::from_cert(registry)
        .and_then(|k| k.verify(counter, &digest))
        .map_err(AnswerError::BadCountersignature)?;
    let root: Hash = cp
        .root_hash
        .as_slice()
        .try_into()
        .map_err(|_| AnswerError::BadRoot)?;
    Ok((cp.tree_size, root))
}

/// Asks one server about `subject`, page by page, through the portal's
/// security server (`consumer`) as the portal subsystem `portal`; the
/// replies as they came (the citizens' page keeps them for the download).
pub async fn ask(
    consumer: Channel,
    portal: &SubsystemId,
    server: &ServerId,
    subject: &str,
) -> Result<Vec<pb::FindUsageReply>, AskError> {
    let mut replies = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let mut grpc = tonic::client::Grpc::new(consumer.clone());
        grpc.ready().await?;
        let mut req = tonic::Request::new(pb::FindUsageRequest {
            data_subject: subject.to_owned(),
            page_token: token.clone(),
            ..Default::default()
        });
        let m = req.metadata_mut();
        let ascii = |v: String| v.parse().map_err(|_| AskError::NotAscii);
        m.insert(metadata::CLIENT, ascii(portal.to_string())?);
        m.insert(metadata::SERVER, ascii(server.to_string())?);
        m.insert(metadata::DATA_SUBJECT, ascii(subject.to_owned())?);
        m.insert(
            metadata::PURPOSE,
            tonic::metadata::MetadataValue::from_static(
                "access trace requested by the data subject",
            ),
        );
        let path = format!("/{SERVICE}/FindUsage")
            .parse()
            .expect("a gRPC service and method name make a valid path");
        let reply: pb::FindUsageReply = grpc
            .unary(req, path, tonic_prost::ProstCodec::default())
            .await
            .map_err(|s| AskError::Refused {
                fault: s
                    .metadata()
                    .get("lt-fault")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned(),
                message: s.message().to_owned(),
            })?
            .into_inner();
        token = reply.next_page_token.clone();
        replies.push(reply);
        if token.is_empty() {
            return Ok(replies);
        }
    }
    // An answer cut short is no answer: what was left out could be the
    // exchange the citizen asks about.
    Err(AskError::TooManyPages)
}

/// Asks every server of `view` about `subject` through the portal's
/// security server (`consumer`), as the portal subsystem `portal`.
pub async fn trace(
    consumer: Channel,
    portal: &SubsystemId,
    view: &ConfView,
    anchor: &Anchor,
    subject: &str,
    timeout: Duration,
    witnessed: &Witnessed,
) -> Result<TraceReport, TraceError> {
    // Records are logged under the canonical spelling only.
    view.subject_formats().canonical(subject)?;
    let (portal, subject) = (portal.clone(), subject.to_owned());
    fan_out_witnessed(
        view,
        anchor,
        &subject.clone(),
        timeout,
        witnessed,
        move |server| {
            let (consumer, portal, subject) = (consumer.clone(), portal.clone(), subject.clone());
            async move { ask(consumer, &portal, &server, &subject).await }
        },
    )
    .await
}

/// The tree size of each server's latest checkpoint the registry witnessed,
/// when the registry could be asked: a record newer than the checkpoint a
/// server answers with may wait for the next one only if that checkpoint is
/// the latest witnessed; a server showing an older one hides its newer
/// records.
#[derive(Debug, Clone, Default)]
pub struct Witnessed(Option<HashMap<ServerId, u64>>);

impl Witnessed {
    /// Not asked (records newer than a server's checkpoint stay pending).
    pub fn unknown() -> Self {
        Witnessed(None)
    }

    /// Known latest sizes.
    pub fn of(sizes: HashMap<ServerId, u64>) -> Self {
        Witnessed(Some(sizes))
    }

    /// Asks the registry, over mutual TLS as the portal's security server
    /// (`identity`), about every server of `view`. An unreachable registry
    /// leaves them unknown, and says so in the log.
    pub async fn ask(
        anchor: &Anchor,
        identity: &lienthong_certs::tls::Identity,
        view: &ConfView,
    ) -> Self {
        use lienthong_proto::pb::registry::v1 as reg;
        let servers: Vec<_> = view.servers().map(|s| (&s.id).into()).collect();
        let asked = async {
            // Any node of the registry: the anchor's, then the configuration's.
            let registries = lienthong_registry_client::Registries::new(anchor.clone());
            registries.learn(&view.registry_addresses);
            let channel = registries
                .connect(Some(identity))
                .await
                .map_err(|e| e.to_string())?;
            reg::checkpoint_witness_client::CheckpointWitnessClient::new(channel)
                .latest_checkpoints(reg::LatestCheckpointsRequest { servers })
                .await
                .map_err(|s| s.message().to_owned())
        };
        match asked.await {
            Ok(reply) => Witnessed::of(
                reply
                    .into_inner()
                    .checkpoints
                    .iter()
                    .filter_map(|c| {
                        let id = ServerId::try_from(c.server.as_ref()?).ok()?;
                        Some((id, c.tree_size))
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the registry for the latest witnessed checkpoints; records newer than a server's checkpoint stay pending");
                Witnessed::unknown()
            }
        }
    }

    /// The latest witnessed size of `server`: `None` when unknown, `Some(0)`
    /// when the registry witnessed none.
    fn of_server(&self, server: &ServerId) -> Option<u64> {
        self.0.as_ref().map(|m| m.get(server).copied().unwrap_or(0))
    }
}

/// Asks every server of `view` at once with `ask`, each within `timeout`,
/// then verifies every answer and merges them: what [`trace`] does over
/// the bus, with the asking left to the caller (a benchmark simulates
/// hundreds of servers with it).
pub async fn fan_out<A, F, E>(
    view: &ConfView,
    anchor: &Anchor,
    subject: &str,
    timeout: Duration,
    ask: A,
) -> Result<TraceReport, TraceError>
where
    A: Fn(ServerId) -> F,
    F: std::future::Future<Output = Result<Vec<pb::FindUsageReply>, E>> + Send + 'static,
    E: std::fmt::Display,
{
    fan_out_witnessed(view, anchor, subject, timeout, &Witnessed::unknown(), ask).await
}

/// [`fan_out`], judging unwitnessed records by what the registry witnessed.
/// Every record must open its leaf's commitment to `subject` (the
/// canonical id asked about) with the salt the server revealed.
pub async fn fan_out_witnessed<A, F, E>(
    view: &ConfView,
    anchor: &Anchor,
    subject: &str,
    timeout: Duration,
    witnessed: &Witnessed,
    ask: A,
) -> Result<TraceReport, TraceError>
where
    A: Fn(ServerId) -> F,
    F: std::future::Future<Output = Result<Vec<pb::FindUsageReply>, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let mut tasks = Vec::new();
    let mut servers: Vec<ServerId> = view.servers().map(|s| s.id.clone()).collect();
    servers.sort();
    for server in servers {
        let asked = ask(server.clone());
        tasks.push(tokio::spawn(async move {
            // Why a server did not answer is the report's to show.
            let answer = match tokio::time::timeout(timeout, asked).await {
                Ok(Ok(replies)) => Ok(replies),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            (server, answer)
        }));
    }
    let mut report = TraceReport::default();
    let mut checked = Vec::new();
    let mut cx = pairing::Context::default();
    // Release date per withheld message id (the latest any end names).
    let mut withheld: HashMap<String, i64> = HashMap::new();
    let now = SystemTime::now();
    for t in tasks {
        let (server, answer) = t.await?;
        match answer {
            Err(e) => {
                cx.unanswered.insert(server.clone());
                report.unanswered.push((server, e));
            }
            Ok(replies) => {
                for reply in &replies {
                    let v = verify_reply(
                        view,
                        anchor,
                        &server,
                        subject,
                        reply,
                        now,
                        witnessed.of_server(&server),
                    );
                    checked.extend(v.records);
                    if let Some(through) = v.pruned_through {
                        let t = cx.pruned_through.entry(server.clone()).or_insert(through);
                        *t = (*t).max(through);
                    }
                    report
                        .failures
                        .extend(v.failures.into_iter().map(|f| (server.clone(), f)));
                    report.unwitnessed += v.unwitnessed;
                    // Each withheld record, proven, is checked against the
                    // grant of its time, and counted once per exchange.
                    for w in v.withheld {
                        let l = &w.leaf;
                        if let Err(refusal) = crate::withholding::check_recorded(
                            view.withholding_grants(),
                            l.at_unix_ms,
                            l.withheld_until_unix_ms,
                        ) {
                            report.failures.push((
                                server.clone(),
                                format!(
                                    "DISCREPANCY: record of message {} is withheld until {} by {} without a grant: {refusal}",
                                    l.message_id, l.withheld_until_unix_ms, l.client
                                ),
                            ));
                        }
                        cx.withheld.insert((server.clone(), l.message_id.clone()));
                        let until = withheld.entry(l.message_id.clone()).or_default();
                        if *until != 0 && *until != l.withheld_until_unix_ms {
                            report.failures.push((
                                server.clone(),
                                format!(
                                    "withholds exchange {} until {}, the other end until {}",
                                    l.message_id, l.withheld_until_unix_ms, until
                                ),
                            ));
                        }
                        *until = (*until).max(l.withheld_until_unix_ms);
                    }
                }
            }
        }
    }
    for until in withheld.into_values() {
        *report.withheld.entry(until).or_default() += 1;
    }
    cx.now_ms = lienthong_proto::time::unix_ms(now);
    report.exchanges = merge(checked, &cx);
    Ok(report)
}

/// Groups records by exchange and pairs both ends' records of each.
fn merge(records: Vec<Record>, cx: &pairing::Context) -> Vec<TracedExchange> {
    let mut out: Vec<TracedExchange> = pairing::group(records)
        .into_iter()
        .map(|((_, message_id), recs)| {
            let status = pairing::status(&recs, cx);
            // The consumer's request record says best who asked and why.
            let first = recs
                .iter()
                .find(|r| r.leaf.side == pb::Side::Consumer as i32)
                .unwrap_or(&recs[0])
                .leaf
                .clone();
            let last = recs
                .iter()
                .rev()
                .find(|r| r.leaf.phase != pb::Phase::Request as i32)
                .map(|r| r.leaf.clone());
            let mut logged_by: Vec<(ServerId, pb::Side)> = recs
                .iter()
                .map(|r| {
                    (
                        r.server.clone(),
                        pb::Side::try_from(r.leaf.side).unwrap_or(pb::Side::Unspecified),
                    )
                })
                .collect();
            logged_by.sort_by_key(|(s, side)| (*side as i32, s.clone()));
            logged_by.dedup();
            TracedExchange {
                message_id,
                at_ms: first.at_unix_ms,
                client: first.client,
                service: first.service,
                method: first.method,
                purpose: first.purpose,
                user_id: first.user_id,
                grpc_status: last.as_ref().map_or(-1, |l| l.grpc_status),
                fault: last.map(|l| l.fault).unwrap_or_default(),
                logged_by,
                verified: status.is_verified(),
                status,
            }
        })
        .collect();
    out.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    /// A log of `n` exchange leaves and then one retention leaf, and the
    /// retention leaf's record as a server answers it.
    fn log_with_retention(at: i64, through: i64, phase: pb::Phase) -> (Vec<Hash>, pb::UsageRecord) {
        let mut leaves: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                pb::LogLeaf {
                    message_id: format!("m{i}"),
                    ..Default::default()
                }
                .encode_to_vec()
            })
            .collect();
        leaves.push(
            pb::LogLeaf {
                phase: phase as i32,
                at_unix_ms: at,
                pruned_from: 0,
                pruned_to: 3,
                pruned_through_unix_ms: through,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let hashes: Vec<Hash> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
        let record = pb::UsageRecord {
            leaf_index: 5,
            leaf: leaves[5].clone(),
            inclusion_proof: merkle::inclusion_proof(&hashes, 5)
                .unwrap()
                .iter()
                .map(|h| h.to_vec())
                .collect(),
            ..Default::default()
        };
        (hashes, record)
    }

    #[test]
    fn retention_is_believed_only_proven_and_after_the_minimum_period() {
        let now = 1_780_000_000_000;
        let kept = MIN_BELIEVED_RETENTION_MS;
        let believe = |at: i64, through: i64, phase: pb::Phase, size: u64, tamper: bool| {
            let (hashes, mut r) = log_with_retention(at, through, phase);
            if tamper {
                r.leaf[0] ^= 1;
            }
            let root = merkle::root(&hashes[..size.min(6) as usize]);
            let mut failures = Vec::new();
            let through = pruned_through(&[r], Some((size, &root)), now, &mut failures);
            (through, failures)
        };
        let ok = pb::Phase::Retention;
        assert_eq!(
            believe(now - DAY_MS, now - DAY_MS - kept, ok, 6, false),
            (Some(now - DAY_MS - kept), vec![])
        );
        // Pruned sooner than the minimum after its records: not believed.
        assert_eq!(
            believe(now, now - kept + DAY_MS, ok, 6, false),
            (None, vec![])
        );
        // Not yet in the checkpoint: not believed yet, not a failure.
        assert_eq!(believe(now, now - 2 * kept, ok, 5, false).0, None);
        // Not a retention leaf (an exchange dressed as one).
        assert_eq!(
            believe(now, now - 2 * kept, pb::Phase::Request, 6, false),
            (None, vec![])
        );
        // Dated beyond the clock skew, to look as if it waited long enough.
        assert_eq!(
            believe(now + DAY_MS, now + DAY_MS - kept, ok, 6, false),
            (None, vec![])
        );
        // Changed after it was written: a failure.
        let (through, failures) = believe(now, now - 2 * kept, ok, 6, true);
        assert!(through.is_none() && failures.len() == 1, "{failures:?}");
    }

    #[test]
    fn youth_of_any_record_date() {
        let now = 1_780_000_000_000;
        assert!(young(now, now));
        assert!(young(now, now - PENDING_WINDOW_MS + 1));
        assert!(!young(now, now - PENDING_WINDOW_MS));
        assert!(young(now, now + crate::replay::DEFAULT_MAX_CLOCK_SKEW_MS));
        assert!(!young(
            now,
            now + crate::replay::DEFAULT_MAX_CLOCK_SKEW_MS + 1
        ));
        // A peer's extreme dates: no overflow, never young.
        assert!(!young(now, i64::MIN));
        assert!(!young(now, i64::MAX));
        assert!(!young(i64::MIN, i64::MAX));
        assert!(!young(i64::MAX, i64::MIN));
    }
}
