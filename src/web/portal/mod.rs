//! The customer portal: server-rendered pages at `/portal/<workspace id>` for customers with
//! no MCP client. Sign in with the customer account, list my tickets, open one and read its
//! public thread, reply, open a new ticket, rate a resolved one, sign out.
//!
//! Every action calls the customer tools through `crate::tools::call` as a customer
//! Principal built from the portal session: the same code path, row policies and rate limits
//! as a customer's MCP client. The pages follow the rules of the sign-in and consent pages:
//! double-submit CSRF before sign-in, session-derived CSRF after, the global Origin check,
//! no caching, no framing.

pub mod session;
mod views;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

use self::session::PortalSession;
use self::views::Frame;
use crate::app::App;
use crate::error::{ErrorCode, ToolError};
use crate::identity::{Endpoint, Persona, Product};
use crate::people::{customer_accounts, sign_in};
use crate::web::{client_address, pages, session as web_session};

/// The portal's routes.
pub fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/portal/{workspace}", get(home))
        .route("/portal/{workspace}/sign-in", get(back_home).post(sign_in))
        .route("/portal/{workspace}/sign-out", post(sign_out))
        .route("/portal/{workspace}/tickets", post(create_ticket))
        .route("/portal/{workspace}/tickets/new", get(new_ticket))
        .route("/portal/{workspace}/tickets/{id}", get(show_ticket))
        .route("/portal/{workspace}/tickets/{id}/reply", post(reply))
        .route("/portal/{workspace}/tickets/{id}/rate", post(rate))
        .with_state(app)
}

// ---- responses ------------------------------------------------------------------------

/// A reload of the sign-in form's address (after a failed attempt) goes back to the portal,
/// which shows the form again, or the tickets if the person is signed in.
async fn back_home(Path(workspace): Path<String>) -> Response {
    match workspace.parse::<Uuid>() {
        Ok(id) => see_other(&format!("/portal/{id}"), Vec::new()),
        Err(_) => no_portal(),
    }
}

fn see_other(location: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

fn no_portal() -> Response {
    pages::message(
        StatusCode::NOT_FOUND,
        "No support portal here",
        "There is no support portal at this address. Check the link you were given.",
    )
}

fn bad_form() -> Response {
    pages::message(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form could not be verified (it may be stale, or opened from another site). Go back, reload the page and try again.",
    )
}

fn internal(error: ToolError) -> Response {
    if error.code == ErrorCode::Unavailable {
        return pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "The server is busy. Please try again in a moment.",
        );
    }
    tracing::error!(%error, "portal page failed");
    pages::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not finish this request. Please try again.",
    )
}

/// A tool's refusal as a page (input errors are shown on their form instead).
fn refused(error: ToolError) -> Response {
    match error.code {
        ErrorCode::NotFound => pages::message(
            StatusCode::NOT_FOUND,
            "Ticket not found",
            "There is no such ticket among yours.",
        ),
        ErrorCode::RateLimited => pages::message(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            "Too many requests for this support desk right now. Please wait a minute and try again.",
        ),
        ErrorCode::Forbidden | ErrorCode::Unauthenticated => {
            pages::message(StatusCode::FORBIDDEN, "Not allowed", &error.message)
        }
        ErrorCode::Conflict | ErrorCode::InvalidInput => {
            pages::message(StatusCode::BAD_REQUEST, "Not done", &error.message)
        }
        ErrorCode::Unavailable | ErrorCode::Internal => internal(error),
    }
}

fn page(markup: maud::Markup) -> Response {
    pages::respond(StatusCode::OK, markup, Vec::new())
}

// ---- request helpers ------------------------------------------------------------------

/// A form body's fields (the first of a repeated name wins).
fn form(body: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body).into_owned() {
        fields.entry(name).or_insert(value);
    }
    fields
}

/// The workspace of a portal URL and its name: only a workspace with support installed has
/// a portal.
async fn portal_of(app: &App, workspace: &str) -> Result<Option<(Uuid, String)>, ToolError> {
    let Ok(workspace_id) = workspace.parse::<Uuid>() else {
        return Ok(None);
    };
    let client = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
    let row = client
        .query_opt(
            "SELECT w.name FROM hdls.workspaces w
             WHERE w.workspace_id = $1
               AND EXISTS (SELECT 1 FROM hdls.installed_products p
                           WHERE p.workspace_id = w.workspace_id AND p.product = 'support'
                             AND p.uninstalled_at IS NULL)",
            &[&workspace_id],
        )
        .await?;
    Ok(row.map(|r| (workspace_id, r.get(0))))
}

/// The live session for this portal, or the response to send instead: back to the sign-in
/// page (clearing a cookie that no longer works), or not found.
async fn signed_in(
    app: &App,
    headers: &HeaderMap,
    workspace: &str,
) -> Result<PortalSession, Response> {
    let Ok(workspace_id) = workspace.parse::<Uuid>() else {
        return Err(no_portal());
    };
    match session::current(&app.pools.auth, headers, workspace_id, app.clock.now()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other(
            &views::href(workspace_id, ""),
            clear_cookie(app, workspace_id, headers),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Clears the portal cookie if the request carried one.
fn clear_cookie(app: &App, workspace_id: Uuid, headers: &HeaderMap) -> Vec<HeaderValue> {
    web_session::cookie(headers, session::COOKIE)
        .and_then(|_| session::set_cookie(workspace_id, "", 0, app.public.is_https()))
        .into_iter()
        .collect()
}

/// A signed-in POST: the session and its form, once the form's CSRF token matches.
async fn signed_in_form(
    app: &App,
    headers: &HeaderMap,
    workspace: &str,
    body: &[u8],
) -> Result<(PortalSession, HashMap<String, String>), Response> {
    let portal = signed_in(app, headers, workspace).await?;
    let fields = form(body);
    if !web_session::session_csrf_ok(&portal.token, fields.get("csrf").map(String::as_str)) {
        return Err(bad_form());
    }
    Ok((portal, fields))
}

fn frame<'a>(portal: &'a PortalSession, csrf: &'a str) -> Frame<'a> {
    Frame {
        workspace_id: portal.workspace_id,
        workspace_name: &portal.workspace_name,
        email: &portal.email,
        csrf,
    }
}

/// Calls one customer tool as the session's customer.
async fn call(
    app: &App,
    portal: &PortalSession,
    name: &str,
    args: Value,
) -> Result<Value, ToolError> {
    let tool = app
        .registry
        .find(Endpoint::Product(Product::Support), name, Persona::Customer)
        .ok_or_else(|| {
            ToolError::internal(format!("the customer tool {name} is not registered"))
        })?;
    crate::tools::call(app, tool, &portal.principal(), args).await
}

// ---- sign in and out --------------------------------------------------------------------

fn sign_in_page(
    app: &App,
    headers: &HeaderMap,
    workspace_id: Uuid,
    name: &str,
    email: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (csrf, set) = web_session::pre_session_csrf(headers, app.public.is_https());
    let mut cookies: Vec<HeaderValue> = set.into_iter().collect();
    cookies.extend(clear_cookie(app, workspace_id, headers));
    pages::respond(
        status,
        views::sign_in(workspace_id, name, &csrf, email, error),
        cookies,
    )
}

/// `GET /portal/{workspace}`: my tickets, or the sign-in form.
async fn home(
    State(app): State<Arc<App>>,
    Path(workspace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (workspace_id, name) = match portal_of(&app, &workspace).await {
        Ok(Some(p)) => p,
        Ok(None) => return no_portal(),
        Err(e) => return internal(e),
    };
    let portal =
        match session::current(&app.pools.auth, &headers, workspace_id, app.clock.now()).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return sign_in_page(
                    &app,
                    &headers,
                    workspace_id,
                    &name,
                    "",
                    None,
                    StatusCode::OK,
                );
            }
            Err(e) => return internal(e),
        };
    let status = query
        .get("status")
        .map(String::as_str)
        .filter(|s| ["open", "pending", "resolved", "closed"].contains(s))
        .unwrap_or("");
    let mut args = json!({});
    if !status.is_empty() {
        args["status"] = json!(status);
    }
    if let Some(cursor) = query.get("cursor").filter(|c| !c.is_empty()) {
        args["cursor"] = json!(cursor);
    }
    match call(&app, &portal, "list_my_tickets", args).await {
        Ok(listed) => {
            let csrf = web_session::session_csrf(&portal.token);
            page(views::tickets(&frame(&portal, &csrf), &listed, status))
        }
        Err(e) => refused(e),
    }
}

/// `POST /portal/{workspace}/sign-in`
async fn sign_in(
    State(app): State<Arc<App>>,
    Path(workspace): Path<String>,
    request: Request,
) -> Response {
    let address = client_address(request.extensions());
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, crate::http::MAX_BODY_BYTES).await else {
        return bad_form();
    };
    let headers = parts.headers;
    let (workspace_id, name) = match portal_of(&app, &workspace).await {
        Ok(Some(p)) => p,
        Ok(None) => return no_portal(),
        Err(e) => return internal(e),
    };
    let fields = form(&body);
    let field = |n: &str| fields.get(n).map(String::as_str).unwrap_or_default();
    let again = |email: &str, error: &str, status: StatusCode| {
        sign_in_page(
            &app,
            &headers,
            workspace_id,
            &name,
            email,
            Some(error),
            status,
        )
    };
    if !web_session::pre_session_csrf_ok(&headers, fields.get("csrf").map(String::as_str)) {
        return again(
            "",
            "This form expired. Please sign in again.",
            StatusCode::FORBIDDEN,
        );
    }
    let email = field("email");
    let now = app.clock.now();
    let user_id = match sign_in::sign_in(&app.pools.auth, email, field("password"), address, now)
        .await
    {
        Ok(Ok(user_id)) => user_id,
        Ok(Err(sign_in::Refused::Invalid)) => {
            return again(
                email,
                "The email or password is not right.",
                StatusCode::UNAUTHORIZED,
            );
        }
        Ok(Err(sign_in::Refused::Throttled(minutes))) => {
            return again(
                email,
                &format!(
                    "Too many failed sign-in attempts. For your security, sign-in is paused; try again in {minutes} minute(s)."
                ),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Err(e) => return internal(e),
    };
    let requester = async {
        let client = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
        customer_accounts::in_workspace(&client, workspace_id, user_id).await
    }
    .await;
    let requester_id = match requester {
        Ok(Some(r)) => r,
        Ok(None) => {
            return again(
                email,
                &format!(
                    "This account has no customer account for {name} support (or it was disabled). Ask their support team for an invitation."
                ),
                StatusCode::FORBIDDEN,
            );
        }
        Err(e) => return internal(e),
    };
    match session::create(&app.pools.auth, user_id, workspace_id, requester_id, now).await {
        Ok(token) => {
            let cookie = session::set_cookie(
                workspace_id,
                &token,
                session::VALID.whole_seconds(),
                app.public.is_https(),
            );
            see_other(&views::href(workspace_id, ""), cookie.into_iter().collect())
        }
        Err(e) => internal(e),
    }
}

/// `POST /portal/{workspace}/sign-out`
async fn sign_out(
    State(app): State<Arc<App>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(workspace_id) = workspace.parse::<Uuid>() else {
        return no_portal();
    };
    let now = app.clock.now();
    match session::current(&app.pools.auth, &headers, workspace_id, now).await {
        Ok(Some(portal)) => {
            let fields = form(&body);
            if !web_session::session_csrf_ok(&portal.token, fields.get("csrf").map(String::as_str))
            {
                return bad_form();
            }
            if let Err(e) = session::end(&app.pools.auth, &portal.token).await {
                return internal(e);
            }
        }
        Ok(None) => {}
        Err(e) => return internal(e),
    }
    let cleared = session::set_cookie(workspace_id, "", 0, app.public.is_https());
    see_other(
        &views::href(workspace_id, ""),
        cleared.into_iter().collect(),
    )
}

// ---- tickets ------------------------------------------------------------------------------

/// `GET /portal/{workspace}/tickets/new`
async fn new_ticket(
    State(app): State<Arc<App>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
) -> Response {
    let portal = match signed_in(&app, &headers, &workspace).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let csrf = web_session::session_csrf(&portal.token);
    page(views::new_ticket(&frame(&portal, &csrf), "", "", None))
}

/// `POST /portal/{workspace}/tickets`
async fn create_ticket(
    State(app): State<Arc<App>>,
    Path(workspace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (portal, fields) = match signed_in_form(&app, &headers, &workspace, &body).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    let subject = fields.get("subject").cloned().unwrap_or_default();
    let text = fields.get("body").cloned().unwrap_or_default();
    let args = json!({ "values": { "subject": subject, "body": text } });
    match call(&app, &portal, "create_ticket", args).await {
        Ok(created) => {
            let id = created["ticket"]["id"].as_str().unwrap_or_default();
            see_other(&views::ticket_href(portal.workspace_id, id), Vec::new())
        }
        Err(e) if e.code == ErrorCode::InvalidInput => {
            let csrf = web_session::session_csrf(&portal.token);
            pages::respond(
                StatusCode::BAD_REQUEST,
                views::new_ticket(&frame(&portal, &csrf), &subject, &text, Some(&e.message)),
                Vec::new(),
            )
        }
        Err(e) => refused(e),
    }
}

/// The ticket page, with an error and the reply text kept after a refused action.
async fn ticket_page(
    app: &App,
    portal: &PortalSession,
    id: &str,
    reply: &str,
    error: Option<(&str, StatusCode)>,
) -> Response {
    match call(app, portal, "get_ticket", json!({ "id": id })).await {
        Ok(got) => {
            let csrf = web_session::session_csrf(&portal.token);
            let (message, status) = match error {
                Some((m, s)) => (Some(m), s),
                None => (None, StatusCode::OK),
            };
            pages::respond(
                status,
                views::ticket(&frame(portal, &csrf), &got, reply, message),
                Vec::new(),
            )
        }
        // A malformed id in the URL is "not among yours" like any other.
        Err(e) if e.code == ErrorCode::InvalidInput => refused(ToolError::not_found(e.message)),
        Err(e) => refused(e),
    }
}

/// `GET /portal/{workspace}/tickets/{id}`
async fn show_ticket(
    State(app): State<Arc<App>>,
    Path((workspace, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match signed_in(&app, &headers, &workspace).await {
        Ok(portal) => ticket_page(&app, &portal, &id, "", None).await,
        Err(response) => response,
    }
}

/// `POST /portal/{workspace}/tickets/{id}/reply`
async fn reply(
    State(app): State<Arc<App>>,
    Path((workspace, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (portal, fields) = match signed_in_form(&app, &headers, &workspace, &body).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    let text = fields.get("body").cloned().unwrap_or_default();
    let args = json!({ "ticket_id": id, "body": text });
    match call(&app, &portal, "reply", args).await {
        Ok(_) => see_other(&views::ticket_href(portal.workspace_id, &id), Vec::new()),
        Err(e)
            if e.code == ErrorCode::InvalidInput
                && e.details.get("path") != Some(&json!("ticket_id")) =>
        {
            ticket_page(
                &app,
                &portal,
                &id,
                &text,
                Some((&e.message, StatusCode::BAD_REQUEST)),
            )
            .await
        }
        Err(e) if e.code == ErrorCode::InvalidInput => refused(ToolError::not_found(e.message)),
        Err(e) => refused(e),
    }
}

/// `POST /portal/{workspace}/tickets/{id}/rate`
async fn rate(
    State(app): State<Arc<App>>,
    Path((workspace, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (portal, fields) = match signed_in_form(&app, &headers, &workspace, &body).await {
        Ok(x) => x,
        Err(response) => return response,
    };
    let Some(score) = fields.get("score").and_then(|s| s.parse::<i64>().ok()) else {
        return ticket_page(
            &app,
            &portal,
            &id,
            "",
            Some(("Choose a score from 1 to 5.", StatusCode::BAD_REQUEST)),
        )
        .await;
    };
    let mut args = json!({ "id": id, "score": score });
    if let Some(comment) = fields.get("comment").filter(|c| !c.trim().is_empty()) {
        args["comment"] = json!(comment);
    }
    match call(&app, &portal, "rate_ticket", args).await {
        Ok(_) => see_other(&views::ticket_href(portal.workspace_id, &id), Vec::new()),
        Err(e) if matches!(e.code, ErrorCode::InvalidInput | ErrorCode::Conflict) => {
            ticket_page(
                &app,
                &portal,
                &id,
                "",
                Some((&e.message, StatusCode::BAD_REQUEST)),
            )
            .await
        }
        Err(e) => refused(e),
    }
}
