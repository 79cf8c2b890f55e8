//! OAuth clients: dynamic registration (RFC 7591) and Client ID Metadata Documents (a
//! `client_id` that is an https URL naming a JSON document). All clients are public (PKCE,
//! no secret). Redirect URIs match exactly, except the port of a loopback redirect (RFC 8252).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use url::Url;

use crate::app::App;
use crate::error::ToolError;
use crate::net::fetch;

/// Most redirect URIs one client may register.
const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI_LEN: usize = 2000;
/// Largest metadata document fetched.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// How long a fetched metadata document is trusted before it is fetched again.
const DOCUMENT_FRESH_FOR: time::Duration = time::Duration::hours(1);

/// A client as the authorization server knows it.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
}

impl Client {
    /// Whether `presented` is one of this client's redirect URIs.
    pub fn redirect_allowed(&self, presented: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| redirect_matches(registered, presented))
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Exact match, or — for `http` loopback redirects only — equal in everything but the port,
/// since native apps listen on whatever port the OS gives them (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(r), Ok(p)) = (Url::parse(registered), Url::parse(presented)) else {
        return false;
    };
    r.scheme() == "http"
        && p.scheme() == "http"
        && is_loopback_host(&r)
        && r.host() == p.host()
        && r.path() == p.path()
        && r.query() == p.query()
        && r.username() == p.username()
        && r.password() == p.password()
        && p.fragment().is_none()
}

/// Checks one redirect URI a client wants to register.
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err("redirect URI is too long".into());
    }
    let url = Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if url.fragment().is_some() {
        return Err("redirect URIs must not contain a fragment".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(&url) => Ok(()),
        "http" => Err(
            "http redirect URIs are allowed only on loopback (127.0.0.1, [::1], localhost)".into(),
        ),
        "javascript" | "data" | "file" | "about" | "blob" | "vbscript" | "ftp" | "ws" | "wss" => {
            Err(format!(
                "the {} scheme is not allowed for redirects",
                url.scheme()
            ))
        }
        // Private-use schemes of native apps (RFC 8252 §7.1), e.g. com.example.app:/callback.
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    client_name: Option<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
}

fn registration_error(code: &str, description: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": code, "error_description": description.into() })),
    )
        .into_response()
}

/// Checks client metadata common to registration and metadata documents.
fn validate_metadata(
    redirect_uris: &Option<Vec<String>>,
    client_name: &Option<String>,
    auth_method: &Option<String>,
    grant_types: &Option<Vec<String>>,
    response_types: &Option<Vec<String>>,
) -> Result<(Vec<String>, String), (&'static str, String)> {
    let uris = redirect_uris.clone().filter(|u| !u.is_empty()).ok_or((
        "invalid_redirect_uri",
        "redirect_uris must list at least one URI".to_owned(),
    ))?;
    if uris.len() > MAX_REDIRECT_URIS {
        return Err((
            "invalid_redirect_uri",
            format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
        ));
    }
    for uri in &uris {
        validate_redirect_uri(uri).map_err(|m| ("invalid_redirect_uri", m))?;
    }
    if let Some(method) = auth_method
        && method != "none"
    {
        return Err((
            "invalid_client_metadata",
            format!(
                "token_endpoint_auth_method {method:?} is not supported; hdls clients are public clients using PKCE (\"none\")"
            ),
        ));
    }
    if let Some(grants) = grant_types
        && let Some(bad) = grants
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err((
            "invalid_client_metadata",
            format!("grant type {bad:?} is not supported"),
        ));
    }
    if let Some(types) = response_types
        && let Some(bad) = types.iter().find(|t| t.as_str() != "code")
    {
        return Err((
            "invalid_client_metadata",
            format!("response type {bad:?} is not supported"),
        ));
    }
    let name = client_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| n.chars().take(200).collect::<String>())
        .unwrap_or_else(|| {
            Url::parse(&uris[0])
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "Unnamed client".to_owned())
        });
    Ok((uris, name))
}

/// `POST /oauth/register` (RFC 7591). Open registration, as MCP clients expect; every client
/// is public and still needs a person's consent before it gets anything.
pub async fn register(
    State(app): State<Arc<App>>,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    // Registration is anonymous, so each address gets a bounded number per hour.
    let address = crate::web::client_address(&extensions);
    let now = app.clock.now();
    if let Some(address) = address {
        if let Some(retry_after) = app.registrations.blocked(address, now) {
            let mut response = registration_error(
                "invalid_client_metadata",
                format!("too many registrations from this address; retry in {retry_after} s"),
            );
            *response.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after),
            );
            return response;
        }
        app.registrations.record(address, now);
    }
    let request: RegistrationRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return registration_error(
                "invalid_client_metadata",
                format!("the body must be a JSON client metadata object: {e}"),
            );
        }
    };
    let (uris, name) = match validate_metadata(
        &request.redirect_uris,
        &request.client_name,
        &request.token_endpoint_auth_method,
        &request.grant_types,
        &request.response_types,
    ) {
        Ok(v) => v,
        Err((code, message)) => return registration_error(code, message),
    };
    let mut id = [0u8; 16];
    rand::fill(&mut id);
    let client_id = format!("hc_{}", hex::encode(id));
    let stored = async {
        let client = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
        client
            .execute(
                "INSERT INTO hdls_identity.oauth_clients (client_id, kind, client_name, redirect_uris, created_at)
                 VALUES ($1, 'registered', $2, $3, $4)",
                &[&client_id, &name, &uris, &now],
            )
            .await?;
        Ok::<_, ToolError>(())
    }
    .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "client registration failed");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "temporarily_unavailable" })),
        )
            .into_response();
    }
    (
        StatusCode::CREATED,
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "client_id": client_id,
            "client_id_issued_at": now.unix_timestamp(),
            "client_name": name,
            "redirect_uris": uris,
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        })),
    )
        .into_response()
}

/// Why a client could not be found or loaded. Shown on an error page, never redirected.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown client_id")]
    Unknown,
    #[error("the client's metadata document could not be used: {0}")]
    Document(String),
    #[error(transparent)]
    Internal(#[from] ToolError),
}

/// Whether a client_id is a metadata-document URL rather than a registered id.
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Finds a client: registered ones from the database; metadata-document ones fetched through
/// the outbound guard (and remembered for an hour).
pub async fn find(app: &App, client_id: &str, now: OffsetDateTime) -> Result<Client, ClientError> {
    if client_id.is_empty() || client_id.len() > MAX_URI_LEN {
        return Err(ClientError::Unknown);
    }
    let stored = {
        let client = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
        client
            .query_opt(
                "SELECT client_name, redirect_uris, kind, fetched_at FROM hdls_identity.oauth_clients WHERE client_id = $1",
                &[&client_id],
            )
            .await
            .map_err(ToolError::from)?
    };
    if let Some(row) = &stored {
        let kind: &str = row.get("kind");
        let fetched_at: Option<OffsetDateTime> = row.get("fetched_at");
        let fresh =
            kind == "registered" || fetched_at.is_some_and(|t| now - t < DOCUMENT_FRESH_FOR);
        if fresh {
            return Ok(Client {
                client_id: client_id.to_owned(),
                name: row.get("client_name"),
                redirect_uris: row.get("redirect_uris"),
            });
        }
    }
    if !is_document_url(client_id) {
        return Err(ClientError::Unknown);
    }
    let client = fetch_document(app, client_id).await?;
    let db = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
    db.execute(
        "INSERT INTO hdls_identity.oauth_clients (client_id, kind, client_name, redirect_uris, created_at, fetched_at)
         VALUES ($1, 'metadata_document', $2, $3, $4, $4)
         ON CONFLICT (client_id) DO UPDATE SET client_name = EXCLUDED.client_name,
             redirect_uris = EXCLUDED.redirect_uris, fetched_at = EXCLUDED.fetched_at",
        &[&client_id, &client.name, &client.redirect_uris, &now],
    )
    .await
    .map_err(ToolError::from)?;
    Ok(client)
}

#[derive(Deserialize)]
struct Document {
    client_id: Option<String>,
    client_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
}

async fn fetch_document(app: &App, client_id: &str) -> Result<Client, ClientError> {
    let url = Url::parse(client_id)
        .map_err(|_| ClientError::Document("client_id is not a valid URL".into()))?;
    if url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() == "/"
        || url.path().split('/').any(|s| s == "." || s == "..")
    {
        return Err(ClientError::Document(
            "a client_id URL needs a path, and no fragment, credentials or dot segments".into(),
        ));
    }
    let value: Value = fetch::json(&app.outbound, &url, MAX_DOCUMENT_BYTES)
        .await
        .map_err(|e| ClientError::Document(e.to_string()))?;
    let doc: Document = serde_json::from_value(value)
        .map_err(|_| ClientError::Document("the document is not client metadata".into()))?;
    if doc.client_id.as_deref() != Some(client_id) {
        return Err(ClientError::Document(
            "the document's client_id does not equal its URL".into(),
        ));
    }
    let (redirect_uris, name) = validate_metadata(
        &doc.redirect_uris,
        &doc.client_name,
        &doc.token_endpoint_auth_method,
        &doc.grant_types,
        &doc.response_types,
    )
    .map_err(|(_, m)| ClientError::Document(m))?;
    Ok(Client {
        client_id: client_id.to_owned(),
        name,
        redirect_uris,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_ignore_the_port_only() {
        let r = "http://127.0.0.1/callback";
        assert!(redirect_matches(r, "http://127.0.0.1:53123/callback"));
        assert!(!redirect_matches(r, "http://127.0.0.1:53123/other"));
        assert!(!redirect_matches(r, "http://localhost:53123/callback"));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
        assert!(!redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb?x=1"
        ));
        assert!(redirect_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
    }

    #[test]
    fn redirect_uri_rules() {
        assert!(validate_redirect_uri("https://app.example/cb").is_ok());
        assert!(validate_redirect_uri("http://localhost:3000/cb").is_ok());
        assert!(validate_redirect_uri("com.example.app:/oauth").is_ok());
        assert!(validate_redirect_uri("http://app.example/cb").is_err());
        assert!(validate_redirect_uri("javascript:alert(1)").is_err());
        assert!(validate_redirect_uri("https://app.example/cb#frag").is_err());
        assert!(validate_redirect_uri("not a uri").is_err());
    }
}
