//! `import_contacts`: many contacts at once, deduplicated by email.
//!
//! Every row is checked before anything is written. Rows with the same email (whatever its
//! case) fold into one contact in memory, then two statements write the whole import: one
//! finds or creates the organisations named, one upserts the contacts on the email index.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{HERE, people};
use crate::identity::Role;
use crate::tools::custom_fields::{self, Definition};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, args, named};

/// Most rows in one import.
const MAX_ROWS: usize = 500;

/// The import tool.
pub fn tools() -> Vec<ToolDef> {
    vec![ToolDef::new(
        "import_contacts",
        "Import up to 500 contacts in one go (all or nothing). Rows are matched by email, whatever its case: \
         a row whose email an existing contact (or an earlier row) has updates that contact with the fields \
         the row gives (tags are added to its tags); other rows create contacts. `organisation` is a name: an \
         organisation of that name (whatever its case) is used, or created. If any row is invalid nothing is \
         written and every bad row is listed; with skip_invalid: true the valid rows are imported and the \
         invalid ones reported. Returns counts of rows created, updated and skipped.",
        HERE,
        Role::Member,
        Effect::Write,
        import_contacts,
    )]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImportRow {
    /// The person's name.
    name: String,
    /// Their email: the key an import matches existing contacts on. Empty means none.
    #[serde(default)]
    email: Option<String>,
    /// Their phone number as written. Empty means none.
    #[serde(default)]
    phone: Option<String>,
    /// Their organisation's name, e.g. "Acme Robotics": found whatever its case, else created.
    #[serde(default)]
    organisation: Option<String>,
    /// Tags, added to the contact's existing ones.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom field values of the contact, by field name (see list_custom_fields).
    #[serde(default)]
    custom: Option<Map<String, Value>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ImportContacts {
    /// The contacts, 1 to 500 rows.
    #[schemars(with = "Vec<ImportRow>", length(min = 1, max = 500))]
    rows: Vec<Value>,
    /// Import the valid rows and report the invalid ones, instead of writing nothing when a
    /// row is invalid (default false).
    #[serde(default)]
    skip_invalid: bool,
}

/// One contact the import writes: one row, or several rows with the same email folded.
struct Entry {
    /// The id it gets if it is created.
    id: Uuid,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    organisation: Option<String>,
    tags: Vec<String>,
    custom: Map<String, Value>,
    /// The rows folded into it, in order.
    rows: Vec<usize>,
}

#[derive(Default)]
struct Plan {
    entries: Vec<Entry>,
    by_email: HashMap<String, usize>,
    /// Every organisation name the added rows give, in row order, each spelling once: a new
    /// organisation takes the first spelling in the file, even if a later row of the same
    /// contact spells it otherwise.
    organisations: Vec<String>,
}

impl Plan {
    /// Adds a checked row (see [`Plan::fold`]) and notes the organisation it names.
    fn add(&mut self, index: usize, row: Entry) -> Result<(), ToolError> {
        let organisation = row.organisation.clone();
        self.fold(index, row)?;
        if let Some(name) = organisation
            && !self.organisations.contains(&name)
        {
            self.organisations.push(name);
        }
        Ok(())
    }

    /// A new entry for the row, or the row folded into the earlier entry with its email: the
    /// row's given fields win, its tags and custom values are added. A row that cannot fold
    /// changes nothing.
    fn fold(&mut self, index: usize, row: Entry) -> Result<(), ToolError> {
        let Some(at) = row
            .email
            .as_ref()
            .and_then(|e| self.by_email.get(e))
            .copied()
        else {
            if let Some(email) = &row.email {
                self.by_email.insert(email.clone(), self.entries.len());
            }
            self.entries.push(Entry {
                rows: vec![index],
                ..row
            });
            return Ok(());
        };
        let entry = self
            .entries
            .get_mut(at)
            .ok_or_else(|| ToolError::internal("import plan lost an entry"))?;
        let mut tags = entry.tags.clone();
        for tag in row.tags {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if tags.len() > 50 {
            return Err(ToolError::invalid_input(
                "tags",
                "with the earlier rows of this email, the contact would have more than 50 tags",
            ));
        }
        entry.tags = tags;
        entry.name = row.name;
        entry.phone = row.phone.or(entry.phone.take());
        entry.organisation = row.organisation.or(entry.organisation.take());
        entry.custom.extend(row.custom);
        entry.rows.push(index);
        Ok(())
    }
}

/// An optional text where empty counts as absent (a blank cell in a spreadsheet).
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// Checks one row as create_contact would.
fn check_row(fields: &[Definition], row: ImportRow) -> Result<Entry, ToolError> {
    let name = named::text("name", &row.name, 1, 500)?;
    let email = given(row.email)
        .map(|e| named::email("email", &e))
        .transpose()?;
    let phone = given(row.phone)
        .map(|p| people::phone("phone", &p))
        .transpose()?;
    let organisation = given(row.organisation)
        .map(|o| named::text("organisation", &o, 1, 500))
        .transpose()?;
    let tags = named::tags("tags", row.tags.as_deref().unwrap_or_default())?;
    let custom = row.custom.unwrap_or_default();
    custom_fields::check_against(fields, &custom, false)?;
    Ok(Entry {
        id: Uuid::now_v7(),
        name,
        email,
        phone,
        organisation,
        tags,
        custom,
        rows: Vec::new(),
    })
}

/// A row's problem as the import reports it: its index, the path from the arguments' root,
/// and the message.
fn row_error(index: usize, error: &ToolError) -> Value {
    let inner = error
        .details
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let path = if inner.is_empty() {
        format!("rows[{index}]")
    } else {
        format!("rows[{index}].{inner}")
    };
    json!({ "index": index, "path": path, "message": error.message })
}

async fn import_contacts(cx: &Cx<'_>, args: ImportContacts) -> ToolResult {
    let total = args.rows.len();
    if total == 0 || total > MAX_ROWS {
        return Err(ToolError::invalid_input(
            "rows",
            format!("pass 1 to {MAX_ROWS} rows"),
        ));
    }
    // Each row parsed on its own, so a malformed row is one reported error, not the whole call's.
    let parsed: Vec<Result<ImportRow, ToolError>> = args
        .rows
        .into_iter()
        .map(args::parse::<ImportRow>)
        .collect();
    let any_custom = parsed
        .iter()
        .flatten()
        .any(|r| r.custom.as_ref().is_some_and(|c| !c.is_empty()));
    let fields = if any_custom {
        custom_fields::visible(cx, people::ENTITY).await?
    } else {
        Vec::new()
    };

    let mut plan = Plan::default();
    let mut errors = Vec::new();
    for (index, row) in parsed.into_iter().enumerate() {
        if let Err(error) = row
            .and_then(|r| check_row(&fields, r))
            .and_then(|entry| plan.add(index, entry))
        {
            errors.push(row_error(index, &error));
        }
    }
    if !errors.is_empty() && !args.skip_invalid {
        let first = errors
            .first()
            .and_then(|e| e["path"].as_str())
            .unwrap_or("rows")
            .to_owned();
        return Err(ToolError::invalid_input(
            &first,
            format!(
                "{} of the {total} rows are invalid, so nothing was imported; fix them, or pass \
                 skip_invalid: true to import the others",
                errors.len()
            ),
        )
        .with("errors", errors));
    }

    let now = cx.app.clock.now();
    let (organisations, organisations_created) = resolve_organisations(cx, &plan, now).await?;
    let n = plan.entries.len();
    let mut ids = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    let mut emails = Vec::with_capacity(n);
    let mut phones = Vec::with_capacity(n);
    let mut organisation_ids = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut customs = Vec::with_capacity(n);
    for entry in &plan.entries {
        ids.push(entry.id);
        names.push(entry.name.as_str());
        emails.push(entry.email.as_deref());
        phones.push(entry.phone.as_deref());
        organisation_ids.push(
            entry
                .organisation
                .as_ref()
                .and_then(|o| organisations.get(o))
                .copied(),
        );
        tags.push(json!(entry.tags));
        customs.push(Value::Object(entry.custom.clone()));
    }
    // One upsert for the whole import. An existing contact is found by the same index that
    // keeps emails unique, so a concurrent create of the same email updates rather than fails.
    // A row keeps the id proposed for it only if it was inserted: that tells created from
    // updated, and `ord` ties each result to its entry.
    let written = cx
        .scope
        .query(
            "WITH input AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[],
                                      $6::jsonb[], $7::jsonb[])
                     WITH ORDINALITY AS r(id, name, email, phone, organisation_id, tags, custom, ord)
             ), upserted AS (
                 INSERT INTO contacts.contacts AS c
                     (id, name, email, phone, organisation_id, tags, custom, created_at, updated_at)
                 SELECT i.id, i.name, i.email, i.phone, i.organisation_id,
                        ARRAY(SELECT t FROM jsonb_array_elements_text(i.tags) WITH ORDINALITY AS e(t, n)
                              ORDER BY n),
                        i.custom, $8, $8
                 FROM input i
                 ON CONFLICT (workspace_id, lower(email)) WHERE email IS NOT NULL DO UPDATE SET
                     name = EXCLUDED.name,
                     phone = coalesce(EXCLUDED.phone, c.phone),
                     organisation_id = coalesce(EXCLUDED.organisation_id, c.organisation_id),
                     tags = ARRAY(SELECT t FROM unnest(c.tags || EXCLUDED.tags) WITH ORDINALITY AS u(t, n)
                                  GROUP BY t ORDER BY min(n)),
                     custom = c.custom || EXCLUDED.custom,
                     updated_at = $8
                 RETURNING c.id, lower(c.email) AS key
             )
             SELECT i.ord, coalesce(a.id, b.id) AS id, a.id IS NOT NULL AS created
             FROM input i
             LEFT JOIN upserted a ON a.id = i.id
             LEFT JOIN upserted b ON a.id IS NULL AND b.key = lower(i.email)
             ORDER BY i.ord",
            &[
                &ids,
                &names,
                &emails,
                &phones,
                &organisation_ids,
                &tags,
                &customs,
                &now,
            ],
        )
        .await
        .map_err(|e| people::refine(e, "rows"))?;

    let mut outcomes: Vec<(usize, Option<Uuid>, &str)> = Vec::with_capacity(total);
    for row in &written {
        let ord: i64 = row.get("ord");
        let entry = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| plan.entries.get(i))
            .ok_or_else(|| ToolError::internal("import result out of range"))?;
        let id: Option<Uuid> = row.get("id");
        let created: bool = row.get("created");
        for (k, index) in entry.rows.iter().enumerate() {
            let outcome = if created && k == 0 {
                "created"
            } else {
                "updated"
            };
            outcomes.push((*index, id, outcome));
        }
    }
    outcomes.sort_by_key(|(index, _, _)| *index);
    let count = |what: &str| outcomes.iter().filter(|(_, _, o)| *o == what).count();
    Ok(json!({
        "created": count("created"),
        "updated": count("updated"),
        "skipped": errors.len(),
        "errors": errors,
        "organisations_created": organisations_created,
        "contacts": outcomes
            .iter()
            .map(|(index, id, outcome)| json!({ "index": index, "id": id, "outcome": outcome }))
            .collect::<Vec<_>>(),
    }))
}

/// Finds the organisations the import names (whatever their case; the oldest if several
/// share a name) and creates the missing ones, in one statement. Returns each given name's
/// organisation id, and how many were created.
async fn resolve_organisations(
    cx: &Cx<'_>,
    plan: &Plan,
    now: time::OffsetDateTime,
) -> Result<(HashMap<String, Uuid>, i64), ToolError> {
    let names = &plan.organisations;
    if names.is_empty() {
        return Ok((HashMap::new(), 0));
    }
    let new_ids: Vec<Uuid> = names.iter().map(|_| Uuid::now_v7()).collect();
    // Case folding is PostgreSQL's (as in the index), so names differing only in case share
    // one organisation; a new one takes the first spelling given.
    let rows = cx
        .scope
        .query(
            "WITH wanted AS (
                 SELECT w.name, w.id, w.ord
                 FROM unnest($1::text[], $2::uuid[]) WITH ORDINALITY AS w(name, id, ord)
             ), found AS (
                 SELECT DISTINCT ON (lower(o.name)) lower(o.name) AS key, o.id
                 FROM contacts.organisations o
                 WHERE lower(o.name) IN (SELECT lower(name) FROM wanted)
                 ORDER BY lower(o.name), o.created_at, o.id
             ), fresh AS (
                 SELECT DISTINCT ON (lower(w.name)) lower(w.name) AS key, w.id, w.name
                 FROM wanted w
                 WHERE lower(w.name) NOT IN (SELECT key FROM found)
                 ORDER BY lower(w.name), w.ord
             ), created AS (
                 INSERT INTO contacts.organisations (id, name, created_at, updated_at)
                 SELECT id, name, $3, $3 FROM fresh
                 RETURNING id
             )
             SELECT w.name, coalesce(f.id, n.id) AS id,
                    (SELECT count(*) FROM created) AS created
             FROM wanted w
             LEFT JOIN found f ON f.key = lower(w.name)
             LEFT JOIN fresh n ON n.key = lower(w.name)",
            &[names, &new_ids, &now],
        )
        .await?;
    let mut ids = HashMap::with_capacity(rows.len());
    let mut created = 0;
    for row in &rows {
        let id: Option<Uuid> = row.get("id");
        let id = id.ok_or_else(|| ToolError::internal("an imported organisation has no id"))?;
        ids.insert(row.get::<_, String>("name"), id);
        created = row.get::<_, i64>("created");
    }
    Ok((ids, created))
}
