//! Contacts: the people in the address book, with their organisation, tags and custom fields;
//! merging duplicates and tagging many at once.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{HERE, organisations};
use crate::identity::{Product, Role};
use crate::tools::custom_fields::{self, Entity};
use crate::tools::named::{self, IdArg};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

pub(super) const ENTITY: Entity = Entity {
    product: Product::Contacts,
    name: "contact",
    table: "contacts",
};

/// Most contacts `tag_contacts` changes in one call.
const MAX_TAGGED: usize = 200;

/// The contact tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "create_contact",
            "Add a person to the address book: name, and optionally email (unique in the workspace, whatever \
             its case), phone, organisation (an id from search_organisations), tags and custom fields. A taken \
             email is a conflict naming the contact that has it (`existing_id`).",
            HERE,
            Role::Member,
            Effect::Write,
            create_contact,
        )
        .custom_fields(ENTITY),
        ToolDef::new(
            "get_contact",
            "Fetch one contact by id, with its organisation's name.",
            HERE,
            Role::Reader,
            Effect::Read,
            get_contact,
        ),
        ToolDef::new(
            "search_contacts",
            "Search contacts by a case-insensitive match on name or email (omit query to list all), optionally \
             only those with a tag or at an organisation, ordered by name. Returns up to `limit` (default 50, \
             max 200) and a `next_cursor` to pass back for the next page.",
            HERE,
            Role::Reader,
            Effect::Read,
            search_contacts,
        ),
        ToolDef::new(
            "update_contact",
            "Change a contact's name, email, phone, organisation, tags or custom fields (only the fields you \
             pass). Pass null to clear email, phone, organisation or a custom field. `tags` replaces the list; \
             tag_contacts adds or removes single tags.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            update_contact,
        )
        .custom_field_changes(ENTITY),
        ToolDef::new(
            "delete_contact",
            "Delete a contact by id.",
            HERE,
            Role::Member,
            Effect::Destructive,
            delete_contact,
        ),
        ToolDef::new(
            "merge_contacts",
            "Merge a duplicate contact (merge_id) into another (keep_id), then delete the duplicate. The kept \
             contact gains the duplicate's tags and custom values (its own values win where both have one) and \
             takes its email, phone and organisation where it has none.",
            HERE,
            Role::Member,
            Effect::Destructive,
            merge_contacts,
        ),
        ToolDef::new(
            "tag_contacts",
            "Add and/or remove tags on up to 200 contacts at once. If any id is not a contact in this \
             workspace, nothing changes and the error lists the unknown ids (`missing_ids`).",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            tag_contacts,
        ),
    ]
}

/// A contact as tools show it, from a row source aliased `c` joined to its organisation `o`
/// (see [`with_organisation`]).
const SHOW: &str = "c.id, c.name, c.email, c.phone, c.organisation_id, o.name AS organisation_name, \
                    c.tags, c.custom, c.created_at, c.updated_at";
/// Joins a contact row source `c` to its organisation's name. An organisation is a tenant
/// table like the contact's, so the join carries workspace_id; and it names the workspace
/// (parameter `$n`), as the statement's other parts do, so Citus runs the whole statement on
/// the workspace's shard (with a modifying CTE whose shard it cannot tell, Citus 13.2.2's
/// coordinator crashes planning the outer join).
fn with_organisation(n: usize) -> String {
    format!(
        "LEFT JOIN contacts.organisations o \
         ON o.workspace_id = ${n} AND o.workspace_id = c.workspace_id AND o.id = c.organisation_id"
    )
}

fn contact_json(row: &Row) -> Value {
    let ts = |name: &str| timestamp(Some(row.get::<_, OffsetDateTime>(name)));
    json!({
        "id": row.get::<_, Uuid>("id"),
        "name": row.get::<_, &str>("name"),
        "email": row.get::<_, Option<&str>>("email"),
        "phone": row.get::<_, Option<&str>>("phone"),
        "organisation_id": row.get::<_, Option<Uuid>>("organisation_id"),
        "organisation_name": row.get::<_, Option<&str>>("organisation_name"),
        "tags": row.get::<_, Vec<String>>("tags"),
        "custom": row.get::<_, Value>("custom"),
        "created_at": ts("created_at"),
        "updated_at": ts("updated_at"),
    })
}

fn not_found(id: Uuid) -> ToolError {
    named::not_found("contact", id)
}

/// A phone number as written (1 to 50 characters).
pub(super) fn phone(path: &str, value: &str) -> Result<String, ToolError> {
    named::text(path, value, 1, 50)
}

/// Names the database refusals a contact write can still meet after its checks: an email
/// taken by a concurrent call (the unique index), or more than 50 tags (the check).
pub(super) fn refine(error: ToolError, tags_path: &str) -> ToolError {
    match error.db_constraint().as_deref() {
        Some("contacts_email") => {
            ToolError::conflict("another contact has this email (it was just added); retry")
                .with("path", "email")
        }
        Some("contacts_tags_check") => {
            ToolError::invalid_input(tags_path, "a contact has at most 50 tags")
        }
        _ => error,
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateContact {
    /// The person's name, e.g. "Ada Lovelace".
    name: String,
    /// Their email address; unique in the workspace, whatever its case.
    #[serde(default)]
    email: Option<String>,
    /// Their phone number as written, e.g. "+44 20 7946 0000".
    #[serde(default)]
    phone: Option<String>,
    /// The organisation they belong to (an id from search_organisations or create_organisation).
    #[serde(default)]
    organisation_id: Option<Uuid>,
    /// Tags, e.g. ["investor", "speaker"].
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn create_contact(cx: &Cx<'_>, args: CreateContact) -> ToolResult {
    let name = named::text("name", &args.name, 1, 500)?;
    let email = args
        .email
        .as_deref()
        .map(|e| named::email("email", e))
        .transpose()?;
    let phone = args
        .phone
        .as_deref()
        .map(|p| phone("phone", p))
        .transpose()?;
    let tags = named::tags("tags", args.tags.as_deref().unwrap_or_default())?;
    if let Some(organisation) = args.organisation_id {
        organisations::exists(cx, "organisation_id", organisation).await?;
    }
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, false).await?;
    let now = cx.app.clock.now();
    // DO NOTHING on a taken email, so the transaction stays usable to name the holder.
    let row = cx
        .scope
        .query_opt(
            &format!(
                "WITH c AS (
                     INSERT INTO contacts.contacts
                         (workspace_id, id, name, email, phone, organisation_id, tags, custom,
                          created_at, updated_at)
                     VALUES ($9, $1, $2, $3, $4, $5, $6, $7, $8, $8)
                     ON CONFLICT (workspace_id, lower(email)) WHERE email IS NOT NULL DO NOTHING
                     RETURNING *
                 )
                 SELECT {SHOW} FROM c {}",
                with_organisation(9)
            ),
            &[
                &Uuid::now_v7(),
                &name,
                &email,
                &phone,
                &args.organisation_id,
                &tags,
                &Value::Object(custom),
                &now,
                &cx.scope.workspace(),
            ],
        )
        .await
        .map_err(|e| refine(e, "tags"))?;
    match (row, email) {
        (Some(row), _) => Ok(
            json!({ "contact": custom_fields::render_one(cx, ENTITY, &row, contact_json).await? }),
        ),
        (None, Some(email)) => {
            match named::email_holder(cx, "contacts.contacts", &email, None).await? {
                Some(existing) => Err(named::email_taken("contact", existing)),
                // The holder went between the two statements: the caller can simply retry.
                None => Err(ToolError::conflict(
                    "another contact had this email a moment ago; retry",
                )),
            }
        }
        (None, None) => Err(ToolError::internal(
            "contact insert without an email did nothing",
        )),
    }
}

async fn get_contact(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    let row = cx
        .scope
        .query_opt(
            &format!(
                "SELECT {SHOW} FROM contacts.contacts c {} WHERE c.workspace_id = $2 AND c.id = $1",
                with_organisation(2)
            ),
            &[&args.id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| not_found(args.id))?;
    Ok(json!({ "contact": custom_fields::render_one(cx, ENTITY, &row, contact_json).await? }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SearchContacts {
    /// Text to find in the name or email (case-insensitive). Omit to list every contact.
    #[serde(default)]
    query: Option<String>,
    /// Only contacts with this tag (exact match).
    #[serde(default)]
    tag: Option<String>,
    /// Only contacts at this organisation.
    #[serde(default)]
    organisation_id: Option<Uuid>,
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
    // An unknown organisation is a mistake worth naming, not an empty page.
    if let Some(organisation) = args.organisation_id {
        organisations::exists(cx, "organisation_id", organisation).await?;
    }
    // The same filters over the first rows after the cursor, then over every row if those
    // did not fill the page (named::search_rows).
    let filters = "($1::text IS NULL OR c.name ILIKE $1 OR c.email ILIKE $1)
                   AND ($2::text IS NULL OR c.tags @> ARRAY[$2::text])
                   AND ($3::uuid IS NULL OR c.organisation_id = $3)";
    let head = format!(
        "SELECT {SHOW}
         FROM (SELECT * FROM contacts.contacts c
               WHERE c.workspace_id = $7 AND (c.name, c.id) > ($4, $5::uuid)
               ORDER BY c.name, c.id
               LIMIT 128) c {}
         WHERE {filters}
         ORDER BY c.name, c.id
         LIMIT $6",
        with_organisation(7)
    );
    let whole = format!(
        "SELECT {SHOW} FROM contacts.contacts c {}
         WHERE c.workspace_id = $7 AND {filters}
           AND (c.name, c.id) > ($4, $5::uuid)
         ORDER BY c.name, c.id
         LIMIT $6",
        with_organisation(7)
    );
    let rows = named::search_rows(
        cx,
        &head,
        &whole,
        &[
            &pattern,
            &tag,
            &args.organisation_id,
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
    /// A new name.
    #[serde(default)]
    name: Option<String>,
    /// A new email (unique in the workspace); null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    email: Option<Option<String>>,
    /// A new phone number; null clears it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<String>")]
    phone: Option<Option<String>>,
    /// A new organisation (an id from search_organisations); null unlinks it.
    #[serde(default, deserialize_with = "named::double_option")]
    #[schemars(with = "Option<Uuid>")]
    organisation_id: Option<Option<Uuid>>,
    /// The full new list of tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values to set (merged into the existing ones; a null value clears that field).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

async fn update_contact(cx: &Cx<'_>, args: UpdateContact) -> ToolResult {
    let name = named::opt_text("name", args.name.as_deref(), 500)?;
    let email = named::change(&args.email, |e| named::email("email", e))?;
    let phone = named::change(&args.phone, |p| phone("phone", p))?;
    let tags = args
        .tags
        .as_deref()
        .map(|t| named::tags("tags", t))
        .transpose()?;
    if let Some(Some(organisation)) = args.organisation_id {
        organisations::exists(cx, "organisation_id", organisation).await?;
    }
    let custom = args.custom.unwrap_or_default();
    custom_fields::check(cx, ENTITY, &custom, true).await?;
    if let Some(Some(email)) = &email {
        // An unknown id is not_found before any conflict it would have.
        let row = cx
            .scope
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM contacts.contacts WHERE id = $1) AS found,
                        (SELECT id FROM contacts.contacts WHERE lower(email) = $2 AND id <> $1 LIMIT 1) AS holder",
                &[&args.id, email],
            )
            .await?;
        if !row.get::<_, bool>("found") {
            return Err(not_found(args.id));
        }
        if let Some(holder) = row.get::<_, Option<Uuid>>("holder") {
            return Err(named::email_taken("contact", holder));
        }
    }
    let (set, clear) = named::custom_changes(custom);
    let row = cx
        .scope
        .query_opt(
            &format!(
                "WITH c AS (
                     UPDATE contacts.contacts SET
                        name = coalesce($2, name),
                        email = CASE WHEN $3 THEN $4 ELSE email END,
                        phone = CASE WHEN $5 THEN $6 ELSE phone END,
                        organisation_id = CASE WHEN $7 THEN $8 ELSE organisation_id END,
                        tags = coalesce($9, tags),
                        custom = (custom || $10::jsonb) - $11::text[],
                        updated_at = $12
                     WHERE workspace_id = $13 AND id = $1
                     RETURNING *
                 )
                 SELECT {SHOW} FROM c {}",
                with_organisation(13)
            ),
            &[
                &args.id,
                &name,
                &email.is_some(),
                &email.flatten(),
                &phone.is_some(),
                &phone.flatten(),
                &args.organisation_id.is_some(),
                &args.organisation_id.flatten(),
                &tags,
                &set,
                &clear,
                &cx.app.clock.now(),
                &cx.scope.workspace(),
            ],
        )
        .await
        .map_err(|e| refine(e, "tags"))?
        .ok_or_else(|| not_found(args.id))?;
    Ok(json!({ "contact": custom_fields::render_one(cx, ENTITY, &row, contact_json).await? }))
}

async fn delete_contact(cx: &Cx<'_>, args: IdArg) -> ToolResult {
    named::delete_by_id(cx, "contacts.contacts", "contact", args.id).await
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MergeContacts {
    /// The contact to keep.
    keep_id: Uuid,
    /// The duplicate to fold into it; it is deleted.
    merge_id: Uuid,
}

async fn merge_contacts(cx: &Cx<'_>, args: MergeContacts) -> ToolResult {
    if args.keep_id == args.merge_id {
        return Err(ToolError::invalid_input(
            "merge_id",
            "keep_id and merge_id are the same contact",
        ));
    }
    // Locked in id order, so two merges of the same pair cannot deadlock.
    let rows = cx
        .scope
        .query(
            "SELECT id, email, phone, organisation_id, tags, custom FROM contacts.contacts
             WHERE workspace_id = $2 AND id = ANY($1) ORDER BY id FOR UPDATE",
            &[&vec![args.keep_id, args.merge_id], &cx.scope.workspace()],
        )
        .await?;
    let find = |id: Uuid, path: &str| {
        rows.iter()
            .find(|r| r.get::<_, Uuid>("id") == id)
            .ok_or_else(|| not_found(id).with("path", path))
    };
    let keep = find(args.keep_id, "keep_id")?;
    let merge = find(args.merge_id, "merge_id")?;

    let mut tags: Vec<String> = keep.get("tags");
    for tag in merge.get::<_, Vec<String>>("tags") {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > 50 {
        return Err(ToolError::invalid_input(
            "merge_id",
            format!(
                "together the two contacts have {} tags and a contact has at most 50; remove some with \
                 tag_contacts first",
                tags.len()
            ),
        ));
    }
    let mut filled = Vec::new();
    for field in ["email", "phone"] {
        if keep.get::<_, Option<&str>>(field).is_none()
            && merge.get::<_, Option<&str>>(field).is_some()
        {
            filled.push(field);
        }
    }
    if keep.get::<_, Option<Uuid>>("organisation_id").is_none()
        && merge.get::<_, Option<Uuid>>("organisation_id").is_some()
    {
        filled.push("organisation_id");
    }

    // The duplicate goes first: its email must leave the unique index before the kept
    // contact takes it.
    cx.scope
        .execute(
            "DELETE FROM contacts.contacts WHERE workspace_id = $2 AND id = $1",
            &[&args.merge_id, &cx.scope.workspace()],
        )
        .await?;
    let row = cx
        .scope
        .query_one(
            &format!(
                "WITH c AS (
                     UPDATE contacts.contacts SET
                        email = coalesce(email, $2),
                        phone = coalesce(phone, $3),
                        organisation_id = coalesce(organisation_id, $4),
                        tags = $5,
                        custom = $6::jsonb || custom,
                        updated_at = $7
                     WHERE workspace_id = $8 AND id = $1
                     RETURNING *
                 )
                 SELECT {SHOW} FROM c {}",
                with_organisation(8)
            ),
            &[
                &args.keep_id,
                &merge.get::<_, Option<&str>>("email"),
                &merge.get::<_, Option<&str>>("phone"),
                &merge.get::<_, Option<Uuid>>("organisation_id"),
                &tags,
                &merge.get::<_, Value>("custom"),
                &cx.app.clock.now(),
                &cx.scope.workspace(),
            ],
        )
        .await?;
    Ok(json!({
        "contact": custom_fields::render_one(cx, ENTITY, &row, contact_json).await?,
        "merged_id": args.merge_id,
        "filled": filled,
    }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TagContacts {
    /// The contacts' ids, 1 to 200.
    #[schemars(length(min = 1, max = 200))]
    ids: Vec<Uuid>,
    /// Tags to add (kept once; existing tags keep their order).
    #[serde(default)]
    add: Option<Vec<String>>,
    /// Tags to remove.
    #[serde(default)]
    remove: Option<Vec<String>>,
}

/// A contact's tags with `$2` added (once, after the existing ones) and `$3` removed.
const RETAGGED: &str = "ARRAY(SELECT t FROM unnest(tags || $2::text[]) WITH ORDINALITY AS u(t, n)
                             WHERE t <> ALL($3::text[]) GROUP BY t ORDER BY min(n))";

async fn tag_contacts(cx: &Cx<'_>, args: TagContacts) -> ToolResult {
    let mut seen = HashSet::new();
    let ids: Vec<Uuid> = args.ids.into_iter().filter(|id| seen.insert(*id)).collect();
    if ids.is_empty() || ids.len() > MAX_TAGGED {
        return Err(ToolError::invalid_input(
            "ids",
            format!("pass 1 to {MAX_TAGGED} contact ids"),
        ));
    }
    let add = named::tags("add", args.add.as_deref().unwrap_or_default())?;
    let remove = named::tags("remove", args.remove.as_deref().unwrap_or_default())?;
    if add.is_empty() && remove.is_empty() {
        return Err(ToolError::invalid_input(
            "add",
            "pass tags to add, to remove, or both",
        ));
    }
    if let Some(i) = remove.iter().position(|t| add.contains(t)) {
        return Err(ToolError::invalid_input(
            &format!("remove[{i}]"),
            "a tag cannot be both added and removed",
        ));
    }
    let found: HashSet<Uuid> = cx
        .scope
        .query(
            "SELECT id FROM contacts.contacts WHERE id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains(id))
        .map(Uuid::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(ToolError::not_found(format!(
            "{} of the ids are not contacts in this workspace; nothing was changed",
            missing.len()
        ))
        .with("path", "ids")
        .with("missing_ids", missing));
    }
    // One statement for every contact; rows whose tags would not change are left alone.
    let changed = cx
        .scope
        .query(
            &format!(
                "UPDATE contacts.contacts SET tags = {RETAGGED}, updated_at = $4
                 WHERE id = ANY($1) AND tags IS DISTINCT FROM {RETAGGED}
                 RETURNING id"
            ),
            &[&ids, &add, &remove, &cx.app.clock.now()],
        )
        .await
        .map_err(|e| refine(e, "add"))?;
    let changed: Vec<Uuid> = changed.iter().map(|r| r.get("id")).collect();
    Ok(json!({
        "matched": ids.len(),
        "changed": changed.len(),
        "changed_ids": changed,
    }))
}
