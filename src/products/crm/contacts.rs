//! CRM contacts: the people at accounts.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::Record;
use crate::identity::{Endpoint, Product, Role};
use crate::tools::custom_fields::{self, Entity};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Crm);
const ENTITY: Entity = Entity {
    product: Product::Crm,
    name: "contact",
    table: "contacts",
};

/// The contact tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_contact",
            "Create a contact (a person, usually at an account): first name, and optionally last name, email, \
             phone, title, the account they work at, tags and custom fields. An email belongs to at most one \
             contact in the workspace (case-insensitive); a duplicate is a conflict naming the existing contact.",
            HERE,
            Role::Member,
            Effect::Write,
            create_contact,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "get_contact",
            "Fetch one contact by id.",
            HERE,
            Role::Reader,
            Effect::Read,
            get_contact,
        ),
        ToolDef::new(
            "search_contacts",
            "Search contacts by a case-insensitive match on first name, last name, full name or email, and/or \
             by account or tag (omit everything to list all), ordered by first name. Returns up to `limit` \
             (default 50, max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            search_contacts,
        ),
        ToolDef::new(
            "update_contact",
            "Change a contact's fields (only the ones you pass). Pass null to clear last name, email, phone, \
             title, account or a custom field.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_contact,
        )
        .custom_field_changes(ENTITY),
        ToolDef::new(
            "delete_contact",
            "Delete a contact by id. Its deals stay, no longer linked to it; its notes go with it.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_contact,
        ),
    ]
}

const COLUMNS: &str = "id, first_name, last_name, email, phone, title, account_id, tags, custom, created_at, updated_at";

/// Optional text match on names and email (the name expression is the one V18 indexes: a
/// substring of either name is a substring of it), account and tag filters, keyset after
/// (first_name, id) on the `contacts_name` index, one extra row to detect another page.
/// The head of the search (see `named::search_rows`): the same filters over the first rows
/// of the workspace after the cursor, in (first_name, id) order.
const SEARCH_HEAD_SQL: &str = "SELECT * FROM (
       SELECT id, first_name, last_name, email, phone, title, account_id, tags, custom, created_at, updated_at
       FROM crm.contacts
       WHERE workspace_id = $7 AND (first_name, id) > ($4, $5::uuid)
       ORDER BY first_name, id
       LIMIT 128) head
     WHERE ($1::text IS NULL OR (first_name || ' ' || coalesce(last_name, '')) ILIKE $1
            OR email ILIKE $1)
       AND ($2::uuid IS NULL OR account_id = $2)
       AND ($3::text IS NULL OR tags @> ARRAY[$3::text])
     ORDER BY first_name, id
     LIMIT $6";

const SEARCH_SQL: &str = "SELECT id, first_name, last_name, email, phone, title, account_id, tags, custom, created_at, updated_at
     FROM crm.contacts
     WHERE workspace_id = $7
       AND ($1::text IS NULL OR (first_name || ' ' || coalesce(last_name, '')) ILIKE $1
            OR email ILIKE $1)
       AND ($2::uuid IS NULL OR account_id = $2)
       AND ($3::text IS NULL OR tags @> ARRAY[$3::text])
       AND (first_name, id) > ($4, $5::uuid)
     ORDER BY first_name, id
     LIMIT $6";

fn contact_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(Some(row.get::<_, OffsetDateTime>(name)));
    json!({
        "id": row.get::<_, Uuid>("id"),
        "first_name": row.get::<_, &str>("first_name"),
        "last_name": row.get::<_, Option<&str>>("last_name"),
        "email": row.get::<_, Option<&str>>("email"),
        "phone": row.get::<_, Option<&str>>("phone"),
        "title": row.get::<_, Option<&str>>("title"),
        "account_id": row.get::<_, Option<Uuid>>("account_id"),
        "tags": row.get::<_, Vec<String>>("tags"),
        "custom": row.get::<_, Value>("custom"),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
    })
}

fn not_found(id: Uuid) -> ToolError {
    named::not_found("contact", id)
}

fn phone(value: &str) -> Result<String, ToolError> {
    named::text("phone", value, 1, 50)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateContact {
    /// First (given) name, e.g. "Ann".
    first_name: String,
    /// Last (family) name, e.g. "Lee".
    #[serde(default)]
    last_name: Option<String>,
    /// Email address; unique among the workspace's contacts (case-insensitive).
    #[serde(default)]
    email: Option<String>,
    /// Phone number, as you want it shown.
    #[serde(default)]
    phone: Option<String>,
    /// Job title, e.g. "CTO".
    #[serde(default)]
    title: Option<String>,
    /// The account (company) they work at: an id from search_accounts.
    #[serde(default)]
    account_id: Option<Uuid>,
    /// Tags, e.g. ["champion", "technical"].
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_contact(cx: &Cx<'_>, args: CreateContact) -> ToolResult {
    let first_name = named::text("first_name", &args.first_name, 1, 200)?;
    let last_name = named::opt_text("last_name", args.last_name.as_deref(), 200)?;
    let email = args
        .email
        .as_deref()
        .map(|e| named::email("email", e))
        .transpose()?;
    let phone = args.phone.as_deref().map(phone).transpose()?;
    let title = named::opt_text("title", args.title.as_deref(), 200)?;
    let tags = named::tags("tags", args.tags.as_deref().unwrap_or_default())?;
    Record::Account
        .check_link(cx, "account_id", args.account_id)
        .await?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false).await?;
    let now = cx.app.clock.now();
    // DO NOTHING on the email index instead of an error: the transaction stays usable, so the
    // refusal can name the contact that has the address, even one inserted concurrently.
    let row = cx
        .scope
        .query_opt(
            &format!(
                "INSERT INTO crm.contacts
                     (id, first_name, last_name, email, phone, title, account_id, tags, custom, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
                 ON CONFLICT (workspace_id, lower(email)) WHERE email IS NOT NULL DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &first_name,
                &last_name,
                &email,
                &phone,
                &title,
                &args.account_id,
                &tags,
                &Value::Object(custom),
                &now,
            ],
        )
        .await?;
    let Some(row) = row else {
        let existing = match &email {
            Some(email) => named::email_holder(cx, "crm.contacts", email, None).await?,
            None => None,
        };
        return Err(match existing {
            Some(id) => named::email_taken("contact", id),
            None => ToolError::conflict("another contact has this email address; retry"),
        });
    };
    let contact = custom_fields::render_one(cx, ENTITY, &row, contact_json).await?;
    Ok(json!({ "contact": contact }))
}

async fn get_contact(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            &format!("SELECT {COLUMNS} FROM crm.contacts WHERE workspace_id = $2 AND id = $1"),
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let contact = custom_fields::render_one(cx, ENTITY, &row, contact_json).await?;
    Ok(json!({ "contact": contact }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchContacts {
    /// Text to find in the first name, last name, full name or email (case-insensitive).
    #[serde(default)]
    query: Option<String>,
    /// Only contacts at this account.
    #[serde(default)]
    account_id: Option<Uuid>,
    /// Only contacts with this tag (exact match).
    #[serde(default)]
    tag: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn search_contacts(cx: &Cx<'_>, args: SearchContacts) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let pattern = named::search_pattern(args.query.as_deref())?;
    let tag = named::opt_text("tag", args.tag.as_deref(), 50)?;
    let (after_name, after_id) = named::after_or_start(args.cursor.as_deref())?;
    let rows = named::search_rows(
        cx,
        SEARCH_HEAD_SQL,
        SEARCH_SQL,
        &[
            &pattern,
            &args.account_id,
            &tag,
            &after_name,
            &after_id,
            &(limit + 1),
            &cx.scope.workspace(),
        ],
        limit + 1,
    )
    .await?;
    let (page, next_cursor) = named::page(&rows, limit, |r| {
        (r.get::<_, String>("first_name"), r.get::<_, Uuid>("id"))
    });
    Ok(named::page_result(
        "contacts",
        custom_fields::render(cx, ENTITY, page, contact_json).await?,
        next_cursor,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateContact {
    /// The contact's id.
    id: Uuid,
    /// A new first name.
    #[serde(default)]
    first_name: Option<String>,
    /// A new last name; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    last_name: Option<Option<String>>,
    /// A new email (unique among contacts, case-insensitive); null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    email: Option<Option<String>>,
    /// A new phone number; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    phone: Option<Option<String>>,
    /// A new job title; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    title: Option<Option<String>>,
    /// A new account (an id from search_accounts); null unlinks the contact from its account.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<Uuid>")]
    account_id: Option<Option<Uuid>>,
    /// The full new list of tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn update_contact(cx: &Cx<'_>, args: UpdateContact) -> ToolResult {
    let first_name = named::opt_text("first_name", args.first_name.as_deref(), 200)?;
    let last_name = named::change(&args.last_name, |n| named::text("last_name", n, 1, 200))?;
    let email = named::change(&args.email, |e| named::email("email", e))?;
    let phone = named::change(&args.phone, |p| phone(p))?;
    let title = named::change(&args.title, |t| named::text("title", t, 1, 200))?;
    let tags = args
        .tags
        .as_deref()
        .map(|t| named::tags("tags", t))
        .transpose()?;
    Record::Account
        .check_link(cx, "account_id", args.account_id.flatten())
        .await?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    if let Some(Some(email)) = &email {
        // An unknown id is not_found before any clash with another contact's email.
        if !Record::Contact.exists(cx, args.id).await? {
            return Err(not_found(args.id));
        }
        if let Some(existing) =
            named::email_holder(cx, "crm.contacts", email, Some(args.id)).await?
        {
            return Err(named::email_taken("contact", existing));
        }
    }
    let (set, clear) = named::custom_changes(custom);
    let row = cx
        .scope
        .query_opt(
            &format!(
                "UPDATE crm.contacts SET
                    first_name = coalesce($2, first_name),
                    last_name = CASE WHEN $3 THEN $4 ELSE last_name END,
                    email = CASE WHEN $5 THEN $6 ELSE email END,
                    phone = CASE WHEN $7 THEN $8 ELSE phone END,
                    title = CASE WHEN $9 THEN $10 ELSE title END,
                    account_id = CASE WHEN $11 THEN $12 ELSE account_id END,
                    tags = coalesce($13, tags),
                    custom = (custom || $14::jsonb) - $15::text[],
                    updated_at = $16
                 WHERE workspace_id = $17 AND id = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &args.id,
                &first_name,
                &last_name.is_some(),
                &last_name.flatten(),
                &email.is_some(),
                &email.flatten(),
                &phone.is_some(),
                &phone.flatten(),
                &title.is_some(),
                &title.flatten(),
                &args.account_id.is_some(),
                &args.account_id.flatten(),
                &tags,
                &set,
                &clear,
                &cx.app.clock.now(),
                &cx.scope.workspace(),
            ],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let contact = custom_fields::render_one(cx, ENTITY, &row, contact_json).await?;
    Ok(json!({ "contact": contact }))
}

async fn delete_contact(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    named::delete_by_id(cx, "crm.contacts", "contact", args.id).await
}
