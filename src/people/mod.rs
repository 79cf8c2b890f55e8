//! People: who can sign in (email + password), and their memberships of workspaces.
//!
//! A person is global (one email, one password); a membership ties a person to one workspace
//! with a role. Everything a person can reach goes through a membership, and OAuth grants are
//! issued against one.

pub mod customer_accounts;
pub mod invitations;
pub mod links;
pub mod members;
pub mod password;
pub mod sign_in;
pub mod throttle;

use deadpool_postgres::{GenericClient, Pool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::error::ToolError;
use crate::identity::Role;

/// Normalises an email address for storage and lookup: trimmed, lowercase, shaped like
/// `local@domain`. (Deliverability is the mail server's business, not ours.)
pub fn normalize_email(text: &str) -> Result<String, ToolError> {
    let email = text.trim().to_lowercase();
    let valid = (3..=254).contains(&email.len())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(ToolError::invalid_input(
            "email",
            "expected an email address like ann@example.com",
        ))
    }
}

/// After a person's password is set or replaced: ends every web and portal session of theirs and
/// revokes every OAuth connection they hold in any workspace (their refresh tokens stop
/// working, access tokens at their next request, and keys minted through them with them),
/// each revocation audited in its workspace. Runs in the caller's transaction.
pub async fn end_sessions_and_connections(
    client: &impl GenericClient,
    user_id: Uuid,
    reason: &str,
    now: OffsetDateTime,
) -> Result<(), ToolError> {
    client
        .execute(
            "DELETE FROM hdls_identity.web_sessions WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    client
        .execute(
            "DELETE FROM hdls_identity.portal_sessions WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    let revoked = client
        .query(
            "UPDATE hdls.oauth_grants SET revoked_at = $2, revoked_reason = $3
             WHERE user_id = $1 AND revoked_at IS NULL
             RETURNING workspace_id, grant_id",
            &[&user_id, &now, &reason],
        )
        .await?;
    let actor_id = format!("user:{user_id}");
    for row in revoked {
        let grant_id: Uuid = row.get("grant_id");
        audit::record_on_credential_path(
            client,
            row.get("workspace_id"),
            audit::Actor {
                kind: "user",
                id: &actor_id,
            },
            audit::actions::OAUTH_REVOKE,
            Some(&format!("grant_{grant_id}: {reason}")),
            now,
        )
        .await?;
    }
    Ok(())
}

/// What provisioning did.
pub struct Provisioned {
    pub user_id: Uuid,
    /// A one-time link token to set a password, when the person has none yet.
    pub set_password_token: Option<String>,
}

/// Operator path (first start, `hdls admin`, tests): makes sure a person with this email exists
/// and is a member of `workspace` with `role`. When the person still needs a password or a
/// proven address, returns a one-time set-password token (using it proves the address).
pub async fn provision(
    auth: &Pool,
    workspace: Uuid,
    email: &str,
    password: Option<&str>,
    role: Role,
    now: OffsetDateTime,
) -> Result<Provisioned, ToolError> {
    let email = normalize_email(email)?;
    let hash = match password {
        Some(p) => Some(password::hash(p).await?),
        None => None,
    };
    let mut client = auth.get().await.map_err(ToolError::from_pool)?;
    let tx = client.transaction().await?;
    // The operator vouches for the address. A password given here replaces the person's
    // own, which ends their sessions and connections like any password change; without
    // one, a person whose address is not yet proven gets a set-password link that proves it.
    let row = tx
        .query_one(
            "INSERT INTO hdls_identity.users AS u (user_id, email, password_hash, created_at, address_proven_at)
             VALUES ($1, $2, $3, $4::timestamptz, CASE WHEN $3::text IS NULL THEN NULL ELSE $4::timestamptz END)
             ON CONFLICT (email) DO UPDATE
                 SET password_hash = coalesce(EXCLUDED.password_hash, u.password_hash),
                     address_proven_at = coalesce(u.address_proven_at, EXCLUDED.address_proven_at)
             RETURNING user_id, (password_hash IS NULL OR address_proven_at IS NULL) AS needs_link,
                       (xmax::text <> '0') AS existed",
            &[&Uuid::now_v7(), &email, &hash, &now],
        )
        .await?;
    let user_id: Uuid = row.get("user_id");
    if hash.is_some() && row.get::<_, bool>("existed") {
        end_sessions_and_connections(&tx, user_id, "password changed by the operator", now).await?;
    }
    tx.execute(
        "INSERT INTO hdls.members (workspace_id, user_id, email, role, joined_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workspace_id, user_id) DO NOTHING",
        &[&workspace, &user_id, &email, &role.as_str(), &now],
    )
    .await?;
    let set_password_token = if row.get::<_, bool>("needs_link") {
        Some(links::create_set_password(&tx, user_id, now).await?)
    } else {
        None
    };
    tx.commit().await?;
    Ok(Provisioned {
        user_id,
        set_password_token,
    })
}

/// Operator path for a forgotten password: a new one-time set-password link for the person
/// with this email (their current password keeps working until the link is used). `None` if
/// there is no such person.
pub async fn password_link(
    auth: &Pool,
    email: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, ToolError> {
    let email = normalize_email(email)?;
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let Some(row) = client
        .query_opt(
            "SELECT user_id FROM hdls_identity.users WHERE email = $1",
            &[&email],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(
        links::create_set_password(&client, row.get(0), now).await?,
    ))
}

/// One of a person's memberships, as the consent page lists them.
#[derive(Debug, Clone)]
pub struct Membership {
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub role: Role,
    /// Installed products of that workspace.
    pub products: Vec<crate::identity::Product>,
}

/// Every workspace a person may use (credential path: before any tenant is chosen). A person
/// whose address is not proven sees only the memberships they joined through invitations.
pub async fn memberships(auth: &Pool, user_id: Uuid) -> Result<Vec<Membership>, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let rows = client
        .query(
            "SELECT m.workspace_id, w.name, m.role,
                    ARRAY(SELECT p.product FROM hdls.installed_products p
                          WHERE p.workspace_id = m.workspace_id AND p.uninstalled_at IS NULL
                          ORDER BY p.product) AS products
             FROM hdls_identity.usable_memberships m JOIN hdls.workspaces w USING (workspace_id)
             WHERE m.user_id = $1 ORDER BY w.name, m.workspace_id",
            &[&user_id],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let role: &str = row.get("role");
            let products: Vec<String> = row.get("products");
            Ok(Membership {
                workspace_id: row.get("workspace_id"),
                workspace_name: row.get("name"),
                role: role.parse().map_err(ToolError::internal)?,
                products: products
                    .iter()
                    .filter_map(|s| crate::identity::Product::from_slug(s))
                    .collect(),
            })
        })
        .collect()
}

/// A person's email, for pages that greet them.
pub async fn email_of(auth: &Pool, user_id: Uuid) -> Result<Option<String>, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let row = client
        .query_opt(
            "SELECT email FROM hdls_identity.users WHERE user_id = $1",
            &[&user_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_or_refused() {
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in ["", "ann", "@x", "ann@", "a b@x.y", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
