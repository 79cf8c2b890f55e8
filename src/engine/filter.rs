//! The filter language: a JSON tree of `and`/`or`/`not` over `{column, op, value}`
//! conditions, compiled to a parameterised WHERE clause against the catalog.

use serde_json::{Map, Value};

use super::catalog::{Kind, Table};
use super::sql::Sql;
use super::values::{self, MAX_ARRAY};
use crate::error::ToolError;

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 16;
/// Most conditions in one filter.
const MAX_CONDITIONS: usize = 200;

/// Compiles `filter` (found at `path` in the request) into `sql`, which receives a boolean expression.
pub fn compile(
    sql: &mut Sql,
    table: &Table,
    alias: &str,
    filter: &Value,
    path: &str,
) -> Result<(), ToolError> {
    let mut budget = MAX_CONDITIONS;
    node(sql, table, alias, filter, path, 0, &mut budget)
}

fn node(
    sql: &mut Sql,
    table: &Table,
    alias: &str,
    filter: &Value,
    path: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<(), ToolError> {
    if depth > MAX_DEPTH {
        return Err(ToolError::invalid_input(
            path,
            format!("filters nest at most {MAX_DEPTH} levels"),
        ));
    }
    let object = filter.as_object().ok_or_else(|| {
        ToolError::invalid_input(
            path,
            "a filter is an object: {and:[…]}, {or:[…]}, {not:…} or {column, op, value}",
        )
    })?;
    for combinator in ["and", "or"] {
        if let Some(items) = object.get(combinator) {
            only_keys(object, &[combinator], path)?;
            let at = format!("{path}.{combinator}");
            let items = items.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                ToolError::invalid_input(
                    &at,
                    format!("{combinator} takes a non-empty array of filters"),
                )
            })?;
            sql.push("(");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    sql.push(if combinator == "and" { " AND " } else { " OR " });
                }
                node(
                    sql,
                    table,
                    alias,
                    item,
                    &format!("{at}[{i}]"),
                    depth + 1,
                    budget,
                )?;
            }
            sql.push(")");
            return Ok(());
        }
    }
    if let Some(inner) = object.get("not") {
        only_keys(object, &["not"], path)?;
        sql.push("(NOT ");
        node(
            sql,
            table,
            alias,
            inner,
            &format!("{path}.not"),
            depth + 1,
            budget,
        )?;
        sql.push(")");
        return Ok(());
    }
    if *budget == 0 {
        return Err(ToolError::invalid_input(
            path,
            format!("at most {MAX_CONDITIONS} conditions per filter"),
        ));
    }
    *budget -= 1;
    condition(sql, table, alias, object, path)
}

fn only_keys(object: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), ToolError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(ToolError::invalid_input(
            &format!("{path}.{extra}"),
            format!("unexpected key {extra:?} next to {}", allowed.join("/")),
        )),
        None => Ok(()),
    }
}

fn condition(
    sql: &mut Sql,
    table: &Table,
    alias: &str,
    object: &Map<String, Value>,
    path: &str,
) -> Result<(), ToolError> {
    only_keys(object, &["column", "op", "value"], path)?;
    let op_path = format!("{path}.op");
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::invalid_input(&op_path, "op is required: eq, neq, lt, lte, gt, gte, in, like, ilike, is_null, contains or search"))?;
    let value_path = format!("{path}.value");
    let value = object.get("value").unwrap_or(&Value::Null);
    let column_path = format!("{path}.column");
    let column_name = match object.get("column") {
        Some(Value::String(name)) => Some(name.as_str()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ToolError::invalid_input(
                &column_path,
                "column must be a string",
            ));
        }
    };

    if op == "search" {
        let column = match column_name {
            Some(name) => lookup(table, name, &column_path)?,
            None => table.search_column().ok_or_else(|| {
                ToolError::invalid_input(
                    &op_path,
                    format!("table {} has no full-text search column", table.name),
                )
            })?,
        };
        if column.kind != Kind::TsVector {
            return Err(ToolError::invalid_input(
                &column_path,
                format!("{} is not a full-text search column", column.name),
            ));
        }
        let query = value
            .as_str()
            .filter(|q| !q.trim().is_empty() && q.len() <= 1000 && !q.contains('\0'))
            .ok_or_else(|| {
                ToolError::invalid_input(
                    &value_path,
                    "search takes non-empty text (at most 1000 bytes)",
                )
            })?;
        // The 'simple' configuration matches the generated vectors of the managed products.
        sql.push(alias)
            .push(".")
            .ident(&column.name)
            .push(" @@ websearch_to_tsquery('simple', ");
        sql.value(Some(query.to_owned()), "text").push(")");
        return Ok(());
    }

    let name =
        column_name.ok_or_else(|| ToolError::invalid_input(&column_path, "column is required"))?;
    // `custom.renewal_quarter`: one key of a jsonb column (custom fields).
    if let Some((column_name, key)) = name.split_once('.') {
        let column = lookup(table, column_name, &column_path)?;
        return json_key_condition(
            sql,
            alias,
            column,
            key,
            op,
            value,
            &column_path,
            &value_path,
        );
    }
    let column = lookup(table, name, &column_path)?;
    let kind = &column.kind;
    let refuse = |what: &str| {
        ToolError::invalid_input(
            &op_path,
            format!("{op} does not apply to {} ({what})", column.name),
        )
    };
    match op {
        "eq" | "neq" | "lt" | "lte" | "gt" | "gte" => {
            let ordered = !matches!(op, "eq" | "neq");
            if ordered && !kind.orderable() {
                return Err(refuse(&column.type_display));
            }
            if !kind.equatable() {
                return Err(refuse(&column.type_display));
            }
            if value.is_null() {
                return Err(ToolError::invalid_input(
                    &value_path,
                    "value is required; use is_null to match NULL",
                ));
            }
            let symbol = match op {
                "eq" => "=",
                "neq" => "<>",
                "lt" => "<",
                "lte" => "<=",
                "gt" => ">",
                _ => ">=",
            };
            sql.push(alias)
                .push(".")
                .ident(&column.name)
                .push(" ")
                .push(symbol)
                .push(" ");
            match kind {
                Kind::Array(elem) => {
                    let items = values::to_text_array(elem, &column.name, value, &value_path)?;
                    sql.array(items, &column.cast);
                }
                _ => {
                    sql.value(values::to_text(column, value, &value_path)?, &column.cast);
                }
            }
        }
        "in" => {
            if matches!(kind, Kind::Array(_)) || !kind.equatable() {
                return Err(refuse(&column.type_display));
            }
            let items = value.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                ToolError::invalid_input(
                    &value_path,
                    format!("in takes a non-empty array (at most {MAX_ARRAY})"),
                )
            })?;
            if items.iter().any(Value::is_null) {
                return Err(ToolError::invalid_input(
                    &value_path,
                    "in cannot match NULL; combine with is_null",
                ));
            }
            let texts = values::to_text_array(kind, &column.name, value, &value_path)?;
            sql.push(alias)
                .push(".")
                .ident(&column.name)
                .push(" = ANY(");
            sql.array(texts, &format!("{}[]", column.cast)).push(")");
        }
        "like" | "ilike" => {
            if *kind != Kind::Text {
                return Err(refuse("not text"));
            }
            let pattern = values::to_text(column, value, &value_path)?
                .ok_or_else(|| ToolError::invalid_input(&value_path, "a pattern is required"))?;
            // Backslash escapes the next character; PostgreSQL refuses one with nothing after.
            let trailing = pattern.bytes().rev().take_while(|b| *b == b'\\').count();
            if trailing % 2 == 1 {
                return Err(ToolError::invalid_input(
                    &value_path,
                    "a pattern cannot end with a lone backslash; write \\\\ for a literal one",
                ));
            }
            sql.push(alias)
                .push(".")
                .ident(&column.name)
                .push(if op == "like" { " LIKE " } else { " ILIKE " });
            sql.value(Some(pattern), "text");
        }
        "is_null" => {
            let is_null = match value {
                Value::Null => true,
                Value::Bool(b) => *b,
                _ => {
                    return Err(ToolError::invalid_input(
                        &value_path,
                        "is_null takes true or false",
                    ));
                }
            };
            sql.push(alias)
                .push(".")
                .ident(&column.name)
                .push(if is_null { " IS NULL" } else { " IS NOT NULL" });
        }
        "contains" => match kind {
            Kind::Jsonb => {
                if value.is_null() {
                    return Err(ToolError::invalid_input(
                        &value_path,
                        "contains needs a JSON value",
                    ));
                }
                sql.push(alias).push(".").ident(&column.name).push(" @> ");
                sql.value(values::to_text(column, value, &value_path)?, "jsonb");
            }
            Kind::Array(elem) => {
                let items = values::to_text_array(elem, &column.name, value, &value_path)?;
                sql.push(alias).push(".").ident(&column.name).push(" @> ");
                sql.array(items, &column.cast);
            }
            _ => return Err(refuse("contains needs a jsonb or array column")),
        },
        other => {
            return Err(ToolError::invalid_input(
                &op_path,
                format!(
                    "unknown op {other:?}: use eq, neq, lt, lte, gt, gte, in, like, ilike, is_null, contains or search"
                ),
            ));
        }
    }
    Ok(())
}

/// A condition on one key of a jsonb column (`custom.tier`): the key is a bound parameter,
/// values compare as JSON (numbers numerically, strings and ISO dates as text), `like` and
/// `ilike` match the key's text, `is_null` is true for a missing key or a JSON null.
#[allow(clippy::too_many_arguments)]
fn json_key_condition(
    sql: &mut Sql,
    alias: &str,
    column: &super::catalog::Column,
    key: &str,
    op: &str,
    value: &Value,
    column_path: &str,
    value_path: &str,
) -> Result<(), ToolError> {
    if column.kind != Kind::Jsonb {
        return Err(ToolError::invalid_input(
            column_path,
            format!(
                "{} is not a jsonb column, so it has no keys to filter on",
                column.name
            ),
        ));
    }
    let key_ok = key.len() <= 63
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !key_ok {
        return Err(ToolError::invalid_input(
            column_path,
            "a key is a lowercase letter, then lowercase letters, digits or underscores",
        ));
    }
    let field = |sql: &mut Sql, arrow: &str| {
        sql.push(alias).push(".").ident(&column.name).push(arrow);
        sql.value(Some(key.to_owned()), "text");
    };
    let json_value = |v: &Value| -> Result<String, ToolError> {
        if v.is_null() {
            return Err(ToolError::invalid_input(
                value_path,
                "value is required; use is_null to match a missing value",
            ));
        }
        Ok(v.to_string())
    };
    match op {
        "eq" | "neq" | "lt" | "lte" | "gt" | "gte" => {
            let symbol = match op {
                "eq" => " = ",
                "neq" => " <> ",
                "lt" => " < ",
                "lte" => " <= ",
                "gt" => " > ",
                _ => " >= ",
            };
            let literal = json_value(value)?;
            sql.push("(");
            field(sql, " -> ");
            sql.push(")").push(symbol);
            sql.value(Some(literal), "jsonb");
        }
        "in" => {
            let items = value
                .as_array()
                .filter(|a| !a.is_empty() && a.len() <= MAX_ARRAY)
                .ok_or_else(|| {
                    ToolError::invalid_input(
                        value_path,
                        format!("in takes a non-empty array (at most {MAX_ARRAY})"),
                    )
                })?;
            let items = items
                .iter()
                .map(|v| json_value(v).map(Some))
                .collect::<Result<Vec<_>, _>>()?;
            sql.push("(");
            field(sql, " -> ");
            sql.push(") = ANY(");
            sql.array(items, "jsonb[]").push(")");
        }
        "like" | "ilike" => {
            let pattern = value.as_str().ok_or_else(|| {
                ToolError::invalid_input(value_path, "a text pattern is required")
            })?;
            let trailing = pattern.bytes().rev().take_while(|b| *b == b'\\').count();
            if trailing % 2 == 1 || pattern.len() > 1000 || pattern.contains('\0') {
                return Err(ToolError::invalid_input(
                    value_path,
                    "a pattern of at most 1000 bytes, not ending with a lone backslash",
                ));
            }
            sql.push("(");
            field(sql, " ->> ");
            sql.push(if op == "like" { ") LIKE " } else { ") ILIKE " });
            sql.value(Some(pattern.to_owned()), "text");
        }
        "is_null" => {
            let is_null = match value {
                Value::Null => true,
                Value::Bool(b) => *b,
                _ => {
                    return Err(ToolError::invalid_input(
                        value_path,
                        "is_null takes true or false",
                    ));
                }
            };
            sql.push("coalesce(jsonb_typeof(");
            field(sql, " -> ");
            sql.push(if is_null {
                "), 'null') = 'null'"
            } else {
                "), 'null') <> 'null'"
            });
        }
        "contains" => {
            let literal = json_value(value)?;
            sql.push("(");
            field(sql, " -> ");
            sql.push(") @> ");
            sql.value(Some(literal), "jsonb");
        }
        other => {
            return Err(ToolError::invalid_input(
                &format!("{}.op", column_path.trim_end_matches(".column")),
                format!("{other:?} does not apply to a key of {}", column.name),
            ));
        }
    }
    Ok(())
}

/// A visible column by name, or `invalid_input` at `path`.
pub fn lookup<'t>(
    table: &'t Table,
    name: &str,
    path: &str,
) -> Result<&'t super::catalog::Column, ToolError> {
    table.column(name).ok_or_else(|| {
        let known: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        ToolError::invalid_input(
            path,
            format!(
                "no column {name:?} in {}; columns: {}",
                table.name,
                known.join(", ")
            ),
        )
    })
}
