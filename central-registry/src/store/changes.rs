//! Each [`Change`], applied inside the caller's transaction (on
//! PostgreSQL it holds the write lock): checks that name what is wrong,
//! then the writes. One text for both backends ([`Sql`]).

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{MemberId, ServerId, SubsystemId};

use super::requests::load_request;
use super::sql::{Param as P, Sql};
use super::{StoreError, now_ms};
use crate::model::*;

/// Drops the descriptor sets no service names any more. A server still on
/// an older configuration that asks for one is told it is gone, and gets
/// the new digest with its next configuration.
fn forget_unused_descriptor_sets(tx: &mut dyn Sql) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM descriptor_sets WHERE sha256 NOT IN
         (SELECT descriptor_sha256 FROM services WHERE descriptor_sha256 IS NOT NULL)",
        &[],
    )?;
    Ok(())
}

pub(super) fn apply_one(tx: &mut dyn Sql, change: &Change) -> Result<Option<u64>, StoreError> {
    match change {
        Change::AddMemberClass { code, description } => {
            let code = code.as_str();
            if tx.exists(
                "SELECT 1 FROM member_classes WHERE code = $1",
                &[P::from(code)],
            )? {
                return Err(StoreError::Duplicate(format!("member class {code}")));
            }
            tx.execute(
                "INSERT INTO member_classes (code, description) VALUES ($1, $2)",
                &[P::from(&code), P::from(description)],
            )?;
        }
        Change::AddMember { id, name } => {
            let class = id.class.as_str();
            if !tx.exists(
                "SELECT 1 FROM member_classes WHERE code = $1",
                &[P::from(class)],
            )? {
                return Err(StoreError::Missing(format!(
                    "member class {class} does not exist; add it first"
                )));
            }
            require_absent(tx, "members", &id.to_string(), "member")?;
            tx.execute(
                "INSERT INTO members (id, class, name) VALUES ($1, $2, $3)",
                &[P::from(&id.to_string()), P::from(&class), P::from(name)],
            )?;
        }
        Change::AddSubsystem { id } => {
            require_member(tx, &id.member)?;
            require_absent(tx, "subsystems", &id.to_string(), "subsystem")?;
            tx.execute(
                "INSERT INTO subsystems (id, member, code) VALUES ($1, $2, $3)",
                &[
                    P::from(&id.to_string()),
                    P::from(&id.member.to_string()),
                    P::from(&id.code.as_str()),
                ],
            )?;
        }
        Change::AddService {
            id,
            description,
            personal_data,
        } => {
            require_subsystem(tx, &id.provider)?;
            require_absent(tx, "services", &id.to_string(), "service")?;
            tx.execute(
                "INSERT INTO services (id, provider, description, personal_data)
                 VALUES ($1, $2, $3, $4)",
                &[
                    P::from(&id.to_string()),
                    P::from(&id.provider.to_string()),
                    P::from(description),
                    P::from(personal_data),
                ],
            )?;
        }
        Change::DescribeService {
            id,
            sha256,
            descriptor_set,
            ..
        } => {
            if !tx.exists(
                "SELECT 1 FROM services WHERE id = $1",
                &[P::from(&id.to_string())],
            )? {
                return Err(StoreError::Missing(format!(
                    "service {id} does not exist; register it first (`lienthong registry service add`)"
                )));
            }
            tx.execute(
                "INSERT INTO descriptor_sets (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[P::from(&sha256.as_slice()), P::from(&descriptor_set.as_slice())],
            )?;
            tx.execute(
                "UPDATE services SET descriptor_sha256 = $1 WHERE id = $2",
                &[P::from(&sha256.as_slice()), P::from(&id.to_string())],
            )?;
            forget_unused_descriptor_sets(tx)?;
        }
        Change::RemoveService { id } => {
            let n = tx.execute(
                "DELETE FROM services WHERE id = $1",
                &[P::from(&id.to_string())],
            )?;
            if n == 0 {
                return Err(StoreError::Missing(format!("service {id} does not exist")));
            }
            forget_unused_descriptor_sets(tx)?;
        }
        Change::AddGlobalGroup { id, description } => {
            require_absent(tx, "global_groups", &id.to_string(), "global group")?;
            tx.execute(
                "INSERT INTO global_groups (id, description) VALUES ($1, $2)",
                &[P::from(&id.to_string()), P::from(description)],
            )?;
        }
        Change::AddGroupMember { group, subsystem } => {
            require_group(tx, &group.to_string())?;
            require_subsystem(tx, subsystem)?;
            let n = tx.execute(
                "INSERT INTO group_members (grp, subsystem) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[P::from(&group.to_string()), P::from(&subsystem.to_string())],
            )?;
            if n == 0 {
                return Err(StoreError::Duplicate(format!(
                    "{subsystem} in global group {group}"
                )));
            }
        }
        Change::RemoveGroupMember { group, subsystem } => {
            let n = tx.execute(
                "DELETE FROM group_members WHERE grp = $1 AND subsystem = $2",
                &[P::from(&group.to_string()), P::from(&subsystem.to_string())],
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
                "INSERT INTO settings (key, value) VALUES ('trace_portal', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[P::from(&portal.to_string())],
            )?;
        }
        Change::SetWithholdingGroup {
            group,
            max_duration_ms,
            valid_until_ms,
        } => {
            require_group(tx, &group.to_string())?;
            let now = now_ms();
            if *max_duration_ms <= 0 || *max_duration_ms > MAX_WITHHOLDING_MS {
                return Err(StoreError::Conflict(format!(
                    "the maximum withholding must be 1 s to 50 years, not {} s",
                    max_duration_ms / 1000
                )));
            }
            if valid_until_ms.is_some_and(|t| t <= now) {
                return Err(StoreError::Conflict(
                    "a withholding grant must end in the future".into(),
                ));
            }
            // The grant in force ends where this one starts: grants never
            // overlap, so each exchange falls under at most one.
            tx.execute(
                "UPDATE withholding_grants SET valid_until = $1
                 WHERE valid_until IS NULL OR valid_until > $1",
                &[P::from(&now)],
            )?;
            tx.execute(
                "INSERT INTO withholding_grants (grp, max_duration_ms, valid_from, valid_until)
                 VALUES ($1, $2, $3, $4)",
                &[
                    P::from(&group.to_string()),
                    P::from(max_duration_ms),
                    P::from(&now),
                    P::from(valid_until_ms),
                ],
            )?;
        }
        Change::SetDataSubjectFormats { formats } => {
            if formats.len() > lienthong_proto::fields::MAX_FORMATS {
                return Err(StoreError::Conflict(format!(
                    "at most {} data-subject formats",
                    lienthong_proto::fields::MAX_FORMATS
                )));
            }
            for (name, mask) in formats {
                lienthong_proto::fields::DataSubjectFormat::new(name, mask)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
            }
            let value: Vec<String> = formats.iter().map(|(n, m)| format!("{n}={m}")).collect();
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('data_subject_formats', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[P::from(&value.join("\n"))],
            )?;
        }
        Change::AddTrustedCa { der } => {
            let fp = Fingerprint::of(der);
            let n = tx.execute(
                "INSERT INTO trusted_cas (fingerprint, der) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[P::from(&fp.0.as_slice()), P::from(der)],
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
                "INSERT INTO enrollment_tokens (hash, server, expires_at) VALUES ($1, $2, $3)",
                &[
                    P::from(&token_hash.as_slice()),
                    P::from(&server.to_string()),
                    P::from(expires_at_ms),
                ],
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
                "UPDATE requests SET state = $2, decided_at = $3, note = $4 WHERE id = $1",
                &[
                    P::from(&(req.id as i64)),
                    P::from(&RequestState::Rejected.code()),
                    P::from(&now_ms()),
                    P::from(note),
                ],
            )?;
        }
        Change::AddOperator {
            name,
            role,
            token_hash,
        } => {
            require_absent(tx, "operators", name, "operator")?;
            tx.execute(
                "INSERT INTO operators (name, role, token_hash) VALUES ($1, $2, $3)",
                &[
                    P::from(name),
                    P::from(&role.as_str()),
                    P::from(&token_hash.as_slice()),
                ],
            )?;
        }
    }
    Ok(None)
}

fn require_absent(tx: &mut dyn Sql, table: &str, key: &str, what: &str) -> Result<(), StoreError> {
    let col = if table == "operators" { "name" } else { "id" };
    if tx.exists(
        &format!("SELECT 1 FROM {table} WHERE {col} = $1"),
        &[P::from(key)],
    )? {
        return Err(StoreError::Duplicate(format!("{what} {key}")));
    }
    Ok(())
}

fn require_member(tx: &mut dyn Sql, id: &MemberId) -> Result<(), StoreError> {
    let key = id.to_string();
    if !tx.exists("SELECT 1 FROM members WHERE id = $1", &[P::from(&key)])? {
        return Err(StoreError::Missing(format!("member {key} does not exist")));
    }
    Ok(())
}

fn require_subsystem(tx: &mut dyn Sql, id: &SubsystemId) -> Result<(), StoreError> {
    let key = id.to_string();
    if !tx.exists("SELECT 1 FROM subsystems WHERE id = $1", &[P::from(&key)])? {
        return Err(StoreError::Missing(format!(
            "subsystem {key} does not exist"
        )));
    }
    Ok(())
}

fn require_server(tx: &mut dyn Sql, id: &ServerId) -> Result<(), StoreError> {
    let key = id.to_string();
    if !tx.exists("SELECT 1 FROM servers WHERE id = $1", &[P::from(&key)])? {
        return Err(StoreError::Missing(format!(
            "security server {key} is not registered"
        )));
    }
    Ok(())
}

fn require_group(tx: &mut dyn Sql, key: &str) -> Result<(), StoreError> {
    if !tx.exists("SELECT 1 FROM global_groups WHERE id = $1", &[P::from(key)])? {
        return Err(StoreError::Missing(format!(
            "global group {key} does not exist"
        )));
    }
    Ok(())
}

fn revoke(tx: &mut dyn Sql, fp: &Fingerprint, reason: &str) -> Result<(), StoreError> {
    let revoked = tx
        .query_opt(
            "SELECT revoked_at FROM certificates WHERE fingerprint = $1",
            &[P::from(&fp.0.as_slice())],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?;
    match revoked {
        Some(Some(_)) => Err(StoreError::Conflict(format!(
            "certificate {fp} is already revoked"
        ))),
        Some(None) => {
            tx.execute(
                "UPDATE certificates SET revoked_at = $2, revoke_reason = $3 WHERE fingerprint = $1",
                &[P::from(&fp.0.as_slice()), P::from(&now_ms()), P::from(&reason)],
            )?;
            Ok(())
        }
        None => {
            // Not issued here: a certificate of an external CA.
            let n = tx.execute(
                "INSERT INTO revoked_external (fingerprint, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[P::from(&fp.0.as_slice()), P::from(&reason)],
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

/// Refuses a key that already has (or had) a certificate, or that a pending
/// request already asks a certificate for: a revoked key must never come
/// back, and one key per certificate keeps revocation exact.
fn require_unrequested_key(tx: &mut dyn Sql, public_key: &[u8]) -> Result<(), StoreError> {
    require_fresh_key(tx, public_key)?;
    let pending = tx
        .query_opt(
            "SELECT r.id FROM request_csrs c JOIN requests r ON r.id = c.request_id
             WHERE c.public_key = $1 AND r.state = $2 LIMIT 1",
            &[P::from(&public_key), P::from(&RequestState::Pending.code())],
        )?
        .map(|r| r.int(0))
        .transpose()?;
    match pending {
        Some(id) => Err(StoreError::Conflict(format!(
            "the key of this CSR is already in pending request {id}; one key, one certificate: generate a new key"
        ))),
        None => Ok(()),
    }
}

/// Refuses a key that already has (or had) a certificate.
fn require_fresh_key(tx: &mut dyn Sql, public_key: &[u8]) -> Result<(), StoreError> {
    let revoked = tx
        .query_opt(
            "SELECT revoked_at FROM certificates WHERE public_key = $1
             ORDER BY revoked_at IS NULL LIMIT 1",
            &[P::from(&public_key)],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?;
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

fn submit(tx: &mut dyn Sql, req: &NewRequest) -> Result<u64, StoreError> {
    let keys: Vec<&[u8]> = req
        .auth_csr
        .iter()
        .chain(&req.signing_csrs)
        .map(|c| c.public_key.as_slice())
        .collect();
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].contains(key) {
            return Err(StoreError::Conflict(
                "the request uses one key for two certificates; one key, one certificate: generate a key for each".into(),
            ));
        }
        require_unrequested_key(tx, key)?;
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
            let taken = tx.query_opt(
                "SELECT 1 FROM server_clients WHERE server = $1 AND subsystem = $2",
                &[P::from(&req.server.to_string()), P::from(&sub.to_string())],
            )?;
            if taken.is_some() {
                return Err(StoreError::Duplicate(format!(
                    "client {sub} on server {}",
                    req.server
                )));
            }
        }
        RequestKind::AddressChange | RequestKind::ServerRemoval => require_server(tx, &req.server)?,
    }
    let id = tx
        .query_one(
            "INSERT INTO requests (kind, server, subsystem, address, token_hash, state, submitted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[
                P::from(&req.kind.code()),
                P::from(&req.server.to_string()),
                P::from(&req.subsystem.as_ref().map(|s| s.to_string())),
                P::from(&req.address),
                P::from(&req.enrollment_token.as_ref().map(|t| t.as_slice())),
                P::from(&RequestState::Pending.code()),
                P::from(&now_ms()),
            ],
        )?
        .int(0)? as u64;
    if let Some(token) = &req.enrollment_token {
        consume_token(tx, token, &req.server, id)?;
    }
    let csrs = req.auth_csr.iter().chain(&req.signing_csrs);
    for (pos, csr) in csrs.enumerate() {
        tx.execute(
            "INSERT INTO request_csrs (request_id, position, is_auth, member, csr, public_key, consent_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                P::from(&(id as i64)),
                P::from(&(pos as i64)),
                P::from(&csr.member.is_none()),
                P::from(&csr.member.as_ref().map(|m| m.to_string())),
                P::from(&csr.csr),
                P::from(&csr.public_key),
                P::from(&csr.consent.as_ref().map(|f| f.0.to_vec())),
            ],
        )?;
    }
    Ok(id)
}

fn consume_token(
    tx: &mut dyn Sql,
    hash: &[u8; 32],
    server: &ServerId,
    request: u64,
) -> Result<(), StoreError> {
    let n = tx.execute(
        "UPDATE enrollment_tokens SET used_by_request = $4
         WHERE hash = $1 AND server = $2 AND expires_at > $3 AND used_by_request IS NULL",
        &[
            P::from(&hash.as_slice()),
            P::from(&server.to_string()),
            P::from(&now_ms()),
            P::from(&(request as i64)),
        ],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "the enrollment token is not valid for {server} (unknown, expired, already used, or issued for another server)"
        )));
    }
    Ok(())
}

pub(super) fn pending_request(tx: &mut dyn Sql, id: u64) -> Result<StoredRequest, StoreError> {
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

fn approve(tx: &mut dyn Sql, id: u64, note: &str, issued: &Issued) -> Result<(), StoreError> {
    let stored = pending_request(tx, id)?;
    let req = &stored.request;
    let server = req.server.to_string();
    match req.kind {
        RequestKind::AuthCertificate => {
            let address = req.address.clone().unwrap_or_default();
            tx.execute(
                "INSERT INTO servers (id, owner, address) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address",
                &[
                    P::from(&server),
                    P::from(&req.server.owner.to_string()),
                    P::from(&address),
                ],
            )?;
        }
        RequestKind::Client => {
            require_server(tx, &req.server)?;
            let sub = req.subsystem.as_ref().map(|s| s.to_string());
            let n = tx.execute(
                "INSERT INTO server_clients (server, subsystem) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[P::from(&server), P::from(&sub)],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "the client is already registered on {server}"
                )));
            }
        }
        RequestKind::AddressChange => {
            require_server(tx, &req.server)?;
            tx.execute(
                "UPDATE servers SET address = $2 WHERE id = $1",
                &[P::from(&server), P::from(&req.address)],
            )?;
        }
        RequestKind::ServerRemoval => {
            require_server(tx, &req.server)?;
            let reason = format!("server removed by request {id}");
            tx.execute(
                "UPDATE certificates SET revoked_at = $2, revoke_reason = $3
                 WHERE revoked_at IS NULL AND (auth_server = $1 OR request_id IN
                    (SELECT id FROM requests WHERE server = $1))",
                &[P::from(&server), P::from(&now_ms()), P::from(&reason)],
            )?;
            tx.execute("DELETE FROM servers WHERE id = $1", &[P::from(&server)])?;
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
        "UPDATE requests SET state = $2, decided_at = $3, note = $4 WHERE id = $1",
        &[
            P::from(&(id as i64)),
            P::from(&RequestState::Approved.code()),
            P::from(&now_ms()),
            P::from(&note),
        ],
    )?;
    Ok(())
}

fn insert_cert(
    tx: &mut dyn Sql,
    cert: &IssuedCert,
    auth_server: Option<&str>,
    signing_member: Option<&str>,
    request: u64,
    position: i64,
) -> Result<(), StoreError> {
    // The unique index on the key enforces this too; the check names it.
    require_fresh_key(tx, &cert.public_key)?;
    tx.execute(
        "INSERT INTO certificates (fingerprint, der, public_key, auth_server, signing_member, request_id, position)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            P::from(&Fingerprint::of(&cert.der).0.as_slice()),
            P::from(&cert.der),
            P::from(&cert.public_key),
            P::from(&auth_server),
            P::from(&signing_member),
            P::from(&(request as i64)),
            P::from(&position),
        ],
    )?;
    Ok(())
}
