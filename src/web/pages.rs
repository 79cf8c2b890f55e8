//! Page templates (maud escapes every interpolated value) and the headers every page gets.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::identity::Product;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#1d1d1f}\
h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}input[type=email],input[type=password],select{width:100%;padding:.5rem;font:inherit}\
button{font:inherit;padding:.5rem 1.2rem;margin:1rem .5rem 0 0}.error{color:#b00020}.muted{color:#666;font-size:.9rem}\
fieldset{border:1px solid #ccc;margin-top:1rem}.product label{display:inline;margin:0}\
input[type=text],textarea{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}\
nav.portal{border-bottom:1px solid #ddd;padding-bottom:.5rem}form.inline{display:inline;margin-left:.5rem}form.inline button{margin:0;padding:.2rem .6rem}\
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:.3rem;border-bottom:1px solid #eee}\
ol#thread{list-style:none;padding:0}li.entry{border-left:3px solid #ccc;padding:0 .8rem;margin:1rem 0}li.entry[data-from=agent]{border-color:#2a6}\
.entry-body{white-space:pre-wrap}.entry-from{margin:0}";

/// The page shell: title, inline style, body.
pub fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · hdls" }
                style { (STYLE) }
            }
            body { (body) }
        }
    }
}

/// An HTML response with the headers every page carries: no caching (pages hold CSRF tokens),
/// no framing (clickjacking the consent button), no referrer to other sites (URLs carry
/// one-time tokens).
pub fn respond(status: StatusCode, markup: Markup, set_cookies: Vec<HeaderValue>) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        // Not no-referrer: under that policy browsers send `Origin: null` on form posts, which
        // the Origin check (our CSRF backstop) must refuse. Other sites still get nothing.
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    for cookie in set_cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// A page with a heading and one message (errors and confirmations).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    respond(
        status,
        layout(title, html! { h1 { (title) } p id="message" { (text) } }),
        Vec::new(),
    )
}

/// The sign-in form.
pub fn sign_in(csrf: &str, next: &str, email: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in to hdls" }
            @if let Some(error) = error { p.error id="error" { (error) } }
            form id="sign-in" method="post" action="/oauth/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required value=(email);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button id="sign-in-submit" type="submit" { "Sign in" }
            }
        },
    )
}

/// One workspace offered on the consent page.
pub struct WorkspaceChoice {
    pub id: String,
    pub name: String,
    pub role: String,
}

/// Everything the consent page shows.
pub struct Consent<'a> {
    pub client_name: &'a str,
    pub redirect_host: &'a str,
    pub signed_in_as: &'a str,
    pub resource: &'a str,
    pub workspaces: Vec<WorkspaceChoice>,
    /// Whether some choices are customer accounts ("as a customer of …").
    pub customers: bool,
    /// Products installed in at least one of the workspaces, and whether each starts ticked.
    pub products: Vec<(Product, bool)>,
    /// The authorization request, carried through the form unchanged.
    pub hidden: Vec<(&'static str, String)>,
    pub csrf: &'a str,
    /// Where "use another account" returns to after signing out (this authorization request).
    pub return_to: &'a str,
}

/// The consent form.
pub fn consent(c: &Consent<'_>) -> Markup {
    layout(
        "Connect",
        html! {
            h1 { "Connect " strong id="client-name" { (c.client_name) } " to hdls?" }
            p.muted {
                "Signed in as " span id="signed-in-as" { (c.signed_in_as) } ". After you decide, your browser returns to "
                strong id="redirect-host" { (c.redirect_host) } "."
            }
            p.muted { "The connection will reach " code { (c.resource) } " with your role in the workspace you pick, and only the products you tick. It cannot widen this later." }
            form id="consent" method="post" action="/oauth/authorize" {
                @for (name, value) in &c.hidden {
                    input type="hidden" name=(name) value=(value);
                }
                input type="hidden" name="csrf" value=(c.csrf);
                label for="workspace" { "Workspace" }
                select id="workspace" name="workspace" {
                    @for w in &c.workspaces {
                        option value=(w.id) data-role=(w.role) { (w.name) }
                    }
                }
                @if c.customers {
                    p.muted id="customer-note" { "Choosing “as a customer of …” connects as that workspace's support customer: the connection can open and follow only your own tickets there, whatever is ticked below." }
                }
                @if !(c.customers && c.products.is_empty()) {
                fieldset {
                    legend { "Products this connection may use" }
                    @if c.products.is_empty() { p.muted { "No products are installed yet; the connection can use the concierge only." } }
                    @for (product, ticked) in &c.products {
                        div.product {
                            input type="checkbox" name="product" value=(product.slug()) id=(format!("product-{}", product.slug())) checked[*ticked];
                            " "
                            label for=(format!("product-{}", product.slug())) { (product.slug()) " — " (product.description()) }
                        }
                    }
                }
                }
                button id="approve" type="submit" name="decision" value="approve" { "Approve" }
                button id="deny" type="submit" name="decision" value="deny" { "Deny" }
            }
            form id="sign-out" method="post" action="/oauth/sign-out" {
                input type="hidden" name="csrf" value=(c.csrf);
                input type="hidden" name="next" value=(c.return_to);
                button id="use-another-account" type="submit" { "Not you? Use another account" }
            }
        },
    )
}

/// The set-password form (one-time link).
pub fn set_password(csrf: &str, token: &str, email: &str, error: Option<&str>) -> Markup {
    layout(
        "Set your password",
        html! {
            h1 { "Set a password for " (email) }
            @if let Some(error) = error { p.error id="error" { (error) } }
            form id="set-password" method="post" action="/account/set-password" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="token" value=(token);
                label for="password" { "New password (at least " (crate::people::password::MIN_LEN) " characters)" }
                input id="password" name="password" type="password" autocomplete="new-password" required;
                button id="set-password-submit" type="submit" { "Set password" }
            }
        },
    )
}

/// The accept-invitation form: joining a team, or (a customer invitation) a customer account
/// for the workspace's support.
pub fn invitation(
    csrf: &str,
    token: &str,
    pending: &crate::people::invitations::Pending,
    error: Option<&str>,
) -> Markup {
    let customer = pending.requester_id.is_some();
    let title = if customer {
        "Your support account"
    } else {
        "Join a workspace"
    };
    layout(
        title,
        html! {
            @if customer {
                h1 { "Become a customer of " span id="workspace-name" { (pending.workspace_name) } "'s support" }
                p { "You were invited with the email " strong id="invited-email" { (pending.email) } " to a customer account: you will be able to open support tickets and follow your own, on the web or from an MCP client. You will not join the team." }
            } @else {
                h1 { "Join " span id="workspace-name" { (pending.workspace_name) } }
                p { "You were invited as " strong { (pending.role) } " with the email " strong id="invited-email" { (pending.email) } "." }
            }
            @if let Some(error) = error { p.error id="error" { (error) } }
            form id="accept-invitation" method="post" action="/invite" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="token" value=(token);
                // One form for everyone: the page never tells whether this address already
                // has an account or a password.
                label for="password" { "Your hdls password if you already have an account with this address; otherwise choose one (at least " (crate::people::password::MIN_LEN) " characters)" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button id="accept-submit" type="submit" { @if customer { "Create my account" } @else { "Join" } }
            }
        },
    )
}

/// After a customer invitation was accepted: where to go next.
pub fn customer_welcome(workspace_name: &str, portal: &str, mcp_endpoint: &str) -> Markup {
    layout(
        "Welcome",
        html! {
            h1 { "Welcome to " (workspace_name) "'s support" }
            p id="message" { "Your customer account is ready." }
            p { "Open and follow your tickets on the web: " a id="portal-link" href=(portal) { (portal) } }
            p { "Or connect an MCP client to " code id="mcp-endpoint" { (mcp_endpoint) } " and approve the connection in this browser, as a customer of " (workspace_name) "." }
        },
    )
}
