//! Reading everything a configuration is built from, in one transaction
//! (on PostgreSQL `REPEATABLE READ`: one consistent view, whatever other
//! nodes write), for both backends ([`Sql`]).

use std::collections::HashMap;

use super::StoreError;
use super::sql::{Param as P, Sql};
use super::sqlite::{fingerprint, parse};
use crate::model::*;

fn pairs(tx: &mut dyn Sql, sql: &str) -> Result<Vec<(String, String)>, StoreError> {
    tx.query(sql, &[])?
        .iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?)))
        .collect()
}

/// A setting's value, if it is set.
pub(super) fn setting(tx: &mut dyn Sql, key: &str) -> Result<Option<String>, StoreError> {
    tx.query_opt("SELECT value FROM settings WHERE key = $1", &[P::from(key)])?
        .map(|r| r.text(0))
        .transpose()
}

pub(super) fn read_snapshot(tx: &mut dyn Sql) -> Result<Snapshot, StoreError> {
    let seq = tx
        .query_one("SELECT value FROM meta WHERE key = 'change_seq'", &[])?
        .int(0)?;

    let mut members = Vec::new();
    let mut member_index: HashMap<String, usize> = HashMap::new();
    for (id, name) in pairs(tx, "SELECT id, name FROM members ORDER BY id")? {
        member_index.insert(id.clone(), members.len());
        members.push(SnapshotMember {
            id: parse("member id", &id)?,
            name,
            subsystems: Vec::new(),
            signing_certs: Vec::new(),
        });
    }
    for (member, code) in pairs(tx, "SELECT member, code FROM subsystems ORDER BY id")? {
        if let Some(&i) = member_index.get(&member) {
            members[i].subsystems.push(code);
        }
    }
    for r in tx.query(
        "SELECT signing_member, der FROM certificates
         WHERE signing_member IS NOT NULL AND revoked_at IS NULL ORDER BY request_id, position",
        &[],
    )? {
        if let Some(&i) = member_index.get(&r.text(0)?) {
            members[i].signing_certs.push(r.bytes(1)?);
        }
    }

    let mut servers = Vec::new();
    let mut server_index: HashMap<String, usize> = HashMap::new();
    for (id, address) in pairs(tx, "SELECT id, address FROM servers ORDER BY id")? {
        server_index.insert(id.clone(), servers.len());
        servers.push(SnapshotServer {
            id: parse("server id", &id)?,
            address,
            auth_certs: Vec::new(),
            clients: Vec::new(),
        });
    }
    for r in tx.query(
        "SELECT auth_server, fingerprint FROM certificates
         WHERE auth_server IS NOT NULL AND revoked_at IS NULL ORDER BY request_id",
        &[],
    )? {
        if let Some(&i) = server_index.get(&r.text(0)?) {
            servers[i].auth_certs.push(fingerprint(&r.bytes(1)?)?);
        }
    }
    for (server, sub) in pairs(
        tx,
        "SELECT server, subsystem FROM server_clients ORDER BY server, subsystem",
    )? {
        if let Some(&i) = server_index.get(&server) {
            servers[i].clients.push(parse("subsystem id", &sub)?);
        }
    }

    let mut services = Vec::new();
    for r in tx.query(
        "SELECT id, description, personal_data, descriptor_sha256 FROM services ORDER BY id",
        &[],
    )? {
        let descriptor_sha256 = match r.opt_bytes(3)? {
            Some(d) => Some(<[u8; 32]>::try_from(d.as_slice()).map_err(|_| {
                StoreError::Internal(format!("a descriptor digest of {} bytes", d.len()))
            })?),
            None => None,
        };
        services.push(SnapshotService {
            id: parse("service id", &r.text(0)?)?,
            description: r.text(1)?,
            personal_data: r.bool(2)?,
            descriptor_sha256,
        });
    }

    let mut groups = Vec::new();
    let mut group_index: HashMap<String, usize> = HashMap::new();
    for (id, description) in pairs(tx, "SELECT id, description FROM global_groups ORDER BY id")? {
        group_index.insert(id.clone(), groups.len());
        groups.push(SnapshotGroup {
            id: parse("global group id", &id)?,
            description,
            members: Vec::new(),
        });
    }
    for (grp, sub) in pairs(
        tx,
        "SELECT grp, subsystem FROM group_members ORDER BY grp, subsystem",
    )? {
        if let Some(&i) = group_index.get(&grp) {
            groups[i].members.push(parse("subsystem id", &sub)?);
        }
    }

    let trusted_cas = tx
        .query("SELECT der FROM trusted_cas ORDER BY fingerprint", &[])?
        .iter()
        .map(|r| r.bytes(0))
        .collect::<Result<_, _>>()?;

    let mut revoked = Vec::new();
    for r in tx.query(
        "SELECT fingerprint FROM certificates WHERE revoked_at IS NOT NULL
         UNION SELECT fingerprint FROM revoked_external ORDER BY 1",
        &[],
    )? {
        revoked.push(fingerprint(&r.bytes(0)?)?);
    }

    let trace_portal = setting(tx, "trace_portal")?
        .map(|p| parse("trace portal", &p))
        .transpose()?;

    let mut withholding_grants = Vec::new();
    for r in tx.query(
        "SELECT grp, max_duration_ms, valid_from, valid_until FROM withholding_grants ORDER BY id",
        &[],
    )? {
        withholding_grants.push(WithholdingGrant {
            group: parse("withholding group", &r.text(0)?)?,
            max_duration_ms: r.int(1)?,
            valid_from_ms: r.int(2)?,
            valid_until_ms: r.opt_int(3)?,
        });
    }

    let data_subject_formats = setting(tx, "data_subject_formats")?
        .map(|v| {
            v.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(n, m)| (n.to_owned(), m.to_owned()))
                .collect()
        })
        .unwrap_or_default();

    Ok(Snapshot {
        seq: seq as u64,
        members,
        servers,
        services,
        groups,
        trusted_cas,
        revoked,
        trace_portal,
        withholding_grants,
        data_subject_formats,
    })
}
