//! Workspace memory: notes the team's assistants share ("our fiscal year starts in February"),
//! remembered, recalled by full text or newest first, and forgotten. Agents only; bounded per
//! entry and per workspace.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::identity::Role;
use crate::tools::links::{self, RecordRef};
use crate::tools::named;
use crate::tools::{Cx, ToolError, ToolResult, cursor, timestamp};

/// Longest entry, in characters.
pub const MAX_CONTENT: usize = 4000;
/// Entries one workspace may keep.
pub const MAX_ENTRIES: i64 = 1000;
const MAX_TAGS: usize = 20;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// What to remember, up to 4000 characters, e.g. "Our fiscal year starts in February".
    content: String,
    /// Up to 20 tags to find it by, e.g. ["finance"].
    #[serde(default)]
    tags: Vec<String>,
    /// The record it is about, if any (it must exist and be visible to you).
    #[serde(default)]
    about: Option<RecordRef>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// Words to search for (ranked full text); omit for the newest entries first.
    #[serde(default)]
    query: Option<String>,
    /// Only entries with this tag.
    #[serde(default)]
    tag: Option<String>,
    /// Only entries about this record.
    #[serde(default)]
    about: Option<RecordRef>,
    /// Page size, 1 to 50 (default 20).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page (newest-first listing only).
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetArgs {
    /// The entry's id.
    id: Uuid,
}

const COLUMNS: &str =
    "id, content, tags, about_product, about_entity, about_id, author, created_at";

fn entry_json(r: &Row) -> Value {
    let about = r.get::<_, Option<Uuid>>("about_id").map(|id| {
        json!({
            "product": r.get::<_, Option<&str>>("about_product"),
            "entity": r.get::<_, Option<&str>>("about_entity"),
            "id": id,
        })
    });
    json!({
        "id": r.get::<_, Uuid>("id"),
        "content": r.get::<_, &str>("content"),
        "tags": r.get::<_, Vec<String>>("tags"),
        "about": about,
        "author": r.get::<_, &str>("author"),
        "created_at": timestamp(Some(r.get("created_at"))),
    })
}

fn check_tag(path: &str, tag: &str) -> Result<(), ToolError> {
    if tag.trim().is_empty() || tag.chars().count() > 50 {
        return Err(ToolError::invalid_input(
            path,
            "a tag is 1 to 50 characters",
        ));
    }
    Ok(())
}

pub async fn remember(cx: &Cx<'_>, args: RememberArgs) -> ToolResult {
    let length = args.content.chars().count();
    if args.content.trim().is_empty() || length > MAX_CONTENT {
        return Err(ToolError::invalid_input(
            "content",
            format!("content must be 1 to {MAX_CONTENT} characters (this is {length})"),
        ));
    }
    if args.tags.len() > MAX_TAGS {
        return Err(ToolError::invalid_input("tags", "at most 20 tags"));
    }
    for tag in &args.tags {
        check_tag("tags", tag)?;
    }
    if let Some(about) = &args.about {
        links::require(cx, "about", about).await?;
    }
    let count: i64 = cx
        .scope
        .query_one("SELECT count(*) FROM hdls.memories", &[])
        .await?
        .get(0);
    if count >= MAX_ENTRIES {
        return Err(ToolError::conflict(format!(
            "this workspace's memory is full ({MAX_ENTRIES} entries); forget some first"
        ))
        .with("limit", json!(MAX_ENTRIES)));
    }
    let now = cx.app.clock.now();
    let id = Uuid::now_v7();
    let about = args.about.as_ref();
    let row = cx
        .scope
        .query_one(
            &format!(
                "INSERT INTO hdls.memories (id, content, tags, about_product, about_entity, about_id, author, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
            ),
            &[
                &id,
                &args.content,
                &args.tags,
                &about.map(|a| a.product.slug()),
                &about.map(|a| a.entity.as_str()),
                &about.map(|a| a.id),
                &cx.principal.author_id(),
                &now,
            ],
        )
        .await?;
    Ok(json!({ "memory": entry_json(&row), "entries": count + 1, "limit": MAX_ENTRIES }))
}

pub async fn recall(cx: &Cx<'_>, args: RecallArgs) -> ToolResult {
    let limit = args.limit.unwrap_or(20);
    if !(1..=50).contains(&limit) {
        return Err(ToolError::invalid_input(
            "limit",
            "limit must be between 1 and 50",
        ));
    }
    let query = args
        .query
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty());
    if query.is_some_and(|q| q.chars().count() > named::MAX_QUERY) {
        return Err(ToolError::invalid_input(
            "query",
            "query must be at most 200 characters",
        ));
    }
    if query.is_some() && args.cursor.is_some() {
        return Err(ToolError::invalid_input(
            "cursor",
            "a search returns its best matches in one page; cursors page the newest-first listing",
        ));
    }
    if let Some(tag) = &args.tag {
        check_tag("tag", tag)?;
    }
    if let Some(about) = &args.about {
        links::check("about", about)?;
    }
    let (before_at, before_id) = match args.cursor.as_deref() {
        Some(text) => {
            let (at, id) = cursor::decode::<(String, Uuid)>("cursor", text)?;
            let at = OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ToolError::invalid_input("cursor", "cursor is not one this server issued")
                })?;
            (Some(at), Some(id))
        }
        None => (None, None),
    };
    let about = args.about.as_ref();
    let rows = cx
        .scope
        .query(
            &format!(
                "SELECT {COLUMNS},
                        CASE WHEN $1::text IS NULL THEN 0
                             ELSE ts_rank(search, websearch_to_tsquery('english', $1)) END AS rank
                 FROM hdls.memories
                 WHERE ($1::text IS NULL OR search @@ websearch_to_tsquery('english', $1))
                   AND ($2::text IS NULL OR $2 = ANY (tags))
                   AND ($3::text IS NULL OR (about_product = $3 AND about_entity = $4 AND about_id = $5))
                   AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid))
                 ORDER BY rank DESC, created_at DESC, id DESC
                 LIMIT $8"
            ),
            &[
                &query,
                &args.tag,
                &about.map(|a| a.product.slug()),
                &about.map(|a| a.entity.as_str()),
                &about.map(|a| a.id),
                &before_at,
                &before_id,
                &(limit + 1),
            ],
        )
        .await?;
    let (page, next_cursor) = if query.is_some() {
        (&rows[..rows.len().min(limit as usize)], None)
    } else {
        named::page(&rows, limit, |r| {
            (timestamp(Some(r.get("created_at"))), r.get::<_, Uuid>("id"))
        })
    };
    Ok(named::page_result(
        "memories",
        page.iter().map(entry_json).collect::<Vec<_>>(),
        next_cursor,
    ))
}

pub async fn forget(cx: &Cx<'_>, args: ForgetArgs) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            "SELECT author FROM hdls.memories WHERE id = $1",
            &[&args.id],
        )
        .await?
        .ok_or_else(|| ToolError::not_found(format!("no memory {} in this workspace", args.id)))?;
    let author: String = row.get("author");
    if author != cx.principal.author_id() && cx.principal.role < Role::Admin {
        return Err(
            ToolError::forbidden("only its author or an admin can forget this entry")
                .with("required_role", "admin"),
        );
    }
    cx.scope
        .execute("DELETE FROM hdls.memories WHERE id = $1", &[&args.id])
        .await?;
    Ok(json!({ "id": args.id, "forgotten": true }))
}
