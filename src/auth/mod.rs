//! Authentication: turns the presented bearer credential into the request's Principal, or a 401.

pub mod api_key;
pub mod cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::identity::{CredentialKind, Endpoint, Product};
use crate::oauth;

/// Query parameters that would carry a credential; refused outright (RFC 9700 §4.3.2 / MCP auth spec).
const CREDENTIAL_PARAMS: [&str; 5] = ["access_token", "token", "api_key", "apikey", "key"];

/// Why authentication failed, mapped to RFC 6750 error codes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No credential at all: the challenge carries no error code (RFC 6750 §3.1).
    Missing,
    /// A credential in the URL.
    InQuery,
    /// Present but not a credential we accept.
    Invalid,
}

/// Middleware for one MCP endpoint: resolves the bearer credential and stores the Principal.
pub async fn authenticate(
    State((app, endpoint)): State<(Arc<App>, Endpoint)>,
    mut request: Request,
    next: Next,
) -> Response {
    if query_carries_credential(request.uri().query()) {
        return challenge(&app, endpoint, Failure::InQuery);
    }
    let token = bearer_token(request.headers().get(header::AUTHORIZATION)).map(str::to_owned);
    let Some(token) = token.as_deref() else {
        let failure = if request.headers().contains_key(header::AUTHORIZATION) {
            Failure::Invalid
        } else {
            Failure::Missing
        };
        return challenge(&app, endpoint, failure);
    };
    let now = app.clock.now();
    let address = crate::web::client_address(request.extensions());
    if let Some(retry_after) = address.and_then(|a| app.bearer_failures.blocked(a, now)) {
        return too_many_failures(retry_after);
    }
    // Linked databases are reached with data-source keys only (no OAuth resource there).
    if endpoint == Endpoint::DataSource && !token.starts_with(api_key::PREFIX) {
        return challenge(&app, endpoint, Failure::Invalid);
    }
    let key = cache::Key::new(endpoint, token);
    let is_api_key = token.starts_with(api_key::PREFIX);
    if let Some(hit) = app.credentials.get(&key, now) {
        // The body is read only for a credential already known good, and kept: if the call
        // finds the workspace's credentials changed since this one was resolved, the
        // credential is resolved again and the request runs again.
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body over the limit, or not received in full",
            )
                .into_response();
        };
        // Only a tool call checks the epoch (in the transaction it opens); every other
        // request resolves its credential afresh, so none outlives a revocation either.
        if is_tool_call(&body) {
            app.metrics.credential_lookup("hit");
            if hit.touch_due && is_api_key {
                api_key::record_use(&app.pools.auth, &hit.principal, now);
            }
            let stale = Arc::new(StaleCredential::default());
            let mut first = Request::from_parts(copy_head(&parts), Body::from(body.clone()));
            first.extensions_mut().insert(stale.clone());
            let response = run_as(&app, endpoint, hit.principal, first, next.clone()).await;
            if !stale.is_marked() {
                return response;
            }
            app.credentials.forget(&key);
            app.metrics.credential_lookup("stale");
        } else {
            app.metrics.credential_lookup("miss");
        }
        request = Request::from_parts(parts, Body::from(body));
    } else {
        app.metrics.credential_lookup("miss");
    }
    let resolved = if is_api_key {
        api_key::resolve(&app.pools.auth, token, now)
            .await
            .map(|r| r.map_err(|rejection| format!("{rejection:?}")))
            .map(|r| {
                r.map(|(principal, last_used)| {
                    let due = cache::touch_due(last_used, now);
                    if due {
                        api_key::record_use(&app.pools.auth, &principal, now);
                    }
                    (principal, if due { Some(now) } else { last_used })
                })
            })
    } else {
        oauth::access::resolve(&app, token, endpoint, now)
            .await
            .map(|r| r.map(|principal| (principal, None)))
            .map(|r| r.map_err(|rejection| format!("{rejection:?}")))
    };
    match resolved {
        Ok(Ok((mut principal, last_used))) => {
            app.credentials.insert(key, &principal, last_used, now);
            // Resolved for this very request: nothing to check it against.
            principal.credential_epoch = None;
            run_as(&app, endpoint, Arc::new(principal), request, next).await
        }
        Ok(Err(rejection)) => {
            tracing::info!(endpoint = endpoint.name(), rejection, "credential refused");
            if let Some(address) = address {
                app.bearer_failures.record(address, now);
            }
            challenge(&app, endpoint, Failure::Invalid)
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": error.code.as_str(), "error_description": error.message })),
        )
            .into_response(),
    }
}

/// Set by the call path when a cached principal's credential epoch moved (see
/// [`cache`]): the request is then answered with the credential resolved afresh.
#[derive(Debug, Default)]
pub struct StaleCredential(AtomicBool);

impl StaleCredential {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a request body is one JSON-RPC `tools/call` (read without building the message).
fn is_tool_call(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Method>(body)
        .ok()
        .and_then(|m| m.method)
        .is_some_and(|m| m == "tools/call")
}

/// A request's head again, for running it a second time.
fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head.extensions = parts.extensions.clone();
    head
}

/// Runs the request as `principal`, once the credential is known to be usable here.
async fn run_as(
    app: &App,
    endpoint: Endpoint,
    principal: Arc<crate::identity::Principal>,
    mut request: Request,
    next: Next,
) -> Response {
    if !bound_here(endpoint, &principal, request.uri().path()) {
        tracing::info!(
            endpoint = endpoint.name(),
            "credential presented at an endpoint it is not bound to"
        );
        return challenge(app, endpoint, Failure::Invalid);
    }
    if let Endpoint::Product(product) = endpoint
        && principal.credential.kind == CredentialKind::OauthToken
        && !principal.has_product(product)
    {
        return insufficient_scope(app, endpoint, product);
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Whether a credential may be used at this endpoint: a data-source key only at its own
/// source's endpoint, and nothing else at any source's endpoint.
fn bound_here(endpoint: Endpoint, principal: &crate::identity::Principal, path: &str) -> bool {
    match (&principal.data_source, endpoint) {
        (Some(binding), Endpoint::DataSource) => Endpoint::data_source_in(path) == Some(binding.id),
        (None, Endpoint::DataSource) | (Some(_), _) => false,
        (None, _) => true,
    }
}

/// 429 for an address that presented too many bad credentials (RFC 6585 §4).
fn too_many_failures(retry_after_s: u64) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({
            "error": "rate_limited",
            "error_description": format!("too many failed authentications from this address; retry in {retry_after_s} s"),
            "retry_after_s": retry_after_s,
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    response
}

/// Extracts the token from `Authorization: Bearer <token>` (scheme is case-insensitive).
fn bearer_token(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

fn query_carries_credential(query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    url::form_urlencoded::parse(query.as_bytes()).any(|(name, value)| {
        CREDENTIAL_PARAMS
            .iter()
            .any(|p| name.eq_ignore_ascii_case(p))
            || value.starts_with(api_key::PREFIX)
    })
}

/// The 401 with `WWW-Authenticate: Bearer resource_metadata=…` that MCP clients use for discovery.
fn challenge(app: &App, endpoint: Endpoint, failure: Failure) -> Response {
    let metadata = app.public.resource_metadata_url(endpoint);
    let (header_value, body) = match failure {
        // A linked database is no OAuth resource: no metadata to discover.
        _ if endpoint == Endpoint::DataSource => (
            "Bearer error=\"invalid_token\", error_description=\"this endpoint takes a data-source key bound to this data source\"".to_owned(),
            json!({ "error": "invalid_token", "error_description": "this endpoint takes an API key bound to this data source (mint_api_key with data_source)" }),
        ),
        Failure::Missing => (
            format!("Bearer resource_metadata=\"{metadata}\""),
            json!({ "error": "unauthenticated", "error_description": "this endpoint needs Authorization: Bearer <credential>" }),
        ),
        Failure::InQuery => (
            format!(
                "Bearer error=\"invalid_request\", error_description=\"credentials are not accepted in the query string\", resource_metadata=\"{metadata}\""
            ),
            json!({ "error": "invalid_request", "error_description": "credentials are not accepted in the query string; use the Authorization header" }),
        ),
        Failure::Invalid => (
            format!(
                "Bearer error=\"invalid_token\", error_description=\"the credential is missing, malformed, unknown, expired or revoked\", resource_metadata=\"{metadata}\""
            ),
            json!({ "error": "invalid_token", "error_description": "the credential is malformed, unknown, expired or revoked" }),
        ),
    };
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&header_value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// 403 for an OAuth connection that was not granted this product (RFC 6750 §3.1). Re-consenting
/// with the product ticked is the remedy, which `scope` names.
fn insufficient_scope(app: &App, endpoint: Endpoint, product: Product) -> Response {
    let metadata = app.public.resource_metadata_url(endpoint);
    let header_value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{}\", error_description=\"this connection was not granted the {} product\", resource_metadata=\"{metadata}\"",
        product.slug(),
        product.slug()
    );
    let mut response = (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "error": "insufficient_scope", "error_description": format!("this connection was not granted the {} product; connect again and tick it on the consent page", product.slug()) })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&header_value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let v = |s: &str| HeaderValue::from_str(s).ok();
        assert_eq!(bearer_token(v("Bearer abc").as_ref()), Some("abc"));
        assert_eq!(bearer_token(v("bearer abc").as_ref()), Some("abc"));
        assert_eq!(bearer_token(v("Basic abc").as_ref()), None);
        assert_eq!(bearer_token(v("Bearer").as_ref()), None);
        assert_eq!(bearer_token(v("Bearer a b").as_ref()), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn only_a_single_tools_call_is_a_tool_call() {
        assert!(is_tool_call(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#
        ));
        assert!(!is_tool_call(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#
        ));
        assert!(!is_tool_call(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call"}]"#
        ));
        assert!(!is_tool_call(br#"{"method":"tools/call""#));
        assert!(!is_tool_call(b""));
    }

    #[test]
    fn query_credentials_detected() {
        assert!(query_carries_credential(Some("access_token=x")));
        assert!(query_carries_credential(Some("a=1&API_KEY=x")));
        assert!(query_carries_credential(Some("q=hdls_0123")));
        assert!(!query_carries_credential(Some("cursor=abc")));
        assert!(!query_carries_credential(None));
    }
}
