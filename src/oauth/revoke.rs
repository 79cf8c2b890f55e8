//! Token revocation (RFC 7009): revoking either token of a connection ends the connection.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::{access, grants};
use crate::app::App;
use crate::audit;
use crate::error::ToolError;
use crate::secret;

/// `POST /oauth/revoke`. Always 200 for a well-formed request, known token or not (RFC 7009 §2.2).
pub async fn revoke(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(token) = field("token").filter(|t| !t.is_empty()) else {
        return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": "invalid_request", "error_description": "token is required" }))).into_response();
    };
    let client_id = field("client_id");
    match revoke_token(&app, token, client_id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => {
            tracing::error!(%error, "revocation failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "error": "temporarily_unavailable" })),
            )
                .into_response()
        }
    }
}

async fn revoke_token(app: &App, token: &str, client_id: Option<&str>) -> Result<(), ToolError> {
    let now = app.clock.now();
    let db = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
    let found: Option<(Uuid, Uuid, String)> = db
        .query_opt(
            "SELECT r.workspace_id, r.grant_id, g.client_id
             FROM hdls.oauth_refresh_tokens r JOIN hdls.oauth_grants g USING (workspace_id, grant_id)
             WHERE r.token_hash = $1",
            &[&secret::hash(token).as_slice()],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let found = match found {
        Some(f) => Some(f),
        None => match access::verify_claims(app, token, None, now).await? {
            Ok(claims) => Some((claims.workspace_id, claims.grant_id, claims.client_id)),
            Err(_) => None,
        },
    };
    let Some((workspace_id, grant_id, owner)) = found else {
        return Ok(());
    };
    // A client may only revoke its own tokens (RFC 7009 §2.1).
    if client_id.is_some_and(|c| c != owner) {
        return Ok(());
    }
    grants::revoke_by_client(
        &db,
        workspace_id,
        grant_id,
        &owner,
        "revoked by the client",
        audit::actions::OAUTH_REVOKE,
        now,
    )
    .await?;
    Ok(())
}
