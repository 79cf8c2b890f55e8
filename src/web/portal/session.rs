//! Portal sessions: a customer signed in on one workspace's support portal.
//!
//! The cookie (`hdls_portal`, an opaque random token; the server keeps only its SHA-256) is
//! scoped to `/portal/<workspace id>`, HttpOnly, SameSite=Lax, Secure over https, 12 hours.
//! A session is bound to one workspace and one requester: presented at another workspace's
//! portal it finds nothing, and every request re-checks the customer account (still bound,
//! requester enabled, support installed), so a disabled requester is signed out at once.

use axum::http::{HeaderMap, HeaderValue};
use deadpool_postgres::Pool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ToolError;
use crate::identity::{CredentialKind, CredentialRef, Persona, Principal, Product, Role};
use crate::people::customer_accounts::USABLE;
use crate::secret;
use crate::web::session::cookie;

pub const COOKIE: &str = "hdls_portal";
/// How long a portal sign-in lasts.
pub const VALID: time::Duration = time::Duration::hours(12);
const PREFIX: &str = "pts_";

/// A live portal session.
pub struct PortalSession {
    /// The cookie token (CSRF tokens of the session's forms derive from it).
    pub token: String,
    pub user_id: Uuid,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub requester_id: Uuid,
    pub email: String,
    pub expires_at: OffsetDateTime,
}

impl PortalSession {
    /// The customer Principal every page action runs as: the same kind of caller as a
    /// customer's OAuth token, so the customer tools, their row policies and the rate limits
    /// apply unchanged. The credential id names the session by a prefix of its hash.
    pub fn principal(&self) -> Principal {
        let hash = secret::hash(&self.token);
        let prefix: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        Principal {
            workspace_id: self.workspace_id,
            workspace_name: self.workspace_name.clone(),
            role: Role::Reader,
            persona: Persona::Customer,
            principal_id: Some(self.requester_id),
            user_id: Some(self.user_id),
            products: vec![Product::Support],
            all_products: false,
            credential: CredentialRef {
                kind: CredentialKind::User,
                id: format!("portal_{prefix}"),
            },
            expires_at: Some(self.expires_at),
            data_source: None,
            credential_epoch: None,
        }
    }
}

/// The path the cookie is scoped to.
pub fn path(workspace_id: Uuid) -> String {
    format!("/portal/{workspace_id}")
}

/// The `Set-Cookie` for a portal session (an empty value with age 0 clears it).
pub fn set_cookie(
    workspace_id: Uuid,
    value: &str,
    max_age_s: i64,
    secure: bool,
) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path={}; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}",
        path(workspace_id)
    ))
    .ok()
}

/// Starts a session for a person's customer account; returns the cookie token.
pub async fn create(
    auth: &Pool,
    user_id: Uuid,
    workspace_id: Uuid,
    requester_id: Uuid,
    now: OffsetDateTime,
) -> Result<String, ToolError> {
    let session = secret::generate(PREFIX);
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    client
        .execute(
            "INSERT INTO hdls_identity.portal_sessions
                 (token_hash, user_id, workspace_id, requester_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &session.hash.as_slice(),
                &user_id,
                &workspace_id,
                &requester_id,
                &now,
                &(now + VALID),
            ],
        )
        .await?;
    Ok(session.token)
}

/// The request's live session for this workspace's portal, if its customer account still
/// stands.
pub async fn current(
    auth: &Pool,
    headers: &HeaderMap,
    workspace_id: Uuid,
    now: OffsetDateTime,
) -> Result<Option<PortalSession>, ToolError> {
    let Some(token) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let statement = client.prepare_cached(&CURRENT_SQL).await?;
    let row = client
        .query_opt(
            &statement,
            &[&secret::hash(&token).as_slice(), &workspace_id, &now],
        )
        .await?;
    Ok(row.map(|r| PortalSession {
        token,
        user_id: r.get("user_id"),
        workspace_id,
        workspace_name: r.get("name"),
        requester_id: r.get("requester_id"),
        email: r.get("email"),
        expires_at: r.get("expires_at"),
    }))
}

static CURRENT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT s.user_id, s.requester_id, s.expires_at, w.name, u.email
         FROM hdls_identity.portal_sessions s
         JOIN hdls.workspaces w ON w.workspace_id = s.workspace_id
         JOIN hdls_identity.users u ON u.user_id = s.user_id
         JOIN hdls.customer_accounts ca
           ON ca.workspace_id = s.workspace_id AND ca.user_id = s.user_id
          AND ca.requester_id = s.requester_id
         WHERE s.token_hash = $1 AND s.workspace_id = $2 AND s.expires_at > $3 AND {USABLE}"
    )
});

/// Ends a session (sign-out).
pub async fn end(auth: &Pool, token: &str) -> Result<(), ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    client
        .execute(
            "DELETE FROM hdls_identity.portal_sessions WHERE token_hash = $1",
            &[&secret::hash(token).as_slice()],
        )
        .await?;
    Ok(())
}
