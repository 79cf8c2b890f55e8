//! hdls's own OAuth 2.1 authorization server for MCP clients: metadata, client registration
//! and metadata documents, sign-in and consent, codes with PKCE S256, EdDSA access tokens
//! pinned to one MCP endpoint, rotating refresh tokens with reuse detection, revocation.

pub mod access;
pub mod authorize;
pub mod clients;
pub mod grants;
pub mod housekeeping;
pub mod keys;
pub mod metadata;
pub mod revoke;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::app::App;
use crate::web;

/// Endpoints that browser-based MCP clients call from their own origin: metadata,
/// registration, token, revocation, JWKS. They use no cookies, so any Origin may call them
/// (CORS without credentials); the pages stay same-origin only.
const CROSS_ORIGIN_PATHS: [&str; 6] = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-protected-resource",
    "/oauth/register",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/jwks",
];

/// Whether a path is one of the cross-origin endpoints (or below the protected-resource prefix).
pub fn is_cross_origin_path(path: &str) -> bool {
    CROSS_ORIGIN_PATHS.iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The CORS policy of the cross-origin endpoints.
pub fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("mcp-protocol-version"),
        ])
}

/// The authorization server's JSON endpoints (CORS-enabled).
pub fn api_routes(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::serve),
        )
        .route("/oauth/register", post(clients::register))
        .route("/oauth/token", post(token::exchange))
        .route("/oauth/revoke", post(revoke::revoke))
        .route("/oauth/jwks", get(jwks))
        .with_state(app)
        .layer(cors())
}

/// The pages people see: sign-in, consent, set a password, accept an invitation.
pub fn page_routes(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/oauth/authorize",
            get(authorize::show).post(authorize::decide),
        )
        .route("/oauth/sign-in", post(authorize::sign_in))
        .route("/oauth/sign-out", post(authorize::sign_out))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_json_endpoints_are_cross_origin() {
        assert!(is_cross_origin_path("/oauth/token"));
        assert!(is_cross_origin_path(
            "/.well-known/oauth-protected-resource/api/mcp/crm"
        ));
        assert!(!is_cross_origin_path("/oauth/tokenx"));
        assert!(!is_cross_origin_path("/oauth/authorize"));
        assert!(!is_cross_origin_path("/oauth/sign-in"));
        assert!(!is_cross_origin_path("/api/mcp"));
    }
}
