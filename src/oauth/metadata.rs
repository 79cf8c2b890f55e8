//! RFC 8414 authorization-server metadata.

use std::sync::Arc;

use axum::extract::State;
use serde_json::{Value, json};

use crate::app::{App, PublicUrl};

/// The metadata document; the issuer is the public URL.
pub fn document(public: &PublicUrl) -> Value {
    let base = public.base();
    json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/oauth/authorize"),
        "token_endpoint": format!("{base}/oauth/token"),
        "registration_endpoint": format!("{base}/oauth/register"),
        "revocation_endpoint": format!("{base}/oauth/revoke"),
        "jwks_uri": format!("{base}/oauth/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": true,
    })
}

/// `GET /.well-known/oauth-authorization-server`
pub async fn serve(State(app): State<Arc<App>>) -> axum::Json<Value> {
    axum::Json(document(&app.public))
}
