//! Reading a registration request with its CSRs and issued certificates.

use super::{Tx, parse};
use crate::model::*;
use crate::store::StoreError;

pub(super) fn load_request(tx: &mut Tx<'_>, id: u64) -> Result<Option<StoredRequest>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT kind, server, subsystem, address, token_hash, state, submitted_at, note
         FROM requests WHERE id = $1",
        &[&(id as i64)],
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
        &[&(id as i64)],
    )? {
        let member = r
            .get::<_, Option<String>>(1)
            .map(|m| parse("member id", &m))
            .transpose()?;
        let consent = r
            .get::<_, Option<Vec<u8>>>(4)
            .as_deref()
            .map(crate::store::sqlite::fingerprint)
            .transpose()?;
        let c = CsrFor {
            csr: r.get(2),
            public_key: r.get(3),
            member,
            consent,
        };
        if r.get::<_, bool>(0) {
            auth_csr = Some(c);
        } else {
            signing_csrs.push(c);
        }
    }
    let mut issued_auth = None;
    let mut issued_signing = Vec::new();
    for r in tx.query(
        "SELECT der, auth_server IS NOT NULL FROM certificates WHERE request_id = $1 ORDER BY position",
        &[&(id as i64)],
    )? {
        if r.get::<_, bool>(1) {
            issued_auth = Some(r.get(0));
        } else {
            issued_signing.push(r.get(0));
        }
    }
    let token: Option<Vec<u8>> = row.get(4);
    Ok(Some(StoredRequest {
        id,
        request: NewRequest {
            kind: RequestKind::from_code(row.get(0)).ok_or_else(|| bad("kind"))?,
            server: parse("server id", &row.get::<_, String>(1))?,
            subsystem: row
                .get::<_, Option<String>>(2)
                .map(|s| parse("subsystem id", &s))
                .transpose()?,
            address: row.get(3),
            auth_csr,
            signing_csrs,
            enrollment_token: token.and_then(|t| t.try_into().ok()),
        },
        state: RequestState::from_code(row.get(5)).ok_or_else(|| bad("state"))?,
        submitted_at_ms: row.get(6),
        decision_note: row.get(7),
        issued_auth,
        issued_signing,
    }))
}
