//! Pairing an exchange's records from both ends.
//!
//! Every member runs its own security server, so one end's log alone
//! proves nothing about what the other did: a consumer that deletes its
//! records, or never writes them, would hide its lookups. The portal
//! therefore groups the verified records of every server by exchange
//! (client and message id) and asks of each exchange:
//!
//! * a provider's record with no consumer record, or a consumer's answered
//!   request with no provider record, is a **discrepancy** naming the end
//!   and the server that should have it;
//! * two ends that disagree on who, what, why, for whom or until when is a
//!   discrepancy too;
//! * a consumer's refusal before forwarding is **not delivered** (no
//!   service saw the request);
//! * an end whose server did not answer leaves the exchange **unconfirmed**;
//! * so does an end whose server's retention has pruned records of the
//!   exchange's time ([`Context::pruned_through`], from the retention
//!   leaves its FindUsage reports): a record retention took is not a
//!   record someone hid, and must not be shown as a discrepancy — nor as
//!   verified, since only one end still confirms it;
//! * records not yet in a witnessed checkpoint are **pending** only while
//!   young ([`super::portal::PENDING_WINDOW_MS`]); older ones, or records
//!   whose proof fails, are **failed**.
//!
//! Only `Verified` and `NotDelivered` with every record proven are ever
//! shown as verified.

use std::collections::{BTreeMap, HashMap, HashSet};

use lienthong_proto::id::ServerId;
use lienthong_proto::pb::trace::v1 as pb;

/// A record as verification left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Included in the server's witnessed checkpoint.
    Proven,
    /// Newer than the witnessed checkpoint, and young enough to wait for
    /// the next one.
    Pending,
    /// Its proof failed, or it should have been witnessed by now.
    Failed,
}

/// One server's record of an exchange.
#[derive(Debug, Clone)]
pub struct Record {
    pub server: ServerId,
    pub leaf: pb::LogLeaf,
    pub proof: Proof,
}

/// What pairing concluded of one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Verified,
    NotDelivered(String),
    PendingCheckpoint,
    Unconfirmed(String),
    Discrepancy(String),
    Failed(String),
}

impl Status {
    pub fn to_proto(&self) -> pb::ExchangeStatus {
        match self {
            Status::Verified => pb::ExchangeStatus::Verified,
            Status::NotDelivered(_) => pb::ExchangeStatus::NotDelivered,
            Status::PendingCheckpoint => pb::ExchangeStatus::PendingCheckpoint,
            Status::Unconfirmed(_) => pb::ExchangeStatus::Unconfirmed,
            Status::Discrepancy(_) => pb::ExchangeStatus::Discrepancy,
            Status::Failed(_) => pb::ExchangeStatus::Failed,
        }
    }

    /// What is wrong or missing; empty when verified.
    pub fn problem(&self) -> &str {
        match self {
            Status::Verified | Status::PendingCheckpoint => "",
            Status::NotDelivered(s)
            | Status::Unconfirmed(s)
            | Status::Discrepancy(s)
            | Status::Failed(s) => s,
        }
    }

    /// Whether the citizen may be told the exchange is proven.
    pub fn is_verified(&self) -> bool {
        matches!(self, Status::Verified | Status::NotDelivered(_))
    }
}

/// What the portal knows besides the records.
#[derive(Debug, Default)]
pub struct Context {
    /// Servers that did not answer.
    pub unanswered: HashSet<ServerId>,
    /// (server, message id) of the records each server withholds.
    pub withheld: HashSet<(ServerId, String)>,
    /// The portal's clock, Unix ms.
    pub now_ms: i64,
    /// Per server, the time (Unix ms) up to which its retention may have
    /// pruned records, as the retention leaves it reported (with their
    /// proofs) say. An exchange that only the other end still holds, dated
    /// at or before it, is unconfirmed, not a discrepancy.
    pub pruned_through: HashMap<ServerId, i64>,
}

fn side(r: &Record) -> pb::Side {
    pb::Side::try_from(r.leaf.side).unwrap_or(pb::Side::Unspecified)
}

fn phase(r: &Record) -> pb::Phase {
    pb::Phase::try_from(r.leaf.phase).unwrap_or(pb::Phase::Unspecified)
}

/// The peer a set of records names (the other end's server), if any.
fn peer_of(records: &[&Record]) -> Option<ServerId> {
    records.iter().find_map(|r| r.leaf.peer.parse().ok())
}

/// The fields both ends must agree on, with their names.
fn agreed(l: &pb::LogLeaf) -> [(&'static str, String); 6] {
    [
        ("client", l.client.clone()),
        ("service", l.service.clone()),
        ("method", l.method.clone()),
        ("purpose", l.purpose.clone()),
        ("official", l.user_id.clone()),
        ("withheld-until", l.withheld_until_unix_ms.to_string()),
    ]
}

/// The status of one exchange from its records (all with one client and
/// message id).
pub fn status(records: &[Record], cx: &Context) -> Status {
    if let Some(r) = records.iter().find(|r| r.proof == Proof::Failed) {
        return Status::Failed(format!(
            "{}'s record does not match its witnessed log",
            r.server
        ));
    }
    let consumer: Vec<&Record> = records
        .iter()
        .filter(|r| side(r) == pb::Side::Consumer)
        .collect();
    let provider: Vec<&Record> = records
        .iter()
        .filter(|r| side(r) == pb::Side::Provider)
        .collect();
    let paired = pair(&consumer, &provider, cx);
    match paired {
        Status::Verified if records.iter().any(|r| r.proof == Proof::Pending) => {
            // An end may wait for its checkpoint only while the exchange is
            // young: once the other end's proven record is older than the
            // window, the waiting end should have been witnessed.
            let oldest_proven = records
                .iter()
                .filter(|r| r.proof == Proof::Proven)
                .map(|r| r.leaf.at_unix_ms)
                .min();
            match oldest_proven {
                Some(at) if cx.now_ms - at >= super::portal::PENDING_WINDOW_MS => {
                    let late = records
                        .iter()
                        .find(|r| r.proof == Proof::Pending)
                        .map(|r| r.server.to_string())
                        .unwrap_or_default();
                    Status::Failed(format!(
                        "{late}'s record is in no witnessed checkpoint, though the other end's was witnessed over {} s ago",
                        super::portal::PENDING_WINDOW_MS / 1000
                    ))
                }
                _ => Status::PendingCheckpoint,
            }
        }
        other => other,
    }
}

/// How one end says an exchange ended: its last record that is not the
/// request.
fn outcome<'r>(records: &[&'r Record]) -> Option<&'r Record> {
    records
        .iter()
        .rev()
        .find(|r| phase(r) != pb::Phase::Request)
        .copied()
}

fn pair(consumer: &[&Record], provider: &[&Record], cx: &Context) -> Status {
    let message_id = consumer
        .iter()
        .chain(provider)
        .map(|r| r.leaf.message_id.as_str())
        .next()
        .unwrap_or("");
    let withheld_at = |server: &ServerId| {
        cx.withheld
            .contains(&(server.clone(), message_id.to_owned()))
    };
    // The newest record of the exchange: the other end's records are of
    // about the same time, and all of them must lie within what its
    // retention took.
    let newest = consumer
        .iter()
        .chain(provider)
        .map(|r| r.leaf.at_unix_ms)
        .max()
        .unwrap_or(i64::MAX);
    let pruned_at = |server: &ServerId| {
        cx.pruned_through
            .get(server)
            .filter(|through| newest <= **through)
            .copied()
    };
    let missing = |end: &str, server: Option<ServerId>, holder: &ServerId| match server {
        Some(s) if cx.unanswered.contains(&s) => Status::Unconfirmed(format!(
            "the {end}'s server {s} did not answer; only {holder} confirms this exchange"
        )),
        Some(s) if withheld_at(&s) => Status::Discrepancy(format!(
            "the {end}'s server {s} withholds this exchange, {holder} does not"
        )),
        Some(s) if let Some(through) = pruned_at(&s) => Status::Unconfirmed(format!(
            "the {end}'s server {s} has pruned its records up to {through} (Unix ms) by retention; only {holder} still confirms this exchange"
        )),
        Some(s) => Status::Discrepancy(format!(
            "{holder} logged this exchange; the {end}'s server {s} has no record of it"
        )),
        None => Status::Discrepancy(format!(
            "{holder} logged this exchange; no {end}'s server has a record of it"
        )),
    };
    match (consumer.first(), provider.first()) {
        (None, None) => Status::Failed("no records".into()),
        // The provider served (or refused after reading) a request no
        // consumer's server admits to having sent.
        (None, Some(p)) => missing("consumer", peer_of(provider), &p.server),
        (Some(c), None) => {
            let outcome = consumer
                .iter()
                .find(|r| phase(r) != pb::Phase::Request)
                .copied();
            match outcome {
                Some(o) if phase(o) == pb::Phase::Fault => {
                    if o.leaf.peer.is_empty() {
                        Status::NotDelivered(format!(
                            "refused by the consumer's server {} ({})",
                            o.server, o.leaf.fault
                        ))
                    } else if o.leaf.fault.starts_with("server.serverproxy.") {
                        Status::NotDelivered(format!(
                            "refused by the provider's server {} ({})",
                            o.leaf.peer, o.leaf.fault
                        ))
                    } else {
                        // Forwarded, then failed: the provider may or may
                        // not have served it, and must say which.
                        missing("provider", peer_of(consumer), &c.server)
                    }
                }
                // Answered, or sent with no outcome logged: the provider
                // must have a record.
                _ => missing("provider", peer_of(consumer), &c.server),
            }
        }
        (Some(c), Some(p)) => {
            // Each end names the other, in every record that names a peer.
            let names = |records: &[&Record], other: &ServerId| {
                records
                    .iter()
                    .filter(|r| !r.leaf.peer.is_empty())
                    .find(|r| r.leaf.peer != other.to_string())
                    .map(|r| (r.server.clone(), r.leaf.peer.clone()))
            };
            if let Some((at, named)) =
                names(consumer, &p.server).or_else(|| names(provider, &c.server))
            {
                return Status::Discrepancy(format!(
                    "the ends do not name each other: {at} names {named} as the other end, but {} and {} logged this exchange",
                    c.server, p.server
                ));
            }
            // The consumer signs and logs its request before forwarding,
            // and a refusal before forwarding never reaches a provider.
            if !consumer.iter().any(|r| phase(r) == pb::Phase::Request) {
                return Status::Discrepancy(format!(
                    "{} served this exchange, but the consumer's server {} logged no request for it",
                    p.server, c.server
                ));
            }
            if let Some(r) = consumer
                .iter()
                .find(|r| phase(r) == pb::Phase::Fault && r.leaf.peer.is_empty())
            {
                return Status::Discrepancy(format!(
                    "the consumer's server {} says it refused this exchange before forwarding it ({}), but {} logged it",
                    c.server, r.leaf.fault, p.server
                ));
            }
            let want = agreed(&c.leaf);
            for r in consumer.iter().chain(provider) {
                for ((name, a), (_, b)) in want.iter().zip(agreed(&r.leaf)) {
                    if *a != b {
                        return Status::Discrepancy(format!(
                            "the ends disagree on the {name}: {} logged {a:?}, {} logged {b:?}",
                            c.server, r.server
                        ));
                    }
                }
            }
            let digests: HashSet<&[u8]> = consumer
                .iter()
                .chain(provider)
                .map(|r| r.leaf.request_digest.as_slice())
                // A consumer's record of a refusal before signing has none.
                .filter(|d| d.iter().any(|b| *b != 0))
                .collect();
            if digests.len() > 1 {
                return Status::Discrepancy(
                    "the ends logged different signed requests under one message id".into(),
                );
            }
            // Both ends must tell the same ending. The consumer may only
            // differ when it failed on its own side after forwarding (a
            // response it could not verify, a broken connection).
            let (c_end, p_end) = (outcome(consumer), outcome(provider));
            let agree = match (c_end, p_end) {
                (None, _) => true,
                (Some(c), _) if c.leaf.fault.starts_with("server.clientproxy.") => true,
                (Some(c), Some(p)) => {
                    phase(c) == phase(p)
                        && c.leaf.grpc_status == p.leaf.grpc_status
                        && c.leaf.fault == p.leaf.fault
                }
                (Some(_), None) => false,
            };
            if !agree {
                let tell = |r: Option<&Record>| match r {
                    None => "nothing".to_string(),
                    Some(r) if r.leaf.fault.is_empty() => format!("status {}", r.leaf.grpc_status),
                    Some(r) => r.leaf.fault.clone(),
                };
                return Status::Discrepancy(format!(
                    "the ends disagree on how it ended: {} logged {}, {} logged {}",
                    c.server,
                    tell(c_end),
                    p.server,
                    tell(p_end)
                ));
            }
            Status::Verified
        }
    }
}

/// Groups records by exchange (client and message id), oldest record first
/// within each.
pub fn group(records: Vec<Record>) -> BTreeMap<(String, String), Vec<Record>> {
    let mut by: BTreeMap<(String, String), Vec<Record>> = BTreeMap::new();
    for r in records {
        by.entry((r.leaf.client.clone(), r.leaf.message_id.clone()))
            .or_default()
            .push(r);
    }
    for recs in by.values_mut() {
        recs.sort_by_key(|r| r.leaf.at_unix_ms);
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(s: &str) -> ServerId {
        s.parse().unwrap()
    }

    const C: &str = "VN/GOV/000305/ss1";
    const P: &str = "VN/GOV/000102/ss1";

    fn rec(at: &str, side: pb::Side, phase: pb::Phase, peer: &str) -> Record {
        Record {
            server: server(at),
            leaf: pb::LogLeaf {
                side: side as i32,
                phase: phase as i32,
                message_id: "m1".into(),
                client: "VN/GOV/000305/business".into(),
                service: "VN/GOV/000102/population/population.v1.PersonRegistry".into(),
                method: "GetPerson".into(),
                purpose: "hồ sơ 1".into(),
                user_id: "officer".into(),
                peer: peer.into(),
                request_digest: vec![1; 32],
                ..Default::default()
            },
            proof: Proof::Proven,
        }
    }

    fn full() -> Vec<Record> {
        use pb::{Phase::*, Side::*};
        vec![
            rec(C, Consumer, Request, ""),
            rec(P, Provider, Request, C),
            rec(P, Provider, Response, C),
            rec(C, Consumer, Response, P),
        ]
    }

    /// The records of [`full`] that the server `at` wrote.
    fn only(at: &str) -> Vec<Record> {
        full()
            .into_iter()
            .filter(|r| r.server == server(at))
            .collect()
    }

    fn kind(s: &Status) -> pb::ExchangeStatus {
        s.to_proto()
    }

    #[test]
    fn both_ends_agreeing_is_verified() {
        let s = status(&full(), &Context::default());
        assert_eq!(s, Status::Verified);
        assert!(s.is_verified());
    }

    #[test]
    fn a_missing_end_is_a_discrepancy_naming_it() {
        let cx = Context::default();
        // The consumer's rows deleted (or never written).
        let provider_only: Vec<Record> = only(P);
        let s = status(&provider_only, &cx);
        assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{s:?}");
        assert!(
            s.problem().contains("consumer's server VN/GOV/000305/ss1"),
            "{s:?}"
        );
        assert!(!s.is_verified());
        // The provider's rows deleted.
        let consumer_only: Vec<Record> = only(C);
        let s = status(&consumer_only, &cx);
        assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{s:?}");
        assert!(
            s.problem().contains("provider's server VN/GOV/000102/ss1"),
            "{s:?}"
        );
        // Only the consumer's request record: sent, outcome unknown.
        let s = status(&consumer_only[..1], &cx);
        assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{s:?}");
    }

    #[test]
    fn an_unanswering_end_leaves_it_unconfirmed() {
        let cx = Context {
            unanswered: [server(C)].into(),
            ..Default::default()
        };
        let provider_only: Vec<Record> = only(P);
        let s = status(&provider_only, &cx);
        assert_eq!(kind(&s), pb::ExchangeStatus::Unconfirmed, "{s:?}");
        assert!(!s.is_verified());
    }

    /// Retention at one end is not hiding: an exchange the other end
    /// still holds, dated within what that end's retention pruned, is
    /// unconfirmed (never verified); outside it, still a discrepancy.
    #[test]
    fn an_end_pruned_by_retention_leaves_it_unconfirmed() {
        let dated = |records: Vec<Record>| -> Vec<Record> {
            records
                .into_iter()
                .map(|mut r| {
                    r.leaf.at_unix_ms = 1_000;
                    r
                })
                .collect()
        };
        let pruned = |at: &str, through: i64| Context {
            pruned_through: [(server(at), through)].into(),
            ..Default::default()
        };
        for (gone, kept) in [(C, P), (P, C)] {
            let records = dated(only(kept));
            let s = status(&records, &pruned(gone, 5_000));
            assert_eq!(kind(&s), pb::ExchangeStatus::Unconfirmed, "{s:?}");
            assert!(s.problem().contains("by retention"), "{s:?}");
            assert!(s.problem().contains(gone), "{s:?}");
            assert!(!s.is_verified());
            // Its retention had not reached the exchange: a record is
            // missing that it should still hold.
            let s = status(&records, &pruned(gone, 999));
            assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{s:?}");
            // Retention at the end that does hold it explains nothing.
            let s = status(&records, &pruned(kept, 5_000));
            assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{s:?}");
        }
    }

    #[test]
    fn withheld_at_one_end_only_is_a_discrepancy() {
        let cx = Context {
            withheld: [(server(C), "m1".to_string())].into(),
            ..Default::default()
        };
        let provider_only: Vec<Record> = only(P);
        let s = status(&provider_only, &cx);
        assert!(s.problem().contains("withholds"), "{s:?}");
    }

    #[test]
    fn disagreeing_ends_are_a_discrepancy() {
        for (what, change) in [
            (
                "purpose",
                Box::new(|l: &mut pb::LogLeaf| l.purpose = "other".into())
                    as Box<dyn Fn(&mut pb::LogLeaf)>,
            ),
            (
                "official",
                Box::new(|l: &mut pb::LogLeaf| l.user_id = "x".into()),
            ),
            (
                "withheld-until",
                Box::new(|l: &mut pb::LogLeaf| l.withheld_until_unix_ms = 5),
            ),
            (
                "signed requests",
                Box::new(|l: &mut pb::LogLeaf| l.request_digest = vec![2; 32]),
            ),
            (
                "name each other",
                Box::new(|l: &mut pb::LogLeaf| l.peer = "VN/GOV/000999/ss9".into()),
            ),
        ] {
            let mut recs = full();
            change(&mut recs[2].leaf);
            let s = status(&recs, &Context::default());
            assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{what}: {s:?}");
            assert!(s.problem().contains(what), "{what}: {s:?}");
        }
        // The consumer says it got an answer the provider never gave.
        let mut recs = full();
        recs[2].leaf.phase = pb::Phase::Fault as i32;
        recs[2].leaf.grpc_status = 7;
        let s = status(&recs, &Context::default());
        assert!(s.problem().contains("how it ended"), "{s:?}");
        // The consumer shows a refusal the provider never gave: a real
        // read passed off as refused.
        let mut recs = full();
        recs[3].leaf.phase = pb::Phase::Fault as i32;
        recs[3].leaf.fault = "server.serverproxy.access_denied".into();
        recs[3].leaf.grpc_status = 7;
        let s = status(&recs, &Context::default());
        assert!(s.problem().contains("how it ended"), "{s:?}");
        // The consumer failed on its own side after forwarding: allowed.
        let mut recs = full();
        recs[3].leaf.phase = pb::Phase::Fault as i32;
        recs[3].leaf.fault = "server.clientproxy.bad_response".into();
        recs[3].leaf.grpc_status = 15;
        assert_eq!(status(&recs, &Context::default()), Status::Verified);
    }

    #[test]
    fn refusals_before_delivery() {
        use pb::{Phase::*, Side::*};
        let mut refused = rec(C, Consumer, Fault, "");
        refused.leaf.fault = "client.access_denied".into();
        let s = status(
            &[rec(C, Consumer, Request, ""), refused],
            &Context::default(),
        );
        assert_eq!(kind(&s), pb::ExchangeStatus::NotDelivered, "{s:?}");
        assert!(s.is_verified());
        let mut by_provider = rec(C, Consumer, Fault, P);
        by_provider.leaf.fault = "server.serverproxy.bad_field".into();
        let s = status(
            &[rec(C, Consumer, Request, ""), by_provider],
            &Context::default(),
        );
        assert_eq!(kind(&s), pb::ExchangeStatus::NotDelivered, "{s:?}");
        // Forwarded, then the consumer failed: the provider must answer for it.
        let mut lost = rec(C, Consumer, Fault, P);
        lost.leaf.fault = "server.clientproxy.bad_response".into();
        let s = status(&[rec(C, Consumer, Request, ""), lost], &Context::default());
        assert_eq!(kind(&s), pb::ExchangeStatus::Discrepancy, "{s:?}");
    }

    #[test]
    fn a_consumer_cannot_disown_what_the_provider_served() {
        use pb::{Phase::*, Side::*};
        // It claims a refusal before forwarding; the provider served it.
        let mut claimed = rec(C, Consumer, Fault, "");
        claimed.leaf.fault = "client.access_denied".into();
        let recs = vec![
            rec(C, Consumer, Request, ""),
            rec(P, Provider, Request, C),
            rec(P, Provider, Response, C),
            claimed.clone(),
        ];
        let s = status(&recs, &Context::default());
        assert!(s.problem().contains("before forwarding"), "{s:?}");
        // It kept only a fault record, no request.
        let recs = vec![
            rec(P, Provider, Request, C),
            rec(P, Provider, Response, C),
            claimed,
        ];
        let s = status(&recs, &Context::default());
        assert!(s.problem().contains("logged no request"), "{s:?}");
    }

    #[test]
    fn proofs() {
        let mut recs = full();
        recs[3].proof = Proof::Pending;
        let young = Context {
            now_ms: 1000,
            ..Default::default()
        };
        let s = status(&recs, &young);
        assert_eq!(s, Status::PendingCheckpoint);
        assert!(!s.is_verified());
        // The other end was witnessed long ago: no longer waiting.
        let late = Context {
            now_ms: super::super::portal::PENDING_WINDOW_MS + 1,
            ..Default::default()
        };
        let s = status(&recs, &late);
        assert_eq!(kind(&s), pb::ExchangeStatus::Failed, "{s:?}");
        recs[1].proof = Proof::Failed;
        let s = status(&recs, &Context::default());
        assert_eq!(kind(&s), pb::ExchangeStatus::Failed);
        // A discrepancy is not hidden behind a pending proof.
        let mut recs: Vec<Record> = only(P);
        recs[0].proof = Proof::Pending;
        assert_eq!(
            kind(&status(&recs, &Context::default())),
            pb::ExchangeStatus::Discrepancy
        );
    }
}
