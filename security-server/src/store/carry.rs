//! What happens to a node's own policy when it joins a cluster: the access
//! rights, backends, pins and body-logging choices in its `server.db`.
//!
//! Nothing is lost. When the cluster's database holds no policy yet (the
//! first node), the node's is carried over in one transaction. When it
//! holds one already, the cluster's stays in force and every entry of the
//! node's that it lacks or sets otherwise is reported (and kept in
//! `server.db`, where the operator can still read it).

use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;
use super::sql::Sql;

/// What became of a joining node's own policy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JoinReport {
    /// The entries carried over into the cluster's database, which had no
    /// policy yet (one line each, e.g. `grant A may call S method M`).
    pub imported: Vec<String>,
    /// The node's entries that the cluster's policy lacks or sets
    /// otherwise: not in force (the cluster's policy is), kept in
    /// `server.db`.
    pub differing: Vec<String>,
}

/// The policy tables of one store, as stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    /// (subject, provider, service, method; `""` for every method)
    rules: BTreeSet<(String, String, String, String)>,
    /// (provider, service) → (url, timeout in ms)
    backends: BTreeMap<(String, String), (String, i64)>,
    /// (subsystem, certificate fingerprint)
    pins: BTreeSet<(String, Vec<u8>)>,
    body_logging: BTreeSet<String>,
}

impl Policy {
    /// Reads every policy table in `tx`.
    pub(crate) fn read(tx: &mut dyn Sql) -> Result<Self, StoreError> {
        let mut p = Policy::default();
        for r in tx.query(
            "SELECT subject, provider, service, method FROM access_rules",
            &[],
        )? {
            p.rules
                .insert((r.text(0)?, r.text(1)?, r.text(2)?, r.text(3)?));
        }
        for r in tx.query(
            "SELECT provider, service, url, timeout_ms FROM backends",
            &[],
        )? {
            p.backends
                .insert((r.text(0)?, r.text(1)?), (r.text(2)?, r.int(3)?));
        }
        for r in tx.query("SELECT subsystem, fingerprint FROM client_pins", &[])? {
            p.pins.insert((r.text(0)?, r.bytes(1)?));
        }
        for r in tx.query("SELECT subsystem FROM body_logging", &[])? {
            p.body_logging.insert(r.text(0)?);
        }
        Ok(p)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.backends.is_empty()
            && self.pins.is_empty()
            && self.body_logging.is_empty()
    }

    /// Inserts every entry into `tx`'s (empty) tables.
    pub(crate) fn write(&self, tx: &mut dyn Sql) -> Result<(), StoreError> {
        for (subject, provider, service, method) in &self.rules {
            tx.execute(
                "INSERT INTO access_rules (subject, provider, service, method) VALUES ($1, $2, $3, $4)",
                &[subject.into(), provider.into(), service.into(), method.into()],
            )?;
        }
        for ((provider, service), (url, timeout_ms)) in &self.backends {
            tx.execute(
                "INSERT INTO backends (provider, service, url, timeout_ms) VALUES ($1, $2, $3, $4)",
                &[
                    provider.into(),
                    service.into(),
                    url.into(),
                    (*timeout_ms).into(),
                ],
            )?;
        }
        for (subsystem, fingerprint) in &self.pins {
            tx.execute(
                "INSERT INTO client_pins (subsystem, fingerprint) VALUES ($1, $2)",
                &[subsystem.into(), fingerprint.as_slice().into()],
            )?;
        }
        for subsystem in &self.body_logging {
            tx.execute(
                "INSERT INTO body_logging (subsystem) VALUES ($1)",
                &[subsystem.into()],
            )?;
        }
        Ok(())
    }

    /// Empties the policy tables in `tx` (a node's, once the cluster holds
    /// every entry).
    pub(crate) fn clear(tx: &mut dyn Sql) -> Result<(), StoreError> {
        for table in ["access_rules", "backends", "client_pins", "body_logging"] {
            tx.execute(&format!("DELETE FROM {table}"), &[])?;
        }
        Ok(())
    }

    /// Every entry, one line each.
    pub(crate) fn entries(&self) -> Vec<String> {
        self.described(|_| None)
    }

    /// The entries of `self` that `cluster` lacks or sets otherwise, one
    /// line each (a backend says what the cluster has instead).
    pub(crate) fn differing_from(&self, cluster: &Policy) -> Vec<String> {
        let mut kept = self.clone();
        kept.rules.retain(|r| !cluster.rules.contains(r));
        kept.backends
            .retain(|k, v| cluster.backends.get(k) != Some(&*v));
        kept.pins.retain(|p| !cluster.pins.contains(p));
        kept.body_logging
            .retain(|s| !cluster.body_logging.contains(s));
        kept.described(|key| cluster.backends.get(key).map(|(u, t)| backend_text(u, *t)))
    }

    fn described(
        &self,
        cluster_backend: impl Fn(&(String, String)) -> Option<String>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (subject, provider, service, method) in &self.rules {
            let methods = match method.as_str() {
                "" => "every method".to_owned(),
                m => format!("method {m}"),
            };
            out.push(format!(
                "grant {subject} may call {provider}/{service} ({methods})"
            ));
        }
        for (key @ (provider, service), (url, timeout_ms)) in &self.backends {
            let mut line = format!(
                "backend {provider}/{service} -> {}",
                backend_text(url, *timeout_ms)
            );
            if let Some(theirs) = cluster_backend(key) {
                line.push_str(&format!(" (the cluster's: {theirs})"));
            }
            out.push(line);
        }
        for (subsystem, fingerprint) in &self.pins {
            out.push(format!(
                "pin {subsystem} certificate {}",
                hex::encode(fingerprint)
            ));
        }
        for subsystem in &self.body_logging {
            out.push(format!("body logging {subsystem}"));
        }
        out
    }
}

fn backend_text(url: &str, timeout_ms: i64) -> String {
    format!("{url} (timeout {timeout_ms} ms)")
}

/// In the cluster's transaction `tx`: carries `local` over when the
/// cluster holds no policy yet, else reports what of `local` differs.
/// Nodes joining at once are serialised by the lock on the rules
/// version's row: the second sees the first's policy.
pub(crate) fn carry_over(tx: &mut dyn Sql, local: &Policy) -> Result<JoinReport, StoreError> {
    tx.query(
        "SELECT value FROM meta WHERE key = 'rules_version' FOR UPDATE",
        &[],
    )?;
    let cluster = Policy::read(tx)?;
    if !cluster.is_empty() {
        return Ok(JoinReport {
            imported: Vec::new(),
            differing: local.differing_from(&cluster),
        });
    }
    local.write(tx)?;
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'rules_version'",
        &[],
    )?;
    Ok(JoinReport {
        imported: local.entries(),
        differing: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
