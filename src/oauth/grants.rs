//! Grants (connections): created on consent, the source of every token, revoked as a whole.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use super::access;
use crate::app::App;
use crate::audit;
use crate::error::ToolError;
use crate::identity::{Persona, Product, Role};
use crate::people::customer_accounts;
use crate::secret;

/// How long an authorization code is valid.
pub const CODE_TTL: time::Duration = time::Duration::minutes(5);
/// A refresh token not used for this long is dead.
pub const REFRESH_IDLE: time::Duration = time::Duration::days(30);
const CODE_PREFIX: &str = "hac_";
const REFRESH_PREFIX: &str = "hrt_";

/// A grant's frozen decision.
pub struct Grant {
    pub workspace_id: Uuid,
    pub grant_id: Uuid,
    pub user_id: Uuid,
    pub client_id: String,
    pub resource: String,
    pub products: Vec<Product>,
    /// Agent (the person's membership) or customer (their customer account); frozen.
    pub persona: Persona,
    /// The requester a customer grant acts as; `None` for agents.
    pub principal_id: Option<Uuid>,
}

/// The persona stored on a credential row ('agent' or 'customer').
pub fn parse_persona(text: &str) -> Result<Persona, ToolError> {
    match text {
        "agent" => Ok(Persona::Agent),
        "customer" => Ok(Persona::Customer),
        other => Err(ToolError::internal(format!("unknown persona {other:?}"))),
    }
}

pub fn product_slugs(products: &[Product]) -> Vec<String> {
    products.iter().map(|p| p.slug().to_owned()).collect()
}

pub fn parse_products(slugs: &[String]) -> Vec<Product> {
    slugs.iter().filter_map(|s| Product::from_slug(s)).collect()
}

/// Stores a new grant and its authorization code; returns the code (given to the browser once).
#[allow(clippy::too_many_arguments)]
pub async fn create_with_code(
    client: &impl GenericClient,
    grant: &Grant,
    client_name: &str,
    redirect_uri: &str,
    code_challenge: &str,
    now: OffsetDateTime,
) -> Result<String, ToolError> {
    client
        .execute(
            "INSERT INTO hdls.oauth_grants
                 (workspace_id, grant_id, user_id, client_id, client_name, resource, products, created_at,
                  persona, principal_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &grant.workspace_id,
                &grant.grant_id,
                &grant.user_id,
                &grant.client_id,
                &client_name,
                &grant.resource,
                &product_slugs(&grant.products),
                &now,
                &grant.persona.as_str(),
                &grant.principal_id,
            ],
        )
        .await?;
    let code = secret::generate(CODE_PREFIX);
    client
        .execute(
            "INSERT INTO hdls.oauth_codes
                 (workspace_id, code_hash, grant_id, client_id, redirect_uri, code_challenge, resource, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &grant.workspace_id,
                &code.hash.as_slice(),
                &grant.grant_id,
                &grant.client_id,
                &redirect_uri,
                &code_challenge,
                &grant.resource,
                &(now + CODE_TTL),
            ],
        )
        .await?;
    Ok(code.token)
}

/// Revokes a whole grant (every refresh token with it, and its access tokens at their next
/// request) and audits why. Returns false if it was already revoked.
pub async fn revoke(
    client: &impl GenericClient,
    workspace_id: Uuid,
    grant_id: Uuid,
    reason: &str,
    actor: audit::Actor<'_>,
    action: &str,
    now: OffsetDateTime,
) -> Result<bool, ToolError> {
    let changed = client
        .execute(
            "UPDATE hdls.oauth_grants SET revoked_at = $3, revoked_reason = $4
             WHERE workspace_id = $1 AND grant_id = $2 AND revoked_at IS NULL",
            &[&workspace_id, &grant_id, &now, &reason],
        )
        .await?;
    if changed > 0 {
        audit::record_on_credential_path(
            client,
            workspace_id,
            actor,
            action,
            Some(&format!("grant_{grant_id}: {reason}")),
            now,
        )
        .await?;
    }
    Ok(changed > 0)
}

/// [`revoke`] on the word of an OAuth client (token reuse, the revocation endpoint); the audit
/// log names the client.
pub async fn revoke_by_client(
    client: &impl GenericClient,
    workspace_id: Uuid,
    grant_id: Uuid,
    client_id: &str,
    reason: &str,
    action: &str,
    now: OffsetDateTime,
) -> Result<bool, ToolError> {
    let actor = format!("client:{client_id}");
    let actor = audit::Actor {
        kind: "oauth_token",
        id: &actor,
    };
    revoke(client, workspace_id, grant_id, reason, actor, action, now).await
}

/// The role a grant may use now, or `None` if its binding is gone. An agent grant carries the
/// member's current role (`None` once they are no longer a member, or may not use that
/// membership yet: see `hdls_identity.usable_memberships`). A customer grant is always a
/// reader, while its customer account stands (same person, same requester, requester
/// enabled, support installed). A binding of one persona never satisfies the other.
pub async fn current_role(
    client: &impl GenericClient,
    grant: &Grant,
) -> Result<Option<Role>, ToolError> {
    match (grant.persona, grant.principal_id) {
        (Persona::Agent, _) => {
            let row = client
                .query_opt(
                    "SELECT role FROM hdls_identity.usable_memberships WHERE workspace_id = $1 AND user_id = $2",
                    &[&grant.workspace_id, &grant.user_id],
                )
                .await?;
            row.map(|r| r.get::<_, &str>(0).parse().map_err(ToolError::internal))
                .transpose()
        }
        (Persona::Customer, Some(requester)) => {
            let bound = customer_accounts::still_bound(
                client,
                grant.workspace_id,
                grant.user_id,
                requester,
            )
            .await?;
            Ok(bound.then_some(Role::Reader))
        }
        (Persona::Customer, None) => Ok(None),
    }
}

/// A token response's contents.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
}

/// Issues an access token and a fresh refresh token for a grant, in the caller's transaction.
pub async fn issue(
    app: &App,
    client: &impl GenericClient,
    grant: &Grant,
    role: Role,
    now: OffsetDateTime,
) -> Result<Issued, ToolError> {
    let refresh = secret::generate(REFRESH_PREFIX);
    client
        .execute(
            "INSERT INTO hdls.oauth_refresh_tokens (workspace_id, token_hash, grant_id, issued_at)
             VALUES ($1, $2, $3, $4)",
            &[
                &grant.workspace_id,
                &refresh.hash.as_slice(),
                &grant.grant_id,
                &now,
            ],
        )
        .await?;
    client
        .execute(
            "UPDATE hdls.oauth_grants SET last_used_at = $3 WHERE workspace_id = $1 AND grant_id = $2",
            &[&grant.workspace_id, &grant.grant_id, &now],
        )
        .await?;
    let access_token = access::issue(
        app,
        &access::Subject {
            user_id: grant.user_id,
            workspace_id: grant.workspace_id,
            role,
            products: &grant.products,
            client_id: &grant.client_id,
            grant_id: grant.grant_id,
            resource: &grant.resource,
        },
        now,
    )
    .await?;
    Ok(Issued {
        access_token,
        refresh_token: refresh.token,
    })
}
