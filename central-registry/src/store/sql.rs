//! The SQL both backends share: the rules of a change, reading a request
//! and reading a snapshot are written once (`changes.rs`, `requests.rs`,
//! `snapshot.rs`) against [`Sql`], which a SQLite and a PostgreSQL
//! transaction both implement.
//!
//! Statements use PostgreSQL's `$1` placeholders; SQLite reads them as
//! `?1` (numbered, so a parameter may come back in any order). Only SQL
//! that both dialects read alike belongs here: no `::` casts, no
//! dialect-only functions. Values go in as [`Param`] and come back as
//! [`Row`]s of [`Cell`]s, so the shared code names no driver type.

use crate::store::StoreError;

/// A statement's parameter.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Int(Option<i64>),
    Bool(bool),
    Text(Option<&'a str>),
    Bytes(Option<&'a [u8]>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}

impl From<&i64> for Param<'_> {
    fn from(v: &i64) -> Self {
        Param::Int(Some(*v))
    }
}

impl From<&Option<i64>> for Param<'_> {
    fn from(v: &Option<i64>) -> Self {
        Param::Int(*v)
    }
}

impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}

impl From<&bool> for Param<'_> {
    fn from(v: &bool) -> Self {
        Param::Bool(*v)
    }
}

impl<'a> From<&&'a str> for Param<'a> {
    fn from(v: &&'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Param::Text(v.as_deref())
    }
}

impl<'a> From<&Option<&'a str>> for Param<'a> {
    fn from(v: &Option<&'a str>) -> Self {
        Param::Text(*v)
    }
}

impl<'a> From<&&'a [u8]> for Param<'a> {
    fn from(v: &&'a [u8]) -> Self {
        Param::Bytes(Some(v))
    }
}

impl<'a> From<&Option<&'a [u8]>> for Param<'a> {
    fn from(v: &Option<&'a [u8]>) -> Self {
        Param::Bytes(*v)
    }
}

impl<'a> From<&'a Option<Vec<u8>>> for Param<'a> {
    fn from(v: &'a Option<Vec<u8>>) -> Self {
        Param::Bytes(v.as_deref())
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Bytes(Some(v))
    }
}

impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Bytes(Some(v))
    }
}

impl<'a> From<Option<&'a [u8]>> for Param<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Param::Bytes(v)
    }
}

/// A value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
}

/// A row read back.
#[derive(Debug, Clone)]
pub(super) struct Row(pub(super) Vec<Cell>);

fn unexpected(i: usize, wanted: &str, found: &Cell) -> StoreError {
    StoreError::Internal(format!(
        "column {i} holds {found:?} where {wanted} was expected"
    ))
}

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell, StoreError> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Internal(format!("no column {i} in the row")))
    }

    pub(super) fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?
            .ok_or_else(|| unexpected(i, "a number", &Cell::Null))
    }

    pub(super) fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(v) => Ok(Some(*v)),
            other => Err(unexpected(i, "a number", other)),
        }
    }

    /// A truth value: PostgreSQL's `BOOLEAN`, SQLite's 0 or 1.
    pub(super) fn bool(&self, i: usize) -> Result<bool, StoreError> {
        match self.cell(i)? {
            Cell::Bool(v) => Ok(*v),
            Cell::Int(v) => Ok(*v != 0),
            other => Err(unexpected(i, "a truth value", other)),
        }
    }

    pub(super) fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?
            .ok_or_else(|| unexpected(i, "text", &Cell::Null))
    }

    pub(super) fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(v) => Ok(Some(v.clone())),
            other => Err(unexpected(i, "text", other)),
        }
    }

    pub(super) fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(i)?
            .ok_or_else(|| unexpected(i, "bytes", &Cell::Null))
    }

    pub(super) fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Bytes(v) => Ok(Some(v.clone())),
            other => Err(unexpected(i, "bytes", other)),
        }
    }
}

/// A transaction of either backend.
pub(super) trait Sql {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The one row a query must return.
    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Internal("a query that returns a row returned none".into()))
    }

    /// Whether a query returns any row.
    fn exists(&mut self, sql: &str, params: &[Param<'_>]) -> Result<bool, StoreError> {
        Ok(self.query_opt(sql, params)?.is_some())
    }
}

// === impl Sql for SQLite ===

/// `$1` → `?1`: SQLite numbers `?NNN` parameters as written.
fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_params<'a>(params: &[Param<'a>]) -> Vec<rusqlite::types::ToSqlOutput<'a>> {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    params
        .iter()
        .map(|p| match *p {
            Param::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Param::Bool(v) => ToSqlOutput::Owned(Value::Integer(i64::from(v))),
            Param::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Param::Bytes(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Param::Int(None) | Param::Text(None) | Param::Bytes(None) => {
                ToSqlOutput::Owned(Value::Null)
            }
        })
        .collect()
}

fn sqlite_execute(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(&sqlite_placeholders(sql))?;
    Ok(stmt.execute(rusqlite::params_from_iter(sqlite_params(params)))? as u64)
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare_cached(&sqlite_placeholders(sql))?;
    let columns = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(sqlite_params(params)))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut cells = Vec::with_capacity(columns);
        for i in 0..columns {
            cells.push(match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
                ValueRef::Real(v) => {
                    return Err(StoreError::Internal(format!(
                        "column {i} holds the real number {v}; the registry stores none"
                    )));
                }
            });
        }
        out.push(Row(cells));
    }
    Ok(out)
}

impl Sql for rusqlite::Connection {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        sqlite_execute(self, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        sqlite_query(self, sql, params)
    }
}

impl Sql for rusqlite::Transaction<'_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        sqlite_execute(self, sql, params)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        sqlite_query(self, sql, params)
    }
}

// === impl Sql for PostgreSQL ===

/// A PostgreSQL transaction that prepares each statement once: a bulk
/// import runs the same few statements thousands of times, and preparing
/// is a round trip to the database of its own.
pub(super) struct PgTx<'t, 'c> {
    tx: &'t mut postgres::Transaction<'c>,
    statements: std::collections::HashMap<String, postgres::Statement>,
}

impl<'t, 'c> PgTx<'t, 'c> {
    pub(super) fn new(tx: &'t mut postgres::Transaction<'c>) -> Self {
        PgTx {
            tx,
            statements: std::collections::HashMap::new(),
        }
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_owned(), prepared.clone());
        Ok(prepared)
    }
}

impl Sql for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let owned = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            owned.iter().map(|b| b.as_ref()).collect();
        Ok(self.tx.execute(&statement, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let owned = pg_params(params);
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            owned.iter().map(|b| b.as_ref()).collect();
        self.tx
            .query(&statement, &refs)?
            .iter()
            .map(pg_row)
            .collect()
    }
}

type PgParam<'a> = Box<dyn postgres::types::ToSql + Sync + 'a>;

fn pg_params<'a>(params: &[Param<'a>]) -> Vec<PgParam<'a>> {
    params
        .iter()
        .map(|p| -> PgParam<'a> {
            match *p {
                Param::Int(v) => Box::new(v),
                Param::Bool(v) => Box::new(v),
                Param::Text(v) => Box::new(v),
                Param::Bytes(v) => Box::new(v),
            }
        })
        .collect()
}

fn pg_row(r: &postgres::Row) -> Result<Row, StoreError> {
    use postgres::types::Type;
    let mut cells = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(v.into()))
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Cell::Bool)
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Cell::Bytes)
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
            r.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        } else {
            return Err(StoreError::Internal(format!(
                "column {} has the type {ty}, which the registry does not store",
                column.name()
            )));
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_read_as_numbered_sqlite_ones() {
        assert_eq!(
            sqlite_placeholders("UPDATE t SET a = $2 WHERE b = $1 AND c = $10"),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c = ?10"
        );
    }

    #[test]
    fn sqlite_rows_come_back_as_cells_and_parameters_bind_by_number() {
        let mut db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB, d INTEGER) STRICT")
            .unwrap();
        let n = Sql::execute(
            &mut db,
            "INSERT INTO t (d, c, b, a) VALUES ($4, $3, $2, $1)",
            &[7.into(), "x".into(), Param::Bytes(None), true.into()],
        )
        .unwrap();
        assert_eq!(n, 1);
        let row = Sql::query_one(
            &mut db,
            "SELECT a, b, c, d FROM t WHERE b = $1",
            &["x".into()],
        )
        .unwrap();
        assert_eq!(row.int(0).unwrap(), 7);
        assert_eq!(row.text(1).unwrap(), "x");
        assert_eq!(row.opt_bytes(2).unwrap(), None);
        assert!(row.bool(3).unwrap());
        assert!(row.text(0).is_err(), "a number is not text");
        assert!(row.int(4).is_err(), "no such column");
    }
}
