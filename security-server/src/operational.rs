//! Operational data (X-Road's getSecurityServerOperationalData): the
//! metadata of each exchange this server saw — when each record was
//! written, ids, sizes, status, fault, peer — read from the message log's
//! records, never their payloads, officials, purposes or data subjects.
//!
//! Three ways in, one selection ([`Selection`]) and one visibility rule
//! ([`visible`]):
//! - `lienthong server log` (the owner, at the server's files);
//! - `GET /operational-data` on the admin port (the owner's management
//!   network);
//! - the built-in gRPC service `lienthong.operational.v1.OperationalData`
//!   over the bus ([`OperationalService`]), where the caller's identity is
//!   the verified client subsystem: the server's owner sees every record,
//!   any other member only exchanges it took part in.
//!
//! The API and the bus answer for a window ([`DEFAULT_WINDOW`], 7 days)
//! however long the message log keeps records for citizens' traces.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lienthong_proto::id::{MemberId, SubsystemId};
use lienthong_proto::pb::operational::v1 as pb;
use lienthong_proto::pb::trace::v1::LogLeaf;

use crate::builtin::Caller;
use crate::faults::FaultError;
use crate::message_log::{LogError, LogReader};
use crate::trace::blocking;
use lienthong_proto::time::unix_ms;

/// The built-in service every server offers.
pub const SERVICE: &str = "lienthong.operational.v1.OperationalData";

/// How far back operational data is answered by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Records per answer unless asked.
pub const DEFAULT_LIMIT: u64 = 100;
/// Most records per answer.
pub const MAX_LIMIT: u64 = 1000;

/// A query's message id that is not one (the refusal says why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct BadMessageId(pub FaultError);

/// Which records a query wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Written at or after, Unix ms.
    pub since_ms: i64,
    /// Written before, Unix ms.
    pub until_ms: i64,
    /// Only this exchange's records.
    pub message_id: Option<String>,
    /// At most this many, newest first.
    pub limit: u64,
}

impl Selection {
    /// The selection a query asks for, kept inside the window that ends
    /// at `now_ms`; refuses a malformed message id.
    pub fn within_window(
        since_ms: i64,
        until_ms: i64,
        message_id: &str,
        limit: u64,
        now_ms: i64,
        window: Duration,
    ) -> Result<Self, BadMessageId> {
        let start = now_ms.saturating_sub(millis(window));
        let message_id = if message_id.is_empty() {
            None
        } else {
            crate::metadata::check_message_id(message_id).map_err(BadMessageId)?;
            Some(message_id.to_owned())
        };
        Ok(Selection {
            since_ms: since_ms.max(start),
            until_ms: if until_ms <= 0 { i64::MAX } else { until_ms },
            message_id,
            limit: match limit {
                0 => DEFAULT_LIMIT,
                n => n.min(MAX_LIMIT),
            },
        })
    }

    /// From the admin port's query (parsed and percent-decoded by its
    /// router): `since_hours=` (24), `message_id=`, `limit=` (100, at
    /// most 1000).
    pub fn from_query(
        query: &OperationalQuery,
        now_ms: i64,
        window: Duration,
    ) -> Result<Self, BadMessageId> {
        let since_hours = i64::from(query.since_hours.unwrap_or(24));
        Self::within_window(
            now_ms - since_hours * 3_600_000,
            0,
            query.message_id.as_deref().unwrap_or(""),
            query.limit.unwrap_or(DEFAULT_LIMIT),
            now_ms,
            window,
        )
    }
}

/// The admin port's operational-data query string.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationalQuery {
    /// How many hours back (24).
    pub since_hours: Option<u32>,
    /// One exchange's records.
    pub message_id: Option<String>,
    /// At most this many records (100, at most 1000).
    pub limit: Option<u64>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// The server's owner: every record.
    Owner,
    /// Another member: the exchanges it was client or provider of.
    Member(MemberId),
}

impl Viewer {
    /// The viewer a verified client subsystem is, on a server owned by
    /// `owner`.
    pub fn of(client: &SubsystemId, owner: &MemberId) -> Self {
        if &client.member == owner {
            Viewer::Owner
        } else {
            Viewer::Member(client.member.clone())
        }
    }
}

/// Whether `viewer` may see `leaf`: the owner every record; a member those
/// whose client, or whose service's provider, is one of its subsystems.
pub fn visible(viewer: &Viewer, leaf: &LogLeaf) -> bool {
    match viewer {
        Viewer::Owner => true,
        Viewer::Member(m) => {
            let member = m.to_string();
            owned_by(&leaf.client, &member) || owned_by(&leaf.service, &member)
        }
    }
}

/// Whether `id` (`INSTANCE/CLASS/MEMBER/…`) belongs to `member`
/// (`INSTANCE/CLASS/MEMBER`).
fn owned_by(id: &str, member: &str) -> bool {
    id.strip_prefix(member)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The record as operational data: metadata only.
pub fn record(index: u64, l: &LogLeaf) -> pb::OperationalRecord {
    pb::OperationalRecord {
        record: index,
        side: l.side,
        phase: l.phase,
        at_unix_ms: l.at_unix_ms,
        message_id: l.message_id.clone(),
        client: l.client.clone(),
        service: l.service.clone(),
        method: l.method.clone(),
        peer: l.peer.clone(),
        payload_size: l.payload_size,
        grpc_status: l.grpc_status,
        fault: l.fault.clone(),
        duration_us: l.duration_us,
    }
}

/// The records `viewer` may see of `selection`, newest first, and whether
/// more matched than its limit.
pub fn select(
    reader: &LogReader,
    selection: &Selection,
    viewer: &Viewer,
) -> Result<(Vec<pb::OperationalRecord>, bool), LogError> {
    let (found, truncated) = reader.operational(
        selection.since_ms,
        selection.until_ms,
        selection.message_id.as_deref(),
        selection.limit,
        |l| visible(viewer, l),
    )?;
    Ok((
        found.iter().map(|(i, l)| record(*i, l)).collect(),
        truncated,
    ))
}

/// The built-in `OperationalData` service over the bus.
#[derive(Debug, Clone)]
pub struct OperationalService {
    owner: MemberId,
    reader: Arc<LogReader>,
    window: Duration,
}

impl OperationalService {
    pub fn new(owner: MemberId, reader: Arc<LogReader>, window: Duration) -> Self {
        OperationalService {
            owner,
            reader,
            window,
        }
    }

    fn query(
        &self,
        viewer: &Viewer,
        q: pb::OperationalQuery,
    ) -> Result<pb::OperationalReport, (tonic::Code, String)> {
        let invalid = |e: BadMessageId| (tonic::Code::InvalidArgument, e.to_string());
        let now = unix_ms(SystemTime::now());
        let selection = Selection::within_window(
            q.since_unix_ms,
            q.until_unix_ms,
            &q.message_id,
            q.limit.into(),
            now,
            self.window,
        )
        .map_err(invalid)?;
        let (records, truncated) = select(&self.reader, &selection, viewer)
            .map_err(|e| (tonic::Code::Internal, e.to_string()))?;
        Ok(pb::OperationalReport {
            records,
            truncated,
            window_start_unix_ms: now.saturating_sub(millis(self.window)),
        })
    }
}

#[tonic::async_trait]
impl pb::operational_data_server::OperationalData for OperationalService {
    /// Answers the verified caller's query: a member sees only exchanges it
    /// took part in.
    async fn query(
        &self,
        request: tonic::Request<pb::OperationalQuery>,
    ) -> Result<tonic::Response<pb::OperationalReport>, tonic::Status> {
        let viewer = Viewer::of(Caller::of(&request)?, &self.owner);
        let this = self.clone();
        let q = request.into_inner();
        blocking(move || this.query(&viewer, q)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(client: &str, service: &str) -> LogLeaf {
        LogLeaf {
            client: client.into(),
            service: service.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_member_sees_only_exchanges_it_took_part_in() {
        let business: MemberId = "VN/GOV/000305".parse().unwrap();
        let as_client = leaf("VN/GOV/000305/dkkd", "VN/GOV/000102/dancu/x.Person");
        let as_provider = leaf("VN/GOV/000201/thue", "VN/GOV/000305/dkkd/x.Company");
        let others = leaf("VN/GOV/000201/thue", "VN/GOV/000102/dancu/x.Person");
        let prefix_only = leaf("VN/GOV/0003051/x", "VN/GOV/0003050/y/x.S");
        let refused_early = leaf("", "");
        let viewer = Viewer::Member(business);
        assert!(visible(&viewer, &as_client));
        assert!(visible(&viewer, &as_provider));
        assert!(!visible(&viewer, &others));
        assert!(!visible(&viewer, &prefix_only), "member codes match whole");
        assert!(!visible(&viewer, &refused_early));
        for l in [as_client, as_provider, others, prefix_only, refused_early] {
            assert!(visible(&Viewer::Owner, &l));
        }
    }

    #[test]
    fn the_owner_is_the_member_in_the_server_id() {
        let owner: MemberId = "VN/GOV/000102".parse().unwrap();
        let own: SubsystemId = "VN/GOV/000102/dancu".parse().unwrap();
        let other: SubsystemId = "VN/GOV/000305/dkkd".parse().unwrap();
        assert_eq!(Viewer::of(&own, &owner), Viewer::Owner);
        assert_eq!(
            Viewer::of(&other, &owner),
            Viewer::Member(other.member.clone())
        );
    }

    #[test]
    fn selections_stay_inside_the_window() {
        let now = 10 * 86_400_000;
        let week = DEFAULT_WINDOW;
        let s = Selection::within_window(0, 0, "", 0, now, week).unwrap();
        assert_eq!(s.since_ms, now - 7 * 86_400_000);
        assert_eq!(s.until_ms, i64::MAX);
        assert_eq!(s.limit, DEFAULT_LIMIT);
        let s = Selection::within_window(now - 1000, now - 10, "", 5000, now, week).unwrap();
        assert_eq!(
            (s.since_ms, s.until_ms, s.limit),
            (now - 1000, now - 10, MAX_LIMIT)
        );
        assert!(Selection::within_window(0, 0, "not an id!", 0, now, week).is_err());
        let parse = |q: &str| {
            serde_urlencoded::from_str::<OperationalQuery>(q)
                .map_err(|e| e.to_string())
                .and_then(|q| Selection::from_query(&q, now, week).map_err(|e| e.to_string()))
        };
        let s = parse("since_hours=1000&limit=3").unwrap();
        assert_eq!((s.since_ms, s.limit), (now - 7 * 86_400_000, 3));
        let s = parse("").unwrap();
        assert_eq!(s.since_ms, now - 24 * 3_600_000);
        // Percent-encoding is decoded before the id is checked.
        let s = parse("message_id=order%2D1").unwrap();
        assert_eq!(s.message_id.as_deref(), Some("order-1"));
        for bad in [
            "since_hours=-1",
            "limit=x",
            "drop=1",
            "message_id=a;b",
            "message_id=a%3Bb",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
