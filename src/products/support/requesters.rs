//! Support requesters, agent side: the team's customers, one per email address in a workspace
//! (whatever its case; stored lowercased). A requester with tickets is disabled, not deleted;
//! disabling one stops every customer credential bound to it.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::identity::{Endpoint, Product, Role};
use crate::tools::custom_fields::{self, Entity};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);
const ENTITY: Entity = Entity {
    product: Product::Support,
    name: "requester",
    table: "requesters",
};

/// The requester tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_requester",
            "Create a requester (a customer who raises tickets): email, and optionally name, organisation and \
             custom fields. The email is unique in the workspace whatever its case (stored lowercased); a \
             duplicate is a conflict naming the existing requester (`existing_id`).",
            HERE,
            Role::Member,
            Effect::Write,
            create_requester,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "get_requester",
            "Fetch one requester by id, with whether they have a customer account (can sign in to the portal), \
             whether they are disabled, and how many tickets they have by status.",
            HERE,
            Role::Reader,
            Effect::Read,
            get_requester,
        ),
        ToolDef::new(
            "search_requesters",
            "Search requesters by a case-insensitive match on email, name or organisation (omit query to list \
             all), ordered by email; optionally only disabled or only enabled ones. Returns up to `limit` \
             (default 50, max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            search_requesters,
        ),
        ToolDef::new(
            "update_requester",
            "Change a requester's email, name, organisation or custom fields (only the fields you pass; null \
             clears name, organisation or a custom field). `disabled: true` disables them: every customer \
             credential bound to them stops working at its next request; `disabled: false` enables them again.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_requester,
        )
        .custom_field_changes(ENTITY),
    ]
}

const COLUMNS: &str = "id, email, name, organisation, custom, disabled_at, created_at, updated_at";

fn requester_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(row.get::<_, Option<OffsetDateTime>>(name));
    let disabled_at = row.get::<_, Option<OffsetDateTime>>("disabled_at");
    json!({
        "id": row.get::<_, Uuid>("id"),
        "email": row.get::<_, &str>("email"),
        "name": row.get::<_, Option<&str>>("name"),
        "organisation": row.get::<_, Option<&str>>("organisation"),
        "custom": row.get::<_, Value>("custom"),
        "disabled": disabled_at.is_some(),
        "disabled_at": timestamp(disabled_at),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
    })
}

fn not_found(id: Uuid) -> ToolError {
    named::not_found("requester", id)
}

/// The requester with this email, created (with only the email) if there is none yet: for
/// `create_ticket {requester_email}`. Returns its id and whether it was created. The row is
/// locked against deletion until the call commits.
pub(super) async fn find_or_create(
    cx: &Cx<'_>,
    path: &str,
    email: &str,
) -> Result<(Uuid, bool), ToolError> {
    let email = named::email(path, email)?;
    let now = cx.app.clock.now();
    let created = cx
        .scope
        .query_opt(
            "INSERT INTO support.requesters (id, email, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (workspace_id, lower(email)) DO NOTHING RETURNING id",
            &[&Uuid::now_v7(), &email, &now],
        )
        .await?;
    if let Some(row) = created {
        return Ok((row.get(0), true));
    }
    cx.scope
        .query_opt(
            "SELECT id FROM support.requesters
             WHERE workspace_id = $2 AND lower(email) = $1 FOR KEY SHARE",
            &[&email, &cx.scope.workspace()],
        )
        .await?
        .map(|r| (r.get(0), false))
        // Deleted between the two statements: the caller can simply retry.
        .ok_or_else(|| ToolError::conflict("the requester with this email just went; retry"))
}

/// Checks that a requester exists (for `requester_id` arguments), locking it against deletion
/// until the call commits; `invalid_input` at `path` if not.
pub(super) async fn must_exist(cx: &Cx<'_>, path: &str, id: Uuid) -> Result<(), ToolError> {
    let found = cx
        .scope
        .query_opt(
            "SELECT 1 FROM support.requesters WHERE workspace_id = $2 AND id = $1 FOR KEY SHARE",
            &[&id, &cx.scope.workspace()],
        )
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(ToolError::invalid_input(
            path,
            format!("no requester {id} in this workspace (see search_requesters)"),
        )),
    }
}

/// Names the database refusal a requester write can still meet after its checks: an email
/// taken by a concurrent call.
fn refine(error: ToolError) -> ToolError {
    match error.db_constraint().as_deref() {
        Some("requesters_email") => {
            ToolError::conflict("another requester has this email (it was just added); retry")
                .with("path", "email")
        }
        _ => error,
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequester {
    /// Their email address; unique in the workspace, whatever its case.
    email: String,
    /// Their name, e.g. "Ada Lovelace".
    #[serde(default)]
    name: Option<String>,
    /// The organisation they are with, e.g. "Acme Robotics".
    #[serde(default)]
    organisation: Option<String>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_requester(cx: &Cx<'_>, args: CreateRequester) -> ToolResult {
    let email = named::email("email", &args.email)?;
    let name = named::opt_text("name", args.name.as_deref(), 200)?;
    let organisation = named::opt_text("organisation", args.organisation.as_deref(), 200)?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false).await?;
    let now = cx.app.clock.now();
    // DO NOTHING on a taken email, so the transaction stays usable to name the holder.
    let row = cx
        .scope
        .query_opt(
            &format!(
                "INSERT INTO support.requesters (id, email, name, organisation, custom, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (workspace_id, lower(email)) DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &email,
                &name,
                &organisation,
                &Value::Object(custom),
                &now,
            ],
        )
        .await?;
    match row {
        Some(row) => Ok(
            json!({ "requester": custom_fields::render_one(cx, ENTITY, &row, requester_json).await? }),
        ),
        None => match named::email_holder(cx, "support.requesters", &email, None).await? {
            Some(existing) => Err(named::email_taken("requester", existing)),
            None => Err(ToolError::conflict(
                "another requester had this email a moment ago; retry",
            )),
        },
    }
}

async fn get_requester(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            &format!(
                "SELECT {COLUMNS}, EXISTS (
                     SELECT 1 FROM hdls.customer_accounts a
                     WHERE a.workspace_id = r.workspace_id AND a.requester_id = r.id
                 ) AS has_customer_account
                 FROM support.requesters r WHERE id = $1"
            ),
            &[&args.id],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let mut requester = custom_fields::render_one(cx, ENTITY, &row, requester_json).await?;
    let counts = cx
        .scope
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'open') AS open,
                    count(*) FILTER (WHERE status = 'pending') AS pending,
                    count(*) FILTER (WHERE status = 'resolved') AS resolved,
                    count(*) FILTER (WHERE status = 'closed') AS closed,
                    count(*) AS total
             FROM support.tickets WHERE requester_id = $1",
            &[&args.id],
        )
        .await?;
    if let Some(object) = requester.as_object_mut() {
        object.insert(
            "has_customer_account".into(),
            json!(row.get::<_, bool>("has_customer_account")),
        );
        let count = |name: &str| json!(counts.get::<_, i64>(name));
        object.insert(
            "tickets".into(),
            json!({
                "open": count("open"),
                "pending": count("pending"),
                "resolved": count("resolved"),
                "closed": count("closed"),
                "total": count("total"),
            }),
        );
    }
    Ok(json!({ "requester": requester }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchRequesters {
    /// Text to find in the email, name or organisation (case-insensitive). Omit to list all.
    #[serde(default)]
    query: Option<String>,
    /// true: only disabled requesters; false: only enabled ones. Omit for both.
    #[serde(default)]
    disabled: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// The head of the search (see `named::search_rows`): the same filters over the first rows
/// after the cursor, in lowercased-email order. Both statements name the workspace (`$5`) so
/// Citus runs them on its shard.
const SEARCH_HEAD_SQL: &str = "SELECT * FROM (
       SELECT id, email, name, organisation, custom, disabled_at, created_at, updated_at
       FROM support.requesters
       WHERE workspace_id = $5 AND lower(email) > $3
       ORDER BY lower(email)
       LIMIT 128) head
     WHERE ($1::text IS NULL OR email ILIKE $1 OR name ILIKE $1 OR organisation ILIKE $1)
       AND ($2::bool IS NULL OR (disabled_at IS NOT NULL) = $2)
     ORDER BY lower(email)
     LIMIT $4";

/// Ordered by the lowercased email, which is unique (the `requesters_email` index), so it
/// alone is the keyset position.
const SEARCH_SQL: &str =
    "SELECT id, email, name, organisation, custom, disabled_at, created_at, updated_at
     FROM support.requesters
     WHERE workspace_id = $5
       AND ($1::text IS NULL OR email ILIKE $1 OR name ILIKE $1 OR organisation ILIKE $1)
       AND ($2::bool IS NULL OR (disabled_at IS NOT NULL) = $2)
       AND lower(email) > $3
     ORDER BY lower(email)
     LIMIT $4";

async fn search_requesters(cx: &Cx<'_>, args: SearchRequesters) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let pattern = named::search_pattern(args.query.as_deref())?;
    // '' sorts before every email (none is empty): the first page starts there (see
    // named::after_or_start).
    let after = named::after::<String>(args.cursor.as_deref())?.unwrap_or_default();
    let rows = named::search_rows(
        cx,
        SEARCH_HEAD_SQL,
        SEARCH_SQL,
        &[
            &pattern,
            &args.disabled,
            &after,
            &(limit + 1),
            &cx.scope.workspace(),
        ],
        limit + 1,
    )
    .await?;
    let (page, next_cursor) =
        named::page(&rows, limit, |r| r.get::<_, String>("email").to_lowercase());
    Ok(named::page_result(
        "requesters",
        custom_fields::render(cx, ENTITY, page, requester_json).await?,
        next_cursor,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRequester {
    /// The requester's id.
    id: Uuid,
    /// A new email address (unique in the workspace, whatever its case).
    #[serde(default)]
    email: Option<String>,
    /// A new name; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    name: Option<Option<String>>,
    /// A new organisation; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    organisation: Option<Option<String>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
    /// true disables the requester (their customer credentials stop working); false enables them.
    #[serde(default)]
    disabled: Option<bool>,
}

async fn update_requester(cx: &Cx<'_>, args: UpdateRequester) -> ToolResult {
    let email = args
        .email
        .as_deref()
        .map(|e| named::email("email", e))
        .transpose()?;
    let name = named::change(&args.name, |n| named::text("name", n, 1, 200))?;
    let organisation = named::change(&args.organisation, |o| {
        named::text("organisation", o, 1, 200)
    })?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    let (set, clear) = named::custom_changes(custom);
    if let Some(email) = &email
        && let Some(existing) =
            named::email_holder(cx, "support.requesters", email, Some(args.id)).await?
    {
        // An unknown id is not_found before any conflict it would have.
        let known = cx
            .scope
            .query_opt(
                "SELECT 1 FROM support.requesters WHERE id = $1",
                &[&args.id],
            )
            .await?;
        return Err(match known {
            Some(_) => named::email_taken("requester", existing),
            None => not_found(args.id),
        });
    }
    let row = cx
        .scope
        .query_opt(
            &format!(
                "UPDATE support.requesters SET
                    email = coalesce($2, email),
                    name = CASE WHEN $3 THEN $4 ELSE name END,
                    organisation = CASE WHEN $5 THEN $6 ELSE organisation END,
                    custom = (custom || $7::jsonb) - $8::text[],
                    -- Disabling again keeps the first time; enabling clears it.
                    disabled_at = CASE WHEN $9::bool IS NULL THEN disabled_at
                                       WHEN $9 THEN coalesce(disabled_at, $10)
                                       ELSE NULL END,
                    updated_at = $10
                 WHERE id = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &args.id,
                &email,
                &name.is_some(),
                &name.flatten(),
                &organisation.is_some(),
                &organisation.flatten(),
                &set,
                &clear,
                &args.disabled,
                &cx.app.clock.now(),
            ],
        )
        .await
        .map_err(refine)?
        .ok_or_else(|| not_found(args.id))?;
    let requester = custom_fields::render_one(cx, ENTITY, &row, requester_json).await?;
    Ok(json!({ "requester": requester }))
}
