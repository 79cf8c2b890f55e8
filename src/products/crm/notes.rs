//! CRM notes: free text on any account, contact or deal, newest first. A note goes when its
//! record does (a trigger in V8).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::Record;
use crate::identity::{Endpoint, Product, Role};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Crm);

/// The note tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "add_note",
            "Add a note to an account, contact or deal (record_type and record_id). The note records you as \
             its author.",
            HERE,
            Role::Member,
            Effect::Write,
            add_note,
        ),
        ToolDef::new(
            "list_notes",
            "List the notes on an account, contact or deal, newest first. Returns up to `limit` (default 50, \
             max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_notes,
        ),
        ToolDef::new(
            "delete_note",
            "Delete a note by id. Only its author, or an admin or owner, may delete it.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_note,
        ),
    ]
}

const COLUMNS: &str = "id, record_type, record_id, body, author, created_at";

fn note_json(row: &Row) -> Value {
    json!({
        "id": row.get::<_, Uuid>("id"),
        "record_type": row.get::<_, &str>("record_type"),
        "record_id": row.get::<_, Uuid>("record_id"),
        "body": row.get::<_, &str>("body"),
        "author": row.get::<_, &str>("author"),
        "created_at": timestamp(Some(row.get::<_, OffsetDateTime>("created_at"))),
    })
}

/// The record must be in this workspace (RLS hides every other one).
async fn record_must_exist(cx: &Cx<'_>, record: Record, id: Uuid) -> Result<(), ToolError> {
    if record.exists(cx, id).await? {
        Ok(())
    } else {
        Err(ToolError::not_found(format!(
            "no {} {id} in this workspace",
            record.as_str()
        )))
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddNote {
    /// What the note is on: account, contact or deal.
    record_type: Record,
    /// The id of that account, contact or deal.
    record_id: Uuid,
    /// The note's text (up to 20000 characters).
    body: String,
}

async fn add_note(cx: &Cx<'_>, args: AddNote) -> ToolResult {
    let body = named::text("body", &args.body, 1, 20_000)?;
    record_must_exist(cx, args.record_type, args.record_id).await?;
    let row = cx
        .scope
        .query_one(
            &format!(
                "INSERT INTO crm.notes (id, record_type, record_id, body, author, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &args.record_type.as_str(),
                &args.record_id,
                &body,
                &cx.principal.author_id(),
                &cx.app.clock.now(),
            ],
        )
        .await?;
    Ok(json!({ "note": note_json(&row) }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListNotes {
    /// What the notes are on: account, contact or deal.
    record_type: Record,
    /// The id of that account, contact or deal.
    record_id: Uuid,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn list_notes(cx: &Cx<'_>, args: ListNotes) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let (before_at, before_id) =
        match named::after::<(OffsetDateTime, Uuid)>(args.cursor.as_deref())? {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
    record_must_exist(cx, args.record_type, args.record_id).await?;
    // Newest first on the notes_record index; the keyset runs backwards from the last shown.
    let rows = cx
        .scope
        .query(
            &format!(
                "SELECT {COLUMNS} FROM crm.notes
                 WHERE workspace_id = $6 AND record_type = $1 AND record_id = $2
                   AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
                 ORDER BY created_at DESC, id DESC
                 LIMIT $5"
            ),
            &[
                &args.record_type.as_str(),
                &args.record_id,
                &before_at,
                &before_id,
                &(limit + 1),
                &cx.scope.workspace(),
            ],
        )
        .await?;
    let (page, next_cursor) = named::page(&rows, limit, |r| {
        (
            r.get::<_, OffsetDateTime>("created_at"),
            r.get::<_, Uuid>("id"),
        )
    });
    Ok(named::page_result(
        "notes",
        page.iter().map(note_json).collect::<Vec<_>>(),
        next_cursor,
    ))
}

async fn delete_note(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let author: String = cx
        .scope
        .query_opt(
            "SELECT author FROM crm.notes WHERE workspace_id = $2 AND id = $1 FOR UPDATE",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| ToolError::not_found(format!("no note {} in this workspace", args.id)))?
        .get(0);
    if author != cx.principal.author_id() && cx.principal.role < Role::Admin {
        return Err(ToolError::forbidden(
            "only a note's author, or an admin or owner, may delete it",
        ));
    }
    cx.scope
        .execute(
            "DELETE FROM crm.notes WHERE workspace_id = $2 AND id = $1",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?;
    Ok(json!({ "id": args.id, "deleted": true }))
}
