//! The generic power tools on each product endpoint, over that product's schema.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Cx, Effect, ToolDef, ToolError, ToolResult, custom_fields};
use crate::engine::aggregate::{self, AggregateArgs};
use crate::engine::catalog::Catalog;
use crate::engine::mutate::{self, DeleteArgs, InsertArgs, UpdateArgs};
use crate::engine::query::{self, QueryArgs};
use crate::engine::sql::Sql;
use crate::identity::{Endpoint, Product, Role};

/// The power tools for one product's endpoint.
pub fn tools(product: Product) -> Vec<ToolDef> {
    tools_on(Endpoint::Product(product))
}

/// The power tools on an endpoint: a product's (over its schema, under row-level security) or
/// the linked databases' (over the schema a data-source key is bound to).
pub fn tools_on(here: Endpoint) -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "list_tables",
            "List the tables of this product's schema, with a description and how many rows this workspace \
             has in each (counted up to 1000; more shows as \"1000+\").",
            here,
            Role::Reader,
            Effect::Read,
            list_tables,
        ),
        ToolDef::new(
            "describe_table",
            "Describe a table: columns (name, type, nullable, default, description, writable), primary key, \
             foreign keys, indexes, its full-text search column, and the workspace's custom fields.",
            here,
            Role::Reader,
            Effect::Read,
            describe_table,
        ),
        ToolDef::new(
            "query_records",
            "Read rows of a table: choose columns (`select`), filter with a JSON tree of and/or/not over \
             {column, op, value} (ops: eq, neq, lt, lte, gt, gte, in, like, ilike, is_null, contains, search), \
             sort by several columns (asc/desc, nulls first/last), page with `limit` (max 200) and the returned \
             `next_cursor`.",
            here,
            Role::Reader,
            Effect::Read,
            query_records,
        ),
        ToolDef::new(
            "aggregate_records",
            "Count, count distinct, sum, avg, min and max over a table, optionally grouped by columns or by a \
             timestamp truncated to day, week or month, with the same filter as query_records.",
            here,
            Role::Reader,
            Effect::Read,
            aggregate_records,
        ),
        ToolDef::new(
            "insert_record",
            "Insert one row (`values`) or up to 100 (`rows`) in one transaction; returns the inserted rows.",
            here,
            Role::Member,
            Effect::Write,
            insert_record,
        ),
        ToolDef::new(
            "update_record",
            "Update one row by primary key (`key`), or the rows matching `filter` with a required `max_rows` \
             guard (nothing changes if more would); returns the updated rows.",
            here,
            Role::Member,
            Effect::IdempotentWrite,
            update_record,
        ),
        ToolDef::new(
            "delete_record",
            "Delete one row by primary key (`key`), or the rows matching `filter` with a required `max_rows` \
             guard (nothing is deleted if more would match); returns the deleted rows.",
            here,
            Role::Member,
            Effect::Destructive,
            delete_record,
        ),
    ]
}

/// The catalog of the schema behind the endpoint the call arrived on.
async fn catalog(cx: &Cx<'_>) -> Result<Arc<Catalog>, ToolError> {
    match cx.endpoint {
        Endpoint::Product(product) => cx.app.catalog.get(cx.scope, product.slug()).await,
        Endpoint::DataSource => {
            cx.app
                .data_sources
                .catalog(cx.principal, cx.scope, false)
                .await
        }
        Endpoint::Concierge => Err(ToolError::internal("power tool on the concierge")),
    }
}

/// The catalog holding `table`: on a linked database, a table the snapshot lacks makes it
/// read the catalog again (a table created there since appears without a restart).
async fn catalog_with(cx: &Cx<'_>, table: &str) -> Result<Arc<Catalog>, ToolError> {
    let catalog = catalog(cx).await?;
    if cx.endpoint == Endpoint::DataSource && !catalog.tables.contains_key(table) {
        return cx
            .app
            .data_sources
            .catalog(cx.principal, cx.scope, true)
            .await;
    }
    Ok(catalog)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Counting stops here: a table's count costs at most this many rows, and past it the
/// answer is "1000+".
const COUNT_CAP: i64 = 1000;

async fn list_tables(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let catalog = match cx.endpoint {
        // Listing reads a linked schema afresh: the user changes it outside hdls.
        Endpoint::DataSource => {
            cx.app
                .data_sources
                .catalog(cx.principal, cx.scope, true)
                .await?
        }
        _ => catalog(cx).await?,
    };
    let counts = row_counts(cx, &catalog).await?;
    let tables: Vec<_> = catalog
        .tables
        .values()
        .zip(counts)
        .map(|(t, n)| {
            let rows = if n > COUNT_CAP {
                json!(format!("{COUNT_CAP}+"))
            } else {
                json!(n)
            };
            json!({ "name": t.name, "description": t.description, "rows": rows })
        })
        .collect();
    Ok(json!({ "schema": catalog.schema, "tables": tables }))
}

/// This workspace's rows per table, in the catalog's table order, each counted up to one
/// past the cap. The counts run in the caller's Scope, so row-level security limits them
/// to the caller's workspace: the planner's `reltuples` would count every tenant's rows.
/// One statement for all tables, one round trip.
async fn row_counts(cx: &Cx<'_>, catalog: &Catalog) -> Result<Vec<i64>, ToolError> {
    if catalog.tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut sql = Sql::new();
    sql.push("SELECT ARRAY[");
    for (i, table) in catalog.tables.values().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("(SELECT count(*) FROM (SELECT 1 FROM ")
            .table(&catalog.schema, &table.name)
            .push(" t WHERE ")
            .route(cx.scope, table, "t")
            .push(&format!("true LIMIT {}) s)", COUNT_CAP + 1));
    }
    sql.push("]::int8[] AS counts");
    let rows = cx.scope.query_sql(&sql).await?;
    let counts: Vec<i64> = rows.first().map(|r| r.get("counts")).unwrap_or_default();
    if counts.len() != catalog.tables.len() {
        return Err(ToolError::internal("row counts do not match the tables"));
    }
    Ok(counts)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TableArg {
    /// The table's name (see list_tables).
    table: String,
}

async fn describe_table(cx: &Cx<'_>, args: TableArg) -> ToolResult {
    let catalog = catalog_with(cx, &args.table).await?;
    let table = catalog.table("table", &args.table)?;
    // The custom fields the caller sees on this table's entity, if it has one.
    let fields = match cx.endpoint {
        Endpoint::Product(product) => {
            match custom_fields::entities_of(product).find(|e| e.table == table.name) {
                Some(entity) => custom_fields::visible(cx, *entity)
                    .await?
                    .iter()
                    .map(custom_fields::Definition::to_json)
                    .collect(),
                None => Vec::new(),
            }
        }
        Endpoint::Concierge | Endpoint::DataSource => Vec::new(),
    };
    Ok(table.describe(Value::Array(fields)))
}

async fn query_records(cx: &Cx<'_>, args: QueryArgs) -> ToolResult {
    let catalog = catalog_with(cx, &args.table).await?;
    let entity = custom_entity(cx, &args.table);
    if let Some(entity) = entity {
        let guard = CustomGuard::load(cx, entity).await?;
        guard.filter(args.filter.as_ref(), "filter")?;
        for (i, key) in args.sort.iter().flatten().enumerate() {
            guard.whole_column(&key.column, &format!("sort[{i}].column"))?;
        }
    }
    let result = query::run(cx.scope, &catalog, args).await?;
    shown(cx, entity, result).await
}

/// What the power tools may do with an entity's `custom` column for this caller. Values of
/// fields the caller does not see must not come back, nor be inferable: so a filter may name
/// only the caller's visible fields (`custom.<name>`), and the whole column may not be
/// filtered, sorted, grouped or aggregated (its other keys would leak through the answer).
struct CustomGuard {
    visible: Vec<String>,
}

impl CustomGuard {
    async fn load(cx: &Cx<'_>, entity: custom_fields::Entity) -> Result<CustomGuard, ToolError> {
        let visible = custom_fields::visible(cx, entity)
            .await?
            .into_iter()
            .map(|f| f.name)
            .collect();
        Ok(CustomGuard { visible })
    }

    /// Refuses the whole `custom` column (or any key of it) where whole values would leak.
    fn whole_column(&self, column: &str, path: &str) -> Result<(), ToolError> {
        if column == "custom" || column.starts_with("custom.") {
            return Err(ToolError::invalid_input(
                path,
                "custom fields cannot be sorted, grouped or aggregated here; filter on custom.<name> instead",
            ));
        }
        Ok(())
    }

    /// Checks every condition of a filter tree.
    fn filter(&self, filter: Option<&Value>, path: &str) -> Result<(), ToolError> {
        let Some(node) = filter else { return Ok(()) };
        match node {
            Value::Object(object) => {
                for (key, value) in object {
                    match (key.as_str(), value) {
                        ("column", Value::String(column)) => self.condition(column, path)?,
                        ("and" | "or", Value::Array(items)) => {
                            for (i, item) in items.iter().enumerate() {
                                self.filter(Some(item), &format!("{path}.{key}[{i}]"))?;
                            }
                        }
                        ("not", inner) => self.filter(Some(inner), &format!("{path}.not"))?,
                        _ => {}
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn condition(&self, column: &str, path: &str) -> Result<(), ToolError> {
        let path = format!("{path}.column");
        if column == "custom" {
            return Err(ToolError::invalid_input(
                &path,
                "filter on one custom field at a time: custom.<name>",
            ));
        }
        if let Some(name) = column.strip_prefix("custom.")
            && !self.visible.iter().any(|v| v == name)
        {
            return Err(ToolError::invalid_input(
                &path,
                format!("there is no custom field {name:?} here (list_custom_fields lists them)"),
            ));
        }
        Ok(())
    }
}

/// The custom-field entity behind a table of this endpoint's product, if any.
fn custom_entity(cx: &Cx<'_>, table: &str) -> Option<custom_fields::Entity> {
    match cx.endpoint {
        Endpoint::Product(product) => custom_fields::entities_of(product)
            .find(|e| e.table == table)
            .copied(),
        Endpoint::Concierge | Endpoint::DataSource => None,
    }
}

/// Hides, in a result's `rows`, the custom values the caller does not see (another person's
/// personal fields, removed fields), as the named tools do.
async fn shown(
    cx: &Cx<'_>,
    entity: Option<custom_fields::Entity>,
    mut result: Value,
) -> ToolResult {
    if let (Some(entity), Some(Value::Array(rows))) = (entity, result.get_mut("rows")) {
        custom_fields::hide_invisible(
            cx,
            entity,
            rows.iter_mut().filter_map(|r| r.get_mut("custom")),
        )
        .await?;
    }
    Ok(result)
}

/// Checks `custom` values written through the power tools against the fields the caller sees
/// (the whole object is written, so it is checked whole).
async fn check_custom(
    cx: &Cx<'_>,
    entity: Option<custom_fields::Entity>,
    rows: &[&Map<String, Value>],
) -> Result<(), ToolError> {
    let Some(entity) = entity else { return Ok(()) };
    for row in rows {
        match row.get("custom") {
            None | Some(Value::Null) => {}
            Some(Value::Object(values)) => custom_fields::check(cx, entity, values, false).await?,
            Some(_) => {
                return Err(ToolError::invalid_input(
                    "values.custom",
                    "custom must be an object of custom field values",
                ));
            }
        }
    }
    Ok(())
}

async fn aggregate_records(cx: &Cx<'_>, args: AggregateArgs) -> ToolResult {
    let catalog = catalog_with(cx, &args.table).await?;
    if let Some(entity) = custom_entity(cx, &args.table) {
        let guard = CustomGuard::load(cx, entity).await?;
        guard.filter(args.filter.as_ref(), "filter")?;
        for (i, group) in args.group_by.iter().flatten().enumerate() {
            let column = match group {
                Value::String(c) => Some(c.as_str()),
                Value::Object(o) => o.get("column").and_then(Value::as_str),
                _ => None,
            };
            if let Some(column) = column {
                guard.whole_column(column, &format!("group_by[{i}]"))?;
            }
        }
        for (i, aggregate) in args.aggregates.iter().enumerate() {
            if let Some(column) = &aggregate.column {
                guard.whole_column(column, &format!("aggregates[{i}].column"))?;
            }
        }
    }
    aggregate::run(cx.scope, &catalog, args).await
}

async fn insert_record(cx: &Cx<'_>, args: InsertArgs) -> ToolResult {
    let catalog = catalog_with(cx, &args.table).await?;
    let entity = custom_entity(cx, &args.table);
    let rows: Vec<&Map<String, Value>> = args
        .values
        .iter()
        .chain(args.rows.iter().flatten())
        .collect();
    check_custom(cx, entity, &rows).await?;
    let result = mutate::insert(cx.scope, &catalog, args).await?;
    shown(cx, entity, result).await
}

async fn update_record(cx: &Cx<'_>, args: UpdateArgs) -> ToolResult {
    let catalog = catalog_with(cx, &args.table).await?;
    let entity = custom_entity(cx, &args.table);
    if let Some(entity) = entity {
        // Writing `custom` whole would erase values the caller cannot see (other people's
        // personal fields, removed fields); the named update tools merge instead.
        if args.values.contains_key("custom") {
            return Err(ToolError::invalid_input(
                "values.custom",
                format!(
                    "custom fields are changed with update_{} (it merges them), not update_record",
                    entity.name
                ),
            ));
        }
        CustomGuard::load(cx, entity)
            .await?
            .filter(args.filter.as_ref(), "filter")?;
    }
    let result = mutate::update(cx.scope, &catalog, args).await?;
    shown(cx, entity, result).await
}

async fn delete_record(cx: &Cx<'_>, args: DeleteArgs) -> ToolResult {
    let catalog = catalog_with(cx, &args.table).await?;
    let entity = custom_entity(cx, &args.table);
    if let Some(entity) = entity {
        CustomGuard::load(cx, entity)
            .await?
            .filter(args.filter.as_ref(), "filter")?;
    }
    let result = mutate::delete(cx.scope, &catalog, args).await?;
    shown(cx, entity, result).await
}
