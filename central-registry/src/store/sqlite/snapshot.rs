//! Reading everything a configuration is built from, in one transaction.

use rusqlite::Connection;

use super::{fingerprint, parse, setting};
use crate::model::*;
use crate::store::StoreError;

pub(super) fn read_snapshot(tx: &Connection) -> Result<Snapshot, StoreError> {
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
    let mut stmt = tx.prepare("SELECT id, description, personal_data FROM services ORDER BY id")?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })? {
        let (id, description, personal_data) = row?;
        services.push(SnapshotService {
            id: parse("service id", &id)?,
            description,
            personal_data,
        });
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

    let mut withholding_grants = Vec::new();
    let mut stmt = tx.prepare(
        "SELECT grp, max_duration_ms, valid_from, valid_until FROM withholding_grants ORDER BY id",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })? {
        let (group, max_duration_ms, valid_from_ms, valid_until_ms) = row?;
        withholding_grants.push(WithholdingGrant {
            group: parse("withholding group", &group)?,
            max_duration_ms,
            valid_from_ms,
            valid_until_ms,
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
        seq,
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
