//! The token endpoint: authorization_code (with PKCE S256) and rotating refresh_token grants.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::access::ACCESS_TTL;
use super::grants::{self, Grant, Issued};
use crate::app::App;
use crate::audit;
use crate::error::ToolError;
use crate::secret;

/// An OAuth error response (RFC 6749 §5.2).
pub struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
}

fn oauth_error(code: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError {
        status: if code == "invalid_client" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        },
        code,
        description: description.into(),
    }
}

impl From<ToolError> for OAuthError {
    fn from(error: ToolError) -> OAuthError {
        tracing::error!(%error, "token endpoint failed");
        OAuthError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "temporarily_unavailable",
            description: "the server could not complete the request; try again".into(),
        }
    }
}

impl From<tokio_postgres::Error> for OAuthError {
    fn from(error: tokio_postgres::Error) -> OAuthError {
        ToolError::from(error).into()
    }
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        no_store(
            (
                self.status,
                axum::Json(json!({ "error": self.code, "error_description": self.description })),
            )
                .into_response(),
        )
    }
}

/// Form parameters; each may appear once (RFC 6749 §3.2).
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut found = self.0.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(oauth_error(
                "invalid_request",
                format!("{name} appears more than once"),
            ));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)?
            .ok_or_else(|| oauth_error("invalid_request", format!("{name} is required")))
    }
}

/// `POST /oauth/token`
pub async fn exchange(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let params = Params(url::form_urlencoded::parse(&body).into_owned().collect());
    let now = app.clock.now();
    let result = match params.get("grant_type") {
        Ok(Some("authorization_code")) => authorization_code(&app, &params, now).await,
        Ok(Some("refresh_token")) => refresh(&app, &params, now).await,
        Ok(Some(_)) => Err(oauth_error(
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token",
        )),
        Ok(None) => Err(oauth_error("invalid_request", "grant_type is required")),
        Err(e) => Err(e),
    };
    match result {
        Ok((issued, grant)) => no_store(
            axum::Json(json!({
                "access_token": issued.access_token,
                "token_type": "Bearer",
                "expires_in": ACCESS_TTL.whole_seconds(),
                "refresh_token": issued.refresh_token,
                "scope": grants::product_slugs(&grant.products).join(" "),
            }))
            .into_response(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn authorization_code(
    app: &App,
    params: &Params,
    now: OffsetDateTime,
) -> Result<(Issued, Grant), OAuthError> {
    let code = params.require("code")?;
    let client_id = params.require("client_id")?;
    let redirect_uri = params.require("redirect_uri")?;
    let resource = params.get("resource")?;
    let verifier = params.get("code_verifier")?;
    let mut db = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
    let hash = secret::hash(code);
    // The workspace first, then the code locked on its shard: Citus locks rows only in a
    // statement that names the workspace (DESIGN §3). The lookup visits every shard, so it
    // runs before the transaction, which may then change reference tables (Citus refuses
    // that after a statement on several shards in the same transaction).
    let workspace: Option<Uuid> = db
        .query_opt(
            "SELECT workspace_id FROM hdls.oauth_codes WHERE code_hash = $1",
            &[&hash.as_slice()],
        )
        .await?
        .map(|row| row.get(0));
    let tx = db.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT c.workspace_id, c.grant_id, c.client_id, c.redirect_uri, c.code_challenge, c.resource,
                    c.expires_at, c.used_at, g.user_id, g.products, g.revoked_at, g.persona, g.principal_id
             FROM hdls.oauth_codes c JOIN hdls.oauth_grants g USING (workspace_id, grant_id)
             WHERE c.workspace_id = $2 AND c.code_hash = $1 FOR UPDATE OF c",
            &[&hash.as_slice(), &workspace],
        )
        .await?
    else {
        return Err(oauth_error("invalid_grant", "unknown authorization code"));
    };
    let workspace_id: Uuid = row.get("workspace_id");
    let grant_id: Uuid = row.get("grant_id");
    let used_at: Option<OffsetDateTime> = row.get("used_at");
    if used_at.is_some() {
        // A code presented twice was intercepted or replayed: everything issued from it goes,
        // but only on the word of the code's own client, proven by its PKCE verifier (a
        // client_id is public). A stranger holding a spent code learns nothing and changes
        // nothing.
        let own_client = row.get::<_, &str>("client_id") == client_id
            && verifier.is_some_and(|v| verifier_matches(&row, v));
        if !own_client {
            return Err(oauth_error("invalid_grant", "unknown authorization code"));
        }
        grants::revoke_by_client(
            &tx,
            workspace_id,
            grant_id,
            client_id,
            "authorization code reused",
            audit::actions::OAUTH_CODE_REUSE,
            now,
        )
        .await?;
        tx.commit().await?;
        return Err(oauth_error(
            "invalid_grant",
            "this authorization code was already used; the connection it created is revoked",
        ));
    }
    // From here the code is spent, whatever the outcome.
    tx.execute(
        "UPDATE hdls.oauth_codes SET used_at = $3 WHERE workspace_id = $1 AND code_hash = $2",
        &[&workspace_id, &secret::hash(code).as_slice(), &now],
    )
    .await?;
    let outcome = check_code(&row, client_id, redirect_uri, resource, verifier, now);
    let result = match outcome {
        Err(e) => Err(e),
        Ok(()) => {
            let grant = Grant {
                workspace_id,
                grant_id,
                user_id: row.get("user_id"),
                client_id: client_id.to_owned(),
                resource: row.get("resource"),
                products: grants::parse_products(&row.get::<_, Vec<String>>("products")),
                persona: grants::parse_persona(row.get("persona"))?,
                principal_id: row.get("principal_id"),
            };
            match grants::current_role(&tx, &grant).await? {
                None => Err(no_longer_bound()),
                Some(role) => Ok((grants::issue(app, &tx, &grant, role, now).await?, grant)),
            }
        }
    };
    tx.commit().await?;
    result
}

/// The grant's membership or customer account is gone (or its requester disabled).
fn no_longer_bound() -> OAuthError {
    oauth_error(
        "invalid_grant",
        "the person is no longer a member of the workspace (or, for a customer connection, no longer has that customer account)",
    )
}

fn check_code(
    row: &tokio_postgres::Row,
    client_id: &str,
    redirect_uri: &str,
    resource: Option<&str>,
    verifier: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), OAuthError> {
    let expires_at: OffsetDateTime = row.get("expires_at");
    if expires_at <= now {
        return Err(oauth_error(
            "invalid_grant",
            "the authorization code has expired (codes live 5 minutes)",
        ));
    }
    if row.get::<_, &str>("client_id") != client_id {
        return Err(oauth_error(
            "invalid_grant",
            "the code was issued to another client",
        ));
    }
    if row.get::<_, &str>("redirect_uri") != redirect_uri {
        return Err(oauth_error(
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        ));
    }
    if let Some(resource) = resource
        && row.get::<_, &str>("resource") != resource
    {
        return Err(oauth_error(
            "invalid_target",
            "resource differs from the authorization request",
        ));
    }
    if row.get::<_, Option<OffsetDateTime>>("revoked_at").is_some() {
        return Err(oauth_error("invalid_grant", "the connection was revoked"));
    }
    let Some(verifier) = verifier else {
        return Err(oauth_error(
            "invalid_request",
            "code_verifier is required (PKCE)",
        ));
    };
    if !verifier_matches(row, verifier) {
        return Err(oauth_error(
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(())
}

/// Whether `verifier` is the PKCE verifier of the code's S256 challenge.
fn verifier_matches(row: &tokio_postgres::Row, verifier: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = secret::b64url(&Sha256::digest(verifier.as_bytes()));
    let challenge: &str = row.get("code_challenge");
    well_formed && secret::equal(computed.as_bytes(), challenge.as_bytes())
}

async fn refresh(
    app: &App,
    params: &Params,
    now: OffsetDateTime,
) -> Result<(Issued, Grant), OAuthError> {
    let token = params.require("refresh_token")?;
    let client_id = params.require("client_id")?;
    let resource = params.get("resource")?;
    let hash = secret::hash(token);
    let mut db = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
    // The workspace first, then the rows locked on its shard (as for codes above).
    let workspace: Option<Uuid> = db
        .query_opt(
            "SELECT workspace_id FROM hdls.oauth_refresh_tokens WHERE token_hash = $1",
            &[&hash.as_slice()],
        )
        .await?
        .map(|row| row.get(0));
    let tx = db.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT r.workspace_id, r.grant_id, r.issued_at, r.used_at,
                    g.user_id, g.client_id, g.resource, g.products, g.revoked_at, g.persona, g.principal_id
             FROM hdls.oauth_refresh_tokens r JOIN hdls.oauth_grants g USING (workspace_id, grant_id)
             WHERE r.workspace_id = $2 AND r.token_hash = $1 FOR UPDATE OF r, g",
            &[&hash.as_slice(), &workspace],
        )
        .await?
    else {
        return Err(oauth_error("invalid_grant", "unknown refresh token"));
    };
    let workspace_id: Uuid = row.get("workspace_id");
    let grant_id: Uuid = row.get("grant_id");
    if row.get::<_, &str>("client_id") != client_id {
        return Err(oauth_error(
            "invalid_grant",
            "the refresh token was issued to another client",
        ));
    }
    if row.get::<_, Option<OffsetDateTime>>("revoked_at").is_some() {
        return Err(oauth_error(
            "invalid_grant",
            "the connection was revoked; authorize again",
        ));
    }
    if row.get::<_, Option<OffsetDateTime>>("used_at").is_some() {
        // Reuse means two parties hold this token; we cannot tell which is legitimate, so the
        // whole connection ends (every refresh token of the grant, and its access tokens).
        grants::revoke_by_client(
            &tx,
            workspace_id,
            grant_id,
            client_id,
            "refresh token reused",
            audit::actions::OAUTH_REFRESH_REUSE,
            now,
        )
        .await?;
        tx.commit().await?;
        return Err(oauth_error(
            "invalid_grant",
            "this refresh token was already used; the connection is revoked and must be authorized again",
        ));
    }
    let issued_at: OffsetDateTime = row.get("issued_at");
    if now - issued_at > grants::REFRESH_IDLE {
        return Err(oauth_error(
            "invalid_grant",
            "the refresh token expired after 30 days without use; authorize again",
        ));
    }
    if let Some(resource) = resource
        && row.get::<_, &str>("resource") != resource
    {
        return Err(oauth_error(
            "invalid_target",
            "this connection was granted for a different resource",
        ));
    }
    let grant = Grant {
        workspace_id,
        grant_id,
        user_id: row.get("user_id"),
        client_id: client_id.to_owned(),
        resource: row.get("resource"),
        products: grants::parse_products(&row.get::<_, Vec<String>>("products")),
        persona: grants::parse_persona(row.get("persona"))?,
        principal_id: row.get("principal_id"),
    };
    let Some(role) = grants::current_role(&tx, &grant).await? else {
        return Err(no_longer_bound());
    };
    tx.execute(
        "UPDATE hdls.oauth_refresh_tokens SET used_at = $3 WHERE workspace_id = $1 AND token_hash = $2",
        &[&workspace_id, &hash.as_slice(), &now],
    )
    .await?;
    let issued = grants::issue(app, &tx, &grant, role, now).await?;
    tx.commit().await?;
    Ok((issued, grant))
}
