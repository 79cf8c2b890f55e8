//! Linked databases on the concierge: `link_database`, `list_databases`, `unlink_database`,
//! `test_database` (admin+). Keys for a linked source are minted by `mint_api_key` with
//! `data_source`; the source is served at `/api/mcp/db/<id>` (see `crate::datasources`).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit::actions;
use crate::datasources::connect::LinkError;
use crate::datasources::target::Target;
use crate::datasources::{self, DataSources};
use crate::db::Scope;
use crate::engine::catalog::Catalog;
use crate::identity::{Endpoint, Role};
use crate::tools::named::NoArgs;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Concierge;

/// The data-source tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "link_database",
            "Link your own PostgreSQL database so its tables are served as tools. Give a name, a connection \
             string (postgres://user:password@host:5432/dbname, a network host only; Unix sockets, several \
             hosts and private, loopback or metadata addresses are refused; TLS is required) and the schema \
             hdls may operate in. hdls connects as that user, with exactly its privileges: grant it only what \
             assistants should do. The string is stored encrypted and never shown again. Then mint a key with \
             mint_api_key {data_source} and use it at the returned endpoint. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Write,
            link_database,
        )
        .audited(actions::DATA_SOURCE_LINK),
        ToolDef::new(
            "list_databases",
            "List this workspace's linked databases: id, name, host, port, database, schema, status, last error, \
             endpoint, who linked it and when. Never shows a connection string or credentials. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Read,
            list_databases,
        ),
        ToolDef::new(
            "unlink_database",
            "Unlink a linked database by id: its stored connection string is erased, every key bound to it is \
             revoked, and its endpoint stops serving. Nothing in your database changes. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Destructive,
            unlink_database,
        )
        .audited(actions::DATA_SOURCE_UNLINK),
        ToolDef::new(
            "test_database",
            "Check a linked database now: the host is resolved and checked again, hdls connects, and reads the \
             schema. Returns ok and the number of tables, or the reason it failed. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::IdempotentWrite,
            test_database,
        ),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct LinkArgs {
    /// A short name for the database: lowercase letters, digits, `_` and `-`, e.g. "shop".
    name: String,
    /// postgres://user:password@host:5432/dbname[?sslmode=require]
    connection_string: String,
    /// The schema hdls may operate in, e.g. "public".
    schema: String,
}

fn check_name(name: &str) -> Result<(), ToolError> {
    let mut chars = name.chars();
    let ok = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ToolError::invalid_input(
            "name",
            "name must start with a lowercase letter and hold only lowercase letters, digits, _ and - (at most 63)",
        ))
    }
}

fn check_schema(schema: &str) -> Result<(), ToolError> {
    if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
        return Err(ToolError::invalid_input(
            "schema",
            "schema must be 1 to 63 characters",
        ));
    }
    if schema.starts_with("pg_") || schema == "information_schema" {
        return Err(ToolError::invalid_input(
            "schema",
            "system schemas cannot be linked; name one of your own schemas",
        ));
    }
    Ok(())
}

/// A connection failure at link or test time: what the user must fix is `invalid_input` at
/// the connection string; a database that did not answer is `unavailable`.
fn link_failure(error: &LinkError) -> ToolError {
    match error {
        LinkError::Timeout { .. } | LinkError::Connect { .. } => {
            ToolError::unavailable(error.to_string())
        }
        _ => ToolError::invalid_input("connection_string", error.to_string()),
    }
}

/// Connects now (resolving and checking the host again), and reads the schema.
async fn probe(
    sources: &DataSources,
    cx: &Cx<'_>,
    target: &Target,
    schema: &str,
) -> Result<Catalog, ToolError> {
    let scope = sources
        .probe(&cx.app.outbound, target)
        .await
        .map_err(|e| link_failure(&e))?;
    let catalog = read_schema(&scope, schema).await;
    scope.rollback().await;
    catalog
}

async fn read_schema(scope: &Scope, schema: &str) -> Result<Catalog, ToolError> {
    let usable: Option<bool> = scope
        .query_opt(
            "SELECT has_schema_privilege(oid, 'USAGE') FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await?
        .map(|r| r.get(0));
    match usable {
        None => Err(ToolError::invalid_input(
            "schema",
            format!("the database has no schema {schema:?}"),
        )),
        Some(false) => Err(ToolError::invalid_input(
            "schema",
            format!("the linked user has no USAGE privilege on schema {schema:?}"),
        )),
        Some(true) => Catalog::load(scope, schema, &[]).await,
    }
}

fn summary(catalog: &Catalog) -> Value {
    Value::Array(
        catalog
            .tables
            .values()
            .map(|t| {
                json!({
                    "name": t.name,
                    "columns": t.columns.iter().map(|c| json!({ "name": c.name, "type": c.type_display })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

async fn link_database(cx: &Cx<'_>, args: LinkArgs) -> ToolResult {
    check_name(&args.name)?;
    check_schema(&args.schema)?;
    let target = Target::parse(&args.connection_string)?;
    // Resolve once and check every address: refused here with the guard's reason before
    // anything connects. The probe's connect then checks again (every connect does).
    cx.app
        .outbound
        .check(&target.host, target.port)
        .await
        .map_err(|refusal| ToolError::invalid_input("connection_string", refusal.to_string()))?;
    let taken = cx
        .scope
        .query_opt(
            "SELECT 1 FROM hdls.data_sources WHERE name = $1 AND unlinked_at IS NULL",
            &[&args.name],
        )
        .await?
        .is_some();
    if taken {
        return Err(ToolError::conflict(format!(
            "a linked database named {:?} exists; unlink it or choose another name",
            args.name
        ))
        .with("path", "name"));
    }
    let catalog = probe(&cx.app.data_sources, cx, &target, &args.schema).await?;
    let id = Uuid::now_v7();
    let now = cx.app.clock.now();
    let sealed = datasources::seal(
        cx.app.keys.master(),
        cx.principal.workspace_id,
        id,
        args.connection_string.trim(),
    )?;
    cx.scope
        .execute(
            "INSERT INTO hdls.data_sources (id, name, host, port, database, schema_name, sealed_connection,
                                            status, last_checked_at, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'linked', $8, $9, $8)",
            &[
                &id,
                &args.name,
                &target.host,
                &i32::from(target.port),
                &target.dbname,
                &args.schema,
                &sealed,
                &now,
                &cx.principal.credential.id,
            ],
        )
        .await?;
    cx.audit(&format!(
        "data_source={id} name={} host={}",
        args.name, target.host
    ))
    .await?;
    Ok(json!({
        "id": id,
        "name": args.name,
        "host": target.host,
        "port": target.port,
        "database": target.dbname,
        "schema": args.schema,
        "status": "linked",
        "endpoint": cx.app.public.base().to_owned() + &Endpoint::data_source_path(id),
        "tables": summary(&catalog),
        "next": "Mint a key for it with mint_api_key {\"data_source\": \"<id>\", \"role\": \"reader\" or \"member\"} \
                 and connect your MCP client to the endpoint with that key.",
    }))
}

async fn list_databases(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let rows = cx
        .scope
        .query(
            "SELECT id, name, host, port, database, schema_name, status, last_error, last_checked_at,
                    created_by, created_at, unlinked_at
             FROM hdls.data_sources ORDER BY created_at DESC, id",
            &[],
        )
        .await?;
    let sources: Vec<Value> = rows
        .iter()
        .map(|r| {
            let id: Uuid = r.get("id");
            json!({
                "id": id,
                "name": r.get::<_, &str>("name"),
                "host": r.get::<_, &str>("host"),
                "port": r.get::<_, i32>("port"),
                "database": r.get::<_, &str>("database"),
                "schema": r.get::<_, &str>("schema_name"),
                "status": r.get::<_, &str>("status"),
                "last_error": r.get::<_, Option<&str>>("last_error"),
                "last_checked_at": timestamp(r.get("last_checked_at")),
                "created_by": r.get::<_, &str>("created_by"),
                "created_at": timestamp(Some(r.get("created_at"))),
                "unlinked_at": timestamp(r.get("unlinked_at")),
                "endpoint": cx.app.public.base().to_owned() + &Endpoint::data_source_path(id),
            })
        })
        .collect();
    Ok(json!({ "databases": sources }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IdArg {
    /// The data source's id, as link_database or list_databases gave it.
    id: Uuid,
}

async fn unlink_database(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let now = cx.app.clock.now();
    // The trigger (migration V15) revokes every key bound to the source in this statement.
    let changed = cx
        .scope
        .execute(
            "UPDATE hdls.data_sources
             SET unlinked_at = $2, status = 'unlinked', sealed_connection = NULL
             WHERE id = $1 AND unlinked_at IS NULL",
            &[&args.id, &now],
        )
        .await?;
    if changed == 0 {
        return Err(ToolError::not_found(format!(
            "no linked data source {} in this workspace",
            args.id
        ))
        .with("path", "id"));
    }
    let revoked: i64 = cx
        .scope
        .query_one(
            "SELECT count(*) FROM hdls.api_keys WHERE data_source_id = $1 AND revoked_at IS NOT NULL",
            &[&args.id],
        )
        .await?
        .get(0);
    cx.app
        .data_sources
        .close(cx.principal.workspace_id, args.id);
    cx.audit(&format!("data_source={}", args.id)).await?;
    Ok(json!({ "id": args.id, "unlinked": true, "keys_revoked": revoked }))
}

async fn test_database(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            "SELECT sealed_connection, schema_name FROM hdls.data_sources
             WHERE workspace_id = $2 AND id = $1 AND unlinked_at IS NULL FOR UPDATE",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!(
                "no linked data source {} in this workspace",
                args.id
            ))
            .with("path", "id")
        })?;
    let sealed: Vec<u8> = row.get(0);
    let schema: String = row.get(1);
    let outcome = match datasources::open(
        cx.app.keys.master(),
        cx.principal.workspace_id,
        args.id,
        &sealed,
    ) {
        Ok(target) => probe(&cx.app.data_sources, cx, &target, &schema).await,
        Err(error) => Err(error),
    };
    let now = cx.app.clock.now();
    let (status, error) = match &outcome {
        Ok(_) => ("linked", None),
        Err(e) => (
            "unavailable",
            Some(e.message.chars().take(300).collect::<String>()),
        ),
    };
    cx.scope
        .execute(
            "UPDATE hdls.data_sources SET status = $2, last_error = $3, last_checked_at = $4 WHERE id = $1",
            &[&args.id, &status, &error, &now],
        )
        .await?;
    Ok(match outcome {
        Ok(catalog) => json!({
            "id": args.id, "ok": true, "status": status, "tables": catalog.tables.len(),
        }),
        Err(e) => json!({
            "id": args.id, "ok": false, "status": status, "error": e.to_json()["error"].clone(),
        }),
    })
}
