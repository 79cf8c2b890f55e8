//! The webhook tools on the concierge: subscribe (a standing credential, bound by the one
//! that makes it), list, rotate the signing secret, unsubscribe, see and redeliver
//! deliveries, enable a disabled subscription.
//!
//! Who manages which: every tool needs member or higher. Members see and manage the
//! subscriptions they made (the same person over any of their connections, or the same
//! key); admins and owners see and manage every subscription of the workspace.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use url::Url;
use uuid::Uuid;

use crate::audit::actions;
use crate::credentials;
use crate::identity::{Endpoint, Product, Role};
use crate::net::fetch::{self, FetchError};
use crate::tools::named::{self, NoArgs};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};
use crate::webhooks::{MAX_SUBSCRIPTIONS, signing};

const HERE: Endpoint = Endpoint::Concierge;

/// The webhook tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "subscribe_webhook",
            "Subscribe an HTTPS endpoint to this workspace's record changes in one product (crm, support or \
             contacts): insert, update and/or delete events, optionally only some tables. Each change is POSTed \
             as JSON signed with HMAC-SHA256 (X-Hdls-Signature: v1=<hex> over the raw body, plus Standard \
             Webhooks headers) and carries x-hdls-event-id; delivery is at least once, so deduplicate on it. \
             Returns the signing secret ONCE: store it now. The subscription is bound by your credential: \
             revoking that credential disables it. Needs member or higher.",
            HERE,
            Role::Member,
            Effect::Write,
            subscribe_webhook,
        )
        .audited(actions::WEBHOOK_SUBSCRIBE),
        ToolDef::new(
            "list_webhooks",
            "List webhook subscriptions (yours; admins see all): target, product, events, tables, status and why \
             it was disabled, delivery counts and the last delivery's outcome. Never shows a signing secret. \
             Needs member or higher.",
            HERE,
            Role::Member,
            Effect::Read,
            list_webhooks,
        ),
        ToolDef::new(
            "rotate_webhook_secret",
            "Replace a subscription's signing secret. The new secret is returned ONCE; the old one stops \
             verifying from the very next delivery. Needs member or higher (your own subscriptions; admins any).",
            HERE,
            Role::Member,
            Effect::Write,
            rotate_webhook_secret,
        )
        .audited(actions::WEBHOOK_ROTATE),
        ToolDef::new(
            "unsubscribe_webhook",
            "Delete a webhook subscription and its pending deliveries. Needs member or higher (your own \
             subscriptions; admins any).",
            HERE,
            Role::Member,
            Effect::Destructive,
            unsubscribe_webhook,
        )
        .audited(actions::WEBHOOK_UNSUBSCRIBE),
        ToolDef::new(
            "list_webhook_deliveries",
            "A subscription's deliveries, newest first: event id, status (pending, delivered, failed), attempts, \
             the last response code, error and duration, and when the next attempt is due. Filter by status; page \
             with `cursor`. Needs member or higher.",
            HERE,
            Role::Member,
            Effect::Read,
            list_webhook_deliveries,
        ),
        ToolDef::new(
            "redeliver_webhook",
            "Send a delivery again (same event id and body), now, with a fresh set of retries. Needs member or \
             higher (your own subscriptions; admins any).",
            HERE,
            Role::Member,
            Effect::Write,
            redeliver_webhook,
        ),
        ToolDef::new(
            "enable_webhook",
            "Enable a subscription that was disabled (410 Gone, or failing for 5 days). Deliveries resume for \
             new changes; use redeliver_webhook for missed ones. One disabled because the credential that made \
             it was revoked cannot be enabled: subscribe again. Needs member or higher (your own; admins any).",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            enable_webhook,
        )
        .audited(actions::WEBHOOK_ENABLE),
    ]
}

/// A subscription id as shown: `whk_<uuid>`.
fn show_id(id: Uuid) -> String {
    format!("whk_{id}")
}

/// A delivery id as shown: `whd_<uuid>`.
fn show_delivery(id: Uuid) -> String {
    format!("whd_{id}")
}

fn parse_prefixed(path: &str, prefix: &str, text: &str) -> Result<Uuid, ToolError> {
    text.strip_prefix(prefix)
        .unwrap_or(text)
        .parse()
        .map_err(|_| ToolError::invalid_input(path, format!("expected an id like {prefix}0190…")))
}

/// Admins and owners manage every subscription; members their own.
fn sees_all(cx: &Cx<'_>) -> bool {
    cx.principal.role >= Role::Admin
}

/// Event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum EventType {
    Insert,
    Update,
    Delete,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Insert => "insert",
            EventType::Update => "update",
            EventType::Delete => "delete",
        }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SubscribeArgs {
    /// Where to POST events: an https URL (plain http only to a network the operator allowed).
    target_url: String,
    /// The product whose changes to send: crm, support or contacts.
    schema_name: Product,
    /// Which changes: any of insert, update, delete.
    event_types: Vec<EventType>,
    /// Only these tables of the product (e.g. ["accounts", "deals"]); omit for all.
    #[serde(default)]
    tables: Option<Vec<String>>,
    /// A note to recognise the subscription by.
    #[serde(default)]
    description: Option<String>,
}

/// Checks a target URL's shape and passes it through the outbound guard (as every delivery
/// does again).
async fn check_target(cx: &Cx<'_>, text: &str) -> Result<Url, ToolError> {
    let bad = |message: &str| ToolError::invalid_input("target_url", message);
    if text.len() > 2000 {
        return Err(bad("target_url must be at most 2000 characters"));
    }
    let url = Url::parse(text).map_err(|_| bad("target_url is not a valid absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(bad("target_url must use https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "target_url must not carry a user name or password; the signature authenticates hdls",
        ));
    }
    if url.fragment().is_some() {
        return Err(bad("target_url must not have a #fragment"));
    }
    match fetch::check_url(&cx.app.outbound, &url).await {
        Ok(_) => Ok(url),
        Err(FetchError::NotHttps) => Err(bad(
            "target_url must use https (plain http only to a network the operator allowed)",
        )),
        Err(error) => Err(bad(&error.to_string())),
    }
}

async fn subscribe_webhook(cx: &Cx<'_>, args: SubscribeArgs) -> ToolResult {
    let product = args.schema_name;
    if !cx.principal.has_product(product) {
        return Err(ToolError::forbidden(format!(
            "this credential does not reach the {} product (installed and granted), so it cannot subscribe to it",
            product.slug()
        ))
        .with("path", "schema_name"));
    }
    if args.event_types.is_empty() {
        return Err(ToolError::invalid_input(
            "event_types",
            "name at least one of insert, update, delete",
        ));
    }
    let mut event_types: Vec<&str> = args.event_types.iter().map(|e| e.as_str()).collect();
    event_types.sort_unstable();
    event_types.dedup();
    let tables = match &args.tables {
        None => None,
        Some(list) if list.is_empty() || list.len() > 50 => {
            return Err(ToolError::invalid_input(
                "tables",
                "name between 1 and 50 tables, or omit tables for all",
            ));
        }
        Some(list) => {
            let known: Vec<String> = cx
                .scope
                .query(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY 1",
                    &[&product.slug()],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for (i, table) in list.iter().enumerate() {
                if !known.contains(table) {
                    return Err(ToolError::invalid_input(
                        &format!("tables[{i}]"),
                        format!(
                            "the {} product has no table {table:?}; its tables are {}",
                            product.slug(),
                            known.join(", ")
                        ),
                    ));
                }
            }
            let mut list = list.clone();
            list.sort();
            list.dedup();
            Some(list)
        }
    };
    let description = named::opt_text("description", args.description.as_deref(), 500)?;
    let url = check_target(cx, &args.target_url).await?;
    let now = cx.app.clock.now();
    // A standing credential: bounded by (and recorded against) the one making it.
    let bounded = credentials::bound(cx.principal, Role::Member, Some(vec![product]), None, now)?;
    let count: i64 = cx
        .scope
        .query_one("SELECT count(*) FROM hdls.webhook_subscriptions", &[])
        .await?
        .get(0);
    if count >= MAX_SUBSCRIPTIONS {
        return Err(ToolError::conflict(format!(
            "this workspace already has {MAX_SUBSCRIPTIONS} webhook subscriptions; unsubscribe one first"
        )));
    }
    let id = Uuid::now_v7();
    let secret = signing::generate();
    let sealed = signing::seal(cx.app.keys.master(), cx.principal.workspace_id, id, &secret)?;
    cx.scope
        .execute(
            "INSERT INTO hdls.webhook_subscriptions
                (id, target_url, schema_name, event_types, tables, description, secret_sealed,
                 created_by, author, parent_key_id, parent_grant_id, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            &[
                &id,
                &url.as_str(),
                &product.slug(),
                &event_types,
                &tables,
                &description,
                &sealed,
                &cx.principal.credential.id,
                &cx.principal.author_id(),
                &bounded.parent_key_id(),
                &bounded.parent_grant_id(),
                &bounded.expires_at,
                &now,
            ],
        )
        .await?;
    cx.audit(&show_id(id)).await?;
    Ok(json!({
        "id": show_id(id),
        "target_url": url.as_str(),
        "schema_name": product,
        "event_types": event_types,
        "tables": tables,
        "description": description,
        "status": "active",
        "created_by": cx.principal.credential.id,
        "expires_at": timestamp(bounded.expires_at),
        "secret": secret,
        "notice": "This signing secret is shown once. Store it now; it cannot be retrieved again \
                   (rotate_webhook_secret makes a new one). Verify X-Hdls-Signature = \"v1=\" + \
                   hex(HMAC-SHA256(secret, raw body)) and deduplicate on x-hdls-event-id.",
    }))
}

const LIST_SQL: &str = "SELECT s.id, s.target_url, s.schema_name, s.event_types, s.tables, s.description,
            s.status, s.disabled_at, s.disabled_reason, s.failing_since, s.created_by, s.created_at,
            s.expires_at, s.secret_rotated_at,
            (SELECT count(*) FROM hdls.webhook_deliveries d
              WHERE d.workspace_id = s.workspace_id AND d.subscription_id = s.id AND d.status = 'delivered') AS delivered,
            (SELECT count(*) FROM hdls.webhook_deliveries d
              WHERE d.workspace_id = s.workspace_id AND d.subscription_id = s.id AND d.status = 'pending') AS pending,
            (SELECT count(*) FROM hdls.webhook_deliveries d
              WHERE d.workspace_id = s.workspace_id AND d.subscription_id = s.id AND d.status = 'failed') AS failed,
            (SELECT jsonb_build_object('delivery_id', d.id, 'event_id', d.event_id, 'status', d.status,
                                       'at', d.last_attempt_at, 'status_code', d.last_status_code,
                                       'error', d.last_error, 'duration_ms', d.last_duration_ms)
               FROM hdls.webhook_deliveries d
              WHERE d.workspace_id = s.workspace_id AND d.subscription_id = s.id
                AND d.last_attempt_at IS NOT NULL
              ORDER BY d.last_attempt_at DESC LIMIT 1) AS last_delivery
     FROM hdls.webhook_subscriptions s
     WHERE ($1 OR s.author = $2)
     ORDER BY s.created_at DESC, s.id";

async fn list_webhooks(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let rows = cx
        .scope
        .query(LIST_SQL, &[&sees_all(cx), &cx.principal.author_id()])
        .await?;
    let now = cx.app.clock.now();
    let subscriptions: Vec<Value> = rows
        .iter()
        .map(|r| {
            let expires_at: Option<OffsetDateTime> = r.get("expires_at");
            let status: &str = r.get("status");
            let status = if status == "active" && expires_at.is_some_and(|t| t <= now) {
                "expired"
            } else {
                status
            };
            let mut last: Option<Value> = r.get("last_delivery");
            if let Some(last) = last.as_mut()
                && let Some(id) = last["delivery_id"].as_str().and_then(|s| s.parse().ok())
            {
                last["delivery_id"] = json!(show_delivery(id));
            }
            json!({
                "id": show_id(r.get("id")),
                "target_url": r.get::<_, &str>("target_url"),
                "schema_name": r.get::<_, &str>("schema_name"),
                "event_types": r.get::<_, Vec<String>>("event_types"),
                "tables": r.get::<_, Option<Vec<String>>>("tables"),
                "description": r.get::<_, Option<&str>>("description"),
                "status": status,
                "disabled_at": timestamp(r.get("disabled_at")),
                "disabled_reason": r.get::<_, Option<&str>>("disabled_reason"),
                "failing_since": timestamp(r.get("failing_since")),
                "created_by": r.get::<_, &str>("created_by"),
                "created_at": timestamp(Some(r.get("created_at"))),
                "expires_at": timestamp(expires_at),
                "secret_rotated_at": timestamp(r.get("secret_rotated_at")),
                "deliveries": {
                    "delivered": r.get::<_, i64>("delivered"),
                    "pending": r.get::<_, i64>("pending"),
                    "failed": r.get::<_, i64>("failed"),
                },
                "last_delivery": last,
            })
        })
        .collect();
    Ok(json!({ "subscriptions": subscriptions }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionArg {
    /// The subscription's id as listed, e.g. "whk_0190…".
    id: String,
}

/// The subscription `id` if the caller may manage it, locked for the change.
async fn managed(cx: &Cx<'_>, id: &str) -> Result<(Uuid, tokio_postgres::Row), ToolError> {
    let id = parse_prefixed("id", "whk_", id)?;
    let row = cx
        .scope
        .query_opt(
            "SELECT s.author, s.status, s.disabled_reason, s.expires_at,
                    EXISTS (SELECT 1 FROM hdls.api_keys k WHERE k.workspace_id = $2
                              AND k.workspace_id = s.workspace_id
                              AND k.key_id = s.parent_key_id AND k.revoked_at IS NOT NULL)
                    OR EXISTS (SELECT 1 FROM hdls.oauth_grants g WHERE g.workspace_id = $2
                              AND g.workspace_id = s.workspace_id
                              AND g.grant_id = s.parent_grant_id AND g.revoked_at IS NOT NULL) AS maker_revoked
             FROM hdls.webhook_subscriptions s WHERE s.workspace_id = $2 AND s.id = $1 FOR UPDATE OF s",
            &[&id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| ToolError::not_found(format!("no webhook subscription {}", show_id(id))))?;
    if !sees_all(cx) && row.get::<_, &str>("author") != cx.principal.author_id() {
        return Err(ToolError::forbidden(
            "members manage only the webhook subscriptions they made; admins and owners manage any",
        ));
    }
    Ok((id, row))
}

async fn rotate_webhook_secret(cx: &Cx<'_>, args: SubscriptionArg) -> ToolResult {
    let (id, _) = managed(cx, &args.id).await?;
    let secret = signing::generate();
    let sealed = signing::seal(cx.app.keys.master(), cx.principal.workspace_id, id, &secret)?;
    cx.scope
        .execute(
            "UPDATE hdls.webhook_subscriptions SET secret_sealed = $2, secret_rotated_at = $3 WHERE id = $1",
            &[&id, &sealed, &cx.app.clock.now()],
        )
        .await?;
    cx.audit(&show_id(id)).await?;
    Ok(json!({
        "id": show_id(id),
        "secret": secret,
        "notice": "This signing secret is shown once; the previous one stops verifying from the next delivery.",
    }))
}

async fn unsubscribe_webhook(cx: &Cx<'_>, args: SubscriptionArg) -> ToolResult {
    let (id, _) = managed(cx, &args.id).await?;
    cx.scope
        .execute(
            "DELETE FROM hdls.webhook_subscriptions WHERE id = $1",
            &[&id],
        )
        .await?;
    cx.audit(&show_id(id)).await?;
    Ok(json!({ "id": show_id(id), "unsubscribed": true }))
}

async fn enable_webhook(cx: &Cx<'_>, args: SubscriptionArg) -> ToolResult {
    let (id, row) = managed(cx, &args.id).await?;
    if row.get::<_, bool>("maker_revoked") {
        return Err(ToolError::conflict(
            "the credential that made this subscription was revoked, so it stays disabled; subscribe again",
        ));
    }
    let expires_at: Option<OffsetDateTime> = row.get("expires_at");
    if expires_at.is_some_and(|t| t <= cx.app.clock.now()) {
        return Err(ToolError::conflict(
            "this subscription expired with the credential that made it; subscribe again",
        ));
    }
    if row.get::<_, &str>("status") != "active" {
        cx.scope
            .execute(
                "UPDATE hdls.webhook_subscriptions
                 SET status = 'active', disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
                 WHERE id = $1",
                &[&id],
            )
            .await?;
    }
    cx.audit(&show_id(id)).await?;
    Ok(json!({ "id": show_id(id), "status": "active" }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DeliveriesArgs {
    /// The subscription's id, e.g. "whk_0190…".
    id: String,
    /// Only deliveries with this status: pending, delivered or failed.
    #[serde(default)]
    status: Option<DeliveryStatus>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

async fn list_webhook_deliveries(cx: &Cx<'_>, args: DeliveriesArgs) -> ToolResult {
    let id = parse_prefixed("id", "whk_", &args.id)?;
    let limit = named::limit(args.limit)?;
    let before: Option<Uuid> = named::after(args.cursor.as_deref())?;
    let author: Option<String> = cx
        .scope
        .query_opt(
            "SELECT author FROM hdls.webhook_subscriptions WHERE id = $1",
            &[&id],
        )
        .await?
        .map(|r| r.get(0));
    match author {
        None => {
            return Err(ToolError::not_found(format!(
                "no webhook subscription {}",
                show_id(id)
            )));
        }
        Some(author) if !sees_all(cx) && author != cx.principal.author_id() => {
            return Err(ToolError::forbidden(
                "members see only the deliveries of webhook subscriptions they made",
            ));
        }
        Some(_) => {}
    }
    let rows = cx
        .scope
        .query(
            "SELECT id, event_id, status, attempts, next_attempt_at, last_attempt_at, last_status_code,
                    last_error, last_duration_ms, created_at, delivered_at
             FROM hdls.webhook_deliveries
             WHERE subscription_id = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
            &[
                &id,
                &args.status.map(DeliveryStatus::as_str),
                &before,
                &(limit + 1),
            ],
        )
        .await?;
    let (page, next_cursor) = named::page(&rows, limit, |r| r.get::<_, Uuid>("id"));
    let deliveries: Vec<Value> = page
        .iter()
        .map(|r| {
            let status: &str = r.get("status");
            json!({
                "delivery_id": show_delivery(r.get("id")),
                "event_id": r.get::<_, Uuid>("event_id"),
                "status": status,
                "attempts": r.get::<_, i32>("attempts"),
                "next_attempt_at": if status == "pending" { timestamp(Some(r.get("next_attempt_at"))) } else { Value::Null },
                "last_attempt_at": timestamp(r.get("last_attempt_at")),
                "last_status_code": r.get::<_, Option<i32>>("last_status_code"),
                "last_error": r.get::<_, Option<&str>>("last_error"),
                "last_duration_ms": r.get::<_, Option<i32>>("last_duration_ms"),
                "created_at": timestamp(Some(r.get("created_at"))),
                "delivered_at": timestamp(r.get("delivered_at")),
            })
        })
        .collect();
    Ok(json!({ "deliveries": deliveries, "next_cursor": next_cursor }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RedeliverArgs {
    /// The delivery's id as listed by list_webhook_deliveries, e.g. "whd_0190…".
    delivery_id: String,
}

async fn redeliver_webhook(cx: &Cx<'_>, args: RedeliverArgs) -> ToolResult {
    let delivery = parse_prefixed("delivery_id", "whd_", &args.delivery_id)?;
    let subscription: Uuid = cx
        .scope
        .query_opt(
            "SELECT subscription_id FROM hdls.webhook_deliveries WHERE id = $1",
            &[&delivery],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!("no webhook delivery {}", show_delivery(delivery)))
        })?
        .get(0);
    let (_, row) = managed(cx, &show_id(subscription)).await?;
    if row.get::<_, &str>("status") != "active" {
        return Err(ToolError::conflict(
            "the subscription is disabled; enable_webhook first",
        ));
    }
    cx.scope
        .execute(
            "UPDATE hdls.webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2
             WHERE id = $1",
            &[&delivery, &cx.app.clock.now()],
        )
        .await?;
    // The call path wakes this process's worker once the call commits (a write tool).
    Ok(json!({ "delivery_id": show_delivery(delivery), "status": "pending" }))
}
