//! Account pages reached through one-time links: set a password, accept an invitation. Both
//! end signed in, so the person can go straight on to connect an MCP client.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::{client_address, pages, session};
use crate::app::App;
use crate::people::{self, invitations};

fn internal(error: crate::error::ToolError) -> Response {
    if error.code == crate::error::ErrorCode::Unavailable {
        // Busy (the bound on concurrent password hashing) or the database is away: 503.
        return pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "The server is busy. Please try again in a moment.",
        );
    }
    tracing::error!(%error, "account page failed");
    pages::message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not finish this request. Please try again.",
    )
}

fn link_gone() -> Response {
    pages::message(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "The link is unknown, was already used, or has expired. Ask for a new one.",
    )
}

fn bad_form() -> Response {
    pages::message(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form could not be verified (it may be stale, or opened from another site). Open the link again.",
    )
}

fn signed_in_cookie(app: &App, token: &str) -> Vec<axum::http::HeaderValue> {
    session::set_cookie(
        session::SESSION_COOKIE,
        token,
        session::SESSION_VALID.whole_seconds(),
        app.public.is_https(),
    )
    .into_iter()
    .collect()
}

/// `GET /account/set-password?token=…`
pub async fn show_set_password(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = query.get("token").cloned().unwrap_or_default();
    let email =
        match people::links::peek_set_password(&app.pools.auth, &token, app.clock.now()).await {
            Ok(Some(email)) => email,
            Ok(None) => return link_gone(),
            Err(e) => return internal(e),
        };
    let (csrf, set) = session::pre_session_csrf(&headers, app.public.is_https());
    pages::respond(
        StatusCode::OK,
        pages::set_password(&csrf, &token, &email, None),
        set.into_iter().collect(),
    )
}

/// `POST /account/set-password`
pub async fn set_password(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    if !session::pre_session_csrf_ok(&headers, Some(&csrf)) {
        return bad_form();
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let now = app.clock.now();
    // A password that breaks the rules shows the form again; the link stays unused.
    if let Err(rule) = people::password::check_rules(&password) {
        return match people::links::peek_set_password(&app.pools.auth, &token, now).await {
            Ok(Some(email)) => pages::respond(
                StatusCode::BAD_REQUEST,
                pages::set_password(&csrf, &token, &email, Some(&rule.message)),
                Vec::new(),
            ),
            Ok(None) => link_gone(),
            Err(e) => internal(e),
        };
    }
    let user_id =
        match people::links::use_set_password(&app.pools.auth, &token, &password, now).await {
            Ok(Some(user_id)) => user_id,
            Ok(None) => return link_gone(),
            Err(e) => return internal(e),
        };
    match session::create(&app.pools.auth, user_id, now).await {
        Ok(session_token) => pages::respond(
            StatusCode::OK,
            pages::layout(
                "Password set",
                maud::html! { h1 { "Password set" } p id="message" { "You are signed in. Point your MCP client at " code { (app.public.endpoint_url(crate::identity::Endpoint::Concierge)) } " and approve the connection in this browser." } },
            ),
            signed_in_cookie(&app, &session_token),
        ),
        Err(e) => internal(e),
    }
}

/// `GET /invite?token=…`
pub async fn show_invitation(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = query.get("token").cloned().unwrap_or_default();
    match invitations::peek(&app.pools.auth, &token, app.clock.now()).await {
        Ok(Some(pending)) => {
            let (csrf, set) = session::pre_session_csrf(&headers, app.public.is_https());
            pages::respond(
                StatusCode::OK,
                pages::invitation(&csrf, &token, &pending, None),
                set.into_iter().collect(),
            )
        }
        Ok(None) => link_gone(),
        Err(e) => internal(e),
    }
}

/// `POST /invite`
pub async fn accept_invitation(State(app): State<Arc<App>>, request: Request) -> Response {
    let address = client_address(request.extensions());
    let (parts, body) = request.into_parts();
    let Ok(Form(form)) = Form::<HashMap<String, String>>::from_request(
        Request::from_parts(parts.clone(), body),
        &(),
    )
    .await
    else {
        return bad_form();
    };
    let headers = parts.headers;
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    if !session::pre_session_csrf_ok(&headers, Some(&csrf)) {
        return bad_form();
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let now = app.clock.now();
    let again = |error: &str, status: StatusCode| {
        let app = app.clone();
        let token = token.clone();
        let csrf = csrf.clone();
        let error = error.to_owned();
        async move {
            match invitations::peek(&app.pools.auth, &token, now).await {
                Ok(Some(pending)) => pages::respond(
                    status,
                    pages::invitation(&csrf, &token, &pending, Some(&error)),
                    Vec::new(),
                ),
                Ok(None) => link_gone(),
                Err(e) => internal(e),
            }
        }
    };
    match invitations::accept(&app.pools.auth, &token, &password, address, now).await {
        Ok(Ok(accepted)) => match session::create(&app.pools.auth, accepted.user_id, now).await {
            Ok(session_token) if accepted.customer => pages::respond(
                StatusCode::OK,
                pages::customer_welcome(
                    &accepted.workspace_name,
                    &format!("{}/portal/{}", app.public.base(), accepted.workspace_id),
                    &app.public.endpoint_url(crate::identity::Endpoint::Product(
                        crate::identity::Product::Support,
                    )),
                ),
                signed_in_cookie(&app, &session_token),
            ),
            Ok(session_token) => pages::respond(
                StatusCode::OK,
                pages::layout(
                    "Welcome",
                    maud::html! { h1 { "Welcome to " (accepted.workspace_name) } p id="message" { "You joined the workspace and are signed in. Point your MCP client at " code { (app.public.endpoint_url(crate::identity::Endpoint::Concierge)) } " and approve the connection in this browser." } },
                ),
                signed_in_cookie(&app, &session_token),
            ),
            Err(e) => internal(e),
        },
        Ok(Err(invitations::Refused::Link)) => link_gone(),
        Ok(Err(invitations::Refused::Password)) => {
            again("That password is not right.", StatusCode::UNAUTHORIZED).await
        }
        Ok(Err(invitations::Refused::Rules(message))) => {
            again(&message, StatusCode::BAD_REQUEST).await
        }
        Ok(Err(invitations::Refused::Taken)) => {
            again(
                "This account is already a customer of this workspace under another address, or this customer already has an account. Ask the team for help.",
                StatusCode::CONFLICT,
            )
            .await
        }
        Ok(Err(invitations::Refused::Throttled(minutes))) => {
            again(
                &format!("Too many attempts for this account. Try again in {minutes} minute(s)."),
                StatusCode::TOO_MANY_REQUESTS,
            )
            .await
        }
        Err(e) => internal(e),
    }
}

use axum::extract::FromRequest;
