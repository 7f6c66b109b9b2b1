//! The security server's operators: hashed bearer tokens with a role each,
//! and the audit log of what operators did on the admin port.
//!
//! A token is made once by `lienthong server operator add` and shown once;
//! the store keeps only its SHA-256, with the operator's name and role (as
//! the registry keeps its operator tokens). An **admin** changes things
//! (access rights, maintenance mode); an **observer** reads. Both are kept
//! in the server's store (`settings`), so every node reading that store
//! knows the same operators.
//!
//! The audit log keeps the newest [`AUDIT_KEEP`] actions of signed-in
//! operators, refusals included. Requests without a known token are not
//! written there (anyone who reaches the port could otherwise push real
//! records out); they are logged through `tracing` only.

use std::sync::Mutex;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::store::{ServerStore, StoreError};

/// The setting holding the operators (JSON).
const SETTING_OPERATORS: &str = "admin.operators";
/// The setting holding the audit log (JSON, newest last).
const SETTING_AUDIT: &str = "admin.audit";
/// How many audit records are kept.
pub const AUDIT_KEEP: usize = 1_000;
/// Every token starts so (a secret scanner can find one in a leak).
pub const TOKEN_PREFIX: &str = "lts_";

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and changes.
    Admin,
    /// Reads only.
    Observer,
}

/// A role's name that is neither `admin` nor `observer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role {0:?}: admin or observer")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "admin" => Ok(Role::Admin),
            "observer" => Ok(Role::Observer),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Observer => "observer",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredOperator {
    name: String,
    role: Role,
    /// SHA-256 of the token, hex.
    sha256: String,
}

/// A signed-in operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    pub role: Role,
}

/// One action on the admin port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_unix_ms: i64,
    /// The operator's name.
    pub actor: String,
    pub action: String,
    pub detail: String,
    /// `ok`, or why it was refused or failed.
    pub result: String,
}

/// Serialises read-modify-write of the audit log within this process.
static AUDIT_LOCK: Mutex<()> = Mutex::new(());

fn digest(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

fn operators(store: &ServerStore) -> Result<Vec<StoredOperator>, StoreError> {
    match store.setting(SETTING_OPERATORS)? {
        None => Ok(Vec::new()),
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| StoreError(format!("stored operators: {e}")))
        }
    }
}

/// Checks an operator's name: 1 to 64 of `A-Z a-z 0-9 . _ @ -`.
fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError(format!(
            "operator name {name:?}: 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )))
    }
}

/// Makes a new token for `name` (replacing the one it had) and returns it;
/// only its hash is kept.
pub fn add_operator(store: &ServerStore, name: &str, role: Role) -> Result<String, StoreError> {
    check_name(name)?;
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| StoreError("the system random source failed".into()))?;
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let mut list = operators(store)?;
    list.retain(|o| o.name != name);
    list.push(StoredOperator {
        name: name.to_owned(),
        role,
        sha256: digest(&token),
    });
    store.set_setting(SETTING_OPERATORS, &to_json(&list)?)?;
    Ok(token)
}

/// Removes `name`'s token; false if there was none.
pub fn remove_operator(store: &ServerStore, name: &str) -> Result<bool, StoreError> {
    let mut list = operators(store)?;
    let before = list.len();
    list.retain(|o| o.name != name);
    store.set_setting(SETTING_OPERATORS, &to_json(&list)?)?;
    Ok(list.len() != before)
}

/// The operators' names and roles.
pub fn list_operators(store: &ServerStore) -> Result<Vec<Operator>, StoreError> {
    Ok(operators(store)?
        .into_iter()
        .map(|o| Operator {
            name: o.name,
            role: o.role,
        })
        .collect())
}

/// The operator holding `token`, if any.
pub fn authenticate(store: &ServerStore, token: &str) -> Result<Option<Operator>, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let wanted = digest(token);
    Ok(operators(store)?
        .into_iter()
        .find(|o| o.sha256.len() == wanted.len() && same(&o.sha256, &wanted))
        .map(|o| Operator {
            name: o.name,
            role: o.role,
        }))
}

fn same(a: &str, b: &str) -> bool {
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError(e.to_string()))
}

fn audit_records(store: &ServerStore) -> Result<Vec<AuditRecord>, StoreError> {
    match store.setting(SETTING_AUDIT)? {
        None => Ok(Vec::new()),
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| StoreError(format!("stored audit log: {e}")))
        }
    }
}

/// Appends to the audit log (the oldest records beyond [`AUDIT_KEEP`] go).
pub fn audit(store: &ServerStore, record: AuditRecord) -> Result<(), StoreError> {
    audit_keeping(store, record, AUDIT_KEEP)
}

fn audit_keeping(store: &ServerStore, record: AuditRecord, keep: usize) -> Result<(), StoreError> {
    let _held = AUDIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut list = audit_records(store)?;
    list.push(record);
    if list.len() > keep {
        let extra = list.len() - keep;
        list.drain(..extra);
    }
    store.set_setting(SETTING_AUDIT, &to_json(&list)?)
}

/// The actor of a change made with the command line on the server itself
/// (`lienthong server acl grant`, `backend set`, …): `cli:` and the Unix
/// user running it, by the process's user id (not an environment variable
/// a caller sets).
pub fn cli_actor() -> String {
    format!("cli:{}", unix_user())
}

#[cfg(unix)]
fn unix_user() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .next()
        .unwrap_or_else(|| format!("uid {uid}"))
}

#[cfg(not(unix))]
fn unix_user() -> String {
    std::env::var("USERNAME").unwrap_or_else(|_| "unknown".into())
}

/// Audits a change made with the command line, as the admin port audits
/// the console's: `outcome` is what the command did (`ok`) or why it
/// refused.
pub fn audit_cli<T, E: std::fmt::Display>(
    store: &ServerStore,
    action: &str,
    detail: String,
    outcome: &Result<T, E>,
) -> Result<(), StoreError> {
    audit(
        store,
        AuditRecord {
            at_unix_ms: lienthong_proto::time::now_ms(),
            actor: cli_actor(),
            action: action.to_owned(),
            detail,
            result: match outcome {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.to_string(),
            },
        },
    )
}

/// The audit log, newest first.
pub fn audit_log(store: &ServerStore) -> Result<Vec<AuditRecord>, StoreError> {
    let mut list = audit_records(store)?;
    list.reverse();
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_hashed_and_name_their_operator() {
        let dir = tempfile::tempdir().unwrap();
        let store = ServerStore::open(&dir.path().join("server.db")).unwrap();
        let admin = add_operator(&store, "lan.admin", Role::Admin).unwrap();
        let observer = add_operator(&store, "audit", Role::Observer).unwrap();
        assert!(admin.starts_with(TOKEN_PREFIX));
        let stored = store.setting(SETTING_OPERATORS).unwrap().unwrap();
        assert!(!stored.contains(&admin[TOKEN_PREFIX.len()..]), "{stored}");
        assert_eq!(
            authenticate(&store, &admin).unwrap().unwrap().role,
            Role::Admin
        );
        assert_eq!(
            authenticate(&store, &observer).unwrap().unwrap().name,
            "audit"
        );
        assert_eq!(authenticate(&store, "lts_guess").unwrap(), None);
        assert_eq!(authenticate(&store, "").unwrap(), None);
        // A new token replaces the old one.
        let again = add_operator(&store, "lan.admin", Role::Observer).unwrap();
        assert_eq!(authenticate(&store, &admin).unwrap(), None);
        assert_eq!(
            authenticate(&store, &again).unwrap().unwrap().role,
            Role::Observer
        );
        assert!(remove_operator(&store, "audit").unwrap());
        assert_eq!(authenticate(&store, &observer).unwrap(), None);
        assert!(add_operator(&store, "<script>", Role::Admin).is_err());
    }

    #[test]
    fn the_command_line_audits_as_its_unix_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = ServerStore::open(&dir.path().join("server.db")).unwrap();
        let actor = cli_actor();
        assert!(actor.starts_with("cli:") && actor.len() > 4, "{actor}");
        audit_cli(
            &store,
            "grant access",
            "grant a b".into(),
            &Ok::<_, String>(()),
        )
        .unwrap();
        audit_cli(
            &store,
            "revoke access",
            "revoke a b".into(),
            &Err::<(), _>("no such grant: a b"),
        )
        .unwrap();
        let log = audit_log(&store).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].actor, actor);
        assert_eq!(log[0].result, "no such grant: a b");
        assert_eq!(log[1].action, "grant access");
        assert_eq!(log[1].result, "ok");
    }

    #[test]
    fn the_audit_log_keeps_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = ServerStore::open(&dir.path().join("server.db")).unwrap();
        for i in 0..8 {
            audit_keeping(
                &store,
                AuditRecord {
                    at_unix_ms: i as i64,
                    actor: "a".into(),
                    action: "grant".into(),
                    detail: String::new(),
                    result: "ok".into(),
                },
                3,
            )
            .unwrap();
        }
        let log = audit_log(&store).unwrap();
        let kept: Vec<i64> = log.iter().map(|r| r.at_unix_ms).collect();
        assert_eq!(kept, [7, 6, 5]);
    }
}
