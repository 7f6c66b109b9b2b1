//! Versioned schema migrations, one numbered list for both backends.
//!
//! Migration `n` of a store is `migrations/sqlite/000n_*.sql` and
//! `migrations/postgres/000n_*.sql` in its crate: the same change in each
//! dialect, so a schema version means the same tables in either database.
//! Each runs once, in order, in a transaction that also records the new
//! version (SQLite: `PRAGMA user_version`; PostgreSQL: the
//! `schema_version` table, under an advisory lock so that nodes starting
//! at once migrate once). A store at a version above the list's length is
//! refused, naming both versions. Never edit a released migration:
//! append one.

use std::path::Path;

use crate::DatabaseError;

/// One schema change, in each backend's dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// The migration `$file` (without `.sql`) of the calling crate, read from
/// its `migrations/sqlite/` and `migrations/postgres/` at build time.
#[macro_export]
macro_rules! migration {
    ($file:literal) => {
        $crate::Migration {
            name: $file,
            sqlite: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/sqlite/",
                $file,
                ".sql"
            )),
            postgres: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/postgres/",
                $file,
                ".sql"
            )),
        }
    };
}

/// A store's schema: what it is called in logs, its migrations (oldest
/// first; migration `i + 1` is `migrations[i]`) and the PostgreSQL
/// advisory lock held while migrating (distinct per store, should two
/// share a database).
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub what: &'static str,
    pub migrations: &'static [Migration],
    pub lock: i64,
}

impl Schema {
    /// The schema version this program writes.
    pub fn version(&self) -> usize {
        self.migrations.len()
    }

    /// The refusal of a store at version `found`, if it is newer than this
    /// program knows; `place` names the store (a path, a database).
    pub fn check(&self, place: &str, found: i64) -> Result<usize, DatabaseError> {
        match usize::try_from(found) {
            Ok(v) if v <= self.version() => Ok(v),
            _ => Err(DatabaseError::TooNew {
                place: place.to_owned(),
                found,
                known: self.version(),
            }),
        }
    }

    /// Applies the pending migrations to a SQLite database, each in its
    /// own transaction with the version it reaches.
    pub fn apply_sqlite(
        &self,
        conn: &mut rusqlite::Connection,
        place: &str,
    ) -> Result<(), DatabaseError> {
        let found = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
        let applied = self.check(place, found)?;
        for (i, m) in self.migrations.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(m.sqlite)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            tracing::info!(
                version = i + 1,
                migration = m.name,
                "{} migrated",
                self.what
            );
        }
        Ok(())
    }

    /// Applies the next pending migration to a PostgreSQL database within
    /// `tx` (the caller's read-write transaction, committed by it), under
    /// the schema's advisory lock. Returns whether the schema was already
    /// current; call again, in a new transaction, until it is.
    pub fn apply_postgres_step(
        &self,
        tx: &mut ::postgres::Transaction<'_>,
        place: &str,
    ) -> Result<bool, DatabaseError> {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
             INSERT INTO schema_version (version)
                SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
        )?;
        let found: i64 = tx
            .query_one("SELECT version FROM schema_version", &[])?
            .get(0);
        let applied = self.check(place, found)?;
        let Some(m) = self.migrations.get(applied) else {
            return Ok(true);
        };
        tx.batch_execute(m.postgres)?;
        tx.execute("UPDATE schema_version SET version = $1", &[&(found + 1)])?;
        tracing::info!(
            version = found + 1,
            migration = m.name,
            "{} migrated",
            self.what
        );
        Ok(false)
    }

    /// What is wrong with the numbering of the migration files under
    /// `dir` (the crate's `migrations/`): every file of each dialect
    /// listed, in order, named `000n_…` (for the stores' tests).
    pub fn numbering_problems(&self, dir: &Path) -> Vec<String> {
        let mut problems = Vec::new();
        let listed: Vec<String> = self
            .migrations
            .iter()
            .map(|m| format!("{}.sql", m.name))
            .collect();
        for dialect in ["sqlite", "postgres"] {
            let mut files: Vec<String> = match std::fs::read_dir(dir.join(dialect)) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect(),
                Err(e) => {
                    problems.push(format!("{dialect}: {e}"));
                    continue;
                }
            };
            files.sort();
            if files != listed {
                problems.push(format!("{dialect}: files {files:?}, listed {listed:?}"));
            }
        }
        for (i, m) in self.migrations.iter().enumerate() {
            if !m.name.starts_with(&format!("{:04}_", i + 1)) {
                problems.push(format!("migration {} is named {}", i + 1, m.name));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &[Migration] = &[
        Migration {
            name: "0001_people",
            sqlite: "CREATE TABLE people (name TEXT NOT NULL);",
            postgres: "CREATE TABLE people (name TEXT NOT NULL);",
        },
        Migration {
            name: "0002_ages",
            sqlite: "ALTER TABLE people ADD COLUMN age INTEGER;",
            postgres: "ALTER TABLE people ADD COLUMN age INTEGER;",
        },
    ];

    fn schema(migrations: &'static [Migration]) -> Schema {
        Schema {
            what: "test store",
            migrations,
            lock: 1,
        }
    }

    #[test]
    fn sqlite_migrates_once_in_order_and_refuses_a_newer_store() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        schema(&TWO[..1]).apply_sqlite(&mut conn, "memory").unwrap();
        schema(TWO).apply_sqlite(&mut conn, "memory").unwrap();
        // Applying again changes nothing (the ALTER would fail if rerun).
        schema(TWO).apply_sqlite(&mut conn, "memory").unwrap();
        conn.execute("INSERT INTO people (name, age) VALUES ('a', 1)", [])
            .unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);

        let err = schema(&TWO[..1])
            .apply_sqlite(&mut conn, "the store memory")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the store memory has schema version 2, newer than this program's 1;"),
            "{err}"
        );
    }

    #[test]
    fn a_failing_migration_leaves_the_version_where_it_was() {
        const BAD: &[Migration] = &[
            TWO[0],
            Migration {
                name: "0002_bad",
                sqlite: "ALTER TABLE people ADD COLUMN age INTEGER; NOT SQL;",
                postgres: "",
            },
        ];
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        assert!(schema(BAD).apply_sqlite(&mut conn, "memory").is_err());
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1, "migration 1 committed, 2 rolled back");
        schema(TWO).apply_sqlite(&mut conn, "memory").unwrap();
    }

    #[test]
    fn misnumbered_migrations_are_found() {
        let dir = std::env::temp_dir().join(format!("lienthong-migrations-{}", std::process::id()));
        for dialect in ["sqlite", "postgres"] {
            std::fs::create_dir_all(dir.join(dialect)).unwrap();
            std::fs::write(dir.join(dialect).join("0001_people.sql"), "").unwrap();
        }
        let problems = schema(TWO).numbering_problems(&dir);
        assert_eq!(problems.len(), 2, "{problems:?}");
        std::fs::write(dir.join("sqlite").join("0002_ages.sql"), "").unwrap();
        std::fs::write(dir.join("postgres").join("0002_ages.sql"), "").unwrap();
        assert!(schema(TWO).numbering_problems(&dir).is_empty());
        let swapped: &'static [Migration] = Box::leak(Box::new([TWO[1], TWO[0]]));
        assert!(!schema(swapped).numbering_problems(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
