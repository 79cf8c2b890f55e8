//! Customer accounts: a person bound to one support requester of a workspace (made by
//! accepting a customer invitation). Not a membership: no role, never listed with members.
//!
//! The one rule for using one, read by consent, token exchange, refresh, every request with a
//! customer token and every portal page: the account still exists, its requester is not
//! disabled, and support is installed in the workspace. All of it runs on the credential path
//! (hdls_auth), before any tenant is chosen.

use deadpool_postgres::{GenericClient, Pool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ToolError;

/// The condition on `ca` (hdls.customer_accounts) for an account that may be used now.
pub const USABLE: &str = "EXISTS (SELECT 1 FROM support.requesters r
                              WHERE r.workspace_id = ca.workspace_id AND r.id = ca.requester_id
                                AND r.disabled_at IS NULL)
                  AND EXISTS (SELECT 1 FROM hdls.installed_products p
                              WHERE p.workspace_id = ca.workspace_id AND p.product = 'support'
                                AND p.uninstalled_at IS NULL)";

/// One of a person's usable customer accounts, as consent lists them.
#[derive(Debug, Clone)]
pub struct CustomerAccount {
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub requester_id: Uuid,
}

/// Every usable customer account of a person.
pub async fn of_person(auth: &Pool, user_id: Uuid) -> Result<Vec<CustomerAccount>, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let rows = client
        .query(
            &format!(
                "SELECT ca.workspace_id, w.name, ca.requester_id
                 FROM hdls.customer_accounts ca JOIN hdls.workspaces w USING (workspace_id)
                 WHERE ca.user_id = $1 AND {USABLE}
                 ORDER BY w.name, ca.workspace_id"
            ),
            &[&user_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| CustomerAccount {
            workspace_id: r.get(0),
            workspace_name: r.get(1),
            requester_id: r.get(2),
        })
        .collect())
}

/// The person's usable customer account in one workspace, if any.
pub async fn in_workspace(
    client: &impl GenericClient,
    workspace_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Uuid>, ToolError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT ca.requester_id FROM hdls.customer_accounts ca
                 WHERE ca.workspace_id = $1 AND ca.user_id = $2 AND {USABLE}"
            ),
            &[&workspace_id, &user_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Whether the person is still bound to exactly this requester and may use the account.
pub async fn still_bound(
    client: &impl GenericClient,
    workspace_id: Uuid,
    user_id: Uuid,
    requester_id: Uuid,
) -> Result<bool, ToolError> {
    Ok(in_workspace(client, workspace_id, user_id).await? == Some(requester_id))
}

/// Whether a requester exists and is not disabled.
pub async fn requester_enabled(
    client: &impl GenericClient,
    workspace_id: Uuid,
    requester_id: Uuid,
) -> Result<bool, ToolError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM support.requesters
             WHERE workspace_id = $1 AND id = $2 AND disabled_at IS NULL",
            &[&workspace_id, &requester_id],
        )
        .await?;
    Ok(row.is_some())
}

/// Binds a person to a requester. True if the account now exists as asked (made now, or
/// already there); false if the person is a customer of this workspace as another requester,
/// or the requester is bound to another person.
pub async fn bind(
    client: &impl GenericClient,
    workspace_id: Uuid,
    user_id: Uuid,
    requester_id: Uuid,
    now: OffsetDateTime,
) -> Result<bool, ToolError> {
    let made = client
        .execute(
            "INSERT INTO hdls.customer_accounts (workspace_id, user_id, requester_id, joined_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&workspace_id, &user_id, &requester_id, &now],
        )
        .await?;
    if made > 0 {
        return Ok(true);
    }
    let existing = client
        .query_opt(
            "SELECT 1 FROM hdls.customer_accounts
             WHERE workspace_id = $1 AND user_id = $2 AND requester_id = $3",
            &[&workspace_id, &user_id, &requester_id],
        )
        .await?;
    Ok(existing.is_some())
}
