//! Who may hide an exchange from the data subject's trace, and for how
//! long: the registry's withholding grants, carried in the signed global
//! configuration, checked by both security servers — the consumer's
//! server for its own clients' sake, and the provider's server because a
//! member runs its own consumer side and could sign anything into its
//! envelope. The trace portal checks every withheld record against the
//! grant of its time again.
//!
//! A grant lets the subsystems of one global group withhold an exchange
//! made while the grant is in force, until at most `max_duration_ms` after
//! it. Grants never overlap (the registry ends one when it starts the
//! next), so an exchange falls under at most one.

use std::collections::HashSet;

use lienthong_proto::id::GlobalGroupId;
use lienthong_proto::pb::globalconf::v1 as pb;

/// One withholding grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub group: GlobalGroupId,
    pub max_duration_ms: i64,
    pub valid_from_ms: i64,
    /// `None`: until replaced.
    pub valid_until_ms: Option<i64>,
}

impl Grant {
    /// Whether the grant is in force at `at_ms`.
    pub fn in_force(&self, at_ms: i64) -> bool {
        self.valid_from_ms <= at_ms && self.valid_until_ms.is_none_or(|u| at_ms < u)
    }
}

/// Why a withholding grant of the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("names no group")]
    NoGroup,
    #[error("names an unreadable group")]
    UnreadableGroup,
    #[error("has no usable maximum duration")]
    NoMaxDuration,
}

impl TryFrom<&pb::WithholdingGrant> for Grant {
    type Error = GrantError;

    fn try_from(g: &pb::WithholdingGrant) -> Result<Self, GrantError> {
        let group =
            g.group.as_ref().ok_or(GrantError::NoGroup).and_then(|g| {
                GlobalGroupId::try_from(g).map_err(|_| GrantError::UnreadableGroup)
            })?;
        let max_duration_ms = i64::try_from(g.max_duration_seconds)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .filter(|ms| *ms > 0)
            .ok_or(GrantError::NoMaxDuration)?;
        Ok(Grant {
            group,
            max_duration_ms,
            valid_from_ms: g.valid_from_unix_ms,
            valid_until_ms: (g.valid_until_unix_ms != 0).then_some(g.valid_until_unix_ms),
        })
    }
}

/// Why a withholding is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No grant in force at the exchange's time covers any of the client's groups.
    NoGrant,
    /// The release date is not after the exchange.
    NotInFuture,
    /// The release date is further than the grant allows.
    TooLong { max_duration_ms: i64 },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoGrant => f.write_str(
                "no withholding grant of the registry covers the client at this time (its group's grant ended, or it is in no withholding group)",
            ),
            Refusal::NotInFuture => f.write_str("the release date is not in the future"),
            Refusal::TooLong { max_duration_ms } => write!(
                f,
                "the release date is more than the grant's maximum of {} s after the exchange",
                max_duration_ms / 1000
            ),
        }
    }
}

/// Whether a client in `client_groups` may withhold an exchange made at
/// `at_ms` until `until_ms` (`until_ms == 0`: not withheld, always fine).
pub fn check(
    grants: &[Grant],
    client_groups: Option<&HashSet<GlobalGroupId>>,
    at_ms: i64,
    until_ms: i64,
) -> Result<(), Refusal> {
    if until_ms == 0 {
        return Ok(());
    }
    let grant = grants
        .iter()
        .find(|g| g.in_force(at_ms) && client_groups.is_some_and(|cg| cg.contains(&g.group)))
        .ok_or(Refusal::NoGrant)?;
    if until_ms <= at_ms {
        return Err(Refusal::NotInFuture);
    }
    if until_ms - at_ms > grant.max_duration_ms {
        return Err(Refusal::TooLong {
            max_duration_ms: grant.max_duration_ms,
        });
    }
    Ok(())
}

/// Whether an exchange recorded at `at_ms` as withheld until `until_ms`
/// fell under some grant in force at its time, within that grant's maximum:
/// what the trace portal checks of each withheld record. Which groups the
/// client was in then is not in the configuration (the provider checked
/// it at the time), so any grant's group counts here.
pub fn check_recorded(grants: &[Grant], at_ms: i64, until_ms: i64) -> Result<(), Refusal> {
    let all: HashSet<GlobalGroupId> = grants.iter().map(|g| g.group.clone()).collect();
    check(grants, Some(&all), at_ms, until_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    /// What, the client's groups, exchange time, release date, decision.
    type Case<'a> = (
        &'a str,
        Option<&'a HashSet<GlobalGroupId>>,
        i64,
        i64,
        Result<(), Refusal>,
    );

    fn group(s: &str) -> GlobalGroupId {
        s.parse().unwrap()
    }

    #[test]
    fn decisions() {
        let now = 1_800_000_000_000;
        let grants = vec![
            Grant {
                group: group("VN/old-investigators"),
                max_duration_ms: 3650 * DAY,
                valid_from_ms: 0,
                valid_until_ms: Some(now - DAY),
            },
            Grant {
                group: group("VN/investigators"),
                max_duration_ms: 365 * DAY,
                valid_from_ms: now - DAY,
                valid_until_ms: None,
            },
        ];
        let inv: HashSet<_> = [group("VN/investigators")].into();
        let old: HashSet<_> = [group("VN/old-investigators")].into();
        let other: HashSet<_> = [group("VN/other")].into();
        let max = 365 * DAY;
        let table: &[Case<'_>] = &[
            ("not withheld", None, now, 0, Ok(())),
            ("a day", Some(&inv), now, now + DAY, Ok(())),
            ("exactly the maximum", Some(&inv), now, now + max, Ok(())),
            (
                "one ms over",
                Some(&inv),
                now,
                now + max + 1,
                Err(Refusal::TooLong {
                    max_duration_ms: max,
                }),
            ),
            (
                "ten years",
                Some(&inv),
                now,
                now + 3650 * DAY,
                Err(Refusal::TooLong {
                    max_duration_ms: max,
                }),
            ),
            (
                "in the past",
                Some(&inv),
                now,
                now - 1,
                Err(Refusal::NotInFuture),
            ),
            ("now", Some(&inv), now, now, Err(Refusal::NotInFuture)),
            ("no group", None, now, now + DAY, Err(Refusal::NoGrant)),
            (
                "another group",
                Some(&other),
                now,
                now + DAY,
                Err(Refusal::NoGrant),
            ),
            (
                "grant expired yesterday",
                Some(&old),
                now,
                now + DAY,
                Err(Refusal::NoGrant),
            ),
            (
                "under the old grant, at its time",
                Some(&old),
                now - 2 * DAY,
                now + DAY,
                Ok(()),
            ),
            (
                "before the new grant began",
                Some(&inv),
                now - 2 * DAY,
                now,
                Err(Refusal::NoGrant),
            ),
        ];
        for (what, groups, at, until, want) in table {
            assert_eq!(&check(&grants, *groups, *at, *until), want, "{what}");
        }
    }

    #[test]
    fn recorded_withholdings_are_judged_by_the_grant_of_their_time() {
        let grants = vec![Grant {
            group: group("VN/investigators"),
            max_duration_ms: 30 * DAY,
            valid_from_ms: 1000 * DAY,
            valid_until_ms: Some(2000 * DAY),
        }];
        let at = 1500 * DAY;
        assert_eq!(check_recorded(&grants, at, at + 30 * DAY), Ok(()));
        assert_eq!(
            check_recorded(&grants, at, at + 30 * DAY + 1),
            Err(Refusal::TooLong {
                max_duration_ms: 30 * DAY
            })
        );
        assert_eq!(
            check_recorded(&grants, 2500 * DAY, 2501 * DAY),
            Err(Refusal::NoGrant),
            "after the grant ended"
        );
        assert_eq!(check_recorded(&[], at, at + DAY), Err(Refusal::NoGrant));
    }

    #[test]
    fn grants_from_the_configuration() {
        let ok = pb::WithholdingGrant {
            group: Some((&group("VN/investigators")).into()),
            max_duration_seconds: 60,
            valid_from_unix_ms: 5,
            valid_until_unix_ms: 0,
        };
        let g = Grant::try_from(&ok).unwrap();
        assert_eq!(g.max_duration_ms, 60_000);
        assert_eq!(g.valid_until_ms, None);
        assert!(g.in_force(5) && !g.in_force(4));
        for bad in [
            pb::WithholdingGrant {
                group: None,
                ..ok.clone()
            },
            pb::WithholdingGrant {
                max_duration_seconds: 0,
                ..ok.clone()
            },
            pb::WithholdingGrant {
                max_duration_seconds: u64::MAX,
                ..ok.clone()
            },
        ] {
            assert!(Grant::try_from(&bad).is_err(), "{bad:?}");
        }
    }
}
