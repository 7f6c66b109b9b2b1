//! Versioned schema migrations, one numbered list for both backends.
//!
//! Migration `n` is `migrations/sqlite/000n_*.sql` and
//! `migrations/postgres/000n_*.sql`: the same change in each dialect, so a
//! schema version means the same shared tables in either store (SQLite's
//! also holds the node's own settings, which PostgreSQL's never does).
//! Each runs once, in order, in a transaction that also records the new
//! version (SQLite: `PRAGMA user_version`; PostgreSQL: the
//! `schema_version` table, under an advisory lock so that nodes starting
//! at once migrate once). A store at a version above [`MIGRATIONS`]'s
//! length is refused, naming both versions. Never edit a released
//! migration: append one.

/// One schema change, in each backend's dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

macro_rules! migration {
    ($file:literal) => {
        Migration {
            name: $file,
            sqlite: include_str!(concat!("../../migrations/sqlite/", $file, ".sql")),
            postgres: include_str!(concat!("../../migrations/postgres/", $file, ".sql")),
        }
    };
}

/// The migrations, oldest first; migration `i + 1` is `MIGRATIONS[i]`.
pub const MIGRATIONS: &[Migration] = &[
    migration!("0001_initial"),
    migration!("0002_client_pins"),
    migration!("0003_body_logging"),
    migration!("0004_replay_ids"),
];

/// The refusal of a store written by a newer program.
pub(crate) fn too_new(what: &str, found: i64) -> String {
    format!(
        "{what} has schema version {found}, newer than this program's {}; upgrade lienthong on this node (every node sharing a store must run a version that knows its schema)",
        MIGRATIONS.len()
    )
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn migrations_are_numbered_in_order_in_both_dialects() {
        for dialect in ["sqlite", "postgres"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            files.sort();
            let listed: Vec<String> = MIGRATIONS
                .iter()
                .map(|m| format!("{}.sql", m.name))
                .collect();
            assert_eq!(files, listed, "{dialect}: every file listed, in order");
        }
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert!(m.name.starts_with(&format!("{:04}_", i + 1)), "{}", m.name);
        }
    }
}
