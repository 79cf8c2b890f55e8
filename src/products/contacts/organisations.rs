//! Organisations: the companies and other bodies the people in the address book belong to.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::HERE;
use crate::identity::{Product, Role};
use crate::tools::custom_fields::{self, Entity};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

pub(super) const ENTITY: Entity = Entity {
    product: Product::Contacts,
    name: "organisation",
    table: "organisations",
};

/// The organisation tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_organisation",
            "Create an organisation (a company or other body people belong to): name, and optionally its web \
             domain and custom fields. Names need not be unique.",
            HERE,
            Role::Member,
            Effect::Write,
            create_organisation,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "search_organisations",
            "Search organisations by a case-insensitive match on name or domain (omit query to list all), ordered \
             by name, each with how many contacts it has. Returns up to `limit` (default 50, max 200) and a \
             `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            search_organisations,
        ),
        ToolDef::new(
            "update_organisation",
            "Change an organisation's name, domain or custom fields (only the fields you pass). Pass null to \
             clear the domain or a custom field.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_organisation,
        )
        .custom_field_changes(ENTITY),
        ToolDef::new(
            "delete_organisation",
            "Delete an organisation by id. Its contacts stay in the address book, no longer linked to it.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_organisation,
        ),
    ]
}

const COLUMNS: &str = "id, name, domain, custom, created_at, updated_at";

fn organisation_json(row: &Row) -> Value {
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

fn not_found(id: Uuid) -> ToolError {
    named::not_found("organisation", id)
}

/// Checks that organisation `id` is in this workspace, for tools that link a contact to it:
/// otherwise the foreign key would answer a vaguer `conflict`.
pub(super) async fn exists(cx: &Cx<'_>, path: &str, id: Uuid) -> Result<(), ToolError> {
    let found = cx
        .scope
        .query_opt("SELECT 1 FROM contacts.organisations WHERE id = $1", &[&id])
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(not_found(id).with("path", path)),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateOrganisation {
    /// The organisation's name, e.g. "Acme Robotics".
    name: String,
    /// Its web domain, e.g. "acme.example".
    #[serde(default)]
    domain: Option<String>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_organisation(cx: &Cx<'_>, args: CreateOrganisation) -> ToolResult {
    let name = named::text("name", &args.name, 1, 500)?;
    let domain = args
        .domain
        .as_deref()
        .map(|d| named::domain("domain", d))
        .transpose()?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false).await?;
    let row = cx
        .scope
        .query_one(
            &format!(
                "INSERT INTO contacts.organisations (id, name, domain, custom, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING {COLUMNS}"
            ),
            &[
                &Uuid::now_v7(),
                &name,
                &domain,
                &Value::Object(custom),
                &cx.app.clock.now(),
            ],
        )
        .await?;
    Ok(
        json!({ "organisation": custom_fields::render_one(cx, ENTITY, &row, organisation_json).await? }),
    )
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchOrganisations {
    /// Text to find in the name or domain (case-insensitive). Omit to list every organisation.
    #[serde(default)]
    query: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default)]
    limit: Option<i64>,
    /// The `next_cursor` from the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

async fn search_organisations(cx: &Cx<'_>, args: SearchOrganisations) -> ToolResult {
    let limit = named::limit(args.limit)?;
    let pattern = named::search_pattern(args.query.as_deref())?;
    let (after_name, after_id) = match named::after::<(String, Uuid)>(args.cursor.as_deref())? {
        Some((n, i)) => (Some(n), Some(i)),
        None => (None, None),
    };
    // The count is one index probe per shown organisation (contacts_organisation), at most 200.
    // One statement, not named::search_rows: Citus refuses the count's correlated subquery
    // beside a FROM subquery, and a workspace holds few organisations. It names the
    // workspace, so Citus runs it on the workspace's shard.
    let rows = cx
        .scope
        .query(
            "SELECT o.id, o.name, o.domain, o.custom, o.created_at, o.updated_at,
                    (SELECT count(*) FROM contacts.contacts c
                     WHERE c.workspace_id = o.workspace_id AND c.organisation_id = o.id) AS contacts_count
             FROM contacts.organisations o
             WHERE o.workspace_id = $5 AND ($1::text IS NULL OR o.name ILIKE $1 OR o.domain ILIKE $1)
               AND ($2::text IS NULL OR (o.name, o.id) > ($2, $3::uuid))
             ORDER BY o.name, o.id
             LIMIT $4",
            &[
                &pattern,
                &after_name,
                &after_id,
                &(limit + 1),
                &cx.scope.workspace(),
            ],
        )
        .await?;
    let (page, next_cursor) = named::page(&rows, limit, |r| {
        (r.get::<_, String>("name"), r.get::<_, Uuid>("id"))
    });
    let mut organisations = custom_fields::render(cx, ENTITY, page, organisation_json).await?;
    for (organisation, row) in organisations.iter_mut().zip(page) {
        if let Some(object) = organisation.as_object_mut() {
            object.insert(
                "contacts_count".into(),
                json!(row.get::<_, i64>("contacts_count")),
            );
        }
    }
    Ok(named::page_result(
        "organisations",
        organisations,
        next_cursor,
    ))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UpdateOrganisation {
    /// The organisation's id.
    id: Uuid,
    /// A new name.
    #[serde(default)]
    name: Option<String>,
    /// A new domain; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    domain: Option<Option<String>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn update_organisation(cx: &Cx<'_>, args: UpdateOrganisation) -> ToolResult {
    let name = named::opt_text("name", args.name.as_deref(), 500)?;
    let domain = named::change(&args.domain, |d| named::domain("domain", d))?;
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    let (set, clear) = named::custom_changes(custom);
    let row = cx
        .scope
        .query_opt(
            &format!(
                "UPDATE contacts.organisations SET
                    name = coalesce($2, name),
                    domain = CASE WHEN $3 THEN $4 ELSE domain END,
                    custom = (custom || $5::jsonb) - $6::text[],
                    updated_at = $7
                 WHERE id = $1
                 RETURNING {COLUMNS}"
            ),
            &[
                &args.id,
                &name,
                &domain.is_some(),
                &domain.flatten(),
                &set,
                &clear,
                &cx.app.clock.now(),
            ],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    Ok(
        json!({ "organisation": custom_fields::render_one(cx, ENTITY, &row, organisation_json).await? }),
    )
}

async fn delete_organisation(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    // Counted in the same statement, before the foreign key unlinks them.
    let row = cx
        .scope
        .query_one(
            // The workspace named in both parts, so on Citus the statement runs whole on
            // the workspace's shard, with one snapshot (as CTEs of one statement do); Citus
            // would otherwise run the parts one after the other and count after the delete.
            "WITH linked AS (
                 SELECT count(*) AS n FROM contacts.contacts
                 WHERE workspace_id = $2 AND organisation_id = $1
             ), gone AS (
                 DELETE FROM contacts.organisations WHERE workspace_id = $2 AND id = $1 RETURNING id
             )
             SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT n FROM linked) AS unlinked",
            &[&args.id, &cx.scope.workspace()],
        )
        .await?;
    if row.get::<_, i64>("deleted") == 0 {
        return Err(not_found(args.id));
    }
    Ok(json!({
        "id": args.id,
        "deleted": true,
        "contacts_unlinked": row.get::<_, i64>("unlinked"),
    }))
}
