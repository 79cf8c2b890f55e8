//! How a customer gets a credential: `invite_customer` sends a requester a one-time link to
//! a customer account (web portal and OAuth as that requester). The binding is made when the
//! link is accepted (crate::people::invitations), never at request time.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::audit::actions;
use crate::identity::{Endpoint, Product, Role};
use crate::people::invitations;
use crate::tools::named;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);

/// This module's tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "invite_customer",
            "Invite one of your customers (a requester) to a customer account, by requester_id or by email (an \
             email that is not yet a requester creates one). Returns a one-time link, valid 7 days (also emailed \
             when the server has SMTP configured): opening it lets them set a password (or sign in) and then \
             raise and follow their own tickets on the web portal (`portal`) or from any MCP client at \
             /api/mcp/support. A customer account is not a team membership and sees only that requester's \
             tickets. Needs member or higher.",
            HERE,
            Role::Member,
            Effect::Write,
            invite_customer,
        )
        .audited(actions::CUSTOMER_INVITE),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InviteCustomerArgs {
    /// The requester to invite. Give this or `email`.
    requester_id: Option<Uuid>,
    /// The customer's email address: their requester, created if there is none yet. Give this
    /// or `requester_id`.
    email: Option<String>,
}

/// The requester to invite: by id, or by address (created if new).
async fn requester_for(cx: &Cx<'_>, args: &InviteCustomerArgs) -> Result<Row, ToolError> {
    const COLUMNS: &str = "id, email, name, disabled_at";
    match (args.requester_id, args.email.as_deref()) {
        (Some(id), None) => cx
            .scope
            .query_opt(
                &format!("SELECT {COLUMNS} FROM support.requesters WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or_else(|| named::not_found("requester", id)),
        (None, Some(email)) => {
            let email = named::email("email", email)?;
            let now = cx.app.clock.now();
            // A concurrent invitation for the same new address creates nothing twice.
            let created = cx
                .scope
                .query_opt(
                    &format!(
                        "INSERT INTO support.requesters (id, email, created_at, updated_at)
                         VALUES ($1, $2, $3, $3)
                         ON CONFLICT (workspace_id, lower(email)) DO NOTHING
                         RETURNING {COLUMNS}"
                    ),
                    &[&Uuid::now_v7(), &email, &now],
                )
                .await?;
            match created {
                Some(row) => Ok(row),
                None => cx
                    .scope
                    .query_one(
                        &format!(
                            "SELECT {COLUMNS} FROM support.requesters WHERE lower(email) = lower($1)"
                        ),
                        &[&email],
                    )
                    .await,
            }
        }
        _ => Err(ToolError::invalid_input(
            "requester_id",
            "give exactly one of requester_id or email",
        )),
    }
}

async fn invite_customer(cx: &Cx<'_>, args: InviteCustomerArgs) -> ToolResult {
    let requester = requester_for(cx, &args).await?;
    let requester_id: Uuid = requester.get("id");
    let email: &str = requester.get("email");
    if requester
        .get::<_, Option<time::OffsetDateTime>>("disabled_at")
        .is_some()
    {
        return Err(ToolError::conflict(format!(
            "requester {requester_id} is disabled; enable them with update_requester first"
        )));
    }
    let bound = cx
        .scope
        .query_opt(
            "SELECT 1 FROM hdls.customer_accounts WHERE requester_id = $1",
            &[&requester_id],
        )
        .await?;
    if bound.is_some() {
        return Err(ToolError::conflict(format!(
            "requester {requester_id} already has a customer account"
        )));
    }
    let created = invitations::create_for_customer(
        cx.scope,
        cx.principal,
        requester_id,
        email,
        cx.app.clock.now(),
    )
    .await?;
    cx.audit(&format!("{} (requester {requester_id})", created.email))
        .await?;
    let base = cx.app.public.base();
    let link = format!("{base}/invite?token={}", created.token);
    let expires_at = timestamp(Some(created.expires_at));
    let emailed = email_invitation(cx, &created.email, &link, &expires_at).await;
    Ok(json!({
        "invitation_id": created.invitation_id,
        "requester": {
            "id": requester_id,
            "email": email,
            "name": requester.get::<_, Option<&str>>("name"),
        },
        "expires_at": expires_at,
        "link": link,
        "portal": format!("{base}/portal/{}", cx.principal.workspace_id),
        "mcp_endpoint": cx.app.public.endpoint_url(HERE),
        "emailed": emailed,
        "notice": "The link is shown once and works once. Unless it was emailed, send it to your customer over a channel you trust.",
    }))
}

/// Emails the link when SMTP is configured: true, false (no SMTP), or why it was not sent.
async fn email_invitation(cx: &Cx<'_>, to: &str, link: &str, expires_at: &Value) -> Value {
    let Some(mailer) = &cx.app.mailer else {
        return json!(false);
    };
    let sent = mailer
        .send_customer_invitation(
            to,
            &cx.principal.workspace_name,
            link,
            expires_at.as_str().unwrap_or_default(),
        )
        .await;
    match sent {
        Ok(()) => json!(true),
        Err(reason) => {
            tracing::warn!(%reason, "customer invitation email not sent");
            json!({ "sent": false, "reason": reason })
        }
    }
}
