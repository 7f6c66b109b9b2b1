//! The [`Store`] written once: a backend provides transactions and its
//! clock ([`Backend`]); every operation is the same SQL on either, inside
//! the transaction the backend opens (see `sql.rs` for what that SQL may
//! use).

use std::time::Duration;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{MemberId, ServerId};

use super::changes::apply_one;
use super::requests::load_request;
use super::snapshot::{read_snapshot, setting};
use super::sql::{Param as P, Sql};
use super::sqlite::{fingerprint, parse};
use super::{
    KEPT, KEPT_WITH_BYTES, KeyFingerprint, PublicationRecord, Store, StoreError, StoredPublication,
    key_mismatch, publication_refused,
};
use crate::model::*;
use crate::witness::{History, Submitted, Verdict};

/// What a backend provides: transactions of three kinds, and its clock.
pub(super) trait Backend: std::fmt::Debug + Send + Sync + 'static {
    /// A consistent read.
    fn read<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
    /// A write that nothing else runs beside: checks made in it still hold
    /// when it commits (SQLite: an immediate transaction; PostgreSQL: the
    /// write lock).
    fn write<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
    /// A write that checks nothing (an insert into a log).
    fn append<T>(
        &self,
        f: impl FnOnce(&mut dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
    /// Now, in milliseconds since the epoch, on the store's clock: nodes
    /// sharing a database judge the publisher lease by the same clock.
    fn now_ms(&self, tx: &mut dyn Sql) -> Result<i64, StoreError>;
    /// The schema version the store is at now.
    fn schema_version(&self) -> Result<i64, StoreError>;
}

/// Writes the instance settings (at creation).
pub(super) fn write_settings(tx: &mut dyn Sql, s: &InstanceSettings) -> Result<(), StoreError> {
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
            "INSERT INTO settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[k.into(), (&v).into()],
        )?;
    }
    Ok(())
}

fn insert_audit(
    tx: &mut dyn Sql,
    actor: &str,
    action: &str,
    detail: &str,
    result: &str,
) -> Result<u64, StoreError> {
    let id = tx
        .query_one(
            "INSERT INTO audit (at, actor, action, detail, result) VALUES ($1, $2, $3, $4, $5)
             RETURNING id",
            &[
                super::now_ms().into(),
                actor.into(),
                action.into(),
                detail.into(),
                result.into(),
            ],
        )?
        .int(0)?;
    Ok(id as u64)
}

fn insert_alarm(tx: &mut dyn Sql, server: &str, reason: &str) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO alarms (server, at, reason) VALUES ($1, $2, $3)",
        &[server.into(), super::now_ms().into(), reason.into()],
    )?;
    Ok(())
}

/// A server's witnessed checkpoint of `size` (the latest when `None`), with
/// the server's signature over it.
fn read_checkpoint(
    tx: &mut dyn Sql,
    server: &str,
    size: Option<u64>,
) -> Result<Option<(WitnessedCheckpoint, Vec<u8>)>, StoreError> {
    let row = match size.map(i64::try_from) {
        Some(Err(_)) => return Ok(None),
        Some(Ok(size)) => tx.query_opt(
            "SELECT tree_size, root, created_at, signature FROM checkpoints
             WHERE server = $1 AND tree_size = $2",
            &[server.into(), size.into()],
        )?,
        None => tx.query_opt(
            "SELECT tree_size, root, created_at, signature FROM checkpoints
             WHERE server = $1 ORDER BY tree_size DESC LIMIT 1",
            &[server.into()],
        )?,
    };
    row.map(|r| {
        Ok((
            WitnessedCheckpoint {
                tree_size: u64::try_from(r.int(0)?)
                    .map_err(|_| StoreError::Internal("stored tree size is negative".into()))?,
                root: r
                    .bytes(1)?
                    .try_into()
                    .map_err(|_| StoreError::Internal("stored root is not 32 bytes".into()))?,
                created_at_ms: r.int(2)?,
            },
            r.bytes(3)?,
        ))
    })
    .transpose()
}

fn exists(tx: &mut dyn Sql, sql: &str, key: &str) -> Result<bool, StoreError> {
    tx.exists(sql, &[key.into()])
}

// === impl Store ===

impl<B: Backend> Store for B {
    fn settings(&self) -> Result<InstanceSettings, StoreError> {
        self.read(|tx| {
            let mut get = |k: &str| -> Result<String, StoreError> {
                setting(tx, k)?.ok_or_else(|| {
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
        })
    }

    fn apply_all(&self, actor: &str, changes: &[Change]) -> Result<Vec<Applied>, StoreError> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(changes.len());
            for change in changes {
                let request_id = apply_one(tx, change)?;
                let seq = tx
                    .query_one(
                        "UPDATE meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value",
                        &[],
                    )?
                    .int(0)?;
                let audit_id = insert_audit(tx, actor, change.action(), &change.to_string(), "ok")?;
                out.push(Applied {
                    audit_id,
                    seq: seq as u64,
                    request_id,
                });
            }
            Ok(out)
        })
    }

    fn record_refusal(
        &self,
        actor: &str,
        action: &str,
        detail: &str,
        error: &str,
    ) -> Result<u64, StoreError> {
        self.append(|tx| insert_audit(tx, actor, action, detail, error))
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.read(read_snapshot)
    }

    fn seq(&self) -> Result<u64, StoreError> {
        self.read(|tx| {
            let v = tx
                .query_one("SELECT value FROM meta WHERE key = 'change_seq'", &[])?
                .int(0)?;
            Ok(v as u64)
        })
    }

    fn request(&self, id: u64) -> Result<Option<StoredRequest>, StoreError> {
        self.read(|tx| load_request(tx, id))
    }

    fn requests(&self, state: Option<RequestState>) -> Result<Vec<StoredRequest>, StoreError> {
        self.read(|tx| {
            let ids = tx.query(
                "SELECT id FROM requests WHERE $2 OR state = $1 ORDER BY id LIMIT 10000",
                &[
                    P::Int(state.map(RequestState::code)),
                    state.is_none().into(),
                ],
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(r) = load_request(tx, id.int(0)? as u64)? {
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let as_person = f.actor.as_ref().map(|a| format!("{a} (via "));
        let via = f.actor.as_ref().map(|a| format!(" (via {a})"));
        self.read(|tx| {
            tx.query(
                // The actor, or a person acting with the actor's token
                // ("person (via actor)"), or the actor as that person.
                "SELECT id, at, actor, action, detail, result FROM audit
                 WHERE at >= $1 AND at < $2 AND ($5 OR actor = $3
                   OR substr(actor, 1, length(CAST($6 AS TEXT))) = CAST($6 AS TEXT)
                   OR substr(actor, length(actor) - length(CAST($7 AS TEXT)) + 1) = CAST($7 AS TEXT))
                 ORDER BY id LIMIT $4",
                &[
                    f.since_ms.unwrap_or(0).into(),
                    f.until_ms.unwrap_or(i64::MAX).into(),
                    P::Text(f.actor.as_deref()),
                    (f.limit as i64).into(),
                    f.actor.is_none().into(),
                    P::Text(as_person.as_deref()),
                    P::Text(via.as_deref()),
                ],
            )?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.int(0)? as u64,
                    at_ms: r.int(1)?,
                    actor: r.text(2)?,
                    action: r.text(3)?,
                    detail: r.text(4)?,
                    result: r.text(5)?,
                })
            })
            .collect()
        })
    }

    fn operator_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<Operator>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT name, role FROM operators WHERE token_hash = $1",
                &[token_hash.as_slice().into()],
            )?
            .map(|r| {
                Ok(Operator {
                    name: r.text(0)?,
                    role: r.text(1)?.parse().map_err(|e: crate::model::UnknownRole| {
                        StoreError::Internal(e.to_string())
                    })?,
                })
            })
            .transpose()
        })
    }

    fn enrollment(&self, token_hash: &[u8; 32]) -> Result<Option<Enrollment>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT server, expires_at, used_by_request FROM enrollment_tokens WHERE hash = $1",
                &[token_hash.as_slice().into()],
            )?
            .map(|r| {
                Ok(Enrollment {
                    server: parse("server id", &r.text(0)?)?,
                    expires_at_ms: r.int(1)?,
                    used_by_request: r.opt_int(2)?.map(|u| u as u64),
                })
            })
            .transpose()
        })
    }

    fn usable_enrollments(&self, now_ms: i64) -> Result<Vec<Enrollment>, StoreError> {
        self.read(|tx| {
            tx.query(
                "SELECT server, expires_at FROM enrollment_tokens
                 WHERE expires_at > $1 AND used_by_request IS NULL
                 ORDER BY expires_at LIMIT 1000",
                &[P::from(&now_ms)],
            )?
            .iter()
            .map(|r| {
                Ok(Enrollment {
                    server: parse("server id", &r.text(0)?)?,
                    expires_at_ms: r.int(1)?,
                    used_by_request: None,
                })
            })
            .collect()
        })
    }

    fn certificate(&self, fp: &Fingerprint) -> Result<Option<StoredCert>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT der, auth_server, signing_member, revoked_at IS NOT NULL
                 FROM certificates WHERE fingerprint = $1",
                &[fp.0.as_slice().into()],
            )?
            .map(|r| {
                Ok(StoredCert {
                    fingerprint: *fp,
                    der: r.bytes(0)?,
                    auth_server: r.opt_text(1)?.map(|s| parse("server id", &s)).transpose()?,
                    signing_member: r.opt_text(2)?.map(|m| parse("member id", &m)).transpose()?,
                    revoked: r.bool(3)?,
                })
            })
            .transpose()
        })
    }

    fn member_exists(&self, id: &MemberId) -> Result<bool, StoreError> {
        self.read(|tx| exists(tx, "SELECT 1 FROM members WHERE id = $1", &id.to_string()))
    }

    fn server_exists(&self, id: &ServerId) -> Result<bool, StoreError> {
        self.read(|tx| exists(tx, "SELECT 1 FROM servers WHERE id = $1", &id.to_string()))
    }

    fn descriptor_set(&self, sha256: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT bytes FROM descriptor_sets WHERE sha256 = $1",
                &[sha256.as_slice().into()],
            )?
            .map(|r| r.bytes(0))
            .transpose()
        })
    }

    fn last_publication(&self) -> Result<Option<PublicationRecord>, StoreError> {
        self.read(|tx| {
            tx.query_opt(
                "SELECT version, created_at, seq FROM publications ORDER BY version DESC LIMIT 1",
                &[],
            )?
            .map(|r| {
                Ok(PublicationRecord {
                    version: r.int(0)? as u64,
                    created_at_ms: r.int(1)?,
                    seq: r.int(2)? as u64,
                })
            })
            .transpose()
        })
    }

    fn publication_after(&self, version: u64) -> Result<Option<StoredPublication>, StoreError> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        self.read(|tx| {
            // The newest only: a node that fell behind skips to it.
            tx.query_opt(
                "SELECT version, created_at, seq, signed FROM publications
                 WHERE version = (SELECT max(version) FROM publications)
                   AND version > $1 AND signed IS NOT NULL",
                &[version.into()],
            )?
            .map(|r| {
                Ok(StoredPublication {
                    record: PublicationRecord {
                        version: r.int(0)? as u64,
                        created_at_ms: r.int(1)?,
                        seq: r.int(2)? as u64,
                    },
                    signed: r.bytes(3)?,
                })
            })
            .transpose()
        })
    }

    fn record_publication(
        &self,
        node: &str,
        p: &PublicationRecord,
        signed: &[u8],
    ) -> Result<(), StoreError> {
        // A write: the lease cannot move (take_lease writes too) before
        // the version is committed.
        self.write(|tx| {
            let now = self.now_ms(tx)?;
            let leads = tx.exists(
                "SELECT 1 FROM publisher_lease WHERE id = 1 AND node = $1 AND expires_at > $2",
                &[node.into(), now.into()],
            )?;
            let last = tx
                .query_one("SELECT max(version) FROM publications", &[])?
                .opt_int(0)?;
            if let Some(refused) =
                publication_refused(node, p.version, leads, last.map(|l| l as u64))
            {
                return Err(refused);
            }
            let version = i64::try_from(p.version).map_err(|_| {
                StoreError::Conflict(format!("version {} is beyond the store", p.version))
            })?;
            tx.execute(
                "INSERT INTO publications (version, created_at, seq, signed) VALUES ($1, $2, $3, $4)",
                &[
                    version.into(),
                    p.created_at_ms.into(),
                    (p.seq as i64).into(),
                    signed.into(),
                ],
            )?;
            tx.execute(
                "UPDATE publications SET signed = NULL WHERE version < $1 AND signed IS NOT NULL",
                &[(version - KEPT_WITH_BYTES).into()],
            )?;
            tx.execute(
                "DELETE FROM publications WHERE version < $1",
                &[(version - KEPT).into()],
            )?;
            Ok(())
        })
    }

    fn raise_version_floor(&self, actor: &str, next: u64) -> Result<u64, StoreError> {
        let floor = i64::try_from(next)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| StoreError::Conflict(format!("{next} is not a version")))?;
        self.write(|tx| {
            let last = tx
                .query_one("SELECT max(version) FROM publications", &[])?
                .opt_int(0)?
                .unwrap_or(0);
            if floor <= last + 1 {
                return Ok(last as u64 + 1);
            }
            // A change: the publisher sees the store move and publishes.
            let seq = tx
                .query_one(
                    "UPDATE meta SET value = value + 1 WHERE key = 'change_seq' RETURNING value",
                    &[],
                )?
                .int(0)?;
            tx.execute(
                "INSERT INTO publications (version, created_at, seq, signed) VALUES ($1, $2, $3, NULL)",
                &[(floor - 1).into(), super::now_ms().into(), seq.into()],
            )?;
            insert_audit(
                tx,
                actor,
                "RaiseVersionFloor",
                &format!("next configuration version {floor} (the last was {last})"),
                "ok",
            )?;
            Ok(next)
        })
    }

    fn schema_is_known(&self) -> Result<(), StoreError> {
        super::schema::check(self.schema_version()?)?;
        Ok(())
    }

    fn take_lease(&self, node: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        self.write(|tx| {
            let now = self.now_ms(tx)?;
            tx.exists(
                "INSERT INTO publisher_lease (id, node, expires_at) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO UPDATE
                    SET node = excluded.node, expires_at = excluded.expires_at
                 WHERE publisher_lease.node = excluded.node
                    OR publisher_lease.expires_at <= $3
                 RETURNING node",
                &[node.into(), now.saturating_add(ttl).into(), now.into()],
            )
        })
    }

    fn release_lease(&self, node: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM publisher_lease WHERE node = $1",
                &[node.into()],
            )?;
            Ok(())
        })
    }

    fn check_keys(&self, keys: &[KeyFingerprint]) -> Result<(), StoreError> {
        self.write(|tx| {
            for key in keys {
                let recorded = tx
                    .query_opt(
                        "SELECT sha256 FROM registry_keys WHERE purpose = $1",
                        &[key.purpose.into()],
                    )?
                    .map(|r| r.bytes(0))
                    .transpose()?;
                match recorded {
                    Some(r) if r != key.sha256.0 => {
                        return Err(key_mismatch(key, &fingerprint(&r)?));
                    }
                    Some(_) => {}
                    None => {
                        tx.execute(
                            "INSERT INTO registry_keys (purpose, sha256, recorded_at)
                             VALUES ($1, $2, $3)",
                            &[
                                key.purpose.into(),
                                key.sha256.0.as_slice().into(),
                                super::now_ms().into(),
                            ],
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    fn last_checkpoint(
        &self,
        server: &ServerId,
    ) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        self.read(|tx| Ok(read_checkpoint(tx, &server.to_string(), None)?.map(|(c, _)| c)))
    }

    fn witness(
        &self,
        server: &ServerId,
        submitted: &Submitted,
        signature: &[u8],
        judge: &mut dyn FnMut(&History) -> Verdict,
    ) -> Result<(Verdict, History), StoreError> {
        self.write(|tx| {
            let key = server.to_string();
            let last = read_checkpoint(tx, &key, None)?;
            let base = match &last {
                Some((l, _)) if l.tree_size != submitted.proof_from => {
                    read_checkpoint(tx, &key, Some(submitted.proof_from))?.map(|(c, _)| c)
                }
                _ => None,
            };
            let history = History { last, base };
            let verdict = judge(&history);
            match &verdict {
                Verdict::Accept => {
                    let c = &submitted.checkpoint;
                    let size = i64::try_from(c.tree_size).map_err(|_| {
                        StoreError::Conflict(format!(
                            "tree size {} is beyond the store",
                            c.tree_size
                        ))
                    })?;
                    // The same tree again, later: its date moves forward.
                    let n = tx.execute(
                        "INSERT INTO checkpoints (server, tree_size, root, created_at, signature, witnessed_at)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (server, tree_size) DO UPDATE SET
                            created_at = excluded.created_at, signature = excluded.signature,
                            witnessed_at = excluded.witnessed_at
                         WHERE checkpoints.root = excluded.root
                           AND checkpoints.created_at < excluded.created_at",
                        &[
                            (&key).into(),
                            size.into(),
                            c.root.as_slice().into(),
                            c.created_at_ms.into(),
                            signature.into(),
                            super::now_ms().into(),
                        ],
                    )?;
                    if n != 1 {
                        return Err(StoreError::Conflict(format!(
                            "a different checkpoint of {} records is already witnessed",
                            c.tree_size
                        )));
                    }
                }
                Verdict::Alarm(reason) => insert_alarm(tx, &key, reason)?,
                Verdict::Repeat | Verdict::Stale => {}
            }
            Ok((verdict, history))
        })
    }

    fn record_alarm(&self, server: &ServerId, reason: &str) -> Result<(), StoreError> {
        self.append(|tx| insert_alarm(tx, &server.to_string(), reason))
    }

    fn alarms(&self) -> Result<Vec<Alarm>, StoreError> {
        self.read(|tx| {
            tx.query(
                "SELECT server, at, reason FROM alarms ORDER BY id DESC LIMIT 1000",
                &[],
            )?
            .iter()
            .map(|r| {
                Ok(Alarm {
                    server: parse("server id", &r.text(0)?)?,
                    at_ms: r.int(1)?,
                    reason: r.text(2)?,
                })
            })
            .collect()
        })
    }
}
