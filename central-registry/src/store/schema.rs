//! The registry store's schema migrations: `migrations/sqlite/000n_*.sql`
//! and `migrations/postgres/000n_*.sql`, the same change in each dialect,
//! applied by [`lienthong_database::Schema`] (the scheme the security
//! server's store shares). Never edit a released migration: append one.

use lienthong_database::{DatabaseError, Migration, Schema, migration};

/// The migrations, oldest first; migration `i + 1` is `MIGRATIONS[i]`.
pub const MIGRATIONS: &[Migration] = &[
    migration!("0001_initial"),
    migration!("0002_checkpoints"),
    migration!("0003_personal_data_withholding"),
    migration!("0004_one_key_one_certificate"),
    migration!("0005_registry_nodes"),
    migration!("0006_service_catalogue"),
];

/// The advisory lock held while the schema is migrated.
pub const MIGRATION_LOCK: i64 = super::postgres::WRITE_LOCK + 1;

/// The registry store's schema, as [`lienthong_database`] applies it.
pub const SCHEMA: Schema = Schema {
    what: "registry store",
    migrations: MIGRATIONS,
    lock: MIGRATION_LOCK,
};

/// How the store is named when its version is refused.
pub const PLACE: &str = "the registry store";

/// The refusal of a store at schema version `found`, if this program
/// does not know it.
pub fn check(found: i64) -> Result<usize, DatabaseError> {
    SCHEMA.check(PLACE, found)
}

#[cfg(test)]
mod tests {

    #[test]
    fn migrations_are_numbered_in_order_in_both_dialects() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let problems = super::SCHEMA.numbering_problems(&dir);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
