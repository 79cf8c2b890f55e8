//! `insert_record`, `update_record`, `delete_record`: by primary key, or by filter behind a
//! required `max_rows` guard. Every statement returns the rows it touched.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::catalog::{Catalog, Kind, SYSTEM_COLUMNS, Table};
use super::filter::{self, lookup};
use super::sql::{Sql, json_column};
use super::values;
use crate::db::Scope;
use crate::error::ToolError;

/// Most rows one insert_record call may write.
pub const MAX_INSERT: usize = 100;
/// Largest `max_rows` guard accepted for filtered updates and deletes.
pub const MAX_GUARD: i64 = 1000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InsertArgs {
    /// The table to insert into.
    pub table: String,
    /// One row: {"column": value, …}.
    #[serde(default)]
    pub values: Option<Map<String, Value>>,
    /// Or up to 100 rows, inserted in one transaction.
    #[serde(default)]
    pub rows: Option<Vec<Map<String, Value>>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The table to update.
    pub table: String,
    /// The row's primary key, e.g. {"id": "…"}. Give this or `filter`.
    #[serde(default)]
    pub key: Option<Map<String, Value>>,
    /// A filter (as in query_records) selecting the rows; needs `max_rows`.
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub filter: Option<Value>,
    /// With `filter`: refuse (changing nothing) if more rows than this would change (1 to 1000).
    #[serde(default)]
    pub max_rows: Option<i64>,
    /// The new values: {"column": value, …}.
    pub values: Map<String, Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The table to delete from.
    pub table: String,
    /// The row's primary key. Give this or `filter`.
    #[serde(default)]
    pub key: Option<Map<String, Value>>,
    /// A filter selecting the rows; needs `max_rows`.
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub filter: Option<Value>,
    /// With `filter`: refuse (deleting nothing) if more rows than this would go (1 to 1000).
    #[serde(default)]
    pub max_rows: Option<i64>,
}

fn writable_table<'c>(catalog: &'c Catalog, name: &str) -> Result<&'c Table, ToolError> {
    let table = catalog.table("table", name)?;
    if table.is_view {
        return Err(ToolError::invalid_input(
            "table",
            format!("{} is a view; it cannot be written", table.name),
        ));
    }
    Ok(table)
}

/// Checks one column name for writing.
fn writable_column<'t>(
    table: &'t Table,
    name: &str,
    path: &str,
) -> Result<&'t super::catalog::Column, ToolError> {
    // Hidden from the catalog because the server stamps it (hdls's own schemas); a linked
    // database's column of the same name is visible and its owner's to write.
    if SYSTEM_COLUMNS.contains(&name) && table.column(name).is_none() {
        return Err(ToolError::invalid_input(
            path,
            format!("{name} is set by the server and cannot be written"),
        ));
    }
    let column = lookup(table, name, path)?;
    if !column.writable() {
        return Err(ToolError::invalid_input(
            path,
            format!(
                "{} is computed by the database and cannot be written",
                column.name
            ),
        ));
    }
    Ok(column)
}

/// Binds a value that selects rows (a primary key): checked against the column's type.
fn bind_value(
    sql: &mut Sql,
    column: &super::catalog::Column,
    value: &Value,
    path: &str,
) -> Result<(), ToolError> {
    bind(sql, column, value, path, false)
}

/// Binds a value to be stored: also checked against what the column declares beyond its
/// type (lengths, precision), so the refusal names its path instead of failing in SQL.
fn bind_write(
    sql: &mut Sql,
    column: &super::catalog::Column,
    value: &Value,
    path: &str,
) -> Result<(), ToolError> {
    bind(sql, column, value, path, true)
}

fn bind(
    sql: &mut Sql,
    column: &super::catalog::Column,
    value: &Value,
    path: &str,
    write: bool,
) -> Result<(), ToolError> {
    match &column.kind {
        Kind::Array(elem) if !value.is_null() => {
            let items = values::to_text_array(elem, &column.name, value, path)?;
            if write {
                for (i, item) in items.iter().enumerate() {
                    if let Some(text) = item {
                        values::check_write(
                            elem,
                            &column.limits,
                            &column.name,
                            text,
                            &format!("{path}[{i}]"),
                        )?;
                    }
                }
            }
            sql.array(items, &column.cast);
        }
        _ => {
            let text = values::to_text(column, value, path)?;
            if write && let Some(text) = &text {
                values::check_write(&column.kind, &column.limits, &column.name, text, path)?;
            }
            sql.value(text, &column.cast);
        }
    }
    Ok(())
}

/// Names the field a database refusal concerns, where its report says: the column of a
/// NOT NULL violation, or the one column of a CHECK constraint. `at` turns a column name
/// into the request path. Other errors pass through as they are.
fn locate(error: ToolError, table: &Table, at: impl Fn(&str) -> String) -> ToolError {
    if error.details.contains_key("path") {
        return error;
    }
    let column = error.db_column().or_else(|| {
        error
            .db_constraint()
            .and_then(|c| table.checks.get(&c).cloned())
    });
    match column.filter(|c| table.column(c).is_some()) {
        Some(column) => {
            let path = at(&column);
            error.with("path", path).with("column", column)
        }
        None => error,
    }
}

/// `RETURNING` the touched rows as JSON, without system columns or search vectors.
/// Completes an INSERT/UPDATE/DELETE so it returns each row it wrote as JSON. The statement
/// returns its rows to a CTE and the JSON is built from those: Citus refuses functions that
/// are not IMMUTABLE (json_build_object is STABLE) in a RETURNING clause on a distributed
/// table. Parameters are numbered, so moving the statement's text inside is safe.
fn returning(sql: &mut Sql, table: &Table) {
    let columns = table.default_select();
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    let statement = std::mem::take(&mut sql.text);
    sql.push("WITH changed AS (")
        .push(&statement)
        .push(" RETURNING *) SELECT ");
    sql.json_object(&names, |sql, i| {
        sql.push("changed.").ident(&columns[i].name);
    });
    sql.push(" AS row FROM changed");
}

fn rows_json(rows: &[tokio_postgres::Row]) -> Result<Value, ToolError> {
    let out: Vec<Value> = rows
        .iter()
        .map(|r| json_column(r, "row"))
        .collect::<Result<_, _>>()?;
    Ok(json!({ "count": out.len(), "rows": out }))
}

/// Inserts one row or a batch.
pub async fn insert(
    scope: &Scope,
    catalog: &Catalog,
    args: InsertArgs,
) -> Result<Value, ToolError> {
    let table = writable_table(catalog, &args.table)?;
    let (rows, base) = match (args.values, args.rows) {
        (Some(one), None) => (vec![one], "values".to_owned()),
        (None, Some(many)) => (many, "rows".to_owned()),
        _ => {
            return Err(ToolError::invalid_input(
                "values",
                "give either values (one row) or rows (a batch)",
            ));
        }
    };
    if rows.is_empty() || rows.len() > MAX_INSERT {
        return Err(ToolError::invalid_input(
            &base,
            format!("insert 1 to {MAX_INSERT} rows per call"),
        ));
    }
    // The union of columns across rows; a row without one gets the column's DEFAULT.
    let mut columns: Vec<&super::catalog::Column> = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        for name in row.keys() {
            let path = if base == "values" {
                format!("values.{name}")
            } else {
                format!("rows[{r}].{name}")
            };
            let column = writable_column(table, name, &path)?;
            if !columns.iter().any(|c| c.name == column.name) {
                columns.push(column);
            }
        }
    }
    let mut sql = Sql::new();
    sql.push("INSERT INTO ")
        .table(&catalog.schema, &table.name)
        .push(" AS t ");
    if columns.is_empty() {
        sql.push("DEFAULT VALUES");
        if rows.len() > 1 {
            return Err(ToolError::invalid_input(
                &base,
                "rows with no values can only be inserted one at a time",
            ));
        }
    } else {
        sql.push("(");
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.ident(&c.name);
        }
        sql.push(") VALUES ");
        for (r, row) in rows.iter().enumerate() {
            if r > 0 {
                sql.push(", ");
            }
            sql.push("(");
            for (i, c) in columns.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                match row.get(&c.name) {
                    None => {
                        sql.push("DEFAULT");
                    }
                    Some(value) => {
                        let path = if base == "values" {
                            format!("values.{}", c.name)
                        } else {
                            format!("rows[{r}].{}", c.name)
                        };
                        bind_write(&mut sql, c, value, &path)?;
                    }
                }
            }
            sql.push(")");
        }
    }
    returning(&mut sql, table);
    let batch = rows.len() > 1;
    let inserted = scope.query_sql(&sql).await.map_err(|e| {
        // In a batch the report does not say which row; the column is still named.
        locate(e, table, |column| {
            if base == "values" {
                format!("values.{column}")
            } else if batch {
                "rows".to_owned()
            } else {
                format!("rows[0].{column}")
            }
        })
    })?;
    rows_json(&inserted)
}

/// The WHERE clause for a key or a guarded filter; returns the guard if there is one.
fn target(
    sql: &mut Sql,
    table: &Table,
    selection: &Selection<'_>,
) -> Result<Option<i64>, ToolError> {
    let max_rows = selection.max_rows;
    match (selection.key, selection.filter) {
        (Some(key), None) => {
            if max_rows.is_some() {
                return Err(ToolError::invalid_input(
                    "max_rows",
                    "max_rows goes with filter, not key",
                ));
            }
            if table.primary_key.is_empty() {
                return Err(ToolError::invalid_input(
                    "key",
                    format!("{} has no primary key; use filter", table.name),
                ));
            }
            if let Some(extra) = key.keys().find(|k| !table.primary_key.contains(k)) {
                return Err(ToolError::invalid_input(
                    &format!("key.{extra}"),
                    format!(
                        "the primary key of {} is ({})",
                        table.name,
                        table.primary_key.join(", ")
                    ),
                ));
            }
            for (i, name) in table.primary_key.iter().enumerate() {
                let path = format!("key.{name}");
                let value = key.get(name).filter(|v| !v.is_null()).ok_or_else(|| {
                    ToolError::invalid_input(&path, format!("{name} is part of the primary key"))
                })?;
                let column = lookup(table, name, &path)?;
                if i > 0 {
                    sql.push(" AND ");
                }
                sql.push("t.").ident(&column.name).push(" = ");
                bind_value(sql, column, value, &path)?;
            }
            Ok(None)
        }
        (None, Some(filter)) => {
            let guard = max_rows.ok_or_else(|| {
                ToolError::invalid_input(
                    "max_rows",
                    "a filter needs max_rows: the most rows you expect to touch",
                )
            })?;
            if !(1..=MAX_GUARD).contains(&guard) {
                return Err(ToolError::invalid_input(
                    "max_rows",
                    format!("max_rows must be between 1 and {MAX_GUARD}"),
                ));
            }
            filter::compile(sql, table, "t", filter, "filter")?;
            Ok(Some(guard))
        }
        _ => Err(ToolError::invalid_input(
            "key",
            "give either key (one row by primary key) or filter with max_rows",
        )),
    }
}

/// Refuses, before touching anything, a filtered change wider than its guard; the count
/// afterwards re-checks it, because READ COMMITTED can see rows committed in between.
async fn check_guard(
    scope: &Scope,
    catalog: &Catalog,
    table: &Table,
    selection: &Selection<'_>,
) -> Result<(), ToolError> {
    // Only a well-formed filtered call gets the cheap pre-check; `target` reports the rest.
    let (None, Some(filter), Some(guard)) = (selection.key, selection.filter, selection.max_rows)
    else {
        return Ok(());
    };
    if !(1..=MAX_GUARD).contains(&guard) {
        return Ok(());
    }
    let mut sql = Sql::new();
    sql.push("SELECT count(*) AS n FROM (SELECT 1 FROM ")
        .table(&catalog.schema, &table.name)
        .push(" t WHERE ")
        .route(scope, table, "t");
    filter::compile(&mut sql, table, "t", filter, "filter")?;
    sql.push(&format!(" LIMIT {}) s", guard + 1));
    let rows = scope.query_sql(&sql).await?;
    let n: i64 = rows.first().map_or(0, |r| r.get("n"));
    over_guard(n, guard)
}

fn over_guard(n: i64, guard: i64) -> Result<(), ToolError> {
    if n > guard {
        return Err(ToolError::invalid_input(
            "max_rows",
            format!("the filter matches more than max_rows ({guard}) rows; nothing was changed"),
        ));
    }
    Ok(())
}

/// Updates by key or by guarded filter.
pub async fn update(
    scope: &Scope,
    catalog: &Catalog,
    args: UpdateArgs,
) -> Result<Value, ToolError> {
    let table = writable_table(catalog, &args.table)?;
    if args.values.is_empty() {
        return Err(ToolError::invalid_input(
            "values",
            "give at least one column to change",
        ));
    }
    let mut sql = Sql::new();
    sql.push("UPDATE ")
        .table(&catalog.schema, &table.name)
        .push(" AS t SET ");
    for (i, (name, value)) in args.values.iter().enumerate() {
        let path = format!("values.{name}");
        let column = writable_column(table, name, &path)?;
        if i > 0 {
            sql.push(", ");
        }
        sql.ident(&column.name).push(" = ");
        bind_write(&mut sql, column, value, &path)?;
    }
    sql.push(" WHERE ").route(scope, table, "t");
    let selection = Selection {
        key: args.key.as_ref(),
        filter: args.filter.as_ref(),
        max_rows: args.max_rows,
    };
    run_targeted(scope, catalog, table, sql, selection)
        .await
        .map_err(|e| locate(e, table, |column| format!("values.{column}")))
}

/// Deletes by key or by guarded filter.
pub async fn delete(
    scope: &Scope,
    catalog: &Catalog,
    args: DeleteArgs,
) -> Result<Value, ToolError> {
    let table = writable_table(catalog, &args.table)?;
    let mut sql = Sql::new();
    sql.push("DELETE FROM ")
        .table(&catalog.schema, &table.name)
        .push(" AS t WHERE ")
        .route(scope, table, "t");
    let selection = Selection {
        key: args.key.as_ref(),
        filter: args.filter.as_ref(),
        max_rows: args.max_rows,
    };
    run_targeted(scope, catalog, table, sql, selection).await
}

/// Which rows an update or delete touches: one by primary key, or a guarded filter.
struct Selection<'a> {
    key: Option<&'a Map<String, Value>>,
    filter: Option<&'a Value>,
    max_rows: Option<i64>,
}

/// Completes an UPDATE/DELETE whose text ends in WHERE: pre-checks the guard, adds the
/// condition and RETURNING, runs it, and re-checks the guard against what it touched.
async fn run_targeted(
    scope: &Scope,
    catalog: &Catalog,
    table: &Table,
    mut sql: Sql,
    selection: Selection<'_>,
) -> Result<Value, ToolError> {
    check_guard(scope, catalog, table, &selection).await?;
    let guard = target(&mut sql, table, &selection)?;
    returning(&mut sql, table);
    let rows = scope.query_sql(&sql).await?;
    finish(rows, guard, selection.key.is_some())
}

fn finish(
    rows: Vec<tokio_postgres::Row>,
    guard: Option<i64>,
    by_key: bool,
) -> Result<Value, ToolError> {
    if let Some(guard) = guard {
        // The caller's Scope rolls back on this error, so nothing is changed.
        over_guard(rows.len() as i64, guard)?;
    }
    if by_key && rows.is_empty() {
        return Err(ToolError::not_found(
            "no row with that primary key in this workspace",
        ));
    }
    rows_json(&rows)
}
