//! CRM accounts: the companies a team works with.

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

const HERE: Endpoint = Endpoint::Product(Product::Crm);
const ENTITY: Entity = Entity {
    product: Product::Crm,
    name: "account",
    table: "accounts",
};

/// The account tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_account",
            "Create an account (a company you work with): name, and optionally its domain, owner (a member's \
             user id), industry, tags and custom fields.",
            HERE,
            Role::Member,
            Effect::Write,
            create_account,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "get_account",
            "Fetch one account by id, with how many contacts it has, its open deals and its latest notes.",
            HERE,
            Role::Reader,
            Effect::Read,
            get_account,
        ),
        ToolDef::new(
            "search_accounts",
            "Search accounts by a case-insensitive match on name or domain (omit query to list all), ordered by \
             name. Returns up to `limit` (default 50, max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            search_accounts,
        ),
        ToolDef::new(
            "update_account",
            "Change an account's name, domain, owner, industry, tags or custom fields (only the fields you pass). \
             Pass null to clear domain, owner, industry or a custom field.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_account,
        )
        .custom_field_changes(ENTITY),
        ToolDef::new(
            "delete_account",
            "Delete an account by id. Its contacts and deals stay, no longer linked to it; its notes go with it.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_account,
        ),
    ]
}

const COLUMNS: &str = "id, name, domain, owner, industry, tags, custom, created_at, updated_at";

/// The head of the search (see `named::search_rows`): the same filter over the first rows
/// of the workspace after the cursor, in (name, id) order. Public, as the statement
/// `search_accounts {"query": "Acme"}` runs on the benchmark's workspace, so the benchmark
/// issues exactly the same SQL directly.
pub const SEARCH_HEAD_SQL: &str = "SELECT * FROM (
       SELECT id, name, domain, owner, industry, tags, custom, created_at, updated_at
       FROM crm.accounts
       WHERE workspace_id = $5 AND (name, id) > ($2, $3::uuid)
       ORDER BY name, id
       LIMIT 128) head
     WHERE ($1::text IS NULL OR name ILIKE $1 OR domain ILIKE $1)
     ORDER BY name, id
     LIMIT $4";

/// The search statement: optional ILIKE on name/domain, keyset after (name, id), one extra row
/// to detect another page.
pub const SEARCH_SQL: &str =
    "SELECT id, name, domain, owner, industry, tags, custom, created_at, updated_at
     FROM crm.accounts
     WHERE workspace_id = $5 AND ($1::text IS NULL OR name ILIKE $1 OR domain ILIKE $1)
       AND (name, id) > ($2, $3::uuid)
     ORDER BY name, id
     LIMIT $4";

/// The statement `create_account` runs (the change-event trigger fires by itself). Public so
/// the benchmark issues exactly the same SQL directly.
pub const INSERT_SQL: &str =
    "INSERT INTO crm.accounts (id, name, domain, owner, industry, tags, custom, created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
     RETURNING id, name, domain, owner, industry, tags, custom, created_at, updated_at";

fn account_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(Some(row.get::<_, OffsetDateTime>(name)));
    json!({
        "id": row.get::<_, Uuid>("id"),
        "name": row.get::<_, &str>("name"),
        "domain": row.get::<_, Option<&str>>("domain"),
        "owner": row.get::<_, Option<Uuid>>("owner"),
        "industry": row.get::<_, Option<&str>>("industry"),
        "tags": row.get::<_, Vec<String>>("tags"),
        "custom": row.get::<_, Value>("custom"),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
    })
}

fn not_found(id: Uuid) -> ToolError {
    named::not_found("account", id)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    /// The company's name, e.g. "Acme Robotics".
    name: String,
    /// Its web domain, e.g. "acme.example".
    #[serde(default)]
    domain: Option<String>,
    /// The member who owns the account (a user id from list_members).
    #[serde(default)]
    owner: Option<Uuid>,
    /// Its industry, e.g. "Robotics".
    #[serde(default)]
    industry: Option<String>,
    /// Tags, e.g. ["enterprise", "emea"].
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_account(cx: &Cx<'_>, args: CreateAccount) -> ToolResult {
    let name = named::text("name", &args.name, 1, 500)?;
    let domain = args
        .domain
        .as_deref()
        .map(|d| named::domain("domain", d))
        .transpose()?;
    let industry = named::opt_text("industry", args.industry.as_deref(), 200)?;
    let tags = named::tags("tags", args.tags.as_deref().unwrap_or_default())?;
    if let Some(owner) = args.owner {
        named::member(cx, "owner", owner).await?;
    }
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false).await?;
    let now = cx.app.clock.now();
    let row = cx
        .scope
        .query_one(
            INSERT_SQL,
            &[
                &Uuid::now_v7(),
                &name,
                &domain,
                &args.owner,
                &industry,
                &tags,
                &Value::Object(custom),
                &now,
            ],
        )
        .await?;
    let account = custom_fields::render_one(cx, ENTITY, &row, account_json).await?;
    Ok(json!({ "account": account }))
}

async fn get_account(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            &format!("SELECT {COLUMNS} FROM crm.accounts WHERE workspace_id = $2 AND id = $1"),
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let mut account = custom_fields::render_one(cx, ENTITY, &row, account_json).await?;
    let contacts: i64 = cx
        .scope
        .query_one(
            "SELECT count(*) FROM crm.contacts WHERE workspace_id = $2 AND account_id = $1",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .get(0);
    let deals = cx
        .scope
        .query(
            "SELECT d.id, d.name, d.amount::text AS amount, d.currency, d.stage, d.close_date::text AS close_date
             FROM crm.deals d JOIN crm.pipeline_stages s
               ON s.workspace_id = d.workspace_id AND s.name = d.stage
             WHERE d.workspace_id = $2 AND d.account_id = $1 AND s.kind = 'open'
             ORDER BY d.close_date NULLS LAST, d.name, d.id LIMIT 50",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?;
    let notes = cx
        .scope
        .query(
            "SELECT id, body, author, created_at FROM crm.notes
             WHERE workspace_id = $2 AND record_type = 'account' AND record_id = $1
             ORDER BY created_at DESC, id DESC LIMIT 5",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?;
    // The support tickets linked to this account (cross-product links, agents only).
    let tickets = crate::tools::links::of(
        cx,
        crate::identity::Product::Crm,
        "account",
        args.id,
        Some(crate::identity::Product::Support),
    )
    .await?
    .into_iter()
    .filter(|l| l["entity"] == "ticket")
    .collect::<Vec<_>>();
    if let Some(object) = account.as_object_mut() {
        object.insert("linked_tickets".into(), Value::Array(tickets));
        object.insert("contacts_count".into(), json!(contacts));
        object.insert(
            "open_deals".into(),
            Value::Array(
                deals
                    .iter()
                    .map(|d| {
                        json!({
                            "id": d.get::<_, Uuid>("id"),
                            "name": d.get::<_, &str>("name"),
                            "amount": d.get::<_, Option<&str>>("amount"),
                            "currency": d.get::<_, &str>("currency"),
                            "stage": d.get::<_, &str>("stage"),
                            "close_date": d.get::<_, Option<&str>>("close_date"),
                        })
                    })
                    .collect(),
            ),
        );
        object.insert(
            "latest_notes".into(),
            Value::Array(
                notes
                    .iter()
                    .map(|n| {
                        json!({
                            "id": n.get::<_, Uuid>("id"),
                            "body": n.get::<_, &str>("body"),
                            "author": n.get::<_, &str>("author"),
                            "created_at": timestamp(Some(n.get("created_at"))),
                        })
                    })
                    .collect(),
            ),
        );
    }
    Ok(json!({ "account": account }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchAccounts {
    /// Text to find in the name or domain (case-insensitive). Omit to list every account.
    #[serde(default)]
    query: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn search_accounts(cx: &Cx<'_>, args: SearchAccounts) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let pattern = named::search_pattern(args.query.as_deref())?;
    let (after_name, after_id) = named::after_or_start(args.cursor.as_deref())?;
    let rows = named::search_rows(
        cx,
        SEARCH_HEAD_SQL,
        SEARCH_SQL,
        &[
            &pattern,
            &after_name,
            &after_id,
            &(limit + 1),
            &cx.scope.workspace(),
        ],
        limit + 1,
    )
    .await?;
    let (page, next_cursor) = named::page(&rows, limit, |r| {
        (r.get::<_, String>("name"), r.get::<_, Uuid>("id"))
    });
    Ok(named::page_result(
        "accounts",
        custom_fields::render(cx, ENTITY, page, account_json).await?,
        next_cursor,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateAccount {
    /// The account's id.
    id: Uuid,
    /// A new name.
    #[serde(default)]
    name: Option<String>,
    /// A new domain; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    domain: Option<Option<String>>,
    /// A new owner (a member's user id); null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<Uuid>")]
    owner: Option<Option<Uuid>>,
    /// A new industry; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    industry: Option<Option<String>>,
    /// The full new list of tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn update_account(cx: &Cx<'_>, args: UpdateAccount) -> ToolResult {
    let name = named::opt_text("name", args.name.as_deref(), 500)?;
    let domain = named::change(&args.domain, |d| named::domain("domain", d))?;
    let industry = named::change(&args.industry, |i| named::text("industry", i, 1, 200))?;
    if let Some(Some(owner)) = args.owner {
        named::member(cx, "owner", owner).await?;
    }
    let tags = args
        .tags
        .as_deref()
        .map(|t| named::tags("tags", t))
        .transpose()?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    let (set, clear) = named::custom_changes(custom);
    let row = cx
        .scope
        .query_opt(
            &format!(
                "UPDATE crm.accounts SET
                    name = coalesce($2, name),
                    domain = CASE WHEN $3 THEN $4 ELSE domain END,
                    owner = CASE WHEN $5 THEN $6 ELSE owner END,
                    industry = CASE WHEN $7 THEN $8 ELSE industry END,
                    tags = coalesce($9, tags),
                    custom = (custom || $10::jsonb) - $11::text[],
                    updated_at = $12
                 WHERE workspace_id = $13 AND id = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &args.id,
                &name,
                &domain.is_some(),
                &domain.flatten(),
                &args.owner.is_some(),
                &args.owner.flatten(),
                &industry.is_some(),
                &industry.flatten(),
                &tags,
                &set,
                &clear,
                &cx.app.clock.now(),
                &cx.scope.workspace(),
            ],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let account = custom_fields::render_one(cx, ENTITY, &row, account_json).await?;
    Ok(json!({ "account": account }))
}

async fn delete_account(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    named::delete_by_id(cx, "crm.accounts", "account", args.id).await
}
