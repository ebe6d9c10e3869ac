//! Many rows as one parameter: a JSON array of arrays, which the database unpacks itself
//! (`json_each` in SQLite, `json_array_elements` in PostgreSQL).
//!
//! Why: a multi-row `VALUES` list binds every field on its own. sqlx copies each argument into
//! its buffer, the statement's text grows with the rows (so it is parsed and planned again for
//! every size, and cannot be kept prepared), and both backends cap the parameters. One JSON text
//! costs one bind, and the statement is the same text whatever the number of rows, so it stays
//! prepared. The tier evaluation's writes (hundreds of thousands of rows in a first run) are
//! where this counts.

use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::{DbKind, StoreError, Tx, with_tx};

/// The SQL type a field is read as.
#[derive(Clone, Copy)]
pub enum Field {
    Text(&'static str),
    Int(&'static str),
}

/// `SELECT … AS name, … FROM <the rows of parameter 1>`, naming each field of the rows as
/// `fields` lists them (in the order each row's array holds them). Written in a `FROM` or as an
/// `INSERT`'s `SELECT`; parameter 1 is bound to [`rows_param`]'s text.
pub fn rows_select(kind: DbKind, fields: &[Field]) -> String {
    let mut columns = Vec::with_capacity(fields.len());
    for (i, field) in fields.iter().enumerate() {
        columns.push(match (kind, field) {
            // SQLite's `->>` answers the SQL value itself: text, an integer, or NULL.
            (DbKind::Sqlite, Field::Text(name) | Field::Int(name)) => {
                format!("value ->> {i} AS {name}")
            }
            (DbKind::Postgres, Field::Text(name)) => format!("value ->> {i} AS {name}"),
            (DbKind::Postgres, Field::Int(name)) => format!("(value ->> {i})::bigint AS {name}"),
        });
    }
    let source = match kind {
        DbKind::Sqlite => "json_each($1)",
        DbKind::Postgres => "json_array_elements($1::json)",
    };
    format!("SELECT {} FROM {source}", columns.join(", "))
}

/// `SELECT value FROM <the texts of parameter 1>`: a list of texts (a JSON array of strings, from
/// [`rows_param`]) as one column, for an `IN (…)`.
pub fn list_select(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Sqlite => "SELECT value FROM json_each($1)",
        DbKind::Postgres => "SELECT json_array_elements_text($1::json)",
    }
}

/// The JSON text of `rows` for [`rows_select`]'s parameter: each row a tuple (serialized as an
/// array) of the fields in their order.
pub fn rows_param<R: Serialize>(rows: &[R]) -> Result<String, StoreError> {
    serde_json::to_string(rows)
        .map_err(|e| StoreError::Corrupt(format!("rows do not serialize as JSON: {e}")))
}

/// Runs in `tx` the statement `statement` writes around the rows' `SELECT` (see [`rows_select`]),
/// given `rows` as its parameter 1; answers how many rows it changed.
pub async fn execute<R: Serialize>(
    tx: &mut Tx,
    statement: impl FnOnce(&str) -> String,
    fields: &[Field],
    rows: &[R],
) -> Result<u64, StoreError> {
    let sql = statement(&rows_select(tx.kind(), fields));
    let rows = rows_param(rows)?;
    Ok(with_tx!(tx, |conn| {
        sqlx::query(AssertSqlSafe(sql))
            .bind(&rows)
            .execute(&mut *conn)
            .await?
            .rows_affected()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_reads_fields_by_position_and_postgres_casts_integers() {
        let fields = [Field::Text("who"), Field::Int("at")];
        assert_eq!(
            rows_select(DbKind::Sqlite, &fields),
            "SELECT value ->> 0 AS who, value ->> 1 AS at FROM json_each($1)"
        );
        assert_eq!(
            rows_select(DbKind::Postgres, &fields),
            "SELECT value ->> 0 AS who, (value ->> 1)::bigint AS at FROM json_array_elements($1::json)"
        );
    }
}
