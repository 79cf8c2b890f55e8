//! One-time links for a person's account: set a password (first start, `hdls admin member
//! add`, `hdls admin person password-link`). Only the operator issues them, so using one also
//! proves the person's address: the operator vouched for it when they sent the link.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ToolError;
use crate::secret;

/// How long a set-password link stays valid.
pub const SET_PASSWORD_VALID: time::Duration = time::Duration::days(7);
const PREFIX: &str = "pwl_";

/// Creates a set-password link for `user_id`; returns the token (shown once).
pub async fn create_set_password(
    client: &impl GenericClient,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<String, ToolError> {
    let link = secret::generate(PREFIX);
    client
        .execute(
            "INSERT INTO hdls_identity.user_links (token_hash, user_id, purpose, expires_at)
             VALUES ($1, $2, 'set_password', $3)",
            &[&link.hash.as_slice(), &user_id, &(now + SET_PASSWORD_VALID)],
        )
        .await?;
    Ok(link.token)
}

/// The email of the person a still-valid, unused set-password link belongs to.
pub async fn peek_set_password(
    auth: &deadpool_postgres::Pool,
    token: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let row = client
        .query_opt(
            "SELECT u.email FROM hdls_identity.user_links l JOIN hdls_identity.users u USING (user_id)
             WHERE l.token_hash = $1 AND l.purpose = 'set_password' AND l.used_at IS NULL AND l.expires_at > $2",
            &[&secret::hash(token).as_slice(), &now],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Uses the link once: sets the password, marks the address proven and the link used, and
/// ends the person's other web sessions and OAuth connections, atomically. Returns the
/// person, or `None` when the link is unknown, used or expired. The link is looked up (one
/// indexed query) before any hashing, so a bogus link costs no argon2 work.
pub async fn use_set_password(
    auth: &deadpool_postgres::Pool,
    token: &str,
    password: &str,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, ToolError> {
    super::password::check_rules(password)?;
    let mut client = auth.get().await.map_err(ToolError::from_pool)?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "UPDATE hdls_identity.user_links SET used_at = $2
             WHERE token_hash = $1 AND purpose = 'set_password' AND used_at IS NULL AND expires_at > $2
             RETURNING user_id",
            &[&secret::hash(token).as_slice(), &now],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let user_id: Uuid = row.get(0);
    let hash = super::password::hash(password).await?;
    tx.execute(
        "UPDATE hdls_identity.users SET password_hash = $2, address_proven_at = coalesce(address_proven_at, $3)
         WHERE user_id = $1",
        &[&user_id, &hash, &now],
    )
    .await?;
    // Any other link still out for this person dies with this one: a stale link must not
    // reset the password just chosen.
    tx.execute(
        "UPDATE hdls_identity.user_links SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        &[&user_id, &now],
    )
    .await?;
    super::end_sessions_and_connections(&tx, user_id, "password changed", now).await?;
    tx.commit().await?;
    Ok(Some(user_id))
}
