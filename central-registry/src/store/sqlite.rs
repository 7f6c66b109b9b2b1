//! The embedded SQLite backend: one file, WAL journal, `synchronous=FULL`
//! (a registry write is rare and must survive a power cut), foreign keys on.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::schema::MIGRATIONS;
use super::{PublicationRecord, Store, StoreError};
use crate::model::*;

/// The registry store in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| StoreError::Internal(format!("stored {what} {s:?} is unreadable: {e}")))
}

fn fingerprint(b: &[u8]) -> Result<Fingerprint, StoreError> {
    Fingerprint::from_slice(b)
        .ok_or_else(|| StoreError::Internal("stored fingerprint is not 32 bytes".into()))
}

fn exists(tx: &Connection, sql: &str, key: &str) -> Result<bool, StoreError> {
    Ok(tx.query_row(sql, [key], |_| Ok(())).optional()?.is_some())
}

impl SqliteStore {
    /// Creates a new store at `path` with the instance's settings; refuses
    /// to touch an existing file.
    pub fn create(path: &Path, settings: &InstanceSettings) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::Conflict(format!(
                "{} already exists; refusing to overwrite a registry store",
                path.display()
            )));
        }
        let store = Self::open_any(Connection::open(path)?)?;
        store.write_settings(settings)?;
        Ok(store)
    }

    /// Opens an existing store, applying any pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing(format!(
                "registry store {} does not exist; run `lienthong registry init` first",
                path.display()
            )));
        }
        Self::open_any(Connection::open(path)?)
    }

    /// A store in memory (tests, benchmarks).
    pub fn in_memory(settings: &InstanceSettings) -> Result<Self, StoreError> {
        let store = Self::open_any(Connection::open_in_memory()?)?;
        store.write_settings(settings)?;
        Ok(store)
    }

    fn open_any(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back
        // (rusqlite's Transaction rolls back on drop); the connection is intact.
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn write_settings(&self, s: &InstanceSettings) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let rows = [
            ("instance", s.instance.to_string()),
            ("addresses", s.addresses.join(",")),
            (
                "configuration_validity_secs",
                s.configuration_validity_secs.to_string(),
            ),
            ("poll_interval_secs", s.poll_interval_secs.to_string()),
            ("auto_approve", s.auto_approve.to_string()),
        ];
        for (k, v) in rows {
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![k, v],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Internal(format!(
            "store schema version {applied} is newer than this program knows ({}); upgrade lienthong",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "registry store migrated");
    }
    Ok(())
}

fn setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()?)
}

fn bump_seq(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    Ok(tx.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value",
        [],
        |r| r.get::<_, i64>(0),
    )? as u64)
}

fn insert_audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    detail: &str,
    result: &str,
) -> Result<u64, StoreError> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, detail, result) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now_ms(), actor, action, detail, result],
    )?;
    Ok(conn.last_insert_rowid() as u64)
}

// === the changes ===

fn apply_one(tx: &Transaction<'_>, change: &Change) -> Result<Option<u64>, StoreError> {
    match change {
        Change::AddMemberClass { code, description } => {
            let code = code.as_str();
            if exists(tx, "SELECT 1 FROM member_classes WHERE code = ?1", code)? {
                return Err(StoreError::Duplicate(format!("member class {code}")));
            }
            tx.execute(
                "INSERT INTO member_classes (code, description) VALUES (?1, ?2)",
                params![code, description],
            )?;
        }
        Change::AddMember { id, name } => {
            let class = id.class.as_str();
            if !exists(tx, "SELECT 1 FROM member_classes WHERE code = ?1", class)? {
                return Err(StoreError::Missing(format!(
                    "member class {class} does not exist; add it first"
                )));
            }
            require_absent(tx, "members", &id.to_string(), "member")?;
            tx.execute(
                "INSERT INTO members (id, class, name) VALUES (?1, ?2, ?3)",
                params![id.to_string(), class, name],
            )?;
        }
        Change::AddSubsystem { id } => {
            require_member(tx, &id.member)?;
            require_absent(tx, "subsystems", &id.to_string(), "subsystem")?;
            tx.execute(
                "INSERT INTO subsystems (id, member, code) VALUES (?1, ?2, ?3)",
                params![id.to_string(), id.member.to_string(), id.code.as_str()],
            )?;
        }
        Change::AddService { id, description } => {
            require_subsystem(tx, &id.provider)?;
            require_absent(tx, "services", &id.to_string(), "service")?;
            tx.execute(
                "INSERT INTO services (id, provider, description) VALUES (?1, ?2, ?3)",
                params![id.to_string(), id.provider.to_string(), description],
            )?;
        }
        Change::RemoveService { id } => {
            let n = tx.execute("DELETE FROM services WHERE id = ?1", [id.to_string()])?;
            if n == 0 {
                return Err(StoreError::Missing(format!("service {id} does not exist")));
            }
        }
        Change::AddGlobalGroup { id, description } => {
            require_absent(tx, "global_groups", &id.to_string(), "global group")?;
            tx.execute(
                "INSERT INTO global_groups (id, description) VALUES (?1, ?2)",
                params![id.to_string(), description],
            )?;
        }
        Change::AddGroupMember { group, subsystem } => {
            require_group(tx, &group.to_string())?;
            require_subsystem(tx, subsystem)?;
            let n = tx.execute(
                "INSERT INTO group_members (grp, subsystem) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![group.to_string(), subsystem.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(format!(
                    "{subsystem} in global group {group}"
                )));
            }
        }
        Change::RemoveGroupMember { group, subsystem } => {
            let n = tx.execute(
                "DELETE FROM group_members WHERE grp = ?1 AND subsystem = ?2",
                params![group.to_string(), subsystem.to_string()],
            )?;
            if n == 0 {
                return Err(StoreError::Missing(format!(
                    "{subsystem} is not in global group {group}"
                )));
            }
        }
        Change::SetTracePortal { portal } => {
            require_subsystem(tx, portal)?;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('trace_portal', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [portal.to_string()],
            )?;
        }
        Change::AddTrustedCa { der } => {
            let fp = Fingerprint::of(der);
            let n = tx.execute(
                "INSERT INTO trusted_cas (fingerprint, der) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![fp.0.as_slice(), der],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(format!("trusted CA {fp}")));
            }
        }
        Change::CreateEnrollmentToken {
            server,
            token_hash,
            expires_at_ms,
        } => {
            require_member(tx, &server.owner)?;
            tx.execute(
                "INSERT INTO enrollment_tokens (hash, server, expires_at) VALUES (?1, ?2, ?3)",
                params![token_hash.as_slice(), server.to_string(), expires_at_ms],
            )?;
        }
        Change::Revoke {
            fingerprint,
            reason,
        } => revoke(tx, fingerprint, reason)?,
        Change::Submit(req) => return submit(tx, req).map(Some),
        Change::Approve { id, note, issued } => approve(tx, *id, note, issued)?,
        Change::Reject { id, note } => {
            let req = pending_request(tx, *id)?;
            tx.execute(
                "UPDATE requests SET state = ?2, decided_at = ?3, note = ?4 WHERE id = ?1",
                params![req.id as i64, RequestState::Rejected.code(), now_ms(), note],
            )?;
        }
        Change::AddOperator {
            name,
            role,
            token_hash,
        } => {
            require_absent(tx, "operators", name, "operator")?;
            tx.execute(
                "INSERT INTO operators (name, role, token_hash) VALUES (?1, ?2, ?3)",
                params![name, role.as_str(), token_hash.as_slice()],
            )?;
        }
    }
    Ok(None)
}

fn require_absent(tx: &Connection, table: &str, key: &str, what: &str) -> Result<(), StoreError> {
    let col = if table == "operators" { "name" } else { "id" };
    if exists(tx, &format!("SELECT 1 FROM {table} WHERE {col} = ?1"), key)? {
        return Err(StoreError::Duplicate(format!("{what} {key}")));
    }
    Ok(())
}

fn require_member(tx: &Connection, id: &MemberId) -> Result<(), StoreError> {
    let key = id.to_string();
    if !exists(tx, "SELECT 1 FROM members WHERE id = ?1", &key)? {
        return Err(StoreError::Missing(format!("member {key} does not exist")));
    }
    Ok(())
}

fn require_subsystem(tx: &Connection, id: &SubsystemId) -> Result<(), StoreError> {
    let key = id.to_string();
    if !exists(tx, "SELECT 1 FROM subsystems WHERE id = ?1", &key)? {
        return Err(StoreError::Missing(format!(
            "subsystem {key} does not exist"
        )));
    }
    Ok(())
}

fn require_server(tx: &Connection, id: &ServerId) -> Result<(), StoreError> {
    let key = id.to_string();
    if !exists(tx, "SELECT 1 FROM servers WHERE id = ?1", &key)? {
        return Err(StoreError::Missing(format!(
            "security server {key} is not registered"
        )));
    }
    Ok(())
}

fn require_group(tx: &Connection, key: &str) -> Result<(), StoreError> {
    if !exists(tx, "SELECT 1 FROM global_groups WHERE id = ?1", key)? {
        return Err(StoreError::Missing(format!(
            "global group {key} does not exist"
        )));
    }
    Ok(())
}

fn revoke(tx: &Transaction<'_>, fp: &Fingerprint, reason: &str) -> Result<(), StoreError> {
    let revoked: Option<Option<i64>> = tx
        .query_row(
            "SELECT revoked_at FROM certificates WHERE fingerprint = ?1",
            [fp.0.as_slice()],
            |r| r.get(0),
        )
        .optional()?;
    match revoked {
        Some(Some(_)) => Err(StoreError::Conflict(format!(
            "certificate {fp} is already revoked"
        ))),
        Some(None) => {
            tx.execute(
                "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3 WHERE fingerprint = ?1",
                params![fp.0.as_slice(), now_ms(), reason],
            )?;
            Ok(())
        }
        None => {
            // Not issued here: a certificate of an external CA.
            let n = tx.execute(
                "INSERT INTO revoked_external (fingerprint, reason) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![fp.0.as_slice(), reason],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "certificate {fp} is already revoked"
                )));
            }
            Ok(())
        }
    }
}

/// Refuses a key that already has (or had) a certificate: a revoked key
/// must never come back, and one key per certificate keeps revocation exact.
fn require_fresh_key(tx: &Connection, public_key: &[u8]) -> Result<(), StoreError> {
    let revoked: Option<Option<i64>> = tx
        .query_row(
            "SELECT revoked_at FROM certificates WHERE public_key = ?1 ORDER BY revoked_at IS NULL LIMIT 1",
            [public_key],
            |r| r.get(0),
        )
        .optional()?;
    match revoked {
        Some(Some(_)) => Err(StoreError::Conflict(
            "the key of this CSR belongs to a revoked certificate; generate a new key".into(),
        )),
        Some(None) => Err(StoreError::Conflict(
            "the key of this CSR already has a certificate; generate a new key".into(),
        )),
        None => Ok(()),
    }
}

fn submit(tx: &Transaction<'_>, req: &NewRequest) -> Result<u64, StoreError> {
    for csr in req.auth_csr.iter().chain(&req.signing_csrs) {
        require_fresh_key(tx, &csr.public_key)?;
    }
    match req.kind {
        RequestKind::AuthCertificate => require_member(tx, &req.server.owner)?,
        RequestKind::Client => {
            require_server(tx, &req.server)?;
            let sub = req
                .subsystem
                .as_ref()
                .ok_or_else(|| StoreError::Missing("a client request names a subsystem".into()))?;
            require_subsystem(tx, sub)?;
            let taken = tx
                .query_row(
                    "SELECT 1 FROM server_clients WHERE server = ?1 AND subsystem = ?2",
                    params![req.server.to_string(), sub.to_string()],
                    |_| Ok(()),
                )
                .optional()?;
            if taken.is_some() {
                return Err(StoreError::Duplicate(format!(
                    "client {sub} on server {}",
                    req.server
                )));
            }
        }
        RequestKind::AddressChange | RequestKind::ServerRemoval => require_server(tx, &req.server)?,
    }
    tx.execute(
        "INSERT INTO requests (kind, server, subsystem, address, token_hash, state, submitted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            req.kind.code(),
            req.server.to_string(),
            req.subsystem.as_ref().map(|s| s.to_string()),
            req.address,
            req.enrollment_token.as_ref().map(|t| t.as_slice()),
            RequestState::Pending.code(),
            now_ms(),
        ],
    )?;
    let id = tx.last_insert_rowid() as u64;
    if let Some(token) = &req.enrollment_token {
        consume_token(tx, token, &req.server, id)?;
    }
    let csrs = req.auth_csr.iter().chain(&req.signing_csrs);
    for (pos, csr) in csrs.enumerate() {
        tx.execute(
            "INSERT INTO request_csrs (request_id, position, is_auth, member, csr, public_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id as i64,
                pos as i64,
                csr.member.is_none(),
                csr.member.as_ref().map(|m| m.to_string()),
                csr.csr,
                csr.public_key,
            ],
        )?;
    }
    Ok(id)
}

fn consume_token(
    tx: &Transaction<'_>,
    hash: &[u8; 32],
    server: &ServerId,
    request: u64,
) -> Result<(), StoreError> {
    let n = tx.execute(
        "UPDATE enrollment_tokens SET used_by_request = ?4
         WHERE hash = ?1 AND server = ?2 AND expires_at > ?3 AND used_by_request IS NULL",
        params![
            hash.as_slice(),
            server.to_string(),
            now_ms(),
            request as i64
        ],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "the enrollment token is not valid for {server} (unknown, expired, already used, or issued for another server)"
        )));
    }
    Ok(())
}

fn pending_request(tx: &Connection, id: u64) -> Result<StoredRequest, StoreError> {
    let req = load_request(tx, id)?
        .ok_or_else(|| StoreError::Missing(format!("request {id} does not exist")))?;
    if req.state != RequestState::Pending {
        return Err(StoreError::Conflict(format!(
            "request {id} is {:?}, not pending",
            req.state
        )));
    }
    Ok(req)
}

fn approve(tx: &Transaction<'_>, id: u64, note: &str, issued: &Issued) -> Result<(), StoreError> {
    let stored = pending_request(tx, id)?;
    let req = &stored.request;
    let server = req.server.to_string();
    match req.kind {
        RequestKind::AuthCertificate => {
            let address = req.address.clone().unwrap_or_default();
            tx.execute(
                "INSERT INTO servers (id, owner, address) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address",
                params![server, req.server.owner.to_string(), address],
            )?;
        }
        RequestKind::Client => {
            require_server(tx, &req.server)?;
            let sub = req.subsystem.as_ref().map(|s| s.to_string());
            tx.execute(
                "INSERT INTO server_clients (server, subsystem) VALUES (?1, ?2)",
                params![server, sub],
            )
            .map_err(|_| {
                StoreError::Conflict(format!("the client is already registered on {server}"))
            })?;
        }
        RequestKind::AddressChange => {
            require_server(tx, &req.server)?;
            tx.execute(
                "UPDATE servers SET address = ?2 WHERE id = ?1",
                params![server, req.address],
            )?;
        }
        RequestKind::ServerRemoval => {
            require_server(tx, &req.server)?;
            let reason = format!("server removed by request {id}");
            tx.execute(
                "UPDATE certificates SET revoked_at = ?2, revoke_reason = ?3
                 WHERE revoked_at IS NULL AND (auth_server = ?1 OR request_id IN
                    (SELECT id FROM requests WHERE server = ?1))",
                params![server, now_ms(), reason],
            )?;
            tx.execute("DELETE FROM servers WHERE id = ?1", [&server])?;
        }
    }
    let mut pos = 0i64;
    if let Some(auth) = &issued.auth {
        insert_cert(tx, auth, Some(&server), None, id, pos)?;
        pos += 1;
    }
    for (member, cert) in &issued.signing {
        insert_cert(tx, cert, None, Some(&member.to_string()), id, pos)?;
        pos += 1;
    }
    tx.execute(
        "UPDATE requests SET state = ?2, decided_at = ?3, note = ?4 WHERE id = ?1",
        params![id as i64, RequestState::Approved.code(), now_ms(), note],
    )?;
    Ok(())
}

fn insert_cert(
    tx: &Transaction<'_>,
    cert: &IssuedCert,
    auth_server: Option<&str>,
    signing_member: Option<&str>,
    request: u64,
    position: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (fingerprint, der, public_key, auth_server, signing_member, request_id, position)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            Fingerprint::of(&cert.der).0.as_slice(),
            cert.der,
            cert.public_key,
            auth_server,
            signing_member,
            request as i64,
            position,
        ],
    )?;
    Ok(())
}

fn load_request(conn: &Connection, id: u64) -> Result<Option<StoredRequest>, StoreError> {
    let row = conn
        .query_row(
            "SELECT kind, server, subsystem, address, token_hash, state, submitted_at, note
             FROM requests WHERE id = ?1",
            [id as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                ))
            },
        )
        .optional()?;
    let Some((kind, server, subsystem, address, token, state, submitted, note)) = row else {
        return Ok(None);
    };
    let bad = |what: &str| StoreError::Internal(format!("request {id} has an unknown {what}"));
    let mut auth_csr = None;
    let mut signing_csrs = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT is_auth, member, csr, public_key FROM request_csrs
         WHERE request_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([id as i64], |r| {
        Ok((
            r.get::<_, bool>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    for row in rows {
        let (is_auth, member, csr, public_key) = row?;
        let member = member.map(|m| parse("member id", &m)).transpose()?;
        let c = CsrFor {
            csr,
            public_key,
            member,
        };
        if is_auth {
            auth_csr = Some(c);
        } else {
            signing_csrs.push(c);
        }
    }
    let mut issued_auth = None;
    let mut issued_signing = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT der, auth_server IS NOT NULL FROM certificates WHERE request_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([id as i64], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, bool>(1)?))
    })?;
    for row in rows {
        let (der, is_auth) = row?;
        if is_auth {
            issued_auth = Some(der);
        } else {
            issued_signing.push(der);
        }
    }
    Ok(Some(StoredRequest {
        id,
        request: NewRequest {
            kind: RequestKind::from_code(kind).ok_or_else(|| bad("kind"))?,
            server: parse("server id", &server)?,
            subsystem: subsystem.map(|s| parse("subsystem id", &s)).transpose()?,
            address,
            auth_csr,
            signing_csrs,
            enrollment_token: token.and_then(|t| t.try_into().ok()),
        },
        state: RequestState::from_code(state).ok_or_else(|| bad("state"))?,
        submitted_at_ms: submitted,
        decision_note: note,
        issued_auth,
        issued_signing,
    }))
}

// === impl Store ===

impl Store for SqliteStore {
    fn settings(&self) -> Result<InstanceSettings, StoreError> {
        let conn = self.lock();
        let get = |k: &str| -> Result<String, StoreError> {
            setting(&conn, k)?.ok_or_else(|| {
                StoreError::Internal(format!(
                    "setting {k} is missing; was the store initialised?"
                ))
            })
        };
        Ok(InstanceSettings {
            instance: parse("instance", &get("instance")?)?,
            addresses: get("addresses")?
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            configuration_validity_secs: parse(
                "configuration validity",
                &get("configuration_validity_secs")?,
            )?,
            poll_interval_secs: parse("poll interval", &get("poll_interval_secs")?)?,
            auto_approve: parse("auto-approve flag", &get("auto_approve")?)?,
        })
    }

    fn apply_all(&self, actor: &str, changes: &[Change]) -> Result<Vec<Applied>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let request_id = apply_one(&tx, change)?;
            let seq = bump_seq(&tx)?;
            let audit_id = insert_audit(&tx, actor, change.action(), &change.to_string(), "ok")?;
            out.push(Applied {
                audit_id,
                seq,
                request_id,
            });
        }
        tx.commit()?;
        Ok(out)
    }

    fn record_refusal(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        error: &str,
    ) -> Result<u64, StoreError> {
        insert_audit(&self.lock(), actor, action, detail, error)
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let snap = read_snapshot(&tx)?;
        tx.commit()?;
        Ok(snap)
    }

    fn seq(&self) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    fn request(&self, id: u64) -> Result<Option<StoredRequest>, StoreError> {
        load_request(&self.lock(), id)
    }

    fn requests(&self, state: Option<RequestState>) -> Result<Vec<StoredRequest>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id FROM requests WHERE ?1 IS NULL OR state = ?1 ORDER BY id LIMIT 10000",
        )?;
        let ids: Vec<u64> = stmt
            .query_map([state.map(RequestState::code)], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|v| v as u64))
            .collect::<Result<_, _>>()?;
        ids.into_iter()
            .filter_map(|id| load_request(&conn, id).transpose())
            .collect()
    }

    fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, detail, result FROM audit
             WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR actor = ?3)
             ORDER BY id LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![
                f.since_ms.unwrap_or(0),
                f.until_ms.unwrap_or(i64::MAX),
                f.actor,
                f.limit as i64
            ],
            |r| {
                Ok(AuditEntry {
                    id: r.get::<_, i64>(0)? as u64,
                    at_ms: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    detail: r.get(4)?,
                    result: r.get(5)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn operator_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Operator>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT name, role FROM operators WHERE token_hash = ?1",
                [token_hash.as_slice()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()?;
        row.map(|(name, role)| {
            Ok(Operator {
                name,
                role: role.parse().map_err(StoreError::Internal)?,
            })
        })
        .transpose()
    }

    fn enrollment(&self, token_hash: &[u8; 32]) -> Result<Option<Enrollment>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT server, expires_at, used_by_request FROM enrollment_tokens WHERE hash = ?1",
                [token_hash.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(server, expires_at_ms, used)| {
            Ok(Enrollment {
                server: parse("server id", &server)?,
                expires_at_ms,
                used_by_request: used.map(|u| u as u64),
            })
        })
        .transpose()
    }

    fn certificate(&self, fp: &Fingerprint) -> Result<Option<StoredCert>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT der, auth_server, signing_member, revoked_at IS NOT NULL
                 FROM certificates WHERE fingerprint = ?1",
                [fp.0.as_slice()],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(der, server, member, revoked)| {
            Ok(StoredCert {
                fingerprint: *fp,
                der,
                auth_server: server.map(|s| parse("server id", &s)).transpose()?,
                signing_member: member.map(|m| parse("member id", &m)).transpose()?,
                revoked,
            })
        })
        .transpose()
    }

    fn member_exists(&self, id: &MemberId) -> Result<bool, StoreError> {
        exists(
            &self.lock(),
            "SELECT 1 FROM members WHERE id = ?1",
            &id.to_string(),
        )
    }

    fn server_exists(&self, id: &ServerId) -> Result<bool, StoreError> {
        exists(
            &self.lock(),
            "SELECT 1 FROM servers WHERE id = ?1",
            &id.to_string(),
        )
    }

    fn last_publication(&self) -> Result<Option<PublicationRecord>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT version, created_at, seq FROM publications ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok(PublicationRecord {
                        version: r.get::<_, i64>(0)? as u64,
                        created_at_ms: r.get(1)?,
                        seq: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()?)
    }

    fn record_publication(&self, p: &PublicationRecord) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO publications (version, created_at, seq) VALUES (?1, ?2, ?3)",
            params![p.version as i64, p.created_at_ms, p.seq as i64],
        )
        .map_err(|_| {
            StoreError::Conflict(format!(
                "configuration version {} was already published",
                p.version
            ))
        })?;
        // Only the newest publications are worth keeping.
        tx.execute(
            "DELETE FROM publications WHERE version < ?1",
            [p.version as i64 - 100],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn read_snapshot(tx: &Connection) -> Result<Snapshot, StoreError> {
    use std::collections::HashMap;

    let seq = tx.query_row("SELECT value FROM meta WHERE key = 'change_seq'", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;

    let mut members = Vec::new();
    let mut member_index: HashMap<String, usize> = HashMap::new();
    let mut stmt = tx.prepare("SELECT id, name FROM members ORDER BY id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (id, name) = row?;
        member_index.insert(id.clone(), members.len());
        members.push(SnapshotMember {
            id: parse("member id", &id)?,
            name,
            subsystems: Vec::new(),
            signing_certs: Vec::new(),
        });
    }
    let mut stmt = tx.prepare("SELECT member, code FROM subsystems ORDER BY id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (member, code) = row?;
        if let Some(&i) = member_index.get(&member) {
            members[i].subsystems.push(code);
        }
    }
    let mut stmt = tx.prepare(
        "SELECT signing_member, der FROM certificates
         WHERE signing_member IS NOT NULL AND revoked_at IS NULL ORDER BY request_id, position",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })? {
        let (member, der) = row?;
        if let Some(&i) = member_index.get(&member) {
            members[i].signing_certs.push(der);
        }
    }

    let mut servers = Vec::new();
    let mut server_index: HashMap<String, usize> = HashMap::new();
    let mut stmt = tx.prepare("SELECT id, address FROM servers ORDER BY id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (id, address) = row?;
        server_index.insert(id.clone(), servers.len());
        servers.push(SnapshotServer {
            id: parse("server id", &id)?,
            address,
            auth_certs: Vec::new(),
            clients: Vec::new(),
        });
    }
    let mut stmt = tx.prepare(
        "SELECT auth_server, fingerprint FROM certificates
         WHERE auth_server IS NOT NULL AND revoked_at IS NULL ORDER BY request_id",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })? {
        let (server, fp) = row?;
        if let Some(&i) = server_index.get(&server) {
            servers[i].auth_certs.push(fingerprint(&fp)?);
        }
    }
    let mut stmt =
        tx.prepare("SELECT server, subsystem FROM server_clients ORDER BY server, subsystem")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (server, sub) = row?;
        if let Some(&i) = server_index.get(&server) {
            servers[i].clients.push(parse("subsystem id", &sub)?);
        }
    }

    let mut services = Vec::new();
    let mut stmt = tx.prepare("SELECT id, description FROM services ORDER BY id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (id, description) = row?;
        services.push((parse("service id", &id)?, description));
    }

    let mut groups = Vec::new();
    let mut group_index: HashMap<String, usize> = HashMap::new();
    let mut stmt = tx.prepare("SELECT id, description FROM global_groups ORDER BY id")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (id, description) = row?;
        group_index.insert(id.clone(), groups.len());
        groups.push(SnapshotGroup {
            id: parse("global group id", &id)?,
            description,
            members: Vec::new(),
        });
    }
    let mut stmt =
        tx.prepare("SELECT grp, subsystem FROM group_members ORDER BY grp, subsystem")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (grp, sub) = row?;
        if let Some(&i) = group_index.get(&grp) {
            groups[i].members.push(parse("subsystem id", &sub)?);
        }
    }

    let mut stmt = tx.prepare("SELECT der FROM trusted_cas ORDER BY fingerprint")?;
    let trusted_cas = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<Result<_, _>>()?;

    let mut revoked = Vec::new();
    let mut stmt = tx.prepare(
        "SELECT fingerprint FROM certificates WHERE revoked_at IS NOT NULL
         UNION SELECT fingerprint FROM revoked_external ORDER BY 1",
    )?;
    for row in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))? {
        revoked.push(fingerprint(&row?)?);
    }

    let trace_portal = setting(tx, "trace_portal")?
        .map(|p| parse("trace portal", &p))
        .transpose()?;

    Ok(Snapshot {
        seq,
        members,
        servers,
        services,
        groups,
        trusted_cas,
        revoked,
        trace_portal,
    })
}
