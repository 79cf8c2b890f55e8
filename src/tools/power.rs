//! The generic power tools on each product endpoint, over that product's schema.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::{Cx, Effect, ToolDef, ToolError, ToolResult};
use crate::engine::aggregate::{self, AggregateArgs};
use crate::engine::catalog::Catalog;
use crate::engine::mutate::{self, DeleteArgs, InsertArgs, UpdateArgs};
use crate::engine::query::{self, QueryArgs};
use crate::identity::{Endpoint, Product, Role};

/// The power tools for one product's endpoint.
pub fn tools(product: Product) -> Vec<ToolDef> {
    let here = Endpoint::Product(product);
    vec![
        ToolDef::new(
            "list_tables",
            "List the tables of this product's schema, with a row-count estimate and a description.",
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
    let Endpoint::Product(product) = cx.endpoint else {
        return Err(ToolError::internal("power tool on a non-product endpoint"));
    };
    cx.app.catalog.get(cx.scope, product.slug()).await
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

async fn list_tables(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let catalog = catalog(cx).await?;
    let tables: Vec<_> = catalog
        .tables
        .values()
        .map(|t| json!({ "name": t.name, "description": t.description, "row_estimate": t.row_estimate }))
        .collect();
    Ok(json!({ "schema": catalog.schema, "tables": tables }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TableArg {
    /// The table's name (see list_tables).
    table: String,
}

async fn describe_table(cx: &Cx<'_>, args: TableArg) -> ToolResult {
    let catalog = catalog(cx).await?;
    let table = catalog.table("table", &args.table)?;
    // Custom field definitions arrive with the custom-fields capability; until then a
    // table's `custom` jsonb column holds free-form fields and the list is empty.
    Ok(table.describe(json!([])))
}

async fn query_records(cx: &Cx<'_>, args: QueryArgs) -> ToolResult {
    let catalog = catalog(cx).await?;
    query::run(cx.scope, &catalog, args).await
}

async fn aggregate_records(cx: &Cx<'_>, args: AggregateArgs) -> ToolResult {
    let catalog = catalog(cx).await?;
    aggregate::run(cx.scope, &catalog, args).await
}

async fn insert_record(cx: &Cx<'_>, args: InsertArgs) -> ToolResult {
    let catalog = catalog(cx).await?;
    mutate::insert(cx.scope, &catalog, args).await
}

async fn update_record(cx: &Cx<'_>, args: UpdateArgs) -> ToolResult {
    let catalog = catalog(cx).await?;
    mutate::update(cx.scope, &catalog, args).await
}

async fn delete_record(cx: &Cx<'_>, args: DeleteArgs) -> ToolResult {
    let catalog = catalog(cx).await?;
    mutate::delete(cx.scope, &catalog, args).await
}
