//! The server store's schema migrations: `migrations/sqlite/000n_*.sql`
//! and `migrations/postgres/000n_*.sql`, the same change in each dialect,
//! so a schema version means the same shared tables in either store
//! (SQLite's also holds the node's own settings, which PostgreSQL's never
//! does). Applied by [`lienthong_database::Schema`], the scheme the
//! registry's store shares. Never edit a released migration: append one.

use lienthong_database::{Migration, Schema, migration};

/// The migrations, oldest first; migration `i + 1` is `MIGRATIONS[i]`.
pub const MIGRATIONS: &[Migration] = &[
    migration!("0001_initial"),
    migration!("0002_client_pins"),
    migration!("0003_body_logging"),
    migration!("0004_replay_ids"),
];

/// The server store's schema, as [`lienthong_database`] applies it. The
/// advisory lock ("LtSrvMig") is not the registry's, should both share a
/// database.
pub const SCHEMA: Schema = Schema {
    what: "server store",
    migrations: MIGRATIONS,
    lock: 0x4c74_5372_764d_6967,
};

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_numbered_in_order_in_both_dialects() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let problems = super::SCHEMA.numbering_problems(&dir);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
