//! Operator authentication and authorisation.
//!
//! Operators present a bearer token (`authorization: Bearer lt_…`). Tokens
//! are 256 random bits; the registry stores only their SHA-256, so a copy of
//! the database does not let anyone act as an operator. Whether a role may
//! do something is the pure function [`allows`].

use lienthong_proto::sha256;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::metadata::MetadataMap;

use crate::model::Role;

/// Prefix of every token the registry issues, so a leaked one is recognisable.
pub const TOKEN_PREFIX: &str = "lt_";
/// Longest `authorization` value looked at.
const MAX_TOKEN_LEN: usize = 256;

/// What an operator call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Whether `role` may perform an `access`.
pub fn allows(role: Role, access: Access) -> bool {
    match (role, access) {
        (Role::Officer, _) => true,
        (Role::Observer, Access::Read) => true,
        (Role::Observer, Access::Write) => false,
    }
}

/// A fresh token (shown once) and the hash to store.
pub fn new_token() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    // Without a working system RNG no secret can be made safely at all.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random number generator is available");
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

/// Longest name of the person an operator token acts for.
pub const MAX_PERSON_CHARS: usize = 128;

/// Why a call's "on behalf of" person is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonError {
    #[error("the person acted for (lt-on-behalf-of) is not base64 of UTF-8 text")]
    NotText,
    #[error(
        "the person acted for (lt-on-behalf-of) must be 1 to {MAX_PERSON_CHARS} characters without control characters"
    )]
    Shape,
}

/// The person a call is made for ([`lienthong_registry_client::ON_BEHALF_OF`]):
/// none when the metadata does not name one.
pub fn on_behalf_of(metadata: &MetadataMap) -> Result<Option<String>, PersonError> {
    let Some(value) = metadata.get_bin(lienthong_registry_client::ON_BEHALF_OF) else {
        return Ok(None);
    };
    let bytes = value.to_bytes().map_err(|_| PersonError::NotText)?;
    let person = String::from_utf8(bytes.to_vec()).map_err(|_| PersonError::NotText)?;
    let n = person.chars().count();
    if n == 0 || n > MAX_PERSON_CHARS || person.chars().any(char::is_control) {
        return Err(PersonError::Shape);
    }
    Ok(Some(person))
}

/// The audit log's actor: the operator, or the person acting with its token.
pub fn actor(operator: &str, person: Option<&str>) -> String {
    match person {
        Some(p) => format!("{p} (via {operator})"),
        None => operator.to_owned(),
    }
}

/// The bearer token of a request, if it carries a well-formed one.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    if value.len() > MAX_TOKEN_LEN {
        return None;
    }
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_person_acted_for_is_checked_and_named_first() {
        let mut m = MetadataMap::new();
        assert_eq!(on_behalf_of(&m), Ok(None));
        m.insert_bin(
            lienthong_registry_client::ON_BEHALF_OF,
            tonic::metadata::MetadataValue::from_bytes("Nguyễn Lan".as_bytes()),
        );
        let person = on_behalf_of(&m).unwrap();
        assert_eq!(person.as_deref(), Some("Nguyễn Lan"));
        assert_eq!(
            actor("console-officer", person.as_deref()),
            "Nguyễn Lan (via console-officer)"
        );
        assert_eq!(actor("console-officer", None), "console-officer");
        for bad in [&b"a\nb"[..], &[0xff, 0xfe][..], &b""[..]] {
            m.insert_bin(
                lienthong_registry_client::ON_BEHALF_OF,
                tonic::metadata::MetadataValue::from_bytes(bad),
            );
            assert!(on_behalf_of(&m).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_table() {
        let table = [
            (Role::Officer, Access::Read, true),
            (Role::Officer, Access::Write, true),
            (Role::Observer, Access::Read, true),
            (Role::Observer, Access::Write, false),
        ];
        for (role, access, want) in table {
            assert_eq!(allows(role, access), want, "{role:?} {access:?}");
        }
    }

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let (a, ha) = new_token();
        let (b, hb) = new_token();
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(hash_token(&a), ha);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 3 + 64);
    }

    #[test]
    fn bearer_parsing() {
        let mut m = MetadataMap::new();
        assert_eq!(bearer(&m), None);
        m.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&m), None);
        m.insert("authorization", "Bearer lt_abc".parse().unwrap());
        assert_eq!(bearer(&m), Some("lt_abc"));
        m.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&m), None);
        let long = format!("Bearer {}", "a".repeat(300));
        m.insert("authorization", long.parse().unwrap());
        assert_eq!(bearer(&m), None);
    }
}
