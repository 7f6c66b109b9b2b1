//! The security server's own store (SQLite, one file): its settings, the
//! access rights its operator granted, and where each served service's
//! backend is. The message log lives in its own file (see `message_log`).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lienthong_certs::Fingerprint;
use lienthong_proto::id::SubsystemId;
use rusqlite::{Connection, OptionalExtension, params};

use crate::access::{AccessRule, Subject};

/// Default time a backend may take to answer.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(30);

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
    INSERT INTO meta (key, value) VALUES ('rules_version', 0);
    CREATE TABLE access_rules (
        subject  TEXT NOT NULL,
        provider TEXT NOT NULL,
        service  TEXT NOT NULL,
        method   TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (subject, provider, service, method)
    ) STRICT;
    CREATE TABLE backends (
        provider   TEXT NOT NULL,
        service    TEXT NOT NULL,
        url        TEXT NOT NULL,
        timeout_ms INTEGER NOT NULL,
        PRIMARY KEY (provider, service)
    ) STRICT;
"#,
    // 2: information systems' certificates pinned per client subsystem.
    r#"
    CREATE TABLE client_pins (
        subsystem   TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        PRIMARY KEY (subsystem, fingerprint)
    ) STRICT;
"#,
    // 3: subsystems whose exchanges' bodies are logged (encrypted).
    r#"
    CREATE TABLE body_logging (
        subsystem TEXT PRIMARY KEY
    ) STRICT;
"#,
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("security server store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Where a served service's backend is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub provider: SubsystemId,
    pub service: String,
    /// `http://host:port` (h2c).
    pub url: String,
    pub timeout: Duration,
}

/// Checks a backend URL: `http://host:port` (h2c on a trusted network).
pub fn check_backend_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("backend URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.port_u16().is_none() {
        return Err(format!(
            "backend URL {url:?} must be http://host:port (h2c); TLS backends are not supported yet"
        ));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("backend URL {url:?} must not have a path"));
    }
    Ok(())
}

/// The security server's settings, rules and backends.
#[derive(Debug)]
pub struct ServerStore {
    conn: Mutex<Connection>,
}

impl ServerStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let applied = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(StoreError(format!(
                "schema version {applied} is newer than this program knows; upgrade lienthong"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(ServerStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Increases with every change of rules or backends, so a running
    /// server notices changes made by another process (the CLI).
    pub fn rules_version(&self) -> Result<u64, StoreError> {
        Ok(self.lock().query_row(
            "SELECT value FROM meta WHERE key = 'rules_version'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    fn changed(&self, sql: &str, p: impl rusqlite::Params) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(sql, p)?;
        if n > 0 {
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'rules_version'",
                [],
            )?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Grants a rule; false if it already existed.
    pub fn grant(&self, rule: &AccessRule) -> Result<bool, StoreError> {
        self.changed(
            "INSERT INTO access_rules (subject, provider, service, method) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![
                subject_text(&rule.subject),
                rule.provider.to_string(),
                rule.service,
                rule.method.clone().unwrap_or_default()
            ],
        )
    }

    /// Revokes a rule; false if there was none.
    pub fn revoke(&self, rule: &AccessRule) -> Result<bool, StoreError> {
        self.changed(
            "DELETE FROM access_rules WHERE subject = ?1 AND provider = ?2 AND service = ?3 AND method = ?4",
            params![
                subject_text(&rule.subject),
                rule.provider.to_string(),
                rule.service,
                rule.method.clone().unwrap_or_default()
            ],
        )
    }

    pub fn rules(&self) -> Result<Vec<AccessRule>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT subject, provider, service, method FROM access_rules ORDER BY provider, service, method, subject",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (subject, provider, service, method) = row?;
            out.push(AccessRule {
                subject: subject
                    .parse()
                    .map_err(|e| StoreError(format!("stored subject {subject:?}: {e}")))?,
                provider: provider
                    .parse()
                    .map_err(|e| StoreError(format!("stored provider {provider:?}: {e}")))?,
                service,
                method: (!method.is_empty()).then_some(method),
            });
        }
        Ok(out)
    }

    /// Pins an information system's certificate for `subsystem` (mutual
    /// TLS on the consumer side); false if already pinned.
    pub fn pin_client(
        &self,
        subsystem: &SubsystemId,
        fp: &Fingerprint,
    ) -> Result<bool, StoreError> {
        self.changed(
            "INSERT INTO client_pins (subsystem, fingerprint) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![subsystem.to_string(), fp.0.as_slice()],
        )
    }

    /// Removes a pin; false if there was none.
    pub fn unpin_client(
        &self,
        subsystem: &SubsystemId,
        fp: &Fingerprint,
    ) -> Result<bool, StoreError> {
        self.changed(
            "DELETE FROM client_pins WHERE subsystem = ?1 AND fingerprint = ?2",
            params![subsystem.to_string(), fp.0.as_slice()],
        )
    }

    /// Every pin: subsystem and certificate fingerprint.
    pub fn client_pins(&self) -> Result<Vec<(SubsystemId, Fingerprint)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT subsystem, fingerprint FROM client_pins ORDER BY 1")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (s, fp) = row?;
            out.push((
                s.parse()
                    .map_err(|e| StoreError(format!("stored subsystem {s:?}: {e}")))?,
                Fingerprint::from_slice(&fp)
                    .ok_or_else(|| StoreError("stored fingerprint is not 32 bytes".into()))?,
            ));
        }
        Ok(out)
    }

    /// Logs (or stops logging) the bodies of `subsystem`'s exchanges on
    /// this server; false if nothing changed.
    pub fn set_body_logging(&self, subsystem: &SubsystemId, on: bool) -> Result<bool, StoreError> {
        if on {
            self.changed(
                "INSERT INTO body_logging (subsystem) VALUES (?1) ON CONFLICT DO NOTHING",
                [subsystem.to_string()],
            )
        } else {
            self.changed(
                "DELETE FROM body_logging WHERE subsystem = ?1",
                [subsystem.to_string()],
            )
        }
    }

    /// The subsystems whose bodies are logged.
    pub fn body_logging(&self) -> Result<Vec<SubsystemId>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT subsystem FROM body_logging ORDER BY 1")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            let s = row?;
            out.push(
                s.parse()
                    .map_err(|e| StoreError(format!("stored subsystem {s:?}: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Sets where a served service's backend is.
    pub fn set_backend(&self, b: &Backend) -> Result<(), StoreError> {
        check_backend_url(&b.url).map_err(StoreError)?;
        self.changed(
            "INSERT INTO backends (provider, service, url, timeout_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (provider, service) DO UPDATE SET url = excluded.url, timeout_ms = excluded.timeout_ms",
            params![
                b.provider.to_string(),
                b.service,
                b.url,
                b.timeout.as_millis() as i64
            ],
        )?;
        Ok(())
    }

    pub fn backends(&self) -> Result<Vec<Backend>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT provider, service, url, timeout_ms FROM backends")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (provider, service, url, timeout_ms) = row?;
            out.push(Backend {
                provider: provider
                    .parse()
                    .map_err(|e| StoreError(format!("stored provider {provider:?}: {e}")))?,
                service,
                url,
                timeout: Duration::from_millis(timeout_ms.max(1) as u64),
            });
        }
        Ok(out)
    }
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::Subsystem(s) => s.to_string(),
        Subject::Group(g) => format!("group:{g}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_backends_persist_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        let rule = AccessRule {
            subject: "group:VN/investigators".parse().unwrap(),
            provider: "VN/GOV/000102/population".parse().unwrap(),
            service: "population.v1.PersonRegistry".into(),
            method: Some("GetPerson".into()),
        };
        {
            let s = ServerStore::open(&path).unwrap();
            assert_eq!(s.rules_version().unwrap(), 0);
            assert!(s.grant(&rule).unwrap());
            assert!(!s.grant(&rule).unwrap(), "granting twice changes nothing");
            assert_eq!(s.rules_version().unwrap(), 1);
            s.set_backend(&Backend {
                provider: rule.provider.clone(),
                service: rule.service.clone(),
                url: "http://127.0.0.1:9000".into(),
                timeout: Duration::from_secs(3),
            })
            .unwrap();
            assert!(
                s.set_backend(&Backend {
                    provider: rule.provider.clone(),
                    service: rule.service.clone(),
                    url: "ftp://x".into(),
                    timeout: Duration::from_secs(3),
                })
                .is_err()
            );
        }
        let s = ServerStore::open(&path).unwrap();
        assert_eq!(s.rules().unwrap(), vec![rule.clone()]);
        assert_eq!(s.backends().unwrap()[0].timeout, Duration::from_secs(3));
        assert!(s.revoke(&rule).unwrap());
        assert!(!s.revoke(&rule).unwrap());
        assert!(s.rules().unwrap().is_empty());
    }
}
