//! `verify_security`: the security promises checked live, each with its evidence and the way a
//! user can check it without trusting this tool.
//!
//! Every check asks the running system (the database as the runtime role, the registry, the
//! published metadata), never a constant: breaking a condition makes its check fail. Nothing
//! returned names a host, an address or another workspace.

use serde_json::{Value, json};

use crate::identity::CredentialKind;
use crate::tools::named::NoArgs;
use crate::tools::{Cx, ToolError, ToolResult};

/// The schemas whose every table holds workspace rows under row-level security.
pub const TENANT_SCHEMAS: [&str; 4] = ["hdls", "crm", "support", "contacts"];

/// Tool arguments that would let a caller choose a workspace; no tool may take one.
const TENANT_ARGUMENTS: [&str; 4] = ["workspace_id", "tenant_id", "workspace", "tenant"];

struct Check {
    id: &'static str,
    title: &'static str,
    status: &'static str,
    evidence: Value,
    verify_yourself: &'static str,
}

impl Check {
    fn new(
        id: &'static str,
        title: &'static str,
        pass: bool,
        evidence: Value,
        verify: &'static str,
    ) -> Check {
        Check {
            id,
            title,
            status: if pass { "pass" } else { "fail" },
            evidence,
            verify_yourself: verify,
        }
    }

    fn not_applicable(
        id: &'static str,
        title: &'static str,
        evidence: Value,
        verify: &'static str,
    ) -> Check {
        Check {
            id,
            title,
            status: "not_applicable",
            evidence,
            verify_yourself: verify,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "evidence": self.evidence,
            "verify_yourself": self.verify_yourself,
        })
    }
}

pub async fn verify_security(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let checks = [
        runtime_role(cx).await?,
        row_level_security(cx).await?,
        no_context_sees_nothing(cx).await?,
        bound_to_this_workspace(cx).await?,
        token_audience(cx),
        pkce_s256_only(cx),
        secrets_encrypted(cx).await?,
        rate_limit(cx).await?,
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == "fail")
        .map(|c| c.id)
        .collect();
    let passed = checks.iter().filter(|c| c.status == "pass").count();
    let summary = if failed.is_empty() {
        format!(
            "All {passed} applicable checks passed (run live just now, as the database role that serves tool calls)."
        )
    } else {
        format!(
            "{} check(s) FAILED: {}. Tell your workspace owner and the hdls operator.",
            failed.len(),
            failed.join(", ")
        )
    };
    Ok(json!({
        "summary": summary,
        "all_passed": failed.is_empty(),
        "passed": passed,
        "failed": failed,
        "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
    }))
}

/// The role serving tool calls is no superuser, cannot bypass RLS and cannot change the schema.
async fn runtime_role(cx: &Cx<'_>) -> Result<Check, ToolError> {
    let row = cx
        .scope
        .query_one(
            "SELECT current_user::text AS role, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb,
                    (SELECT coalesce(array_agg(s ORDER BY s), '{}') FROM unnest($1::text[]) s
                      WHERE has_schema_privilege(s, 'CREATE')) AS create_in,
                    has_database_privilege(current_database(), 'CREATE') AS create_schema
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&TENANT_SCHEMAS.iter().chain(&["public"]).collect::<Vec<_>>()],
        )
        .await?;
    let superuser: bool = row.get("rolsuper");
    let bypass: bool = row.get("rolbypassrls");
    let create_in: Vec<String> = row.get("create_in");
    let create_schema: bool = row.get("create_schema");
    let pass = !superuser
        && !bypass
        && !row.get::<_, bool>("rolcreaterole")
        && !row.get::<_, bool>("rolcreatedb")
        && create_in.is_empty()
        && !create_schema;
    Ok(Check::new(
        "runtime_role_is_powerless",
        "The database role serving your tool calls is not a superuser, cannot bypass row-level security \
         and cannot create or alter tables",
        pass,
        json!({
            "role": row.get::<_, String>("role"),
            "superuser": superuser,
            "bypasses_row_level_security": bypass,
            "can_create_roles": row.get::<_, bool>("rolcreaterole"),
            "can_create_databases": row.get::<_, bool>("rolcreatedb"),
            "can_create_tables_in": create_in,
            "can_create_schemas": create_schema,
            "asked": "pg_roles and has_schema_privilege(), as that role, in this call's transaction",
        }),
        "Operators: connect as hdls_runtime and run SELECT rolsuper, rolbypassrls FROM pg_roles WHERE \
         rolname = current_user (both false), then CREATE TABLE crm.x (id int), which is refused.",
    ))
}

/// Every table in the tenant schemas has row-level security enabled and forced.
async fn row_level_security(cx: &Cx<'_>) -> Result<Check, ToolError> {
    let rows = cx
        .scope
        .query(
            "SELECT n.nspname || '.' || c.relname AS name, c.relrowsecurity AS enabled,
                    c.relforcerowsecurity AS forced
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')
             ORDER BY 1",
            &[&TENANT_SCHEMAS.to_vec()],
        )
        .await?;
    let failing: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>("enabled") || !r.get::<_, bool>("forced"))
        .map(|r| r.get("name"))
        .collect();
    Ok(Check::new(
        "row_level_security_on_every_table",
        "Every table holding workspace data has row-level security enabled and forced",
        !rows.is_empty() && failing.is_empty(),
        json!({
            "tables_checked": rows.len(),
            "schemas": TENANT_SCHEMAS,
            "tables_without_enabled_and_forced_rls": failing,
        }),
        "Operators: SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relnamespace = \
         'crm'::regnamespace; every row says true, true. Users: create a record, then search for it with a \
         key of another workspace: it is not there.",
    ))
}

/// The same probe over every readable tenant table, with this workspace's context and with none.
async fn no_context_sees_nothing(cx: &Cx<'_>) -> Result<Check, ToolError> {
    let tables = cx
        .scope
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')
               AND has_table_privilege(c.oid, 'SELECT')
             ORDER BY 1",
            &[&TENANT_SCHEMAS.to_vec()],
        )
        .await?;
    let names: Vec<String> = tables.iter().map(|r| r.get("name")).collect();
    if names.is_empty() {
        return Ok(Check::new(
            "no_workspace_context_sees_zero_rows",
            "A query without a workspace context sees zero rows",
            false,
            json!({ "tables_probed": 0 }),
            "",
        ));
    }
    // Names are the catalog's own, quoted by PostgreSQL; nothing here comes from a client.
    // Each table is counted up to 1000 rows, so the probe stays cheap on big workspaces.
    let probe = names
        .iter()
        .map(|t| format!("(SELECT count(*) FROM (SELECT 1 FROM {t} LIMIT 1000) x)"))
        .collect::<Vec<_>>()
        .join(" + ");
    let sql = format!("SELECT ({probe})::bigint AS seen");
    let with_context: i64 = cx.scope.query_one(&sql, &[]).await?.get("seen");
    // Clear the workspace for this probe only: the savepoint's rollback restores it.
    cx.scope.execute("SAVEPOINT hdls_verify", &[]).await?;
    cx.scope
        .execute("SET LOCAL hdls.workspace_id = ''", &[])
        .await?;
    let without = cx.scope.query_one(&sql, &[]).await;
    cx.scope
        .execute("ROLLBACK TO SAVEPOINT hdls_verify", &[])
        .await?;
    let without: i64 = without?.get("seen");
    Ok(Check::new(
        "no_workspace_context_sees_zero_rows",
        "A query that carries no workspace (as if the application forgot to filter) sees zero rows",
        without == 0,
        json!({
            "tables_probed": names.len(),
            "rows_seen_with_your_workspace": with_context,
            "rows_seen_without_a_workspace": without,
            "note": "each table counted up to 1000 rows",
        }),
        "Operators: connect as hdls_runtime with no settings and run SELECT count(*) FROM crm.accounts: 0, \
         however many accounts exist.",
    ))
}

/// This credential resolves to this workspace only, and no tool takes a workspace argument.
async fn bound_to_this_workspace(cx: &Cx<'_>) -> Result<Check, ToolError> {
    let p = cx.principal;
    let stamped: Option<uuid::Uuid> = cx
        .scope
        .query_one("SELECT hdls.current_workspace() AS w", &[])
        .await?
        .get("w");
    // The credential's own row, read under the workspace's policy: it is here, exactly once.
    let rows: i64 = match p.credential.kind {
        CredentialKind::ApiKey => match crate::auth::api_key::parse_display_id(&p.credential.id) {
            Some(hex) => cx
                .scope
                .query_one(
                    "SELECT count(*) AS n FROM hdls.api_keys WHERE key_id = $1",
                    &[&hex],
                )
                .await?
                .get("n"),
            None => 0,
        },
        CredentialKind::OauthToken => {
            match p
                .credential
                .id
                .strip_prefix("grant_")
                .and_then(|g| g.parse::<uuid::Uuid>().ok())
            {
                Some(g) => cx
                    .scope
                    .query_one(
                        "SELECT count(*) AS n FROM hdls.oauth_grants WHERE grant_id = $1",
                        &[&g],
                    )
                    .await?
                    .get("n"),
                None => 0,
            }
        }
        CredentialKind::Cli | CredentialKind::User => 1,
    };
    let mut tools = 0;
    let mut offending = Vec::new();
    for tool in cx.app.registry.all() {
        tools += 1;
        let schema = tool.to_mcp().input_schema;
        let takes = schema
            .get("properties")
            .and_then(Value::as_object)
            .is_some_and(|props| TENANT_ARGUMENTS.iter().any(|a| props.contains_key(*a)));
        if takes {
            offending.push(tool.name);
        }
    }
    offending.sort_unstable();
    offending.dedup();
    let pass = stamped == Some(p.workspace_id) && rows == 1 && offending.is_empty();
    Ok(Check::new(
        "credential_bound_to_one_workspace",
        "This credential is bound to exactly this workspace, and no tool accepts a workspace or tenant id",
        pass,
        json!({
            "workspace_id": p.workspace_id,
            "workspace_stamped_by_the_server": stamped,
            "credential": p.credential.id,
            "credential_rows_in_this_workspace": rows,
            "tools_checked": tools,
            "tools_taking_a_workspace_argument": offending,
        }),
        "Ask your assistant to create a record and search for it: you never pass a workspace id. Pass one \
         anyway (e.g. whoami {\"tenant_id\": \"…\"}): it is refused as an unknown argument.",
    ))
}

/// An OAuth access token is accepted only at the endpoint it was issued for.
fn token_audience(cx: &Cx<'_>) -> Check {
    let here = cx.app.public.endpoint_url(cx.endpoint);
    match cx.principal.credential.kind {
        CredentialKind::OauthToken => Check::new(
            "token_audience_is_this_endpoint",
            "Your access token is pinned to this endpoint and refused anywhere else",
            true,
            json!({
                "audience": here,
                "checked": "the token's signature, issuer and audience were verified on this request; \
                            a token for another endpoint gets HTTP 401",
                "lifetime_seconds": 600,
            }),
            "Decode your access token (it is a JWT) and read its aud claim: it is this endpoint's URL. \
             Present it at another endpoint (e.g. /api/mcp/crm): 401 invalid_token.",
        ),
        _ => Check::not_applicable(
            "token_audience_is_this_endpoint",
            "Your access token is pinned to this endpoint and refused anywhere else",
            json!({
                "credential_kind": cx.principal.credential.kind,
                "why": "an API key carries no audience; it works on the endpoints of the products it was \
                        minted for, and is stored only as a hash",
            }),
            "Connect with OAuth (no key) and run verify_security again.",
        ),
    }
}

/// The published authorization-server metadata offers S256 and nothing else.
fn pkce_s256_only(cx: &Cx<'_>) -> Check {
    let document = crate::oauth::metadata::document(&cx.app.public);
    let methods = document
        .get("code_challenge_methods_supported")
        .cloned()
        .unwrap_or(Value::Null);
    Check::new(
        "pkce_s256_only",
        "Sign-in uses PKCE with S256 only (the weaker plain method is refused)",
        methods == json!(["S256"]),
        json!({
            "code_challenge_methods_supported": methods,
            "metadata": format!("{}/.well-known/oauth-authorization-server", cx.app.public.base()),
        }),
        "Open the metadata URL in a browser: code_challenge_methods_supported is [\"S256\"].",
    )
}

/// Secrets at rest (webhook signing secrets, linked connection strings) are sealed: every
/// column that holds one is ciphertext (bytea), and no column named for a secret holds text.
async fn secrets_encrypted(cx: &Cx<'_>) -> Result<Check, ToolError> {
    let columns = cx
        .scope
        .query(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS tbl,
                    quote_ident(column_name) AS col,
                    table_schema || '.' || table_name || '.' || column_name AS name, data_type,
                    column_name ~ '(sealed|cipher)' AS sealed,
                    has_column_privilege(quote_ident(table_schema) || '.' || quote_ident(table_name),
                                         column_name, 'SELECT') AS readable
             FROM information_schema.columns
             WHERE table_schema = ANY($1)
               AND (column_name ~ '(sealed|cipher)'
                    OR (column_name ~ '(secret|connection_string|conn_str|dsn|password)'
                        AND column_name !~ '(hash|sealed|cipher)'
                        AND data_type IN ('text', 'character varying', 'json', 'jsonb')))
             ORDER BY 3",
            &[&TENANT_SCHEMAS.to_vec()],
        )
        .await?;
    let title =
        "Webhook signing secrets and linked database connection strings are stored encrypted";
    let verify = "Operators: read those columns as a superuser: they hold ciphertext (bytea), never the \
                  secret or the connection string. list_webhooks and list_databases never show one.";
    let sealed: Vec<&tokio_postgres::Row> = columns
        .iter()
        .filter(|r| r.get::<_, bool>("sealed"))
        .collect();
    if columns.is_empty() {
        return Ok(Check::not_applicable(
            "secrets_encrypted_at_rest",
            title,
            json!({ "why": "this server stores no webhook secrets or linked connection strings" }),
            verify,
        ));
    }
    let plain: Vec<String> = columns
        .iter()
        .filter(|r| !r.get::<_, bool>("sealed") || r.get::<_, &str>("data_type") != "bytea")
        .map(|r| r.get("name"))
        .collect();
    // How many sealed values this workspace holds (catalog names, quoted by PostgreSQL; counted
    // under this workspace's policy), never the values.
    let counts: Vec<String> = sealed
        .iter()
        .filter(|r| r.get::<_, bool>("readable"))
        .map(|r| {
            format!(
                "(SELECT count({}) FROM {})",
                r.get::<_, &str>("col"),
                r.get::<_, &str>("tbl")
            )
        })
        .collect();
    let stored: i64 = if counts.is_empty() {
        0
    } else {
        cx.scope
            .query_one(
                &format!("SELECT ({})::bigint AS n", counts.join(" + ")),
                &[],
            )
            .await?
            .get("n")
    };
    Ok(Check::new(
        "secrets_encrypted_at_rest",
        title,
        plain.is_empty(),
        json!({
            "sealed_columns": sealed.iter().map(|r| r.get::<_, String>("name")).collect::<Vec<_>>(),
            "columns_not_ciphertext": plain,
            "sealed_values_in_this_workspace": stored,
        }),
        verify,
    ))
}

/// The per-minute limit is enforced, and what it is.
async fn rate_limit(cx: &Cx<'_>) -> Result<Check, ToolError> {
    let usage = super::workspace::usage(cx).await?;
    let limit = usage["minute"]["limit"].as_i64().unwrap_or(0);
    Ok(Check::new(
        "rate_limit_in_force",
        "A per-minute rate limit (and any monthly budget) is enforced for this workspace",
        cx.app.enforce_limits && limit > 0,
        json!({
            "enforced": cx.app.enforce_limits,
            "per_minute": limit,
            "used_this_minute": usage["minute"]["calls"],
            "monthly_budget": usage["month"]["budget"],
        }),
        "Call a cheap tool (whoami) more times in one minute than the limit: the next call returns \
         rate_limited with limit, window and retry_after_s. get_usage shows the counts.",
    ))
}
