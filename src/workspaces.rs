//! Operator-level operations (`hdls admin …` and the demo bootstrap): workspaces, keys, plans.
//! Each runs on the operator's authority, through a Scope, and is audited with actor `cli`.

use deadpool_postgres::Pool;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{self, actions};
use crate::auth::api_key::{self, MintedKey};
use crate::db::{Pools, Scope};
use crate::error::ToolError;
use crate::identity::{Principal, Product, Role};

/// A new workspace and its first owner key (shown once).
#[derive(Debug, Serialize)]
pub struct CreatedWorkspace {
    pub workspace_id: Uuid,
    pub name: String,
    pub owner_key: String,
    pub owner_key_id: String,
}

/// Creates a workspace with the CRM installed and mints its first owner key.
pub async fn create(
    runtime: &Pool,
    name: &str,
    now: OffsetDateTime,
) -> Result<CreatedWorkspace, ToolError> {
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
        .execute(
            "INSERT INTO hdls.workspaces (name, created_at) VALUES ($1, $2)",
            &[&name, &now],
        )
        .await?;
    audit::record(
        &scope,
        &operator,
        actions::WORKSPACE_CREATE,
        Some(name),
        audit::Outcome::Allowed,
        now,
    )
    .await?;
    scope
        .execute(
            "INSERT INTO hdls.installed_products (product, installed_at) VALUES ($1, $2)",
            &[&Product::Crm.slug(), &now],
        )
        .await?;
    let key = api_key::mint(
        &scope,
        &operator,
        Role::Owner,
        None,
        Some("owner key (created with the workspace)".into()),
        None,
        now,
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

/// The operator's Principal for an existing workspace; `not_found` if there is none.
async fn operator_for(pool: &Pool, workspace_id: Uuid) -> Result<Principal, ToolError> {
    let probe = Principal::operator(workspace_id, String::new());
    let scope = Scope::begin(pool, &probe).await?;
    let row = scope
        .query_opt(
            "SELECT name FROM hdls.workspaces WHERE workspace_id = $1",
            &[&workspace_id],
        )
        .await?;
    scope.commit().await?;
    let name: String = row
        .ok_or_else(|| ToolError::not_found(format!("no workspace {workspace_id}")))?
        .get(0);
    Ok(Principal::operator(workspace_id, name))
}

/// Mints a key in a workspace on the operator's authority.
pub async fn mint_key(
    runtime: &Pool,
    workspace_id: Uuid,
    role: Role,
    label: Option<String>,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<MintedKey, ToolError> {
    let operator = operator_for(runtime, workspace_id).await?;
    let scope = Scope::begin(runtime, &operator).await?;
    let key = api_key::mint(&scope, &operator, role, None, label, expires_at, now).await?;
    scope.commit().await?;
    Ok(key)
}

/// Revokes a key by id on the operator's authority; returns false if no such key exists.
pub async fn revoke_key(
    pools: &Pools,
    key_id: &str,
    now: OffsetDateTime,
) -> Result<bool, ToolError> {
    let owners = api_key::workspace_of(&pools.auth, key_id).await?;
    let mut revoked = false;
    for (workspace_id, name) in owners {
        let operator = Principal::operator(workspace_id, name);
        let scope = Scope::begin(&pools.runtime, &operator).await?;
        api_key::revoke(&scope, &operator, key_id, now).await?;
        scope.commit().await?;
        revoked = true;
    }
    Ok(revoked)
}

/// A workspace's plan after `plan set`.
#[derive(Debug, Serialize)]
pub struct PlanAssignment {
    pub workspace_id: Uuid,
    pub plan: String,
    pub per_minute: i32,
    pub monthly_budget: Option<i64>,
}

/// Creates or updates a plan and links the workspace to it. Runs as the owner role: plans
/// are shared reference data the runtime role may read but never change.
pub async fn set_plan(
    owner: &Pool,
    workspace_id: Uuid,
    plan: Option<&str>,
    per_minute: i32,
    monthly_budget: Option<i64>,
    now: OffsetDateTime,
) -> Result<PlanAssignment, ToolError> {
    if per_minute < 1 {
        return Err(ToolError::invalid_input(
            "per_minute",
            "the per-minute limit must be at least 1",
        ));
    }
    if monthly_budget.is_some_and(|b| b < 0) {
        return Err(ToolError::invalid_input(
            "monthly",
            "the monthly budget cannot be negative",
        ));
    }
    let name = plan.map_or_else(|| format!("ws-{workspace_id}"), str::to_owned);
    let valid_name = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if !valid_name {
        return Err(ToolError::invalid_input(
            "name",
            "plan names are 1-63 of a-z, 0-9, '.', '_' and '-'",
        ));
    }
    let operator = operator_for(owner, workspace_id).await?;
    let scope = Scope::begin(owner, &operator).await?;
    scope
        .execute(
            "INSERT INTO hdls_catalog.plans (name, per_minute, monthly_budget, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE
               SET per_minute = EXCLUDED.per_minute, monthly_budget = EXCLUDED.monthly_budget,
                   updated_at = EXCLUDED.updated_at",
            &[&name, &per_minute, &monthly_budget, &now],
        )
        .await?;
    scope
        .execute(
            "UPDATE hdls.workspaces SET plan = $1 WHERE workspace_id = $2",
            &[&name, &workspace_id],
        )
        .await?;
    let budget = monthly_budget.map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
    audit::record(
        &scope,
        &operator,
        actions::PLAN_SET,
        Some(&format!("{name} per_minute={per_minute} monthly={budget}")),
        audit::Outcome::Allowed,
        now,
    )
    .await?;
    scope.commit().await?;
    Ok(PlanAssignment {
        workspace_id,
        plan: name,
        per_minute,
        monthly_budget,
    })
}
