//! A ticket's thread, agent side: public replies the customer sees and internal notes no
//! customer credential can read (the row policy on `support.ticket_entries` enforces that,
//! not this code). Entries are append-only; who wrote one and when is stamped by the database.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::tickets;
use crate::identity::{Endpoint, Product, Role};
use crate::tools::named;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);

/// The thread tools.
pub fn tools() -> Vec<ToolDef> {
    vec![ToolDef::new(
        "reply",
        "Add to a ticket's thread: a public reply the customer sees (the first one stops the ticket's \
             first-response clock), or with `internal: true` an internal note only the team sees (it stops no \
             clock). A closed ticket takes internal notes only: reopen it with set_ticket_status to reply.",
        HERE,
        Role::Member,
        Effect::Write,
        reply,
    )]
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The message a ticket was opened with.
    Opening,
    /// A public reply (agent or customer).
    Reply,
    /// An agent's note the customer never sees.
    InternalNote,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Opening => "opening",
            Kind::Reply => "reply",
            Kind::InternalNote => "internal_note",
        }
    }
}

const COLUMNS: &str = "id, kind, author_kind, author, body, created_at";

fn entry_json(row: &Row) -> Value {
    json!({
        "id": row.get::<_, Uuid>("id"),
        "kind": row.get::<_, &str>("kind"),
        "author_kind": row.get::<_, &str>("author_kind"),
        "author": row.get::<_, &str>("author"),
        "body": row.get::<_, &str>("body"),
        "created_at": timestamp(Some(row.get::<_, OffsetDateTime>("created_at"))),
    })
}

/// Appends an entry to a ticket the caller has checked exists. The database stamps its
/// author, author kind, requester and time, and updates the ticket's activity and clocks.
pub(super) async fn append(
    cx: &Cx<'_>,
    ticket: Uuid,
    kind: Kind,
    body: &str,
) -> Result<Value, ToolError> {
    let row = cx
        .scope
        .query_one(
            &format!(
                "INSERT INTO support.ticket_entries (id, ticket_id, kind, author, body)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &ticket,
                &kind.as_str(),
                &cx.principal.author_id(),
                &body,
            ],
        )
        .await?;
    Ok(entry_json(&row))
}

/// A ticket's whole thread, oldest first.
pub(super) async fn entries(cx: &Cx<'_>, ticket: Uuid) -> Result<Vec<Value>, ToolError> {
    let rows = cx
        .scope
        .query(
            &format!(
                "SELECT {COLUMNS} FROM support.ticket_entries WHERE ticket_id = $1
                 ORDER BY created_at, id"
            ),
            &[&ticket],
        )
        .await?;
    Ok(rows.iter().map(entry_json).collect())
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Reply {
    /// The ticket's id.
    ticket_id: Uuid,
    /// The message (up to 20000 characters).
    body: String,
    /// true: an internal note only the team sees; false (default): a reply the customer sees.
    #[serde(default)]
    internal: bool,
}

async fn reply(cx: &Cx<'_>, args: Reply) -> ToolResult {
    let body = named::text("body", &args.body, 1, 20_000)?;
    // Locked, so a concurrent status change cannot close it between the check and the insert.
    let status: String = cx
        .scope
        .query_opt(
            "SELECT status FROM support.tickets WHERE workspace_id = $2 AND id = $1 FOR UPDATE",
            &[&args.ticket_id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| named::not_found("ticket", args.ticket_id))?
        .get(0);
    if status == "closed" && !args.internal {
        return Err(ToolError::conflict(format!(
            "ticket {} is closed, which is final for the customer: reopen it with set_ticket_status \
             {{status: \"open\"}} to reply, or add an internal note (internal: true)",
            args.ticket_id
        ))
        .with("status", status));
    }
    let kind = if args.internal {
        Kind::InternalNote
    } else {
        Kind::Reply
    };
    let entry = append(cx, args.ticket_id, kind, &body).await?;
    Ok(json!({ "entry": entry, "ticket": tickets::show(cx, args.ticket_id).await? }))
}
