//! The authorization endpoint (RFC 6749 §4.1 with OAuth 2.1's rules): sign-in if needed, then
//! consent; the decision is frozen into a grant and returned as a single-use code.
//!
//! Errors about the client or its redirect URI are shown as a page and never redirected (an
//! attacker could otherwise bounce the browser anywhere); every other error goes back to the
//! client's redirect URI with `error`, `state` and `iss` (RFC 9207).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

use super::clients::{self, ClientError};
use super::grants;
use crate::app::App;
use crate::audit;
use crate::identity::{Endpoint, Persona, Product};
use crate::people::{self, customer_accounts, sign_in};
use crate::web::{client_address, pages, session};

/// The parameters of an authorization request, as received.
#[derive(Debug, Default, Clone)]
pub struct AuthRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

const REQUEST_FIELDS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
];

impl AuthRequest {
    /// Reads the request fields from decoded pairs; a repeated field is an error (RFC 6749 §3.1).
    fn from_pairs(pairs: &[(String, String)]) -> Result<AuthRequest, String> {
        let mut r = AuthRequest::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "response_type" => &mut r.response_type,
                "client_id" => &mut r.client_id,
                "redirect_uri" => &mut r.redirect_uri,
                "state" => &mut r.state,
                "code_challenge" => &mut r.code_challenge,
                "code_challenge_method" => &mut r.code_challenge_method,
                "resource" => &mut r.resource,
                "scope" => &mut r.scope,
                _ => continue,
            };
            if slot.is_some() {
                return Err(format!("the {name} parameter appears more than once"));
            }
            *slot = Some(value.clone());
        }
        Ok(r)
    }

    fn fields(&self) -> [(&'static str, &Option<String>); 8] {
        [
            (REQUEST_FIELDS[0], &self.response_type),
            (REQUEST_FIELDS[1], &self.client_id),
            (REQUEST_FIELDS[2], &self.redirect_uri),
            (REQUEST_FIELDS[3], &self.state),
            (REQUEST_FIELDS[4], &self.code_challenge),
            (REQUEST_FIELDS[5], &self.code_challenge_method),
            (REQUEST_FIELDS[6], &self.resource),
            (REQUEST_FIELDS[7], &self.scope),
        ]
    }

    /// The fields to carry through the consent form unchanged.
    fn hidden(&self) -> Vec<(&'static str, String)> {
        self.fields()
            .into_iter()
            .filter_map(|(n, v)| v.clone().map(|v| (n, v)))
            .collect()
    }

    /// `/oauth/authorize?…` for this request (where sign-in returns to).
    fn path(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.hidden() {
            query.append_pair(name, &value);
        }
        format!("/oauth/authorize?{}", query.finish())
    }
}

fn decode(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

/// A request that passed every check.
struct Valid {
    client: clients::Client,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    resource: String,
    endpoint: Endpoint,
}

fn fatal(status: StatusCode, text: &str) -> Response {
    pages::message(status, "This sign-in request cannot continue", text)
}

/// `303` back to the client with an error (RFC 6749 §4.1.2.1) and `iss` (RFC 9207).
fn error_redirect(
    app: &App,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", app.public.base()));
    redirect_with(redirect_uri, &params)
}

fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return fatal(StatusCode::BAD_REQUEST, "The redirect URI is not valid.");
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
    }
    see_other(url.as_str(), Vec::new())
}

fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

fn is_pkce_challenge(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validates a request; `Err` is the response to send (a page, or a redirect with an error).
async fn check(
    app: &App,
    request: &AuthRequest,
    now: OffsetDateTime,
) -> Result<Valid, Box<Response>> {
    let Some(client_id) = request.client_id.as_deref() else {
        return Err(Box::new(fatal(
            StatusCode::BAD_REQUEST,
            "The request has no client_id.",
        )));
    };
    let client = match clients::find(app, client_id, now).await {
        Ok(c) => c,
        Err(ClientError::Unknown) => {
            return Err(Box::new(fatal(
                StatusCode::BAD_REQUEST,
                "The client_id is not known to this server. The client must register first.",
            )));
        }
        Err(ClientError::Document(reason)) => {
            return Err(Box::new(fatal(
                StatusCode::BAD_REQUEST,
                &format!("The client's metadata document could not be used: {reason}."),
            )));
        }
        Err(ClientError::Internal(e)) => {
            tracing::error!(error = %e, "client lookup failed");
            return Err(Box::new(fatal(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server could not look the client up. Try again.",
            )));
        }
    };
    let Some(redirect_uri) = request.redirect_uri.clone() else {
        return Err(Box::new(fatal(
            StatusCode::BAD_REQUEST,
            "The request has no redirect_uri.",
        )));
    };
    if !client.redirect_allowed(&redirect_uri) {
        return Err(Box::new(fatal(
            StatusCode::BAD_REQUEST,
            "The redirect_uri does not match any redirect URI registered for this client.",
        )));
    }
    let state = request.state.as_deref();
    let refuse = |error: &str, description: &str| {
        Err(Box::new(error_redirect(
            app,
            &redirect_uri,
            state,
            error,
            description,
        )))
    };
    if request.response_type.as_deref() != Some("code") {
        return refuse(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = request.code_challenge.clone() else {
        return refuse(
            "invalid_request",
            "code_challenge is required (PKCE with S256)",
        );
    };
    if request.code_challenge_method.as_deref() != Some("S256") {
        return refuse(
            "invalid_request",
            "code_challenge_method must be S256; plain is not accepted",
        );
    }
    if !is_pkce_challenge(&challenge) {
        return refuse(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        );
    }
    let Some(resource) = request.resource.clone() else {
        return refuse(
            "invalid_target",
            "resource is required: the MCP endpoint URL this connection is for (RFC 8707)",
        );
    };
    let Some(endpoint) = Endpoint::ALL
        .into_iter()
        .find(|e| app.public.endpoint_url(*e) == resource)
    else {
        return refuse(
            "invalid_target",
            "resource must be one of this server's MCP endpoint URLs",
        );
    };
    Ok(Valid {
        client,
        redirect_uri,
        state: request.state.clone(),
        challenge,
        resource,
        endpoint,
    })
}

fn sign_in_page(
    app: &App,
    headers: &HeaderMap,
    next: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (csrf, set) = session::pre_session_csrf(headers, app.public.is_https());
    pages::respond(
        status,
        pages::sign_in(&csrf, next, email, error),
        set.into_iter().collect(),
    )
}

fn internal(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "authorization endpoint failed");
    pages::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not finish this request. Please try again.",
    )
}

/// `GET /oauth/authorize`
pub async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = decode(query.unwrap_or_default().as_bytes());
    let request = match AuthRequest::from_pairs(&pairs) {
        Ok(r) => r,
        Err(message) => return fatal(StatusCode::BAD_REQUEST, &message),
    };
    let now = app.clock.now();
    let valid = match check(&app, &request, now).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let session = match session::current(&app.pools.auth, &headers, now).await {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let Some((user_id, session_token)) = session else {
        return sign_in_page(&app, &headers, &request.path(), "", None, StatusCode::OK);
    };
    consent_page(&app, &request, &valid, user_id, &session_token).await
}

async fn consent_page(
    app: &App,
    request: &AuthRequest,
    valid: &Valid,
    user_id: Uuid,
    session_token: &str,
) -> Response {
    let memberships = match people::memberships(&app.pools.auth, user_id).await {
        Ok(m) => m,
        Err(e) => return internal(e),
    };
    // Customer accounts are offered only for the support endpoint, the one place a customer
    // credential works.
    let accounts = if valid.endpoint == SUPPORT {
        match customer_accounts::of_person(&app.pools.auth, user_id).await {
            Ok(c) => c,
            Err(e) => return internal(e),
        }
    } else {
        Vec::new()
    };
    if memberships.is_empty() && accounts.is_empty() {
        if valid.endpoint != SUPPORT
            && matches!(customer_accounts::of_person(&app.pools.auth, user_id).await, Ok(c) if !c.is_empty())
        {
            return pages::message(
                StatusCode::FORBIDDEN,
                "Customer accounts connect to support only",
                &format!(
                    "Your account is a customer account: connect your MCP client to {} instead.",
                    app.public.endpoint_url(SUPPORT)
                ),
            );
        }
        return pages::message(
            StatusCode::FORBIDDEN,
            "No workspace",
            "You are not a member of any workspace yet. Ask an admin to invite you.",
        );
    }
    let email = people::email_of(&app.pools.auth, user_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let redirect_host = Url::parse(&valid.redirect_uri)
        .ok()
        .map(|u| match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => u.scheme().to_owned(),
        })
        .unwrap_or_default();
    let mut products: Vec<Product> = memberships
        .iter()
        .flat_map(|m| m.products.iter().copied())
        .collect();
    products.sort();
    products.dedup();
    // Products named in `scope` (e.g. after a 403 insufficient_scope, which names the missing
    // product) start ticked; otherwise the endpoint's own product, or all for the concierge.
    // Either way the person decides.
    let requested: Vec<Product> = request
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(Product::from_slug)
        .collect();
    let ticked = |p: Product| {
        requested.contains(&p)
            || match valid.endpoint {
                Endpoint::Product(wanted) => p == wanted,
                Endpoint::Concierge => requested.is_empty(),
                // Not an OAuth resource (data-source keys only); never reached.
                Endpoint::DataSource => false,
            }
    };
    let consent = pages::Consent {
        client_name: &valid.client.name,
        redirect_host: &redirect_host,
        signed_in_as: &email,
        resource: &valid.resource,
        workspaces: memberships
            .iter()
            .map(|m| pages::WorkspaceChoice {
                id: m.workspace_id.to_string(),
                name: m.workspace_name.clone(),
                role: m.role.to_string(),
            })
            .chain(accounts.iter().map(|c| pages::WorkspaceChoice {
                id: format!("{CUSTOMER_CHOICE}{}", c.workspace_id),
                name: format!("as a customer of {}", c.workspace_name),
                role: "customer".to_owned(),
            }))
            .collect(),
        customers: !accounts.is_empty(),
        products: products.into_iter().map(|p| (p, ticked(p))).collect(),
        hidden: request.hidden(),
        csrf: &session::session_csrf(session_token),
        return_to: &request.path(),
    };
    pages::respond(StatusCode::OK, pages::consent(&consent), Vec::new())
}

/// `POST /oauth/sign-in`
pub async fn sign_in(State(app): State<Arc<App>>, request: Request) -> Response {
    let address = client_address(request.extensions());
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::http::MAX_BODY_BYTES).await else {
        return fatal(StatusCode::BAD_REQUEST, "The form could not be read.");
    };
    let form = decode(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let headers = parts.headers;
    let next = field("next")
        .filter(|n| n.starts_with("/oauth/authorize?"))
        .unwrap_or("/oauth/authorize")
        .to_owned();
    if !session::pre_session_csrf_ok(&headers, field("csrf")) {
        return sign_in_page(
            &app,
            &headers,
            &next,
            "",
            Some("This form expired. Please sign in again."),
            StatusCode::FORBIDDEN,
        );
    }
    let email = field("email").unwrap_or_default().to_owned();
    let password = field("password").unwrap_or_default();
    let now = app.clock.now();
    match sign_in::sign_in(&app.pools.auth, &email, password, address, now).await {
        Ok(Ok(user_id)) => match session::create(&app.pools.auth, user_id, now).await {
            Ok(token) => {
                let cookie = session::set_cookie(
                    session::SESSION_COOKIE,
                    &token,
                    session::SESSION_VALID.whole_seconds(),
                    app.public.is_https(),
                );
                see_other(&next, cookie.into_iter().collect())
            }
            Err(e) => internal(e),
        },
        Ok(Err(sign_in::Refused::Invalid)) => sign_in_page(
            &app,
            &headers,
            &next,
            &email,
            Some("The email or password is not right."),
            StatusCode::UNAUTHORIZED,
        ),
        Ok(Err(sign_in::Refused::Throttled(minutes))) => sign_in_page(
            &app,
            &headers,
            &next,
            &email,
            Some(&format!(
                "Too many failed sign-in attempts. For your security, sign-in is paused; try again in {minutes} minute(s)."
            )),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(e) => internal(e),
    }
}

/// `POST /oauth/sign-out`: ends the session ("use another account") and returns to the
/// authorization request, which then asks to sign in again.
pub async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = decode(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let next = field("next")
        .filter(|n| n.starts_with("/oauth/authorize?"))
        .unwrap_or("/oauth/authorize")
        .to_owned();
    match session::current(&app.pools.auth, &headers, app.clock.now()).await {
        Ok(Some((_, token))) => {
            if !session::session_csrf_ok(&token, field("csrf")) {
                return fatal(StatusCode::FORBIDDEN, "This form could not be verified.");
            }
            if let Err(e) = session::end(&app.pools.auth, &token).await {
                return internal(e);
            }
        }
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let cleared = session::set_cookie(session::SESSION_COOKIE, "", 0, app.public.is_https());
    see_other(&next, cleared.into_iter().collect())
}

/// `POST /oauth/authorize`: the consent decision.
pub async fn decide(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = decode(&body);
    let request = match AuthRequest::from_pairs(&form) {
        Ok(r) => r,
        Err(message) => return fatal(StatusCode::BAD_REQUEST, &message),
    };
    let field = |name: &str| {
        form.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let now = app.clock.now();
    let valid = match check(&app, &request, now).await {
        Ok(v) => v,
        Err(response) => return *response,
    };
    let (user_id, session_token) = match session::current(&app.pools.auth, &headers, now).await {
        Ok(Some(s)) => s,
        Ok(None) => return see_other(&request.path(), Vec::new()),
        Err(e) => return internal(e),
    };
    if !session::session_csrf_ok(&session_token, field("csrf")) {
        return fatal(
            StatusCode::FORBIDDEN,
            "This consent form could not be verified. Start the connection again from your MCP client.",
        );
    }
    let state = valid.state.as_deref();
    match field("decision") {
        Some("approve") => {}
        Some("deny") => {
            return error_redirect(
                &app,
                &valid.redirect_uri,
                state,
                "access_denied",
                "the person denied the request",
            );
        }
        _ => {
            return fatal(
                StatusCode::BAD_REQUEST,
                "The form did not say approve or deny.",
            );
        }
    }
    let chosen = field("workspace").unwrap_or_default();
    let grant = match chosen.strip_prefix(CUSTOMER_CHOICE) {
        Some(workspace) => customer_grant(&app, &valid, user_id, workspace).await,
        None => agent_grant(&app, &valid, user_id, chosen, &form).await,
    };
    let grant = match grant {
        Ok(g) => g,
        Err(response) => return *response,
    };
    let code = async {
        let mut client = app
            .pools
            .auth
            .get()
            .await
            .map_err(crate::error::ToolError::from_pool)?;
        let tx = client.transaction().await?;
        let code = grants::create_with_code(
            &tx,
            &grant,
            &valid.client.name,
            &valid.redirect_uri,
            &valid.challenge,
            now,
        )
        .await?;
        let actor_id = format!("user:{user_id}");
        audit::record_on_credential_path(
            &tx,
            grant.workspace_id,
            audit::Actor {
                kind: "user",
                id: &actor_id,
            },
            audit::actions::OAUTH_GRANT,
            Some(&format!(
                "grant_{} client {:?} resource {} products [{}]{}",
                grant.grant_id,
                valid.client.name,
                grant.resource,
                grants::product_slugs(&grant.products).join(","),
                grant
                    .principal_id
                    .map(|r| format!(" as customer (requester {r})"))
                    .unwrap_or_default()
            )),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, crate::error::ToolError>(code)
    }
    .await;
    let code = match code {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", app.public.base()));
    redirect_with(&valid.redirect_uri, &params)
}

/// The consent form's value for "as a customer of" a workspace: this prefix and its id.
const CUSTOMER_CHOICE: &str = "customer:";
const SUPPORT: Endpoint = Endpoint::Product(Product::Support);

/// The grant for a person's membership of the chosen workspace: their role there, the ticked
/// products that are installed.
async fn agent_grant(
    app: &App,
    valid: &Valid,
    user_id: Uuid,
    chosen: &str,
    form: &[(String, String)],
) -> Result<grants::Grant, Box<Response>> {
    let memberships = people::memberships(&app.pools.auth, user_id)
        .await
        .map_err(|e| Box::new(internal(e)))?;
    let Some(membership) = chosen
        .parse::<Uuid>()
        .ok()
        .and_then(|w| memberships.into_iter().find(|m| m.workspace_id == w))
    else {
        return Err(Box::new(fatal(
            StatusCode::FORBIDDEN,
            "You are not a member of the chosen workspace.",
        )));
    };
    let mut products: Vec<Product> = form
        .iter()
        .filter(|(n, _)| n == "product")
        .filter_map(|(_, v)| Product::from_slug(v))
        .filter(|p| membership.products.contains(p))
        .collect();
    products.sort();
    products.dedup();
    Ok(grants::Grant {
        workspace_id: membership.workspace_id,
        grant_id: Uuid::now_v7(),
        user_id,
        client_id: valid.client.client_id.clone(),
        resource: valid.resource.clone(),
        products,
        persona: Persona::Agent,
        principal_id: None,
    })
}

/// The grant for a person's customer account in the chosen workspace: the customer persona,
/// bound to their requester, support only, and only for the support endpoint.
async fn customer_grant(
    app: &App,
    valid: &Valid,
    user_id: Uuid,
    workspace: &str,
) -> Result<grants::Grant, Box<Response>> {
    let refused = || {
        Box::new(fatal(
            StatusCode::FORBIDDEN,
            "You have no customer account in the chosen workspace (or it was disabled).",
        ))
    };
    if valid.endpoint != SUPPORT {
        return Err(Box::new(fatal(
            StatusCode::FORBIDDEN,
            "A customer account connects only to the support endpoint.",
        )));
    }
    let workspace_id: Uuid = workspace.parse().map_err(|_| refused())?;
    let requester = async {
        let client = app
            .pools
            .auth
            .get()
            .await
            .map_err(crate::error::ToolError::from_pool)?;
        customer_accounts::in_workspace(&client, workspace_id, user_id).await
    }
    .await
    .map_err(|e| Box::new(internal(e)))?;
    let Some(requester) = requester else {
        return Err(refused());
    };
    Ok(grants::Grant {
        workspace_id,
        grant_id: Uuid::now_v7(),
        user_id,
        client_id: valid.client.client_id.clone(),
        resource: valid.resource.clone(),
        products: vec![Product::Support],
        persona: Persona::Customer,
        principal_id: Some(requester),
    })
}
