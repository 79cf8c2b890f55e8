//! Operator-level workspace operations (used by `hdls admin` and the demo bootstrap).

use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::api_key::{self, MintedKey};
use crate::db::Scope;
use crate::identity::{Principal, Product, Role};
use crate::tools::ToolError;

/// A new workspace and its first owner key (shown once).
#[derive(Debug, Serialize)]
pub struct CreatedWorkspace {
    pub workspace_id: Uuid,
    pub name: String,
    pub owner_key: String,
    pub owner_key_id: String,
}

/// Creates a workspace with the CRM installed and mints its first owner key.
pub async fn create(runtime: &Pool, name: &str) -> Result<CreatedWorkspace, ToolError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ToolError::invalid_input(
            "name",
            "workspace name must be 1 to 200 characters",
        ));
    }
    let workspace_id = Uuid::now_v7();
    // Even the operator goes through the Scope: the new row's workspace_id comes from
    // the same transaction-local setting every tenant row does.
    let operator = Principal::operator(workspace_id, name.to_owned());
    let scope = Scope::begin(runtime, &operator).await?;
    scope
        .execute("INSERT INTO hdls.workspaces (name) VALUES ($1)", &[&name])
        .await?;
    scope
        .execute(
            "INSERT INTO hdls.installed_products (product) VALUES ($1)",
            &[&Product::Crm.slug()],
        )
        .await?;
    let key = api_key::mint(
        &scope,
        Role::Owner,
        Some("owner key (created with the workspace)".into()),
        None,
        "cli",
    )
    .await?;
    scope.commit().await?;
    Ok(CreatedWorkspace {
        workspace_id,
        name: name.to_owned(),
        owner_key: key.key,
        owner_key_id: key.key_id,
    })
}

/// Looks up a workspace's name through the operator's Scope; `None` if it does not exist.
pub async fn name_of(runtime: &Pool, workspace_id: Uuid) -> Result<Option<String>, ToolError> {
    let probe = Principal::operator(workspace_id, String::new());
    let scope = Scope::begin(runtime, &probe).await?;
    let row = scope
        .query_opt("SELECT name FROM hdls.workspaces", &[])
        .await?;
    scope.commit().await?;
    Ok(row.map(|r| r.get(0)))
}

/// Mints a key in a workspace on the operator's authority.
pub async fn mint_key(
    runtime: &Pool,
    workspace_id: Uuid,
    role: Role,
    label: Option<String>,
    expires_at: Option<time::OffsetDateTime>,
) -> Result<MintedKey, ToolError> {
    let name = name_of(runtime, workspace_id)
        .await?
        .ok_or_else(|| ToolError::not_found(format!("no workspace {workspace_id}")))?;
    let scope = Scope::begin(runtime, &Principal::operator(workspace_id, name)).await?;
    let key = api_key::mint(&scope, role, label, expires_at, "cli").await?;
    scope.commit().await?;
    Ok(key)
}

/// Revokes a key by id on the operator's authority; returns false if no such key exists.
pub async fn revoke_key(
    pools: &crate::db::Pools,
    key_id: &str,
    now: time::OffsetDateTime,
) -> Result<bool, ToolError> {
    let owners = api_key::workspace_of(&pools.auth, key_id).await?;
    let mut revoked = false;
    for (workspace_id, name) in owners {
        let scope = Scope::begin(&pools.runtime, &Principal::operator(workspace_id, name)).await?;
        scope
            .execute(
                "UPDATE hdls.api_keys SET revoked_at = coalesce(revoked_at, $2) WHERE key_id = $1",
                &[&key_id, &now],
            )
            .await?;
        scope.commit().await?;
        revoked = true;
    }
    Ok(revoked)
}
