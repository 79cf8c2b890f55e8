//! CRM product tools on `/api/mcp/crm`: accounts.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Cx, Effect, ToolDef, ToolError, ToolResult, cursor, timestamp};
use crate::identity::{Endpoint, Product, Role};

const HERE: Endpoint = Endpoint::Product(Product::Crm);
const MAX_LIMIT: i64 = 200;
const DEFAULT_LIMIT: i64 = 50;

/// The CRM's tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_account",
            "Create an account (a company you work with): name, optional domain and custom fields.",
            HERE,
            Role::Member,
            Effect::Write,
            create_account,
        ),
        ToolDef::new(
            "get_account",
            "Fetch one account by id.",
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
            "Change an account's name, domain or custom fields (only the fields you pass). Pass domain null to clear it.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_account,
        ),
        ToolDef::new(
            "delete_account",
            "Delete an account by id.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_account,
        ),
    ]
}

const COLUMNS: &str = "id, name, domain, custom, created_at, updated_at";

/// The search statement: optional ILIKE on name/domain, keyset after (name, id), one extra row
/// to detect another page. Public so the benchmark issues exactly the same SQL directly.
pub const SEARCH_SQL: &str =
    "SELECT id, name, domain, custom, created_at, updated_at FROM crm.accounts
     WHERE ($1::text IS NULL OR name ILIKE $1 OR domain ILIKE $1)
       AND ($2::text IS NULL OR (name, id) > ($2, $3::uuid))
     ORDER BY name, id
     LIMIT $4";

fn account_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(Some(row.get::<_, OffsetDateTime>(name)));
    json!({
        "id": row.get::<_, Uuid>("id"),
        "name": row.get::<_, &str>("name"),
        "domain": row.get::<_, Option<&str>>("domain"),
        "custom": row.get::<_, Value>("custom"),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
    })
}

fn check_name(path: &str, name: &str) -> Result<(), ToolError> {
    let len = name.trim().chars().count();
    if len == 0 || len > 500 {
        return Err(ToolError::invalid_input(
            path,
            "name must be 1 to 500 characters",
        ));
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), ToolError> {
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'));
    if !ok {
        return Err(ToolError::invalid_input(
            "domain",
            "domain must look like example.com (at most 253 characters)",
        ));
    }
    Ok(())
}

fn not_found(id: Uuid) -> ToolError {
    ToolError::not_found(format!("no account {id} in this workspace"))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    /// The company's name, e.g. "Acme Robotics".
    name: String,
    /// Its web domain, e.g. "acme.example".
    #[serde(default)]
    domain: Option<String>,
    /// Custom fields as a JSON object.
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_account(cx: &Cx<'_>, args: CreateAccount) -> ToolResult {
    check_name("name", &args.name)?;
    if let Some(d) = &args.domain {
        check_domain(d)?;
    }
    let custom = Value::Object(args.custom.unwrap_or_default());
    // The injected clock, not the columns' DEFAULT now(): tests move time, and every node
    // stamps rows from the same source it checks expiries against.
    let now = cx.app.clock.now();
    let row = cx
        .scope
        .query_one(
            &format!(
                "INSERT INTO crm.accounts (id, name, domain, custom, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &args.name.trim(),
                &args.domain,
                &custom,
                &now,
            ],
        )
        .await?;
    Ok(json!({ "account": account_json(&row) }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AccountId {
    /// The account's id.
    id: Uuid,
}

async fn get_account(cx: &Cx<'_>, args: AccountId) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            &format!("SELECT {COLUMNS} FROM crm.accounts WHERE id = $1"),
            &[&args.id],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    Ok(json!({ "account": account_json(&row) }))
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

/// Escapes LIKE metacharacters so the query is matched literally.
fn like_pattern(query: &str) -> String {
    let mut escaped = String::with_capacity(query.len() + 2);
    escaped.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

async fn search_accounts(cx: &Cx<'_>, args: SearchAccounts) -> ToolResult {
    let limit = args.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ToolError::invalid_input(
            "limit",
            "limit must be between 1 and 200",
        ));
    }
    if args.query.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ToolError::invalid_input(
            "query",
            "query must be at most 200 characters",
        ));
    }
    let pattern = args
        .query
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(like_pattern);
    let after = args
        .cursor
        .as_deref()
        .map(|c| cursor::decode::<(String, Uuid)>("cursor", c))
        .transpose()?;
    let (after_name, after_id) = match after {
        Some((n, i)) => (Some(n), Some(i)),
        None => (None, None),
    };
    // One more row than asked tells us whether another page exists.
    let rows = cx
        .scope
        .query(
            SEARCH_SQL,
            &[&pattern, &after_name, &after_id, &(limit + 1)],
        )
        .await?;
    let has_more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next_cursor = if has_more {
        page.last()
            .map(|r| cursor::encode(&(r.get::<_, &str>("name"), r.get::<_, Uuid>("id"))))
    } else {
        None
    };
    Ok(json!({
        "accounts": page.iter().map(account_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "has_more": has_more,
    }))
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
    #[serde(default, deserialize_with = "double_option")]
    #[schemars(with = "Option<String>")]
    domain: Option<Option<String>>,
    /// Custom fields to set (merged into the existing ones; a null value removes that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

/// Distinguishes "absent" (None) from "null" (Some(None)).
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

async fn update_account(cx: &Cx<'_>, args: UpdateAccount) -> ToolResult {
    if let Some(name) = &args.name {
        check_name("name", name)?;
    }
    if let Some(Some(domain)) = &args.domain {
        check_domain(domain)?;
    }
    let (remove, set): (Vec<_>, Vec<_>) = args
        .custom
        .unwrap_or_default()
        .into_iter()
        .partition(|(_, v)| v.is_null());
    let remove: Vec<String> = remove.into_iter().map(|(k, _)| k).collect();
    let set = Value::Object(set.into_iter().collect());
    let row = cx
        .scope
        .query_opt(
            &format!(
                "UPDATE crm.accounts SET
                    name = coalesce($2, name),
                    domain = CASE WHEN $3 THEN $4 ELSE domain END,
                    custom = (custom || $5::jsonb) - $6::text[],
                    updated_at = $7
                 WHERE id = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &args.id,
                &args.name.as_deref().map(str::trim),
                &args.domain.is_some(),
                &args.domain.flatten(),
                &set,
                &remove,
                &cx.app.clock.now(),
            ],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    Ok(json!({ "account": account_json(&row) }))
}

async fn delete_account(cx: &Cx<'_>, args: AccountId) -> ToolResult {
    let deleted = cx
        .scope
        .execute("DELETE FROM crm.accounts WHERE id = $1", &[&args.id])
        .await?;
    if deleted == 0 {
        return Err(not_found(args.id));
    }
    Ok(json!({ "id": args.id, "deleted": true }))
}
