//! The portal's page templates (maud escapes every interpolated value). Element ids are the
//! contract the browser test drives (tests/interop/browser/portal.mjs).

use maud::{Markup, html};
use serde_json::Value;
use uuid::Uuid;

use crate::web::pages::layout;

/// Where a portal page lives.
pub fn href(workspace_id: Uuid, rest: &str) -> String {
    format!("/portal/{workspace_id}{rest}")
}

/// A ticket's page (its id is a tool's output; encoded anyway so it stays one path segment).
pub fn ticket_href(workspace_id: Uuid, id: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    href(workspace_id, &format!("/tickets/{id}"))
}

/// "2025-03-01T09:30:12Z" as "2025-03-01 09:30 UTC"; anything else as given.
fn when(value: &Value) -> String {
    let Some(text) = value.as_str() else {
        return String::new();
    };
    match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Err(_) => text.to_owned(),
    }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_default()
}

/// The signed-in header: whose portal, who is signed in, the links, sign out.
fn header(workspace_id: Uuid, workspace_name: &str, email: &str, csrf: &str) -> Markup {
    html! {
        nav.portal {
            strong id="portal-name" { (workspace_name) " support" }
            " · "
            a id="my-tickets-link" href=(href(workspace_id, "")) { "My tickets" }
            " · "
            a id="new-ticket-link" href=(href(workspace_id, "/tickets/new")) { "New ticket" }
            form.inline id="sign-out" method="post" action=(href(workspace_id, "/sign-out")) {
                input type="hidden" name="csrf" value=(csrf);
                span.muted { "Signed in as " span id="signed-in-as" { (email) } " " }
                button id="sign-out-submit" type="submit" { "Sign out" }
            }
        }
    }
}

/// The portal's sign-in form.
pub fn sign_in(
    workspace_id: Uuid,
    workspace_name: &str,
    csrf: &str,
    email: &str,
    error: Option<&str>,
) -> Markup {
    layout(
        &format!("{workspace_name} support"),
        html! {
            h1 { "Sign in to " span id="portal-name" { (workspace_name) } " support" }
            p.muted { "Use the customer account you set up from your invitation email." }
            @if let Some(error) = error { p.error id="error" role="alert" { (error) } }
            form id="portal-sign-in" method="post" action=(href(workspace_id, "/sign-in")) {
                input type="hidden" name="csrf" value=(csrf);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required value=(email);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button id="sign-in-submit" type="submit" { "Sign in" }
            }
        },
    )
}

/// Signed-in page context.
pub struct Frame<'a> {
    pub workspace_id: Uuid,
    pub workspace_name: &'a str,
    pub email: &'a str,
    pub csrf: &'a str,
}

impl Frame<'_> {
    fn page(&self, title: &str, body: Markup) -> Markup {
        layout(
            &format!("{title} · {} support", self.workspace_name),
            html! {
                (header(self.workspace_id, self.workspace_name, self.email, self.csrf))
                main { (body) }
            },
        )
    }
}

const STATUSES: [(&str, &str); 5] = [
    ("", "All"),
    ("open", "Open"),
    ("pending", "Pending"),
    ("resolved", "Resolved"),
    ("closed", "Closed"),
];

/// My tickets: the `list_my_tickets` output, newest activity first.
pub fn tickets(frame: &Frame<'_>, listed: &Value, status: &str) -> Markup {
    let tickets = listed["tickets"].as_array().cloned().unwrap_or_default();
    let ws = frame.workspace_id;
    let next = listed["next_cursor"]
        .as_str()
        .filter(|_| listed["has_more"] == true);
    frame.page(
        "My tickets",
        html! {
            h1 { "My tickets" }
            p.filters {
                "Show: "
                @for (value, label) in STATUSES {
                    @if value == status { strong { (label) } } @else {
                        a href=(if value.is_empty() { href(ws, "") } else { href(ws, &format!("?status={value}")) }) { (label) }
                    }
                    " "
                }
            }
            @if tickets.is_empty() {
                p id="no-tickets" { "No tickets here yet. " a href=(href(ws, "/tickets/new")) { "Open a new ticket" } "." }
            } @else {
                table id="tickets" {
                    thead { tr { th { "Subject" } th { "Status" } th { "Last activity" } } }
                    tbody {
                        @for t in &tickets {
                            tr.ticket data-id=(text(t, "id")) {
                                td { a.ticket-link href=(ticket_href(ws, text(t, "id"))) { (text(t, "subject")) } }
                                td.status { (text(t, "status")) }
                                td { (when(&t["updated_at"])) }
                            }
                        }
                    }
                }
            }
            @if let Some(cursor) = next {
                p { a id="older-tickets" href=(href(ws, &format!("?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair("status", status).append_pair("cursor", cursor).finish()))) { "Older tickets →" } }
            }
        },
    )
}

/// The new-ticket form.
pub fn new_ticket(frame: &Frame<'_>, subject: &str, body: &str, error: Option<&str>) -> Markup {
    frame.page(
        "New ticket",
        html! {
            h1 { "Open a new ticket" }
            @if let Some(error) = error { p.error id="error" role="alert" { (error) } }
            form id="new-ticket" method="post" action=(href(frame.workspace_id, "/tickets")) {
                input type="hidden" name="csrf" value=(frame.csrf);
                label for="subject" { "Subject" }
                input id="subject" name="subject" type="text" maxlength="500" required value=(subject);
                label for="body" { "What happened?" }
                textarea id="body" name="body" rows="8" maxlength="20000" required { (body) }
                button id="new-ticket-submit" type="submit" { "Open ticket" }
            }
        },
    )
}

/// One ticket with its public thread, the reply form and (once resolved) the rating form.
pub fn ticket(frame: &Frame<'_>, got: &Value, reply: &str, error: Option<&str>) -> Markup {
    let t = &got["ticket"];
    let id = text(t, "id");
    let thread = got["thread"].as_array().cloned().unwrap_or_default();
    let status = text(t, "status");
    let rating = &t["rating"];
    let rateable = matches!(status, "resolved" | "closed") && rating.is_null();
    let action = |rest: &str| format!("{}{rest}", ticket_href(frame.workspace_id, id));
    frame.page(
        text(t, "subject"),
        html! {
            h1 id="ticket-subject" { (text(t, "subject")) }
            p.muted {
                "Status: " strong id="ticket-status" { (status) }
                " · opened " (when(&t["created_at"]))
                " · last activity " (when(&t["updated_at"]))
            }
            @if let Some(error) = error { p.error id="error" role="alert" { (error) } }
            ol id="thread" {
                @for e in &thread {
                    li.entry data-from=(text(e, "from")) data-kind=(text(e, "kind")) {
                        p.muted.entry-from {
                            strong { @if text(e, "from") == "customer" { "You" } @else { "Support" } }
                            " · " (when(&e["created_at"]))
                        }
                        div.entry-body { (text(e, "body")) }
                    }
                }
            }
            form id="reply" method="post" action=(action("/reply")) {
                input type="hidden" name="csrf" value=(frame.csrf);
                label for="reply-body" { "Add a reply" }
                textarea id="reply-body" name="body" rows="5" maxlength="20000" required { (reply) }
                @if matches!(status, "resolved" | "closed") {
                    p.muted { "Replying reopens this ticket." }
                }
                button id="reply-submit" type="submit" { "Send reply" }
            }
            @if !rating.is_null() {
                p id="rating" { "You rated this ticket " strong { (rating["score"]) " / 5" } "." }
            }
            @if rateable {
                form id="rate" method="post" action=(action("/rate")) {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    fieldset {
                        legend { "How did we do? (once)" }
                        label for="score" { "Score" }
                        select id="score" name="score" {
                            @for n in (1..=5).rev() { option value=(n) { (n) @if n == 5 { " — great" } @if n == 1 { " — poor" } } }
                        }
                        label for="comment" { "Comment (optional)" }
                        textarea id="comment" name="comment" rows="3" maxlength="2000" {}
                        button id="rate-submit" type="submit" { "Rate" }
                    }
                }
            }
        },
    )
}
