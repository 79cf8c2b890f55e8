//! hdls's own OAuth 2.1 authorization server for MCP clients: metadata, client registration
//! and metadata documents, sign-in and consent, codes with PKCE S256, EdDSA access tokens
//! pinned to one MCP endpoint, rotating refresh tokens with reuse detection, revocation.

pub mod access;
pub mod authorize;
pub mod clients;
pub mod grants;
pub mod keys;
pub mod metadata;
pub mod revoke;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::App;
use crate::web;

/// Every authorization-server and account route.
pub fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::serve),
        )
        .route("/oauth/register", post(clients::register))
        .route(
            "/oauth/authorize",
            get(authorize::show).post(authorize::decide),
        )
        .route("/oauth/sign-in", post(authorize::sign_in))
        .route("/oauth/token", post(token::exchange))
        .route("/oauth/revoke", post(revoke::revoke))
        .route("/oauth/jwks", get(jwks))
        .route(
            "/account/set-password",
            get(web::account::show_set_password).post(web::account::set_password),
        )
        .route(
            "/invite",
            get(web::account::show_invitation).post(web::account::accept_invitation),
        )
        .with_state(app)
}

async fn jwks(State(app): State<Arc<App>>) -> Response {
    match app.keys.jwks(&app.pools.auth, app.clock.now()).await {
        Ok(doc) => axum::Json(doc).into_response(),
        Err(error) => {
            tracing::error!(%error, "jwks failed");
            axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}
