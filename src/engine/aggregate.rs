//! `aggregate_records`: count, count distinct, sum, avg, min, max, grouped by columns or
//! truncated dates, under the same filter language.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::catalog::{Catalog, Kind};
use super::filter::{self, lookup};
use super::sql::{Sql, json_column};
use crate::db::Scope;
use crate::error::ToolError;

const MAX_AGGREGATES: usize = 20;
const MAX_GROUPS: usize = 8;
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateArgs {
    /// The table to aggregate.
    pub table: String,
    /// What to compute, e.g. [{"fn": "count"}, {"fn": "sum", "column": "amount"}].
    pub aggregates: Vec<Aggregate>,
    /// Group by columns, or by a timestamp truncated to a day, week or month:
    /// ["status", {"column": "created_at", "trunc": "month"}].
    #[serde(default)]
    #[schemars(with = "Option<Vec<Value>>")]
    pub group_by: Option<Vec<Value>>,
    /// The same filter tree as query_records.
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub filter: Option<Value>,
    /// Most groups returned, 1 to 1000 (default 100).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    #[serde(rename = "fn")]
    pub function: Function,
    /// The column (optional for count, which then counts rows).
    #[serde(default)]
    pub column: Option<String>,
    /// The name of the result field; default `count` or `<fn>_<column>`.
    #[serde(default, rename = "as")]
    pub alias: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Count => "count",
            Function::CountDistinct => "count_distinct",
            Function::Sum => "sum",
            Function::Avg => "avg",
            Function::Min => "min",
            Function::Max => "max",
        }
    }
}

/// Runs the aggregation.
pub async fn run(
    scope: &Scope,
    catalog: &Catalog,
    args: AggregateArgs,
) -> Result<Value, ToolError> {
    let table = catalog.table("table", &args.table)?;
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ToolError::invalid_input(
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    if args.aggregates.is_empty() || args.aggregates.len() > MAX_AGGREGATES {
        return Err(ToolError::invalid_input(
            "aggregates",
            format!("give 1 to {MAX_AGGREGATES} aggregates"),
        ));
    }
    let groups = args.group_by.unwrap_or_default();
    if groups.len() > MAX_GROUPS {
        return Err(ToolError::invalid_input(
            "group_by",
            format!("at most {MAX_GROUPS} group keys"),
        ));
    }

    // Output names are chosen here and mapped in Rust: SQL aliases are positional (g0, a0),
    // so no client-chosen name is ever written into the SQL text.
    let mut names: Vec<String> = Vec::new();
    let mut sql = Sql::new();
    sql.push("SELECT ");
    let mut select_items = 0;
    for (i, group) in groups.iter().enumerate() {
        let path = format!("group_by[{i}]");
        let (column_name, trunc) = match group {
            Value::String(name) => (name.as_str(), None),
            Value::Object(o) => {
                if let Some(extra) = o.keys().find(|k| !matches!(k.as_str(), "column" | "trunc")) {
                    return Err(ToolError::invalid_input(
                        &format!("{path}.{extra}"),
                        "group keys take column and trunc",
                    ));
                }
                let column = o.get("column").and_then(Value::as_str).ok_or_else(|| {
                    ToolError::invalid_input(&format!("{path}.column"), "column is required")
                })?;
                let trunc = match o.get("trunc") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(unit))
                        if matches!(unit.as_str(), "day" | "week" | "month") =>
                    {
                        Some(unit.as_str())
                    }
                    Some(_) => {
                        return Err(ToolError::invalid_input(
                            &format!("{path}.trunc"),
                            "trunc is day, week or month",
                        ));
                    }
                };
                (column, trunc)
            }
            _ => {
                return Err(ToolError::invalid_input(
                    &path,
                    "a group key is a column name or {column, trunc}",
                ));
            }
        };
        let column_path = if matches!(group, Value::String(_)) {
            path.clone()
        } else {
            format!("{path}.column")
        };
        let column = lookup(table, column_name, &column_path)?;
        if names.contains(&column.name) {
            return Err(ToolError::invalid_input(
                &column_path,
                format!("{} is grouped twice", column.name),
            ));
        }
        if !column.kind.equatable() {
            return Err(ToolError::invalid_input(
                &column_path,
                format!("{} cannot be grouped", column.name),
            ));
        }
        if select_items > 0 {
            sql.push(", ");
        }
        select_items += 1;
        match trunc {
            None => {
                sql.push("t.").ident(&column.name);
            }
            Some(unit) => {
                // The unit is one of three server-side words, never client text.
                let unit = match unit {
                    "day" => "'day'",
                    "week" => "'week'",
                    _ => "'month'",
                };
                match column.kind {
                    Kind::Timestamptz => {
                        sql.push("date_trunc(")
                            .push(unit)
                            .push(", t.")
                            .ident(&column.name)
                            .push(", 'UTC')");
                    }
                    Kind::Timestamp => {
                        sql.push("date_trunc(")
                            .push(unit)
                            .push(", t.")
                            .ident(&column.name)
                            .push(")");
                    }
                    Kind::Date => {
                        sql.push("date_trunc(")
                            .push(unit)
                            .push(", t.")
                            .ident(&column.name)
                            .push("::timestamp)::date");
                    }
                    _ => {
                        return Err(ToolError::invalid_input(
                            &format!("{path}.trunc"),
                            format!("{} is not a date or timestamp", column.name),
                        ));
                    }
                }
            }
        }
        sql.push(&format!(" AS g{i}"));
        names.push(column.name.clone());
    }
    for (i, aggregate) in args.aggregates.iter().enumerate() {
        let path = format!("aggregates[{i}]");
        let column = match &aggregate.column {
            Some(name) => Some(lookup(table, name, &format!("{path}.column"))?),
            None => None,
        };
        let function = aggregate.function;
        let needs_column = function != Function::Count;
        if needs_column && column.is_none() {
            return Err(ToolError::invalid_input(
                &format!("{path}.column"),
                format!("{} needs a column", function.name()),
            ));
        }
        if let Some(c) = column {
            let fits = match function {
                Function::Count | Function::CountDistinct => c.kind.equatable(),
                Function::Sum | Function::Avg => c.kind.summable(),
                Function::Min | Function::Max => c.kind.has_min_max(),
            };
            if !fits {
                return Err(ToolError::invalid_input(
                    &format!("{path}.column"),
                    format!(
                        "{} does not apply to {} ({})",
                        function.name(),
                        c.name,
                        c.type_display
                    ),
                ));
            }
        }
        let name = match &aggregate.alias {
            Some(alias) => {
                let ok = !alias.is_empty() && alias.len() <= 63 && !alias.contains('\0');
                if !ok {
                    return Err(ToolError::invalid_input(
                        &format!("{path}.as"),
                        "as is 1 to 63 characters",
                    ));
                }
                alias.clone()
            }
            None => match column {
                Some(c) => format!("{}_{}", function.name(), c.name),
                None => "count".to_owned(),
            },
        };
        if names.contains(&name) {
            return Err(ToolError::invalid_input(
                &format!("{path}.as"),
                format!("{name:?} is used twice; give it a different `as`"),
            ));
        }
        names.push(name);
        if select_items > 0 {
            sql.push(", ");
        }
        select_items += 1;
        match (function, column) {
            (Function::Count, None) => {
                sql.push("count(*)");
            }
            (Function::Count, Some(c)) => {
                sql.push("count(t.").ident(&c.name).push(")");
            }
            (Function::CountDistinct, Some(c)) => {
                sql.push("count(DISTINCT t.").ident(&c.name).push(")");
            }
            (f, Some(c)) => {
                sql.push(f.name()).push("(t.").ident(&c.name).push(")");
            }
            (_, None) => return Err(ToolError::internal("aggregate without column")),
        }
        sql.push(&format!(" AS a{i}"));
    }
    sql.push(" FROM ")
        .table(&catalog.schema, &table.name)
        .push(" t WHERE ")
        .route(scope, table, "t");
    match &args.filter {
        Some(filter) => filter::compile(&mut sql, table, "t", filter, "filter")?,
        None => {
            sql.push("true");
        }
    }
    if !groups.is_empty() {
        let positions: Vec<String> = (1..=groups.len()).map(|p| p.to_string()).collect();
        sql.push(" GROUP BY ").push(&positions.join(", "));
        sql.push(" ORDER BY ").push(&positions.join(", "));
    }
    sql.push(&format!(" LIMIT {limit}"));

    // Wrap so each result row arrives as one JSON object with positional keys.
    sql.text = format!("SELECT to_jsonb(r) AS row FROM ({}) r", sql.text);
    let rows = scope.query_sql(&sql).await?;
    let out: Vec<Value> = rows
        .iter()
        .map(|row| {
            let positional: Value = json_column(row, "row")?;
            let mut named = Map::new();
            for (i, name) in names.iter().enumerate() {
                let key = if i < groups.len() {
                    format!("g{i}")
                } else {
                    format!("a{}", i - groups.len())
                };
                named.insert(
                    name.clone(),
                    positional.get(&key).cloned().unwrap_or(Value::Null),
                );
            }
            Ok(Value::Object(named))
        })
        .collect::<Result<_, ToolError>>()?;
    Ok(json!({ "rows": out }))
}
