//! The HTTP surface: routes, request guards (Origin, Host, body size), health checks.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::App;
use crate::auth;
use crate::identity::Endpoint;
use crate::mcp::{McpEndpoint, metadata};

/// Largest request body accepted anywhere (MCP messages are small; bulk inserts stay well under).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Builds the whole router.
pub fn router(app: Arc<App>, shutdown: CancellationToken) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(app.clone())
        .merge(crate::oauth::api_routes(app.clone()))
        .merge(crate::oauth::page_routes(app.clone()))
        .merge(crate::web::portal::routes(app.clone()));
    for endpoint in Endpoint::ALL {
        let metadata_path = format!("/.well-known/oauth-protected-resource{}", endpoint.path());
        let doc = metadata::protected_resource(&app.public, endpoint);
        router = router.route(
            &metadata_path,
            get(move || async move { axum::Json(doc) }).layer(crate::oauth::cors()),
        );
        router = router.route_service(
            endpoint.path(),
            mcp_service(app.clone(), endpoint, shutdown.clone()),
        );
    }
    // Linked databases: one service for every source; authentication checks the key is bound
    // to the source in the path, and the call path reads the binding from the key.
    router = router.route_service(
        Endpoint::DataSource.path(),
        mcp_service(app.clone(), Endpoint::DataSource, shutdown.clone()),
    );
    router
        .layer(middleware::from_fn_with_state(
            app.clone(),
            guard_origin_and_host,
        ))
        .layer(middleware::from_fn_with_state(
            app.trusted_proxies.clone(),
            crate::client_address::stamp,
        ))
        .layer(middleware::from_fn(log_request))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
}

/// One endpoint's MCP service, behind authentication.
fn mcp_service(
    app: Arc<App>,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let config = StreamableHttpServerConfig::default()
        // Stateless: nodes keep nothing between requests, so any node can serve any call
        // (DESIGN §3 scale-out); clients of every protocol revision work without sessions.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_allowed_hosts(app.public.allowed_hosts().to_vec())
        .with_allowed_origins(app.public.allowed_origins().to_vec())
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        .with_cancellation_token(shutdown);
    let handler_app = app.clone();
    let service = StreamableHttpService::new(
        move || Ok(McpEndpoint::new(handler_app.clone(), endpoint)),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    let service = middleware::from_fn(json_rpc_body).layer(service);
    middleware::from_fn_with_state((app, endpoint), auth::authenticate).layer(service)
}

/// Answers, as JSON-RPC errors, the bodies rmcp would refuse with a bare 415: a POST whose
/// JSON body does not parse gets HTTP 400 with a parse error (-32700); one that is JSON but
/// not a JSON-RPC message gets HTTP 400 with invalid request (-32600). A body of another
/// content type keeps rmcp's 415, which is right for it. Runs after authentication, so an
/// unauthenticated caller learns nothing here. The body is read once, under the same size
/// limit, and handed on unchanged.
async fn json_rpc_body(request: Request, next: Next) -> Response {
    let json_content = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"));
    if request.method() != axum::http::Method::POST || !json_content {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        // Over the limit (a chunked body; a declared length over it was refused earlier),
        // or a body the client stopped sending.
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY_BYTES} bytes, or not received in full"),
        )
            .into_response();
    };
    // Only well-formedness is checked here (nothing is built); rmcp parses the message.
    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return json_rpc_error(-32700, "Parse error: the request body is not valid JSON");
    }
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // JSON, with a JSON content type, that rmcp still refused: not a JSON-RPC message.
        return json_rpc_error(
            -32600,
            "Invalid Request: the body is JSON but not a JSON-RPC request, notification or response",
        );
    }
    response
}

/// An HTTP 400 carrying a JSON-RPC error without an id (none could be read).
fn json_rpc_error(code: i32, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": code, "message": message },
        })),
    )
        .into_response()
}

/// Refuses a browser Origin that is not ours (403) and a Host we do not serve (DNS rebinding), before authentication.
async fn guard_origin_and_host(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    // Browser-based MCP clients call the OAuth JSON endpoints from their own origin (CORS,
    // no cookies); everything else — MCP endpoints and the pages — is same-origin only.
    let cross_origin_ok = crate::oauth::is_cross_origin_path(request.uri().path());
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !cross_origin_ok
    {
        let allowed = origin.to_str().is_ok_and(|o| app.public.origin_allowed(o));
        if !allowed {
            return (StatusCode::FORBIDDEN, "Origin not allowed").into_response();
        }
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if app.public.host_allowed(&h) => next.run(request).await,
        _ => (StatusCode::FORBIDDEN, "Host not allowed").into_response(),
    }
}

/// Logs method, path and status only: never the query string or headers, which can carry credentials.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let ready = async {
        let client = app.pools.runtime.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    }
    .await
    .is_some();
    if ready {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
    }
}
