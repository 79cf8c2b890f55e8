//! The customer persona's tools on `/api/mcp/support`: the whole allowlist a customer
//! credential gets (open a ticket, list and read their own, reply, rate a resolved one).
//!
//! Isolation is the database's: the row policies of V13 show a customer only their own
//! requester's tickets and the public entries of them, and accept only rows written as
//! themselves. These tools add the narrow shapes (no requester, author or `internal`
//! argument exists to forge) and customer-facing answers. The requester is never taken from
//! arguments: the database stamps entries from the transaction's principal, and a new ticket
//! gets the credential's principal, which the row policy checks again.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::identity::{Endpoint, Product, Role};
use crate::tools::named::{self, IdArg};
use crate::tools::{CUSTOMERS, Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);

/// The customer tools.
pub fn tools() -> Vec<ToolDef> {
    let tool = |def: ToolDef| def.personas(CUSTOMERS);
    vec![
        tool(ToolDef::new(
            "create_ticket",
            "Open a new support ticket: a short subject and a message describing the problem. The ticket is \
             yours automatically; the support team will reply on it. Returns the new ticket.",
            HERE,
            Role::Reader,
            Effect::Write,
            create_ticket,
        )),
        tool(ToolDef::new(
            "list_my_tickets",
            "List your support tickets, most recently active first, with each one's status: open (with \
             support), pending (waiting for you), resolved or closed. Optionally only one status. Returns up to \
             `limit` (default 50, max 200) and a `next_cursor` to pass back for more.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_my_tickets,
        )),
        tool(ToolDef::new(
            "get_ticket",
            "Read one of your tickets by id: its status and the whole conversation with the support team, \
             oldest message first.",
            HERE,
            Role::Reader,
            Effect::Read,
            get_ticket,
        )),
        tool(ToolDef::new(
            "reply",
            "Add a message to one of your tickets. Replying to a pending or resolved ticket reopens it for the \
             support team. A closed ticket takes no more replies: open a new ticket instead.",
            HERE,
            Role::Reader,
            Effect::Write,
            reply,
        )),
        tool(ToolDef::new(
            "rate_ticket",
            "Rate how support handled one of your tickets once it is resolved: a score from 1 (poor) to 5 \
             (excellent) and an optional comment. Each ticket can be rated once.",
            HERE,
            Role::Reader,
            Effect::Write,
            rate_ticket,
        )),
    ]
}

const TICKET_COLUMNS: &str =
    "id, subject, status, created_at, updated_at, resolved_at, csat_score, csat_comment, csat_at";

/// A ticket as its customer sees it.
fn ticket_json(row: &Row) -> Value {
    let rating = row
        .get::<_, Option<i16>>("csat_score")
        .map_or(Value::Null, |score| {
            json!({
                "score": score,
                "comment": row.get::<_, Option<&str>>("csat_comment"),
                "rated_at": timestamp(row.get("csat_at")),
            })
        });
    json!({
        "id": row.get::<_, Uuid>("id"),
        "subject": row.get::<_, &str>("subject"),
        "status": row.get::<_, &str>("status"),
        "created_at": timestamp(Some(row.get("created_at"))),
        "updated_at": timestamp(Some(row.get("updated_at"))),
        "resolved_at": timestamp(row.get("resolved_at")),
        "rating": rating,
    })
}

/// The thread entries a customer may see. The row policy already hides internal notes from
/// a customer; naming the public kinds here says so where the query is read.
const ENTRY_SQL: &str =
    "SELECT id, kind, author_kind, body, created_at FROM support.ticket_entries";
const PUBLIC_KINDS: &str = "kind IN ('opening', 'reply')";

/// A thread entry as its customer sees it.
fn entry_json(row: &Row) -> Value {
    json!({
        "id": row.get::<_, Uuid>("id"),
        "kind": row.get::<_, &str>("kind"),
        "from": row.get::<_, &str>("author_kind"),
        "body": row.get::<_, &str>("body"),
        "created_at": timestamp(Some(row.get("created_at"))),
    })
}

/// The answer for a ticket the customer cannot see, whether it exists or not.
fn no_ticket(id: Uuid) -> ToolError {
    ToolError::not_found(format!("you have no ticket {id}"))
}

/// One of the caller's tickets (the row policy hides every other one).
async fn visible_ticket(cx: &Cx<'_>, id: Uuid) -> Result<Row, ToolError> {
    cx.scope
        .query_opt(
            &format!("SELECT {TICKET_COLUMNS} FROM support.tickets WHERE id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| no_ticket(id))
}

/// Locks one of the caller's tickets for a change and returns its status and rating score.
async fn lock_ticket(cx: &Cx<'_>, id: Uuid) -> Result<(String, Option<i16>), ToolError> {
    let row = cx
        .scope
        .query_opt(
            "SELECT status, csat_score FROM support.tickets
             WHERE workspace_id = $2 AND id = $1 FOR UPDATE",
            &[&id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| no_ticket(id))?;
    Ok((row.get(0), row.get(1)))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateTicket {
    /// The new ticket.
    values: NewTicket,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewTicket {
    /// A short summary of the problem, e.g. "Login broken on mobile" (up to 500 characters).
    subject: String,
    /// What is happening, in as much detail as helps (up to 20000 characters).
    body: String,
}

async fn create_ticket(cx: &Cx<'_>, args: CreateTicket) -> ToolResult {
    let subject = named::text("values.subject", &args.values.subject, 1, 500)?;
    let body = named::text("values.body", &args.values.body, 1, 20_000)?;
    // Fail closed: a customer credential without a requester has no one to open it for.
    let requester = cx.principal.principal_id.ok_or_else(|| {
        ToolError::forbidden(
            "this credential is not bound to a customer, so it cannot open tickets",
        )
    })?;
    let id = Uuid::now_v7();
    // Times, SLA due dates, author and the entry's requester are the database's (V13
    // triggers); the row policy checks the requester is the transaction's principal.
    let row = cx
        .scope
        .query_one(
            &format!(
                "INSERT INTO support.tickets (id, subject, requester_id) VALUES ($1, $2, $3)
                 RETURNING {TICKET_COLUMNS}"
            ),
            &[&id, &subject, &requester],
        )
        .await?;
    cx.scope
        .execute(
            "INSERT INTO support.ticket_entries (id, ticket_id, kind, body) VALUES ($1, $2, 'opening', $3)",
            &[&Uuid::now_v7(), &id, &body],
        )
        .await?;
    Ok(json!({ "ticket": ticket_json(&row) }))
}

/// A ticket's status, as a customer filters by it.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// With the support team.
    Open,
    /// Waiting for you.
    Pending,
    Resolved,
    Closed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListMyTickets {
    /// Only tickets with this status.
    #[serde(default)]
    status: Option<Status>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_my_tickets(cx: &Cx<'_>, args: ListMyTickets) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let (before_at, before_id) =
        match named::after::<(OffsetDateTime, Uuid)>(args.cursor.as_deref())? {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
    // The requester predicate is what the row policy enforces anyway; stating it picks the
    // tickets_requester index. No principal binds NULL: no rows.
    let rows = cx
        .scope
        .query(
            &format!(
                "SELECT {TICKET_COLUMNS} FROM support.tickets
                 WHERE requester_id = $1
                   AND ($2::text IS NULL OR status = $2)
                   AND ($3::timestamptz IS NULL OR (updated_at, id) < ($3, $4::uuid))
                 ORDER BY updated_at DESC, id DESC
                 LIMIT $5"
            ),
            &[
                &cx.principal.principal_id,
                &args.status.map(Status::as_str),
                &before_at,
                &before_id,
                &(limit + 1),
            ],
        )
        .await?;
    let (page, next_cursor) = named::page(&rows, limit, |r| {
        (
            r.get::<_, OffsetDateTime>("updated_at"),
            r.get::<_, Uuid>("id"),
        )
    });
    Ok(named::page_result(
        "tickets",
        page.iter().map(ticket_json).collect::<Vec<_>>(),
        next_cursor,
    ))
}

async fn get_ticket(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let thread_sql =
        format!("{ENTRY_SQL} WHERE ticket_id = $1 AND {PUBLIC_KINDS} ORDER BY created_at, id");
    // One round trip: both statements are pipelined on the Scope's connection.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&args.id];
    let (ticket, thread) = futures_util::try_join!(
        visible_ticket(cx, args.id),
        cx.scope.query(&thread_sql, &params)
    )?;
    Ok(json!({
        "ticket": ticket_json(&ticket),
        "thread": thread.iter().map(entry_json).collect::<Vec<_>>(),
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Reply {
    /// The ticket to reply on (an id from list_my_tickets).
    ticket_id: Uuid,
    /// Your message (up to 20000 characters).
    body: String,
}

async fn reply(cx: &Cx<'_>, args: Reply) -> ToolResult {
    let body = named::text("body", &args.body, 1, 20_000)?;
    let (status, _) = lock_ticket(cx, args.ticket_id).await?;
    if status == "closed" {
        return Err(ToolError::conflict(
            "this ticket is closed and takes no more replies; open a new ticket with create_ticket",
        )
        .with("reason", "closed"));
    }
    // The database stamps who wrote it (as this customer), on whose ticket and when, and
    // reopens a pending or resolved ticket (V13's entry triggers).
    let entry = cx
        .scope
        .query_one(
            "INSERT INTO support.ticket_entries (id, ticket_id, kind, body) VALUES ($1, $2, 'reply', $3)
             RETURNING id, kind, author_kind, body, created_at",
            &[&Uuid::now_v7(), &args.ticket_id, &body],
        )
        .await?;
    let ticket = visible_ticket(cx, args.ticket_id).await?;
    Ok(json!({ "entry": entry_json(&entry), "ticket": ticket_json(&ticket) }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RateTicket {
    /// The resolved ticket to rate.
    id: Uuid,
    /// 1 (poor) to 5 (excellent).
    #[schemars(range(min = 1, max = 5))]
    score: i64,
    /// Anything you would like the team to know (up to 2000 characters).
    #[serde(default)]
    comment: Option<String>,
}

async fn rate_ticket(cx: &Cx<'_>, args: RateTicket) -> ToolResult {
    let score = i16::try_from(args.score)
        .ok()
        .filter(|s| (1..=5).contains(s))
        .ok_or_else(|| {
            ToolError::invalid_input("score", "score must be a whole number from 1 to 5")
        })?;
    let comment = named::opt_text("comment", args.comment.as_deref(), 2000)?;
    let (status, rated) = lock_ticket(cx, args.id).await?;
    if rated.is_some() {
        return Err(ToolError::conflict(
            "you have already rated this ticket; a rating is given once",
        )
        .with("reason", "already_rated"));
    }
    if !matches!(status.as_str(), "resolved" | "closed") {
        return Err(ToolError::conflict(format!(
            "this ticket is {status}; you can rate it once support has resolved it"
        ))
        .with("reason", "not_resolved"));
    }
    // The trigger checks both rules again and stamps the time.
    let row = cx
        .scope
        .query_one(
            &format!(
                "UPDATE support.tickets SET csat_score = $2, csat_comment = $3 WHERE id = $1
                 RETURNING {TICKET_COLUMNS}"
            ),
            &[&args.id, &score, &comment],
        )
        .await?;
    Ok(json!({ "ticket": ticket_json(&row) }))
}
