//! Copying a store's rows from SQLite into an empty PostgreSQL schema at
//! the same migration version: the way an instance that started on the
//! embedded store moves to the shared one without losing a row.
//!
//! Generic over the tables: the PostgreSQL schema is the reference (its
//! catalogue gives every table, column type, foreign key and identity
//! column), and the SQLite store must hold exactly the same tables and
//! columns. Tables are filled parents first, each by one binary `COPY`,
//! inside the caller's transaction, so a failure leaves nothing behind.

use std::collections::{BTreeMap, BTreeSet};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::types::ValueRef;

use crate::DatabaseError;

/// The table that records a PostgreSQL store's migration version: the
/// target's own, never copied (SQLite keeps it in `PRAGMA user_version`).
const VERSION_TABLE: &str = "schema_version";

/// What was copied: each table, parents first, with its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub tables: Vec<(String, u64)>,
}

impl Copied {
    /// Rows copied in all.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// Why a copy was refused or failed; nothing is left in the target.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(
        "the tables differ: only in SQLite {only_sqlite:?}, only in PostgreSQL {only_postgres:?}; are both stores at the same schema version?"
    )]
    Tables {
        only_sqlite: Vec<String>,
        only_postgres: Vec<String>,
    },
    #[error(
        "table {table}: the columns differ: only in SQLite {only_sqlite:?}, only in PostgreSQL {only_postgres:?}"
    )]
    Columns {
        table: String,
        only_sqlite: Vec<String>,
        only_postgres: Vec<String>,
    },
    #[error("{table}.{column}: SQLite holds {found} where PostgreSQL wants {wanted}")]
    Value {
        table: String,
        column: String,
        found: String,
        wanted: String,
    },
    #[error("the foreign keys between {0:?} form a cycle; they cannot be filled parents first")]
    Cycle(Vec<String>),
    #[error("table {table}: {read} rows read from SQLite but {written} written")]
    Count {
        table: String,
        read: u64,
        written: u64,
    },
}

impl From<postgres::Error> for CopyError {
    fn from(e: postgres::Error) -> Self {
        CopyError::Database(e.into())
    }
}

impl From<rusqlite::Error> for CopyError {
    fn from(e: rusqlite::Error) -> Self {
        CopyError::Database(e.into())
    }
}

/// Copies every row of `from` into the schema `to` works in (its
/// `search_path`), which must hold the same tables at the same migration
/// version and no store yet — the caller checks that — since every row
/// there (those its migrations seeded) is replaced by `from`'s. Identity
/// columns continue after the highest copied value. Nothing is
/// committed: the caller commits `to`, or drops it.
pub fn sqlite_to_postgres(
    from: &rusqlite::Connection,
    to: &mut postgres::Transaction<'_>,
) -> Result<Copied, CopyError> {
    let pg_tables: BTreeSet<String> = to
        .query(
            "SELECT table_name::text FROM information_schema.tables
              WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|t| t != VERSION_TABLE)
        .collect();
    let sqlite_tables: BTreeSet<String> = from
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!'")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if pg_tables != sqlite_tables {
        return Err(CopyError::Tables {
            only_sqlite: sqlite_tables.difference(&pg_tables).cloned().collect(),
            only_postgres: pg_tables.difference(&sqlite_tables).cloned().collect(),
        });
    }
    let edges: Vec<(String, String)> = to
        .query(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint
              WHERE contype = 'f' AND connamespace = current_schema()::regnamespace",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let order = parents_first(&pg_tables, &edges)?;

    for table in order.iter().rev() {
        to.execute(&format!("DELETE FROM {}", quoted(table)), &[])?;
    }
    let mut copied = Copied::default();
    for table in &order {
        let n = copy_table(from, to, table)?;
        copied.tables.push((table.clone(), n));
    }
    for row in to.query(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND is_identity = 'YES'",
        &[],
    )? {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        to.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 (SELECT COALESCE(MAX({c}), 0) FROM {t}) + 1, false)",
                c = quoted(&column),
                t = quoted(&table)
            ),
            &[&table, &column],
        )?;
    }
    Ok(copied)
}

/// `tables` ordered so that every table comes after those its foreign
/// keys (`(child, parent)` pairs) refer to; ties by name (pure).
pub fn parents_first(
    tables: &BTreeSet<String>,
    edges: &[(String, String)],
) -> Result<Vec<String>, CopyError> {
    let mut parents: BTreeMap<&str, BTreeSet<&str>> = tables
        .iter()
        .map(|t| (t.as_str(), BTreeSet::new()))
        .collect();
    for (child, parent) in edges {
        if child != parent
            && tables.contains(parent)
            && let Some(p) = parents.get_mut(child.as_str())
        {
            p.insert(parent.as_str());
        }
    }
    let mut order = Vec::with_capacity(tables.len());
    while !parents.is_empty() {
        let ready: Vec<&str> = parents
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(t, _)| *t)
            .collect();
        if ready.is_empty() {
            return Err(CopyError::Cycle(
                parents.keys().map(|t| t.to_string()).collect(),
            ));
        }
        for t in ready {
            parents.remove(t);
            for p in parents.values_mut() {
                p.remove(t);
            }
            order.push(t.to_owned());
        }
    }
    Ok(order)
}

fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Copies one table by a binary `COPY`; the number of rows.
fn copy_table(
    from: &rusqlite::Connection,
    to: &mut postgres::Transaction<'_>,
    table: &str,
) -> Result<u64, CopyError> {
    let t = quoted(table);
    let statement = to.prepare(&format!("SELECT * FROM {t} LIMIT 0"))?;
    let columns: Vec<(String, Type)> = statement
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().clone()))
        .collect();
    let pg_names: BTreeSet<String> = columns.iter().map(|(n, _)| n.clone()).collect();
    let sqlite_names: BTreeSet<String> = from
        .prepare(&format!(
            "SELECT name FROM pragma_table_info('{}')",
            table.replace('\'', "''")
        ))?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    if pg_names != sqlite_names {
        return Err(CopyError::Columns {
            table: table.to_owned(),
            only_sqlite: sqlite_names.difference(&pg_names).cloned().collect(),
            only_postgres: pg_names.difference(&sqlite_names).cloned().collect(),
        });
    }
    let list = columns
        .iter()
        .map(|(n, _)| quoted(n))
        .collect::<Vec<_>>()
        .join(", ");
    let types: Vec<Type> = columns.iter().map(|(_, ty)| ty.clone()).collect();
    let sink = to.copy_in(&format!("COPY {t} ({list}) FROM STDIN (FORMAT binary)"))?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut select = from.prepare(&format!("SELECT {list} FROM {t}"))?;
    let mut rows = select.query([])?;
    let mut read = 0u64;
    while let Some(row) = rows.next()? {
        let values = columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| {
                convert(row.get_ref(i)?, ty).ok_or_else(|| CopyError::Value {
                    table: table.to_owned(),
                    column: name.clone(),
                    found: kind(row.get_ref(i).ok()),
                    wanted: ty.to_string(),
                })
            })
            .collect::<Result<Vec<_>, CopyError>>()?;
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
        writer.write(&refs)?;
        read += 1;
    }
    let written = writer.finish()?;
    if written != read {
        return Err(CopyError::Count {
            table: table.to_owned(),
            read,
            written,
        });
    }
    Ok(written)
}

type Value = Box<dyn ToSql + Sync>;

/// A SQLite value as the PostgreSQL column of type `ty` takes it, or
/// `None` when it does not fit (pure). SQLite keeps booleans as 0 and 1.
fn convert(v: ValueRef<'_>, ty: &Type) -> Option<Value> {
    fn boxed<T: ToSql + Sync + 'static>(v: Option<T>) -> Option<Value> {
        Some(Box::new(v))
    }
    let column = [
        (Type::BOOL, Column::Bool),
        (Type::INT2, Column::Int2),
        (Type::INT4, Column::Int4),
        (Type::INT8, Column::Int8),
        (Type::FLOAT8, Column::Float8),
        (Type::TEXT, Column::Text),
        (Type::VARCHAR, Column::Text),
        (Type::BYTEA, Column::Bytes),
    ]
    .into_iter()
    .find(|(t, _)| t == ty)?
    .1;
    match (column, v) {
        (Column::Bool, ValueRef::Null) => boxed(None::<bool>),
        (Column::Bool, ValueRef::Integer(i @ (0 | 1))) => boxed(Some(i == 1)),
        (Column::Int2, ValueRef::Null) => boxed(None::<i16>),
        (Column::Int2, ValueRef::Integer(i)) => boxed(Some(i16::try_from(i).ok()?)),
        (Column::Int4, ValueRef::Null) => boxed(None::<i32>),
        (Column::Int4, ValueRef::Integer(i)) => boxed(Some(i32::try_from(i).ok()?)),
        (Column::Int8, ValueRef::Null) => boxed(None::<i64>),
        (Column::Int8, ValueRef::Integer(i)) => boxed(Some(i)),
        (Column::Float8, ValueRef::Null) => boxed(None::<f64>),
        (Column::Float8, ValueRef::Real(f)) => boxed(Some(f)),
        (Column::Float8, ValueRef::Integer(i)) => boxed(Some(i as f64)),
        (Column::Text, ValueRef::Null) => boxed(None::<String>),
        (Column::Text, ValueRef::Text(t)) => boxed(Some(std::str::from_utf8(t).ok()?.to_owned())),
        (Column::Bytes, ValueRef::Null) => boxed(None::<Vec<u8>>),
        (Column::Bytes, ValueRef::Blob(b)) => boxed(Some(b.to_vec())),
        _ => None,
    }
}

/// The PostgreSQL column types a store's tables use.
#[derive(Debug, Clone, Copy)]
enum Column {
    Bool,
    Int2,
    Int4,
    Int8,
    Float8,
    Text,
    Bytes,
}

fn kind(v: Option<ValueRef<'_>>) -> String {
    match v {
        Some(ValueRef::Null) => "NULL".into(),
        Some(ValueRef::Integer(i)) => format!("the integer {i}"),
        Some(ValueRef::Real(_)) => "a real number".into(),
        Some(ValueRef::Text(_)) => "text".into(),
        Some(ValueRef::Blob(b)) => format!("{} bytes", b.len()),
        None => "an unreadable value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn edge(child: &str, parent: &str) -> (String, String) {
        (child.into(), parent.into())
    }

    #[test]
    fn parents_come_before_the_tables_that_refer_to_them() {
        let tables = set(&["audit", "members", "services", "subsystems", "catalogue"]);
        let order = parents_first(
            &tables,
            &[
                edge("subsystems", "members"),
                edge("services", "subsystems"),
                edge("services", "catalogue"),
                edge("members", "members"),
            ],
        )
        .unwrap();
        let at = |t: &str| order.iter().position(|o| o == t).unwrap();
        assert_eq!(order.len(), 5);
        assert!(at("members") < at("subsystems"));
        assert!(at("subsystems") < at("services"));
        assert!(at("catalogue") < at("services"));
    }

    #[test]
    fn a_cycle_of_foreign_keys_is_refused_by_name() {
        let tables = set(&["a", "b", "c"]);
        let e = parents_first(&tables, &[edge("a", "b"), edge("b", "a")]).unwrap_err();
        assert!(matches!(&e, CopyError::Cycle(t) if t == &["a", "b"]), "{e}");
    }

    #[test]
    fn values_that_do_not_fit_their_column_are_refused() {
        assert!(convert(ValueRef::Integer(1), &Type::BOOL).is_some());
        assert!(convert(ValueRef::Integer(2), &Type::BOOL).is_none());
        assert!(convert(ValueRef::Integer(1 << 40), &Type::INT4).is_none());
        assert!(convert(ValueRef::Text(b"x"), &Type::BYTEA).is_none());
        assert!(convert(ValueRef::Blob(b"x"), &Type::TEXT).is_none());
        assert!(convert(ValueRef::Text(&[0xff]), &Type::TEXT).is_none());
        assert!(convert(ValueRef::Null, &Type::TEXT).is_some());
        assert!(convert(ValueRef::Null, &Type::UUID).is_none());
    }
}
