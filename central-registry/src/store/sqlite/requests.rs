//! Reading a registration request with its CSRs and issued certificates.

use rusqlite::{Connection, OptionalExtension};

use super::parse;
use crate::model::*;
use crate::store::StoreError;

pub(super) fn load_request(
    conn: &Connection,
    id: u64,
) -> Result<Option<StoredRequest>, StoreError> {
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
        "SELECT is_auth, member, csr, public_key, consent_by FROM request_csrs
         WHERE request_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([id as i64], |r| {
        Ok((
            r.get::<_, bool>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Vec<u8>>(3)?,
            r.get::<_, Option<Vec<u8>>>(4)?,
        ))
    })?;
    for row in rows {
        let (is_auth, member, csr, public_key, consent) = row?;
        let member = member.map(|m| parse("member id", &m)).transpose()?;
        let consent = consent.as_deref().map(super::fingerprint).transpose()?;
        let c = CsrFor {
            csr,
            public_key,
            member,
            consent,
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
