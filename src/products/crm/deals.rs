//! CRM deals: opportunities with an amount, moving through the pipeline's stages, each move
//! recorded in their stage history.

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Iso8601;
use time::{Date, OffsetDateTime};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Record, pipeline};
use crate::identity::{Endpoint, Product, Role};
use crate::tools::custom_fields::{self, Entity};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Crm);
const ENTITY: Entity = Entity {
    product: Product::Crm,
    name: "deal",
    table: "deals",
};

/// Most stage moves `get_deal` shows (the latest ones).
const HISTORY_SHOWN: i64 = 100;

/// The deal tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_deal",
            "Create a deal: name, and optionally its account, contact, amount (a number or a decimal string \
             like \"1250.50\", at most 2 decimals) and currency (ISO 4217, default USD), stage (default: the \
             first open stage), expected close date (YYYY-MM-DD), owner (a member's user id) and custom fields. \
             The starting stage is recorded in the deal's stage history.",
            HERE,
            Role::Member,
            Effect::Write,
            create_deal,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "get_deal",
            "Fetch one deal by id, with its stage history (the latest 100 moves, oldest first: from, to, who, \
             when).",
            HERE,
            Role::Reader,
            Effect::Read,
            get_deal,
        ),
        ToolDef::new(
            "search_deals",
            "Search deals by a case-insensitive match on name, and/or by stage, account, owner or a close date \
             before a given day (omit everything to list all), ordered by name. Returns up to `limit` (default \
             50, max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            search_deals,
        ),
        ToolDef::new(
            "update_deal",
            "Change a deal's name, account, contact, amount, currency, close date, owner or custom fields (only \
             the fields you pass; null clears an optional one). To change its stage use move_deal_stage.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_deal,
        )
        .custom_field_changes(ENTITY),
        ToolDef::new(
            "delete_deal",
            "Delete a deal by id, with its stage history and notes.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_deal,
        ),
        ToolDef::new(
            "move_deal_stage",
            "Move a deal to another stage of the pipeline (see list_pipeline_stages). The move is recorded in \
             the deal's stage history with who made it and when; moving to the stage it is in changes nothing.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            move_deal_stage,
        ),
    ]
}

const COLUMNS: &str = "id, name, account_id, contact_id, amount::text AS amount, currency, stage, \
     close_date::text AS close_date, owner, custom, created_at, updated_at, stage_changed_at";

/// Optional filters, keyset after (name, id) on the `deals_name` index, one extra row to detect
/// another page.
/// The head of the search (see `named::search_rows`): the same filters over the first rows
/// of the workspace after the cursor, in (name, id) order.
const SEARCH_HEAD_SQL: &str =
    "SELECT id, name, account_id, contact_id, amount::text AS amount, currency, stage,
            close_date::text AS close_date, owner, custom, created_at, updated_at, stage_changed_at
     FROM (
       SELECT id, name, account_id, contact_id, amount, currency, stage, close_date, owner, custom,
              created_at, updated_at, stage_changed_at
       FROM crm.deals
       WHERE workspace_id = $9 AND (name, id) > ($6, $7::uuid)
       ORDER BY name, id
       LIMIT 128) head
     WHERE ($1::text IS NULL OR name ILIKE $1)
       AND ($2::text IS NULL OR stage = $2)
       AND ($3::uuid IS NULL OR account_id = $3)
       AND ($4::uuid IS NULL OR owner = $4)
       AND ($5::date IS NULL OR close_date < $5)
     ORDER BY name, id
     LIMIT $8";

const SEARCH_SQL: &str =
    "SELECT id, name, account_id, contact_id, amount::text AS amount, currency, stage,
            close_date::text AS close_date, owner, custom, created_at, updated_at, stage_changed_at
     FROM crm.deals
     WHERE workspace_id = $9 AND ($1::text IS NULL OR name ILIKE $1)
       AND ($2::text IS NULL OR stage = $2)
       AND ($3::uuid IS NULL OR account_id = $3)
       AND ($4::uuid IS NULL OR owner = $4)
       AND ($5::date IS NULL OR close_date < $5)
       AND (name, id) > ($6, $7::uuid)
     ORDER BY name, id
     LIMIT $8";

fn deal_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(Some(row.get::<_, OffsetDateTime>(name)));
    json!({
        "id": row.get::<_, Uuid>("id"),
        "name": row.get::<_, &str>("name"),
        "account_id": row.get::<_, Option<Uuid>>("account_id"),
        "contact_id": row.get::<_, Option<Uuid>>("contact_id"),
        "amount": row.get::<_, Option<&str>>("amount"),
        "currency": row.get::<_, &str>("currency"),
        "stage": row.get::<_, &str>("stage"),
        "close_date": row.get::<_, Option<&str>>("close_date"),
        "owner": row.get::<_, Option<Uuid>>("owner"),
        "custom": row.get::<_, Value>("custom"),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
        "stage_changed_at": ts("stage_changed_at"),
    })
}

fn not_found(id: Uuid) -> ToolError {
    named::not_found("deal", id)
}

/// The digits a numeric(18, 2) holds before the decimal point.
const AMOUNT_DIGITS: usize = 16;

/// An amount as the decimal text PostgreSQL parses exactly: ≥ 0, at most 2 decimals, and
/// within numeric(18, 2). A JSON number is taken as written (Rust prints floats without an
/// exponent, in the shortest form that reads back the same), so 12.5 stays "12.5".
fn amount(path: &str, value: &Value) -> Result<String, ToolError> {
    let bad = || {
        ToolError::invalid_input(
            path,
            format!(
                "{path} must be a number or decimal string ≥ 0 with at most 2 decimals and at most \
                 {AMOUNT_DIGITS} digits before the point, e.g. 1250.50"
            ),
        )
    };
    let text = match value {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) if f.is_finite() => f.to_string(),
            _ => return Err(bad()),
        },
        Value::String(s) => s.trim().to_owned(),
        _ => return Err(bad()),
    };
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text.as_str(), None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let ok = !whole.is_empty()
        && digits(whole)
        && whole.trim_start_matches('0').len() <= AMOUNT_DIGITS
        && fraction.is_none_or(|f| (1..=2).contains(&f.len()) && digits(f));
    if ok { Ok(text) } else { Err(bad()) }
}

/// A currency code: three letters (ISO 4217, e.g. USD, EUR), uppercased.
fn currency(value: &str) -> Result<String, ToolError> {
    let code = value.trim().to_ascii_uppercase();
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(ToolError::invalid_input(
            "currency",
            "currency is a three-letter ISO 4217 code, e.g. USD or EUR",
        ))
    }
}

/// A calendar day written YYYY-MM-DD.
fn date(path: &str, value: &str) -> Result<Date, ToolError> {
    let value = value.trim();
    (value.len() == 10)
        .then(|| Date::parse(value, &Iso8601::DATE).ok())
        .flatten()
        .ok_or_else(|| ToolError::invalid_input(path, "expected a date like 2026-03-31"))
}

fn amount_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "number", "minimum": 0 },
            { "type": "string", "pattern": "^[0-9]{1,16}(\\.[0-9]{1,2})?$" }
        ]
    })
}

fn nullable_amount_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "number", "minimum": 0 },
            { "type": "string", "pattern": "^[0-9]{1,16}(\\.[0-9]{1,2})?$" },
            { "type": "null" }
        ]
    })
}

/// Who made a change, as the stage history records it: the person behind an OAuth connection
/// (`user:<uuid>`), else the credential.
fn actor(cx: &Cx<'_>) -> String {
    cx.principal.author_id()
}

async fn record_move(
    cx: &Cx<'_>,
    deal: Uuid,
    from: Option<&str>,
    to: &str,
    at: OffsetDateTime,
) -> Result<(), ToolError> {
    cx.scope
        .execute(
            "INSERT INTO crm.deal_stage_history (id, deal_id, from_stage, to_stage, changed_by, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&Uuid::now_v7(), &deal, &from, &to, &actor(cx), &at],
        )
        .await?;
    Ok(())
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateDeal {
    /// The deal's name, e.g. "Acme — 50 seats".
    name: String,
    /// The account it is with (an id from search_accounts).
    #[serde(default)]
    account_id: Option<Uuid>,
    /// The main contact (an id from search_contacts).
    #[serde(default)]
    contact_id: Option<Uuid>,
    /// Its value: a number or decimal string ≥ 0 with at most 2 decimals, e.g. "1250.50".
    #[serde(default)]
    #[schemars(schema_with = "amount_schema")]
    amount: Option<Value>,
    /// The amount's currency, an ISO 4217 code (default "USD").
    #[serde(default)]
    currency: Option<String>,
    /// The stage it starts in (see list_pipeline_stages); default the first open stage.
    #[serde(default)]
    stage: Option<String>,
    /// The expected close date, YYYY-MM-DD.
    #[serde(default)]
    close_date: Option<String>,
    /// The member who owns the deal (a user id from list_members).
    #[serde(default)]
    owner: Option<Uuid>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_deal(cx: &Cx<'_>, args: CreateDeal) -> ToolResult {
    let name = named::text("name", &args.name, 1, 500)?;
    let amount = args
        .amount
        .as_ref()
        .filter(|a| !a.is_null())
        .map(|a| amount("amount", a))
        .transpose()?;
    let currency = currency(args.currency.as_deref().unwrap_or("USD"))?;
    let close_date = args
        .close_date
        .as_deref()
        .map(|d| date("close_date", d))
        .transpose()?;
    Record::Account
        .check_link(cx, "account_id", args.account_id)
        .await?;
    Record::Contact
        .check_link(cx, "contact_id", args.contact_id)
        .await?;
    if let Some(owner) = args.owner {
        named::member(cx, "owner", owner).await?;
    }
    let stage = match &args.stage {
        Some(stage) => {
            pipeline::check_stage(cx, "stage", stage).await?;
            stage.clone()
        }
        None => pipeline::first_open_stage(cx).await?,
    };
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false).await?;
    let id = Uuid::now_v7();
    let now = cx.app.clock.now();
    let row = cx
        .scope
        .query_one(
            &named::returning(
                "INSERT INTO crm.deals (id, name, account_id, contact_id, amount, currency, stage, close_date,
                                        owner, custom, created_at, updated_at, stage_changed_at)
                 VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7, $8, $9, $10, $11, $11, $11)",
                COLUMNS,
            ),
            &[
                &id,
                &name,
                &args.account_id,
                &args.contact_id,
                &amount,
                &currency,
                &stage,
                &close_date,
                &args.owner,
                &Value::Object(custom),
                &now,
            ],
        )
        .await?;
    record_move(cx, id, None, &stage, now).await?;
    let deal = custom_fields::render_one(cx, ENTITY, &row, deal_json).await?;
    Ok(json!({ "deal": deal }))
}

async fn get_deal(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            &format!("SELECT {COLUMNS} FROM crm.deals WHERE workspace_id = $2 AND id = $1"),
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let mut deal = custom_fields::render_one(cx, ENTITY, &row, deal_json).await?;
    let history = cx
        .scope
        .query(
            "SELECT from_stage, to_stage, changed_by, changed_at FROM (
                 SELECT id, from_stage, to_stage, changed_by, changed_at FROM crm.deal_stage_history
                 WHERE workspace_id = $3 AND deal_id = $1 ORDER BY changed_at DESC, id DESC LIMIT $2
             ) latest ORDER BY changed_at, id",
            &[&args.id, &HISTORY_SHOWN, &cx.scope.workspace()],
        )
        .await?;
    if let Some(object) = deal.as_object_mut() {
        object.insert(
            "stage_history".into(),
            Value::Array(
                history
                    .iter()
                    .map(|h| {
                        json!({
                            "from_stage": h.get::<_, Option<&str>>("from_stage"),
                            "to_stage": h.get::<_, &str>("to_stage"),
                            "changed_by": h.get::<_, &str>("changed_by"),
                            "changed_at": timestamp(Some(h.get("changed_at"))),
                        })
                    })
                    .collect(),
            ),
        );
    }
    Ok(json!({ "deal": deal }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchDeals {
    /// Text to find in the deal's name (case-insensitive). Omit to list every deal.
    #[serde(default)]
    query: Option<String>,
    /// Only deals in this stage.
    #[serde(default)]
    stage: Option<String>,
    /// Only deals with this account.
    #[serde(default)]
    account_id: Option<Uuid>,
    /// Only deals owned by this member (a user id).
    #[serde(default)]
    owner: Option<Uuid>,
    /// Only deals whose close date is earlier than this day (YYYY-MM-DD).
    #[serde(default)]
    closing_before: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn search_deals(cx: &Cx<'_>, args: SearchDeals) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let pattern = named::search_pattern(args.query.as_deref())?;
    let stage = named::opt_text("stage", args.stage.as_deref(), 40)?;
    let closing_before = args
        .closing_before
        .as_deref()
        .map(|d| date("closing_before", d))
        .transpose()?;
    let (after_name, after_id) = named::after_or_start(args.cursor.as_deref())?;
    let rows = named::search_rows(
        cx,
        SEARCH_HEAD_SQL,
        SEARCH_SQL,
        &[
            &pattern,
            &stage,
            &args.account_id,
            &args.owner,
            &closing_before,
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
        "deals",
        custom_fields::render(cx, ENTITY, page, deal_json).await?,
        next_cursor,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateDeal {
    /// The deal's id.
    id: Uuid,
    /// A new name.
    #[serde(default)]
    name: Option<String>,
    /// A new account (an id from search_accounts); null unlinks it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<Uuid>")]
    account_id: Option<Option<Uuid>>,
    /// A new main contact (an id from search_contacts); null unlinks it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<Uuid>")]
    contact_id: Option<Option<Uuid>>,
    /// A new amount (a number or decimal string ≥ 0, at most 2 decimals); null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(schema_with = "nullable_amount_schema")]
    amount: Option<Option<Value>>,
    /// A new currency (ISO 4217 code).
    #[serde(default)]
    currency: Option<String>,
    /// A new expected close date (YYYY-MM-DD); null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    close_date: Option<Option<String>>,
    /// A new owner (a member's user id); null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<Uuid>")]
    owner: Option<Option<Uuid>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn update_deal(cx: &Cx<'_>, args: UpdateDeal) -> ToolResult {
    let name = named::opt_text("name", args.name.as_deref(), 500)?;
    let amount = match &args.amount {
        Some(Some(a)) => Some(Some(amount("amount", a)?)),
        Some(None) => Some(None),
        None => None,
    };
    let currency = args.currency.as_deref().map(currency).transpose()?;
    let close_date = match &args.close_date {
        Some(Some(d)) => Some(Some(date("close_date", d)?)),
        Some(None) => Some(None),
        None => None,
    };
    Record::Account
        .check_link(cx, "account_id", args.account_id.flatten())
        .await?;
    Record::Contact
        .check_link(cx, "contact_id", args.contact_id.flatten())
        .await?;
    if let Some(Some(owner)) = args.owner {
        named::member(cx, "owner", owner).await?;
    }
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    let (set, clear) = named::custom_changes(custom);
    let row = cx
        .scope
        .query_opt(
            &named::returning(
                "UPDATE crm.deals SET
                    name = coalesce($2, name),
                    account_id = CASE WHEN $3 THEN $4 ELSE account_id END,
                    contact_id = CASE WHEN $5 THEN $6 ELSE contact_id END,
                    amount = CASE WHEN $7 THEN $8::text::numeric ELSE amount END,
                    currency = coalesce($9, currency),
                    close_date = CASE WHEN $10 THEN $11 ELSE close_date END,
                    owner = CASE WHEN $12 THEN $13 ELSE owner END,
                    custom = (custom || $14::jsonb) - $15::text[],
                    updated_at = $16
                 WHERE workspace_id = $17 AND id = $1",
                COLUMNS,
            ),
            &[
                &args.id,
                &name,
                &args.account_id.is_some(),
                &args.account_id.flatten(),
                &args.contact_id.is_some(),
                &args.contact_id.flatten(),
                &amount.is_some(),
                &amount.flatten(),
                &currency,
                &close_date.is_some(),
                &close_date.flatten(),
                &args.owner.is_some(),
                &args.owner.flatten(),
                &set,
                &clear,
                &cx.app.clock.now(),
                &cx.scope.workspace(),
            ],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    let deal = custom_fields::render_one(cx, ENTITY, &row, deal_json).await?;
    Ok(json!({ "deal": deal }))
}

async fn delete_deal(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    named::delete_by_id(cx, "crm.deals", "deal", args.id).await
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MoveStage {
    /// The deal's id.
    id: Uuid,
    /// The stage to move it to (see list_pipeline_stages).
    stage: String,
}

async fn move_deal_stage(cx: &Cx<'_>, args: MoveStage) -> ToolResult {
    // Locked, so concurrent moves of one deal are recorded one after the other, each from the
    // stage the previous one left.
    let from: String = cx
        .scope
        .query_opt(
            "SELECT stage FROM crm.deals WHERE workspace_id = $2 AND id = $1 FOR UPDATE",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?
        .get(0);
    pipeline::check_stage(cx, "stage", &args.stage).await?;
    let changed = from != args.stage;
    let row = if changed {
        let now = cx.app.clock.now();
        let row = cx
            .scope
            .query_one(
                &named::returning(
                    "UPDATE crm.deals SET stage = $2, stage_changed_at = $3, updated_at = $3
                     WHERE workspace_id = $4 AND id = $1",
                    COLUMNS,
                ),
                &[&args.id, &args.stage, &now, &cx.scope.workspace()],
            )
            .await?;
        record_move(cx, args.id, Some(&from), &args.stage, now).await?;
        row
    } else {
        cx.scope
            .query_one(
                &format!("SELECT {COLUMNS} FROM crm.deals WHERE workspace_id = $2 AND id = $1"),
                &[&args.id, &cx.scope.workspace()],
            )
            .await?
    };
    let deal = custom_fields::render_one(cx, ENTITY, &row, deal_json).await?;
    Ok(json!({ "deal": deal, "from_stage": from, "changed": changed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_decimals_within_numeric_18_2() {
        let ok = |v: Value| amount("amount", &v).ok();
        assert_eq!(ok(json!(1250)).as_deref(), Some("1250"));
        assert_eq!(ok(json!(12.5)).as_deref(), Some("12.5"));
        assert_eq!(ok(json!(0.1)).as_deref(), Some("0.1"));
        assert_eq!(ok(json!("1250.50")).as_deref(), Some("1250.50"));
        assert_eq!(ok(json!(1e15)).as_deref(), Some("1000000000000000"));
        assert_eq!(
            ok(json!("9999999999999999.99")).as_deref(),
            Some("9999999999999999.99")
        );
        assert_eq!(ok(json!("0007.5")).as_deref(), Some("0007.5"));
        for bad in [
            json!(-1),
            json!(1.005),
            json!("1.234"),
            json!("10000000000000000"),
            json!(1e16),
            json!("1e3"),
            json!("-0"),
            json!("1."),
            json!(".5"),
            json!(""),
            json!("12,50"),
            json!(true),
            json!([1]),
        ] {
            assert!(ok(bad.clone()).is_none(), "{bad} was accepted");
        }
        assert_eq!(currency(" eur ").unwrap(), "EUR");
        assert!(currency("EURO").is_err() && currency("E1R").is_err());
        assert!(date("d", "2026-02-30").is_err() && date("d", "2026-2-3").is_err());
    }
}
