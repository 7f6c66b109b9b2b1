//! The embedded SQLite backend: one file, WAL journal, `synchronous=FULL`
//! (a registry write is rare and must survive a power cut), foreign keys on.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use lienthong_certs::Fingerprint;
use lienthong_proto::id::{MemberId, ServerId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::changes::apply_one;
use super::requests::load_request;
use super::schema::MIGRATIONS;
use super::snapshot::{read_snapshot, setting};
use super::{KeyFingerprint, PublicationRecord, Store, StoreError, StoredPublication};
use crate::model::*;
use crate::witness::{History, Submitted, Verdict};

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

pub(super) fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| StoreError::Internal(format!("stored {what} {s:?} is unreadable: {e}")))
}

pub(super) fn fingerprint(b: &[u8]) -> Result<Fingerprint, StoreError> {
    Fingerprint::from_slice(b)
        .ok_or_else(|| StoreError::Internal("stored fingerprint is not 32 bytes".into()))
}

pub(super) fn exists(tx: &Connection, sql: &str, key: &str) -> Result<bool, StoreError> {
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
    let found = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
    let applied = usize::try_from(found).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Internal(super::schema::too_new(found)));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sqlite)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "registry store migrated");
    }
    Ok(())
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

fn insert_alarm(conn: &Connection, server: &str, reason: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO alarms (server, at, reason) VALUES (?1, ?2, ?3)",
        params![server, now_ms(), reason],
    )?;
    Ok(())
}

/// A server's witnessed checkpoint of `size` (the latest when `None`), with
/// the server's signature over it.
fn read_checkpoint(
    conn: &Connection,
    server: &str,
    size: Option<u64>,
) -> Result<Option<(WitnessedCheckpoint, Vec<u8>)>, StoreError> {
    let size = match size.map(i64::try_from) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return Ok(None),
        None => None,
    };
    let row = conn
        .query_row(
            "SELECT tree_size, root, created_at, signature FROM checkpoints
             WHERE server = ?1 AND (?2 IS NULL OR tree_size = ?2)
             ORDER BY tree_size DESC LIMIT 1",
            params![server, size],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        )
        .optional()?;
    row.map(|(size, root, created, signature)| {
        Ok((
            WitnessedCheckpoint {
                tree_size: u64::try_from(size)
                    .map_err(|_| StoreError::Internal("stored tree size is negative".into()))?,
                root: root
                    .try_into()
                    .map_err(|_| StoreError::Internal("stored root is not 32 bytes".into()))?,
                created_at_ms: created,
            },
            signature,
        ))
    })
    .transpose()
}

// === impl Store ===

impl Store for SqliteStore {
    fn settings(&self) -> Result<InstanceSettings, StoreError> {
        let mut conn = self.lock();
        let mut get = |k: &str| -> Result<String, StoreError> {
            setting(&mut *conn, k)?.ok_or_else(|| {
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
        // Immediate: another process on the same file (`registry operator
        // add` beside a serving registry) waits for the write lock instead
        // of failing when a read transaction would have to become a write.
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let request_id = apply_one(&mut tx, change)?;
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
        let mut tx = conn.transaction()?;
        let snap = read_snapshot(&mut tx)?;
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
        load_request(&mut *self.lock(), id)
    }

    fn requests(&self, state: Option<RequestState>) -> Result<Vec<StoredRequest>, StoreError> {
        let mut conn = self.lock();
        let ids: Vec<u64> = conn
            .prepare(
                "SELECT id FROM requests WHERE ?1 IS NULL OR state = ?1 ORDER BY id LIMIT 10000",
            )?
            .query_map([state.map(RequestState::code)], |r| r.get::<_, i64>(0))?
            .map(|r| r.map(|v| v as u64))
            .collect::<Result<_, _>>()?;
        ids.into_iter()
            .filter_map(|id| load_request(&mut *conn, id).transpose())
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

    fn publication_after(&self, version: u64) -> Result<Option<StoredPublication>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "SELECT version, created_at, seq, signed FROM publications
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        PublicationRecord {
                            version: r.get::<_, i64>(0)? as u64,
                            created_at_ms: r.get(1)?,
                            seq: r.get::<_, i64>(2)? as u64,
                        },
                        r.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                },
            )
            .optional()?;
        Ok(match row {
            Some((record, Some(signed))) if record.version > version => {
                Some(StoredPublication { record, signed })
            }
            _ => None,
        })
    }

    fn record_publication(
        &self,
        node: &str,
        p: &PublicationRecord,
        signed: &[u8],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let leads = tx
            .query_row(
                "SELECT 1 FROM publisher_lease WHERE id = 1 AND node = ?1 AND expires_at > ?2",
                params![node, now_ms()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        let last: Option<i64> =
            tx.query_row("SELECT max(version) FROM publications", [], |r| r.get(0))?;
        if let Some(refused) =
            super::publication_refused(node, p.version, leads, last.map(|l| l as u64))
        {
            return Err(refused);
        }
        let version = p.version as i64;
        tx.execute(
            "INSERT INTO publications (version, created_at, seq, signed) VALUES (?1, ?2, ?3, ?4)",
            params![version, p.created_at_ms, p.seq as i64, signed],
        )?;
        tx.execute(
            "UPDATE publications SET signed = NULL WHERE version < ?1 AND signed IS NOT NULL",
            [version - super::KEPT_WITH_BYTES],
        )?;
        tx.execute(
            "DELETE FROM publications WHERE version < ?1",
            [version - super::KEPT],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn take_lease(&self, node: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        Ok(self
            .lock()
            .query_row(
                "INSERT INTO publisher_lease (id, node, expires_at) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
                 WHERE publisher_lease.node = excluded.node OR publisher_lease.expires_at <= ?3
                 RETURNING node",
                params![node, until, now],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn release_lease(&self, node: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM publisher_lease WHERE node = ?1", [node])?;
        Ok(())
    }

    fn check_keys(&self, keys: &[KeyFingerprint]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for key in keys {
            let recorded: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT sha256 FROM registry_keys WHERE purpose = ?1",
                    [key.purpose],
                    |r| r.get(0),
                )
                .optional()?;
            match recorded {
                Some(r) if r != key.sha256.0 => {
                    return Err(super::key_mismatch(key, &fingerprint(&r)?));
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO registry_keys (purpose, sha256, recorded_at) VALUES (?1, ?2, ?3)",
                        params![key.purpose, key.sha256.0.as_slice(), now_ms()],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn last_checkpoint(
        &self,
        server: &ServerId,
    ) -> Result<Option<WitnessedCheckpoint>, StoreError> {
        Ok(read_checkpoint(&self.lock(), &server.to_string(), None)?.map(|(c, _)| c))
    }

    fn witness(
        &self,
        server: &ServerId,
        submitted: &Submitted,
        signature: &[u8],
        judge: &mut dyn FnMut(&History) -> Verdict,
    ) -> Result<(Verdict, History), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key = server.to_string();
        let last = read_checkpoint(&tx, &key, None)?;
        let base = match &last {
            Some((l, _)) if l.tree_size != submitted.proof_from => {
                read_checkpoint(&tx, &key, Some(submitted.proof_from))?.map(|(c, _)| c)
            }
            _ => None,
        };
        let history = History { last, base };
        let verdict = judge(&history);
        match &verdict {
            Verdict::Accept => {
                let c = &submitted.checkpoint;
                let size = i64::try_from(c.tree_size).map_err(|_| {
                    StoreError::Conflict(format!("tree size {} is beyond the store", c.tree_size))
                })?;
                // The same tree again, later: its date moves forward.
                let n = tx.execute(
                    "INSERT INTO checkpoints (server, tree_size, root, created_at, signature, witnessed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (server, tree_size) DO UPDATE SET
                        created_at = excluded.created_at, signature = excluded.signature,
                        witnessed_at = excluded.witnessed_at
                     WHERE root = excluded.root AND created_at < excluded.created_at",
                    params![key, size, c.root.as_slice(), c.created_at_ms, signature, now_ms()],
                )?;
                if n != 1 {
                    return Err(StoreError::Conflict(format!(
                        "a different checkpoint of {} records is already witnessed",
                        c.tree_size
                    )));
                }
            }
            Verdict::Alarm(reason) => insert_alarm(&tx, &key, reason)?,
            Verdict::Repeat | Verdict::Stale => {}
        }
        tx.commit()?;
        Ok((verdict, history))
    }

    fn record_alarm(&self, server: &ServerId, reason: &str) -> Result<(), StoreError> {
        insert_alarm(&self.lock(), &server.to_string(), reason)
    }

    fn alarms(&self) -> Result<Vec<Alarm>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT server, at, reason FROM alarms ORDER BY id DESC LIMIT 1000")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (server, at_ms, reason) = row?;
            out.push(Alarm {
                server: parse("server id", &server)?,
                at_ms,
                reason,
            });
        }
        Ok(out)
    }
}
