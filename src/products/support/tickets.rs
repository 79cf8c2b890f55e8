//! Support tickets, agent side: open one for a requester (its body is the thread's opening
//! entry), list and read them, change them, assign them, move them through their statuses.
//! The SLA columns are the database's (V13 triggers, from the call's time); these tools only
//! read them, and compute `breached` with the server clock.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{requesters, thread};
use crate::identity::{Endpoint, Product, Role};
use crate::tools::custom_fields::{self, Entity};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);
const ENTITY: Entity = Entity {
    product: Product::Support,
    name: "ticket",
    table: "tickets",
};

/// The ticket tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_ticket",
            "Open a ticket for a requester: `values` with subject, body (the opening message of its thread), \
             and exactly one of requester_id or requester_email (an email that is not a requester yet creates \
             one); optionally priority (low, normal, high, urgent; default normal), tags, assignee (a member's \
             user id or email, or \"me\") and custom fields. Its SLA due times come from the workspace's policy \
             for its priority (see list_sla_policies).",
            HERE,
            Role::Member,
            Effect::Write,
            create_ticket,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "list_tickets",
            "List tickets, most recent activity first, filtered by status, priority, assignee (a member's user \
             id or email, or \"me\"), requester, tag, a case-insensitive match on the subject, or `breached` \
             (true: open or pending tickets past an SLA due time now; false: the others). Returns up to `limit` \
             (default 50, max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_tickets,
        ),
        ToolDef::new(
            "get_ticket",
            "Fetch one ticket by id with its requester, SLA clocks, rating, and its whole thread oldest first \
             (each entry's kind: opening, reply or internal_note, and whether an agent or the customer wrote it).",
            HERE,
            Role::Reader,
            Effect::Read,
            get_ticket,
        ),
        ToolDef::new(
            "update_ticket",
            "Change a ticket's subject, priority, tags or custom fields (only the fields you pass; a null custom \
             value clears that field). A new priority moves the SLA due times to its targets. To assign it use \
             assign_ticket; to change its status, set_ticket_status.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_ticket,
        )
        .custom_field_changes(ENTITY),
        ToolDef::new(
            "assign_ticket",
            "Assign a ticket to a member (their user id or email, or \"me\"), or pass null to unassign it.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            assign_ticket,
        ),
        ToolDef::new(
            "set_ticket_status",
            "Set a ticket's status: open, pending (waiting on the customer: pauses the resolution clock), \
             resolved (the customer may then rate it; their reply reopens it) or closed (final for the \
             customer; agents can reopen it with this tool).",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            set_ticket_status,
        ),
    ]
}

/// A ticket's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

impl Priority {
    /// Every priority, most urgent first.
    pub(super) const ALL: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }
}

/// A ticket's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Open,
    Pending,
    Resolved,
    Closed,
}

impl Status {
    pub(super) const ALL: [Status; 4] = [
        Status::Open,
        Status::Pending,
        Status::Resolved,
        Status::Closed,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }
}

/// A ticket as agents see it: tickets `t` with their requester `r`; `$1` is the server clock's
/// time, against which `breached` is judged.
const SELECT: &str = "SELECT t.id, t.subject, t.status, t.priority, t.tags, t.assignee, t.custom,
            t.created_at, t.updated_at, t.first_response_due_at, t.first_responded_at,
            t.resolution_due_at, t.resolution_paused_at, t.resolved_at,
            support.sla_breached(t.status, t.first_responded_at, t.first_response_due_at, t.resolution_due_at, t.resolution_paused_at, $1) AS breached,
            t.csat_score, t.csat_comment, t.csat_at,
            t.requester_id, r.email AS requester_email, r.name AS requester_name
     FROM support.tickets t
     JOIN support.requesters r ON r.workspace_id = t.workspace_id AND r.id = t.requester_id";

fn ticket_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(row.get::<_, Option<OffsetDateTime>>(name));
    let rating = row.get::<_, Option<i16>>("csat_score").map(|score| {
        json!({
            "score": score,
            "comment": row.get::<_, Option<&str>>("csat_comment"),
            "rated_at": ts("csat_at"),
        })
    });
    json!({
        "id": row.get::<_, Uuid>("id"),
        "subject": row.get::<_, &str>("subject"),
        "status": row.get::<_, &str>("status"),
        "priority": row.get::<_, &str>("priority"),
        "tags": row.get::<_, Vec<String>>("tags"),
        "assignee": row.get::<_, Option<Uuid>>("assignee"),
        "requester": {
            "id": row.get::<_, Uuid>("requester_id"),
            "email": row.get::<_, &str>("requester_email"),
            "name": row.get::<_, Option<&str>>("requester_name"),
        },
        "custom": row.get::<_, Value>("custom"),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
        "sla": {
            "first_response_due_at": ts("first_response_due_at"),
            "first_responded_at": ts("first_responded_at"),
            "resolution_due_at": ts("resolution_due_at"),
            "paused": row.get::<_, Option<OffsetDateTime>>("resolution_paused_at").is_some(),
            "resolved_at": ts("resolved_at"),
            "breached": row.get::<_, bool>("breached"),
        },
        "rating": rating,
    })
}

fn not_found(id: Uuid) -> ToolError {
    named::not_found("ticket", id)
}

/// A write that changed nothing either found the ticket as asked (nothing to do) or no ticket.
async fn must_exist(cx: &Cx<'_>, id: Uuid) -> Result<(), ToolError> {
    cx.scope
        .query_opt("SELECT 1 FROM support.tickets WHERE id = $1", &[&id])
        .await?
        .map(|_| ())
        .ok_or_else(|| not_found(id))
}

/// One ticket as agents see it (custom values the caller does not see hidden), or not_found.
pub(super) async fn show(cx: &Cx<'_>, id: Uuid) -> Result<Value, ToolError> {
    let row = cx
        .scope
        .query_opt(
            &format!("{SELECT} WHERE t.id = $2"),
            &[&cx.app.clock.now(), &id],
        )
        .await?
        .ok_or_else(|| not_found(id))?;
    custom_fields::render_one(cx, ENTITY, &row, ticket_json).await
}

/// A member named by user id, email or "me" (the person calling over OAuth), checked to be a
/// member of this workspace; `invalid_input` at `path` otherwise.
async fn member(cx: &Cx<'_>, path: &str, who: &str) -> Result<Uuid, ToolError> {
    let who = who.trim();
    if who.eq_ignore_ascii_case("me") {
        return cx.principal.user_id.ok_or_else(|| {
            ToolError::invalid_input(
                path,
                "\"me\" names the person behind an OAuth connection; this credential is an API key, \
                 so pass a member's user id or email",
            )
        });
    }
    if let Ok(user_id) = Uuid::parse_str(who) {
        named::member(cx, path, user_id).await?;
        return Ok(user_id);
    }
    let email = named::email(path, who)?;
    cx.scope
        .query_opt(
            "SELECT user_id FROM hdls.members WHERE lower(email) = $1",
            &[&email],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            ToolError::invalid_input(
                path,
                format!("{email} is not a member of this workspace (see list_members)"),
            )
        })
}

/// Moves the `path` of an `invalid_input` under `values.` (checks shared with flat tools name
/// the field alone).
fn under_values(mut error: ToolError) -> ToolError {
    if let Some(Value::String(path)) = error.details.get_mut("path") {
        *path = format!("values.{path}");
    }
    error
}

fn assignee_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A member's user id or email, \"me\", or null to unassign.",
        "type": ["string", "null"]
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateTicket {
    /// The new ticket.
    values: TicketValues,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(inline)]
struct TicketValues {
    /// What it is about, e.g. "Login broken on mobile".
    subject: String,
    /// The opening message of the thread (what the customer wrote or asked).
    body: String,
    /// The requester it is for (an id from search_requesters). Pass this or requester_email.
    #[serde(default)]
    requester_id: Option<Uuid>,
    /// The requester's email; one who is not a requester yet is created. Pass this or requester_id.
    #[serde(default)]
    requester_email: Option<String>,
    /// low, normal (default), high or urgent.
    #[serde(default)]
    priority: Option<Priority>,
    /// Tags, e.g. ["billing", "mobile"].
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// The member it is assigned to: a user id or email, or "me".
    #[serde(default)]
    assignee: Option<String>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_ticket(cx: &Cx<'_>, args: CreateTicket) -> ToolResult {
    let values = args.values;
    let subject = named::text("values.subject", &values.subject, 1, 500)?;
    let body = named::text("values.body", &values.body, 1, 20_000)?;
    let tags = named::tags("values.tags", values.tags.as_deref().unwrap_or_default())?;
    let priority = values.priority.unwrap_or(Priority::Normal);
    let custom = values.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false)
        .await
        .map_err(under_values)?;
    let assignee = match &values.assignee {
        Some(who) => Some(member(cx, "values.assignee", who).await?),
        None => None,
    };
    let (requester_id, requester_created) = match (values.requester_id, &values.requester_email) {
        (Some(id), None) => {
            requesters::must_exist(cx, "values.requester_id", id).await?;
            (id, false)
        }
        (None, Some(email)) => {
            requesters::find_or_create(cx, "values.requester_email", email).await?
        }
        _ => {
            return Err(ToolError::invalid_input(
                "values",
                "pass exactly one of values.requester_id or values.requester_email",
            ));
        }
    };
    let id = Uuid::now_v7();
    // Times and SLA due dates are the trigger's, from the call's time.
    cx.scope
        .execute(
            "INSERT INTO support.tickets (id, subject, requester_id, priority, tags, assignee, custom)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &subject,
                &requester_id,
                &priority.as_str(),
                &tags,
                &assignee,
                &Value::Object(custom),
            ],
        )
        .await?;
    thread::append(cx, id, thread::Kind::Opening, &body).await?;
    Ok(json!({
        "ticket": show(cx, id).await?,
        "requester_created": requester_created,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListTickets {
    /// Only tickets with this status.
    #[serde(default)]
    status: Option<Status>,
    /// Only tickets with this priority.
    #[serde(default)]
    priority: Option<Priority>,
    /// Only tickets assigned to this member: a user id or email, or "me".
    #[serde(default)]
    assignee: Option<String>,
    /// Only this requester's tickets.
    #[serde(default)]
    requester_id: Option<Uuid>,
    /// Only tickets with this tag.
    #[serde(default)]
    tag: Option<String>,
    /// Text to find in the subject (case-insensitive).
    #[serde(default)]
    query: Option<String>,
    /// true: only open or pending tickets past an SLA due time now; false: only the others.
    #[serde(default)]
    breached: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_tickets(cx: &Cx<'_>, args: ListTickets) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let pattern = named::search_pattern(args.query.as_deref())?;
    let tag = named::opt_text("tag", args.tag.as_deref(), 50)?;
    let (before_at, before_id) =
        match named::after::<(OffsetDateTime, Uuid)>(args.cursor.as_deref())? {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
    let assignee = match &args.assignee {
        Some(who) => Some(member(cx, "assignee", who).await?),
        None => None,
    };
    // Newest activity first on the tickets_activity index; the keyset runs backwards.
    let rows = cx
        .scope
        .query(
            &format!(
                "{SELECT}
                 WHERE ($2::text IS NULL OR t.status = $2)
                   AND ($3::text IS NULL OR t.priority = $3)
                   AND ($4::uuid IS NULL OR t.assignee = $4)
                   AND ($5::uuid IS NULL OR t.requester_id = $5)
                   AND ($6::text IS NULL OR t.tags @> ARRAY[$6::text])
                   AND ($7::text IS NULL OR t.subject ILIKE $7)
                   AND ($8::bool IS NULL OR support.sla_breached(t.status, t.first_responded_at, t.first_response_due_at,
                                                           t.resolution_due_at, t.resolution_paused_at, $1) = $8)
                   AND ($9::timestamptz IS NULL OR (t.updated_at, t.id) < ($9, $10::uuid))
                 ORDER BY t.updated_at DESC, t.id DESC
                 LIMIT $11"
            ),
            &[
                &cx.app.clock.now(),
                &args.status.map(Status::as_str),
                &args.priority.map(Priority::as_str),
                &assignee,
                &args.requester_id,
                &tag,
                &pattern,
                &args.breached,
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
        custom_fields::render(cx, ENTITY, page, ticket_json).await?,
        next_cursor,
    ))
}

async fn get_ticket(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let ticket = show(cx, args.id).await?;
    let thread = thread::entries(cx, args.id).await?;
    // The CRM accounts and contacts this ticket is linked to (agents only; this is the agent tool).
    let linked =
        crate::tools::links::of(cx, Product::Support, "ticket", args.id, Some(Product::Crm))
            .await?
            .into_iter()
            .filter(|l| l["entity"] == "account" || l["entity"] == "contact")
            .collect::<Vec<_>>();
    Ok(json!({ "ticket": ticket, "thread": thread, "linked_crm": linked }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTicket {
    /// The ticket's id.
    id: Uuid,
    /// A new subject.
    #[serde(default)]
    subject: Option<String>,
    /// A new priority (moves the SLA due times to its targets).
    #[serde(default)]
    priority: Option<Priority>,
    /// The new tags (replacing the current ones).
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn update_ticket(cx: &Cx<'_>, args: UpdateTicket) -> ToolResult {
    let subject = named::opt_text("subject", args.subject.as_deref(), 500)?;
    let tags = args
        .tags
        .as_deref()
        .map(|t| named::tags("tags", t))
        .transpose()?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    let (set, clear) = named::custom_changes(custom);
    let updated = cx
        .scope
        .execute(
            "UPDATE support.tickets SET
                subject = coalesce($2, subject),
                priority = coalesce($3, priority),
                tags = coalesce($4, tags),
                custom = (custom || $5::jsonb) - $6::text[]
             WHERE id = $1",
            &[
                &args.id,
                &subject,
                &args.priority.map(Priority::as_str),
                &tags,
                &set,
                &clear,
            ],
        )
        .await?;
    if updated == 0 {
        return Err(not_found(args.id));
    }
    Ok(json!({ "ticket": show(cx, args.id).await? }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AssignTicket {
    /// The ticket's id.
    id: Uuid,
    /// A member's user id or email, "me", or null to unassign.
    #[serde(deserialize_with = "named::double_option")]
    #[schemars(schema_with = "assignee_schema")]
    assignee: Option<Option<String>>,
}

async fn assign_ticket(cx: &Cx<'_>, args: AssignTicket) -> ToolResult {
    let assignee = match args.assignee.flatten() {
        Some(who) => Some(member(cx, "assignee", &who).await?),
        None => None,
    };
    let updated = cx
        .scope
        .execute(
            "UPDATE support.tickets SET assignee = $2 WHERE id = $1 AND assignee IS DISTINCT FROM $2",
            &[&args.id, &assignee],
        )
        .await?;
    if updated == 0 {
        must_exist(cx, args.id).await?;
    }
    Ok(json!({ "ticket": show(cx, args.id).await? }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetStatus {
    /// The ticket's id.
    id: Uuid,
    /// open, pending, resolved or closed.
    status: Status,
}

async fn set_ticket_status(cx: &Cx<'_>, args: SetStatus) -> ToolResult {
    let updated = cx
        .scope
        .execute(
            "UPDATE support.tickets SET status = $2 WHERE id = $1 AND status <> $2",
            &[&args.id, &args.status.as_str()],
        )
        .await?;
    if updated == 0 {
        must_exist(cx, args.id).await?;
    }
    Ok(json!({ "ticket": show(cx, args.id).await? }))
}
