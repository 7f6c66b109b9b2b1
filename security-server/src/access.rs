//! Access rights: deny by default; a rule grants a subject (a subsystem or
//! a global group) one provider service, or one method of it.
//! [`authorize`] is the whole decision, pure.

use std::collections::HashSet;
use std::fmt;

use lienthong_proto::id::{GlobalGroupId, SubsystemId};

/// Who a rule grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Subsystem(SubsystemId),
    Group(GlobalGroupId),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Subsystem(s) => write!(f, "{s}"),
            Subject::Group(g) => write!(f, "group {g}"),
        }
    }
}

impl std::str::FromStr for Subject {
    type Err = lienthong_proto::id::IdError;
    /// `INSTANCE/CLASS/MEMBER/SUBSYSTEM` or `group:INSTANCE/GROUP`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("group:") {
            Some(g) => g.parse().map(Subject::Group),
            None => s.parse().map(Subject::Subsystem),
        }
    }
}

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessRule {
    pub subject: Subject,
    /// The provider subsystem (served by this server).
    pub provider: SubsystemId,
    /// The gRPC service name, e.g. `population.v1.PersonRegistry`.
    pub service: String,
    /// One method, or the whole service when `None`.
    pub method: Option<String>,
}

impl fmt::Display for AccessRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} may call {}/{}/{}",
            self.subject,
            self.provider,
            self.service,
            self.method.as_deref().unwrap_or("*")
        )
    }
}

/// What is being called.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub client: &'a SubsystemId,
    pub client_groups: Option<&'a HashSet<GlobalGroupId>>,
    pub provider: &'a SubsystemId,
    pub service: &'a str,
    pub method: &'a str,
}

/// Whether any rule allows the call. No rule, no access.
pub fn authorize(rules: &[AccessRule], call: &Call<'_>) -> bool {
    rules.iter().any(|r| {
        &r.provider == call.provider
            && r.service == call.service
            && r.method.as_deref().is_none_or(|m| m == call.method)
            && match &r.subject {
                Subject::Subsystem(s) => s == call.client,
                Subject::Group(g) => call.client_groups.is_some_and(|gs| gs.contains(g)),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> SubsystemId {
        s.parse().unwrap()
    }

    #[test]
    fn decision_table() {
        let business = sub("VN/GOV/000305/business");
        let tax = sub("VN/GOV/000201/tax");
        let population = sub("VN/GOV/000102/population");
        let investigators: GlobalGroupId = "VN/investigators".parse().unwrap();
        let rules = vec![
            AccessRule {
                subject: Subject::Subsystem(business.clone()),
                provider: population.clone(),
                service: "population.v1.PersonRegistry".into(),
                method: Some("GetPerson".into()),
            },
            AccessRule {
                subject: Subject::Group(investigators.clone()),
                provider: population.clone(),
                service: "population.v1.PersonRegistry".into(),
                method: None,
            },
        ];
        let in_group: HashSet<GlobalGroupId> = [investigators].into();
        let svc = "population.v1.PersonRegistry";
        type Row<'a> = (
            &'a SubsystemId,
            Option<&'a HashSet<GlobalGroupId>>,
            &'a str,
            &'a str,
            bool,
        );
        let table: Vec<Row<'_>> = vec![
            (&business, None, svc, "GetPerson", true),
            (&business, None, svc, "ListPersons", false),
            (&business, None, "other.v1.Svc", "GetPerson", false),
            (&tax, None, svc, "GetPerson", false),
            (&tax, Some(&in_group), svc, "GetPerson", true),
            (&tax, Some(&in_group), svc, "ListPersons", true),
            (&tax, Some(&in_group), "other.v1.Svc", "X", false),
        ];
        for (client, groups, service, method, want) in table {
            let call = Call {
                client,
                client_groups: groups,
                provider: &population,
                service,
                method,
            };
            assert_eq!(
                authorize(&rules, &call),
                want,
                "{client} {service}/{method}"
            );
        }
        let call = Call {
            client: &business,
            client_groups: None,
            provider: &population,
            service: svc,
            method: "GetPerson",
        };
        assert!(!authorize(&[], &call), "deny by default");
    }

    #[test]
    fn subjects_parse() {
        assert!(matches!(
            "group:VN/investigators".parse(),
            Ok(Subject::Group(_))
        ));
        assert!(matches!("VN/GOV/1/x".parse(), Ok(Subject::Subsystem(_))));
        assert!("VN/GOV/1".parse::<Subject>().is_err());
    }
}
