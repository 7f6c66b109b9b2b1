//! Reading a registration request with its CSRs and issued certificates
//! (both backends, [`Sql`]).

use super::StoreError;
use super::sql::{Param as P, Sql};
use super::sqlite::{fingerprint, parse};
use crate::model::*;

pub(super) fn load_request(tx: &mut dyn Sql, id: u64) -> Result<Option<StoredRequest>, StoreError> {
    let key = [P::from(id as i64)];
    let Some(row) = tx.query_opt(
        "SELECT kind, server, subsystem, address, token_hash, state, submitted_at, note
         FROM requests WHERE id = $1",
        &key,
    )?
    else {
        return Ok(None);
    };
    let bad = |what: &str| StoreError::Internal(format!("request {id} has an unknown {what}"));
    let mut auth_csr = None;
    let mut signing_csrs = Vec::new();
    for r in tx.query(
        "SELECT is_auth, member, csr, public_key, consent_by FROM request_csrs
         WHERE request_id = $1 ORDER BY position",
        &key,
    )? {
        let c = CsrFor {
            csr: r.bytes(2)?,
            public_key: r.bytes(3)?,
            member: r.opt_text(1)?.map(|m| parse("member id", &m)).transpose()?,
            consent: r.opt_bytes(4)?.as_deref().map(fingerprint).transpose()?,
        };
        if r.bool(0)? {
            auth_csr = Some(c);
        } else {
            signing_csrs.push(c);
        }
    }
    let mut issued_auth = None;
    let mut issued_signing = Vec::new();
    for r in tx.query(
        "SELECT der, auth_server IS NOT NULL FROM certificates WHERE request_id = $1 ORDER BY position",
        &key,
    )? {
        if r.bool(1)? {
            issued_auth = Some(r.bytes(0)?);
        } else {
            issued_signing.push(r.bytes(0)?);
        }
    }
    Ok(Some(StoredRequest {
        id,
        request: NewRequest {
            kind: RequestKind::from_code(row.int(0)?).ok_or_else(|| bad("kind"))?,
            server: parse("server id", &row.text(1)?)?,
            subsystem: row
                .opt_text(2)?
                .map(|s| parse("subsystem id", &s))
                .transpose()?,
            address: row.opt_text(3)?,
            auth_csr,
            signing_csrs,
            enrollment_token: row.opt_bytes(4)?.and_then(|t| t.try_into().ok()),
        },
        state: RequestState::from_code(row.int(5)?).ok_or_else(|| bad("state"))?,
        submitted_at_ms: row.int(6)?,
        decision_note: row.text(7)?,
        issued_auth,
        issued_signing,
    }))
}
