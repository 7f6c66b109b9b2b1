use super::*;
use proptest::prelude::*;

/// A valid part of 1..=max allowed characters.
fn part(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9'()+,\\-.=?]{{1,{max}}}"))
        .expect("static regex is valid")
}

fn member() -> impl Strategy<Value = MemberId> {
    (part(MAX_INSTANCE_LEN), part(20), part(40))
        .prop_map(|(i, c, m)| MemberId::new(&i, &c, &m).expect("strategy yields valid parts"))
}

proptest! {
    #[test]
    fn member_format_parse_is_identity(m in member()) {
        let text = m.to_string();
        prop_assert_eq!(text.parse::<MemberId>().unwrap(), m);
    }

    #[test]
    fn subsystem_format_parse_is_identity(m in member(), s in part(40)) {
        let id = m.subsystem(&s).unwrap();
        prop_assert_eq!(id.to_string().parse::<SubsystemId>().unwrap(), id);
    }

    #[test]
    fn server_format_parse_is_identity(m in member(), s in part(40)) {
        let id = m.server(&s).unwrap();
        prop_assert_eq!(id.to_string().parse::<ServerId>().unwrap(), id);
    }

    #[test]
    fn service_format_parse_is_identity(
        m in member(), s in part(20), svc in part(60), v in proptest::option::of(part(8))
    ) {
        let id = m.subsystem(&s).unwrap().service(&svc, v.as_deref()).unwrap();
        prop_assert_eq!(id.to_string().parse::<ServiceId>().unwrap(), id.clone());
        let pb: crate::pb::identifiers::v1::ServiceId = (&id).into();
        prop_assert_eq!(ServiceId::try_from(&pb).unwrap(), id);
    }

    #[test]
    fn group_format_parse_is_identity(i in part(MAX_INSTANCE_LEN), g in part(40)) {
        let id = GlobalGroupId::new(&i, &g).unwrap();
        prop_assert_eq!(id.to_string().parse::<GlobalGroupId>().unwrap(), id);
    }

    /// Any string with a character outside the set (other than the `/`
    /// separator) never parses, whatever its shape.
    #[test]
    fn no_invalid_string_parses(s in "\\PC{0,80}") {
        let has_bad = s.chars().any(|c| c != '/' && !is_allowed_char(c));
        let empty_part = s.split('/').any(str::is_empty);
        if has_bad || empty_part {
            prop_assert!(s.parse::<MemberId>().is_err());
            prop_assert!(s.parse::<SubsystemId>().is_err());
            prop_assert!(s.parse::<ServerId>().is_err());
            prop_assert!(s.parse::<ServiceId>().is_err());
            prop_assert!(s.parse::<GlobalGroupId>().is_err());
        }
    }

    /// A part with any disallowed character is refused, naming the character.
    #[test]
    fn bad_char_in_part_is_named(prefix in part(10), bad in "[ /_:;@#\\t\\u{e0}-\\u{ff}\\u{1ec7}]", suffix in part(10)) {
        let value = format!("{prefix}{bad}{suffix}");
        let err = MemberCode::new(value).unwrap_err();
        let is_bad_char = matches!(err, IdError::BadChar { part: "member code", .. });
        prop_assert!(is_bad_char);
    }
}

#[test]
fn slash_in_a_part_is_refused() {
    let err = "VN/GOV/000/102".parse::<MemberId>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "member id \"VN/GOV/000/102\" has 4 parts separated by '/'; expected 3: INSTANCE/CLASS/CODE"
    );
    let err = MemberId::new("VN", "GOV", "000/102").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("member code \"000/102\" contains '/'")
    );
}

#[test]
fn space_in_a_part_is_refused() {
    let err = "VN/GOV/000102/so dan".parse::<SubsystemId>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "subsystem code \"so dan\" contains ' ' at position 2; allowed are A-Z a-z 0-9 and ' ( ) + , - . = ?"
    );
}

#[test]
fn lengths_are_bounded() {
    let long = "A".repeat(MAX_INSTANCE_LEN + 1);
    assert_eq!(
        Instance::new(long).unwrap_err(),
        IdError::TooLong {
            part: "instance",
            len: 33,
            max: 32
        }
    );
    assert!(MemberCode::new("A".repeat(MAX_PART_LEN)).is_ok());
    assert!(MemberCode::new("A".repeat(MAX_PART_LEN + 1)).is_err());
    // A hostile megabyte is refused with a short message.
    let huge = "A/".repeat(500_000);
    let err = huge.parse::<ServiceId>().unwrap_err().to_string();
    assert!(err.len() < 200, "{err}");
}

#[test]
fn empty_parts_are_refused() {
    assert_eq!(
        "VN//000102".parse::<MemberId>().unwrap_err(),
        IdError::Empty {
            part: "member class"
        }
    );
}

#[test]
fn service_version_is_optional() {
    let s: ServiceId = "VN/GOV/000102/population/population.v1.PersonRegistry"
        .parse()
        .unwrap();
    assert_eq!(s.version, None);
    assert_eq!(s.service.as_str(), "population.v1.PersonRegistry");
    let v: ServiceId = "VN/GOV/000102/population/population.v1.PersonRegistry/v2"
        .parse()
        .unwrap();
    assert_eq!(v.version.as_ref().map(ServiceVersion::as_str), Some("v2"));
}

#[test]
fn missing_proto_parts_are_named() {
    let pb = crate::pb::identifiers::v1::SubsystemId {
        member: None,
        subsystem_code: "x".into(),
    };
    assert_eq!(
        SubsystemId::try_from(&pb).unwrap_err().to_string(),
        "subsystem member is missing"
    );
}
