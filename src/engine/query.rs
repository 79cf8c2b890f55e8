//! `query_records`: select, filter, multi-column sort and keyset paging over one table.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::catalog::{Catalog, Column, Table};
use super::filter::{self, lookup};
use super::sql::{Sql, json_column};
use crate::cursor;
use crate::db::Scope;
use crate::error::ToolError;

/// Most rows per page.
pub const MAX_LIMIT: i64 = 200;
const DEFAULT_LIMIT: i64 = 50;
const MAX_SORT_KEYS: usize = 8;

/// The arguments of `query_records`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryArgs {
    /// The table to read (see list_tables).
    pub table: String,
    /// Columns to return; default all (except full-text vectors).
    #[serde(default)]
    pub select: Option<Vec<String>>,
    /// A filter tree: {"and":[…]}, {"or":[…]}, {"not":…} or {"column","op","value"} with op one of
    /// eq, neq, lt, lte, gt, gte, in, like, ilike, is_null, contains, search.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub filter: Option<Value>,
    /// Sort keys, e.g. [{"column": "created_at", "direction": "desc", "nulls": "last"}]; the
    /// primary key is added as the final tie-breaker.
    #[serde(default)]
    pub sort: Option<Vec<SortKey>>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page (use the same table and sort).
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SortKey {
    pub column: String,
    #[serde(default)]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub nulls: Option<Nulls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Nulls {
    First,
    Last,
}

/// A resolved sort key.
struct Key<'t> {
    column: &'t Column,
    descending: bool,
    nulls_first: bool,
}

/// What a cursor carries: the last row's key values (as text) and a fingerprint of the
/// table and sort it belongs to, so it cannot be replayed against a different ordering.
#[derive(Serialize, Deserialize)]
struct Position {
    s: String,
    v: Vec<Option<String>>,
}

/// Runs the query.
pub async fn run(scope: &Scope, catalog: &Catalog, args: QueryArgs) -> Result<Value, ToolError> {
    let table = catalog.table("table", &args.table)?;
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ToolError::invalid_input(
            "limit",
            "limit must be between 1 and 200",
        ));
    }
    let selected: Vec<&Column> = match &args.select {
        None => table.default_select(),
        Some(names) if names.is_empty() => {
            return Err(ToolError::invalid_input(
                "select",
                "select at least one column, or omit it",
            ));
        }
        Some(names) => names
            .iter()
            .enumerate()
            .map(|(i, n)| lookup(table, n, &format!("select[{i}]")))
            .collect::<Result<_, _>>()?,
    };
    let keys = sort_keys(table, args.sort.as_deref().unwrap_or(&[]))?;
    let signature = sort_signature(catalog, table, &keys);

    // The page is chosen first (inner query: plain columns, ORDER BY, LIMIT) and only its
    // rows are turned into JSON and cursor positions (outer query), so that work is done
    // for `limit` rows rather than for every row that passes the filter. Inner names are
    // positional (c0…, k0…), so no table column can collide with them; output keys travel
    // as parameters.
    let mut sql = Sql::new();
    sql.push("SELECT ");
    let names: Vec<&str> = selected.iter().map(|c| c.name.as_str()).collect();
    sql.json_object(&names, |sql, i| {
        sql.push(&format!("p.c{i}"));
    });
    sql.push(" AS row, ARRAY[");
    for i in 0..keys.len() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push(&format!("p.k{i}::text"));
    }
    sql.push("]::text[] AS position FROM (SELECT ");
    for (i, c) in selected.iter().enumerate() {
        sql.push("t.").ident(&c.name).push(&format!(" AS c{i}, "));
    }
    for (i, k) in keys.iter().enumerate() {
        sql.push("t.")
            .ident(&k.column.name)
            .push(&format!(" AS k{i}, "));
    }
    // A trailing constant keeps the list well-formed whatever the counts above.
    sql.push("1 AS one FROM ")
        .table(&catalog.schema, &table.name)
        .push(" t WHERE ")
        .route(scope, table, "t")
        .push("true");
    if let Some(filter) = &args.filter {
        sql.push(" AND ");
        filter::compile(&mut sql, table, "t", filter, "filter")?;
    }
    if let Some(text) = &args.cursor {
        let position: Position = cursor::decode("cursor", text)?;
        if position.s != signature || position.v.len() != keys.len() {
            return Err(ToolError::invalid_input(
                "cursor",
                "this cursor belongs to a different table or sort",
            ));
        }
        sql.push(" AND ");
        after(&mut sql, &keys, &position.v);
    }
    for (i, k) in keys.iter().enumerate() {
        // A view without a key and without a requested sort has no order at all.
        sql.push(if i == 0 { " ORDER BY " } else { ", " });
        sql.push("t.").ident(&k.column.name);
        sql.push(if k.descending { " DESC" } else { " ASC" });
        sql.push(if k.nulls_first {
            " NULLS FIRST"
        } else {
            " NULLS LAST"
        });
    }
    sql.push(&format!(" LIMIT {}) p", limit + 1));

    let rows = scope.query_sql(&sql).await?;
    let has_more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next_cursor = match (has_more, page.last()) {
        (true, Some(last)) if !table.primary_key.is_empty() => Some(cursor::encode(&Position {
            s: signature,
            v: last.get("position"),
        })),
        _ => None,
    };
    Ok(json!({
        "rows": page.iter().map(|r| json_column(r, "row")).collect::<Result<Vec<_>, _>>()?,
        "next_cursor": next_cursor,
        "has_more": has_more,
    }))
}

fn sort_keys<'t>(table: &'t Table, requested: &[SortKey]) -> Result<Vec<Key<'t>>, ToolError> {
    if requested.len() > MAX_SORT_KEYS {
        return Err(ToolError::invalid_input(
            "sort",
            format!("at most {MAX_SORT_KEYS} sort keys"),
        ));
    }
    let mut keys = Vec::new();
    for (i, k) in requested.iter().enumerate() {
        let path = format!("sort[{i}].column");
        let column = lookup(table, &k.column, &path)?;
        if !column.kind.orderable() && !matches!(column.kind, super::catalog::Kind::Bool) {
            return Err(ToolError::invalid_input(
                &path,
                format!("{} cannot be sorted", column.name),
            ));
        }
        if keys
            .iter()
            .any(|existing: &Key| existing.column.name == column.name)
        {
            return Err(ToolError::invalid_input(
                &path,
                format!("{} is sorted twice", column.name),
            ));
        }
        let descending = k.direction == Some(Direction::Desc);
        // PostgreSQL's defaults: NULLS LAST ascending, NULLS FIRST descending.
        let nulls_first = match k.nulls {
            Some(n) => n == Nulls::First,
            None => descending,
        };
        keys.push(Key {
            column,
            descending,
            nulls_first,
        });
    }
    // The primary key makes the order total, which keyset paging needs.
    for name in &table.primary_key {
        if keys.iter().any(|k| &k.column.name == name) {
            continue;
        }
        if let Some(column) = table.column(name) {
            keys.push(Key {
                column,
                descending: false,
                nulls_first: false,
            });
        }
    }
    Ok(keys)
}

fn sort_signature(catalog: &Catalog, table: &Table, keys: &[Key]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(catalog.schema.as_bytes());
    hasher.update([0]);
    hasher.update(table.name.as_bytes());
    for k in keys {
        hasher.update([0]);
        hasher.update(k.column.name.as_bytes());
        hasher.update([k.descending as u8, k.nulls_first as u8]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Appends "strictly after `values` in the order of `keys`": for each key, all earlier keys
/// equal and this one after, OR'd together; NULL placement follows each key's NULLS option.
fn after(sql: &mut Sql, keys: &[Key], values: &[Option<String>]) {
    sql.push("(");
    let mut first_branch = true;
    for i in 0..keys.len() {
        let key = &keys[i];
        let value = &values[i];
        // A branch that can never match is left out.
        let strictly_after_possible = match value {
            Some(_) => true,
            None => key.nulls_first,
        };
        if !strictly_after_possible {
            continue;
        }
        if !first_branch {
            sql.push(" OR ");
        }
        first_branch = false;
        sql.push("(");
        for j in 0..i {
            equal(sql, &keys[j], &values[j]);
            sql.push(" AND ");
        }
        strictly_after(sql, key, value);
        sql.push(")");
    }
    if first_branch {
        sql.push("false");
    }
    sql.push(")");
}

fn column(sql: &mut Sql, key: &Key) {
    sql.push("t.").ident(&key.column.name);
}

fn equal(sql: &mut Sql, key: &Key, value: &Option<String>) {
    column(sql, key);
    match value {
        None => {
            sql.push(" IS NULL");
        }
        Some(v) => {
            sql.push(" = ").value(Some(v.clone()), &key.column.cast);
        }
    }
}

fn strictly_after(sql: &mut Sql, key: &Key, value: &Option<String>) {
    match value {
        // After NULL (only reachable with NULLS FIRST): every non-NULL value.
        None => {
            column(sql, key);
            sql.push(" IS NOT NULL");
        }
        Some(v) => {
            sql.push("(");
            column(sql, key);
            sql.push(if key.descending { " < " } else { " > " });
            sql.value(Some(v.clone()), &key.column.cast);
            if !key.nulls_first {
                sql.push(" OR ");
                column(sql, key);
                sql.push(" IS NULL");
            }
            sql.push(")");
        }
    }
}
