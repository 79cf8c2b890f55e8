//! Custom fields: a workspace's own fields on a product's entities (migration V10), the four
//! tools that manage them on each product endpoint, and the checks every named tool applies to
//! the `custom` values it writes and shows.
//!
//! A field is personal when created: only its creator (the person, or for an API key the key)
//! sees it, in tool schemas, `describe_table` and outputs. `promote_custom_field` makes it a
//! team field. Values ride in the entity's `custom` jsonb, under the field's name.

use std::collections::{HashMap, HashSet};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Iso8601;

use crate::app::App;
use crate::db::Scope;
use crate::identity::{Endpoint, Principal, Product, Role};
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

pub use crate::tools::named::Entity;

/// Every entity with a `custom` column, by product.
pub const ENTITIES: &[Entity] = &[
    Entity {
        product: Product::Crm,
        name: "account",
        table: "accounts",
    },
    Entity {
        product: Product::Crm,
        name: "contact",
        table: "contacts",
    },
    Entity {
        product: Product::Crm,
        name: "deal",
        table: "deals",
    },
    Entity {
        product: Product::Support,
        name: "requester",
        table: "requesters",
    },
    Entity {
        product: Product::Support,
        name: "ticket",
        table: "tickets",
    },
    Entity {
        product: Product::Contacts,
        name: "contact",
        table: "contacts",
    },
    Entity {
        product: Product::Contacts,
        name: "organisation",
        table: "organisations",
    },
];

/// The entity `name` of `product`, or `invalid_input` naming the ones there are.
pub fn entity(product: Product, name: &str) -> Result<Entity, ToolError> {
    ENTITIES
        .iter()
        .copied()
        .find(|e| e.product == product && e.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = entities_of(product).map(|e| e.name).collect();
            ToolError::invalid_input(
                "entity",
                format!(
                    "the {} product has no entity {name:?}; its entities are {}",
                    product.slug(),
                    known.join(", ")
                ),
            )
        })
}

/// The entities of one product.
pub fn entities_of(product: Product) -> impl Iterator<Item = &'static Entity> {
    ENTITIES.iter().filter(move |e| e.product == product)
}

/// A field's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Text,
    Number,
    Boolean,
    Date,
    Select,
    Multiselect,
}

impl FieldType {
    fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Select => "select",
            FieldType::Multiselect => "multiselect",
        }
    }

    fn parse(text: &str) -> Result<FieldType, ToolError> {
        serde_json::from_value(json!(text)).map_err(ToolError::internal)
    }

    fn has_options(self) -> bool {
        matches!(self, FieldType::Select | FieldType::Multiselect)
    }
}

/// One field as a caller sees it.
#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub field_type: FieldType,
    pub options: Option<Vec<String>>,
    pub description: Option<String>,
    /// Personal to its creator (true) or a team field.
    pub personal: bool,
}

impl Definition {
    /// The JSON schema of a value of this field (for tool input schemas).
    pub fn value_schema(&self) -> Value {
        let mut schema = match self.field_type {
            FieldType::Text => json!({ "type": "string", "maxLength": MAX_TEXT }),
            FieldType::Number => json!({ "type": "number" }),
            FieldType::Boolean => json!({ "type": "boolean" }),
            FieldType::Date => json!({ "type": "string", "format": "date" }),
            FieldType::Select => json!({ "type": "string", "enum": self.options }),
            FieldType::Multiselect => json!({
                "type": "array", "uniqueItems": true, "items": { "type": "string", "enum": self.options },
            }),
        };
        if let (Some(d), Some(o)) = (&self.description, schema.as_object_mut()) {
            o.insert("description".into(), json!(d));
        }
        schema
    }

    /// The definition as tools show it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.field_type.as_str(),
            "options": self.options,
            "description": self.description,
            "scope": if self.personal { "personal" } else { "team" },
        })
    }
}

/// Longest text value.
pub const MAX_TEXT: usize = 10_000;

const VISIBLE_SQL: &str = "SELECT name, type, options, description, owner IS NOT NULL AS personal
     FROM hdls.custom_fields
     WHERE workspace_id = $4 AND product = $1 AND entity = $2 AND removed_at IS NULL
       AND (owner IS NULL OR owner = $3)
     ORDER BY name";

fn definition(r: &tokio_postgres::Row) -> Result<Definition, ToolError> {
    Ok(Definition {
        name: r.get("name"),
        field_type: FieldType::parse(r.get("type"))?,
        options: r.get("options"),
        description: r.get("description"),
        personal: r.get("personal"),
    })
}

/// The fields of `entity` the caller sees (team fields and their own personal ones).
pub async fn visible(cx: &Cx<'_>, entity: Entity) -> Result<Vec<Definition>, ToolError> {
    visible_to(cx.scope, entity, &cx.principal.author_id()).await
}

/// The fields of `entity` that `author` (as [`Principal::author_id`] names people) sees: the
/// same rule for a tool's caller and for a webhook's creator.
pub async fn visible_to(
    scope: &Scope,
    entity: Entity,
    author: &str,
) -> Result<Vec<Definition>, ToolError> {
    let rows = scope
        .query(
            VISIBLE_SQL,
            &[
                &entity.product.slug(),
                &entity.name,
                &author,
                &scope.workspace(),
            ],
        )
        .await?;
    rows.iter().map(definition).collect()
}

/// The entity whose rows live in `schema.table`, if it has custom fields.
pub fn entity_of_table(schema: &str, table: &str) -> Option<Entity> {
    ENTITIES
        .iter()
        .copied()
        .find(|e| e.product.slug() == schema && e.table == table)
}

/// For `tools/list`: the schema of the `custom` argument of each entity of `product`, typed
/// with the fields this caller sees (so the tool list varies by credential; it is marked
/// private to the caller).
pub async fn argument_schemas(
    app: &App,
    principal: &Principal,
    product: Product,
) -> Result<HashMap<&'static str, Value>, ToolError> {
    let scope = Scope::begin(&app.pools.runtime, principal).await?;
    let rows = scope
        .query(
            "SELECT entity, name, type, options, description, owner IS NOT NULL AS personal
             FROM hdls.custom_fields
             WHERE workspace_id = $3 AND product = $1 AND removed_at IS NULL
               AND (owner IS NULL OR owner = $2)
             ORDER BY entity, name",
            &[
                &product.slug(),
                &principal.author_id(),
                &principal.workspace_id,
            ],
        )
        .await?;
    scope.commit().await?;
    let mut schemas = HashMap::new();
    for entity in entities_of(product) {
        let mut properties = Map::new();
        for row in rows
            .iter()
            .filter(|r| r.get::<_, &str>("entity") == entity.name)
        {
            let field = definition(row)?;
            properties.insert(field.name.clone(), field.value_schema());
        }
        schemas.insert(
            entity.name,
            json!({
                "type": "object",
                "description": format!(
                    "Custom field values of this {} by field name (add_custom_field adds fields).",
                    entity.name
                ),
                "properties": properties,
                "additionalProperties": false,
            }),
        );
    }
    Ok(schemas)
}

/// The `custom` argument schema of an update tool: each field also takes null (clear it).
pub fn clearable(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for value in properties.values_mut() {
            *value = json!({ "anyOf": [value.take(), { "type": "null" }] });
        }
    }
    schema
}

/// Checks values a caller writes into `entity`'s `custom`: each names a field the caller sees
/// and fits its type. With `allow_null`, a null removes that field's value (updates).
pub async fn check(
    cx: &Cx<'_>,
    entity: Entity,
    values: &Map<String, Value>,
    allow_null: bool,
) -> Result<(), ToolError> {
    if values.is_empty() {
        return Ok(());
    }
    let fields = visible(cx, entity).await?;
    check_against(&fields, values, allow_null)
}

/// [`check`] against loaded definitions.
pub fn check_against(
    fields: &[Definition],
    values: &Map<String, Value>,
    allow_null: bool,
) -> Result<(), ToolError> {
    for (name, value) in values {
        let path = format!("custom.{name}");
        let Some(field) = fields.iter().find(|f| &f.name == name) else {
            return Err(ToolError::invalid_input(
                &path,
                format!(
                    "there is no custom field {name:?} here (add_custom_field creates one; list_custom_fields lists them)"
                ),
            ));
        };
        if value.is_null() {
            if allow_null {
                continue;
            }
            return Err(ToolError::invalid_input(
                &path,
                "omit a field instead of sending null",
            ));
        }
        let options = field.options.as_deref().unwrap_or_default();
        let fits = match field.field_type {
            FieldType::Text => value
                .as_str()
                .is_some_and(|s| s.chars().count() <= MAX_TEXT),
            FieldType::Number => value.as_f64().is_some_and(f64::is_finite),
            FieldType::Boolean => value.is_boolean(),
            FieldType::Date => value
                .as_str()
                .is_some_and(|s| s.len() == 10 && time::Date::parse(s, &Iso8601::DATE).is_ok()),
            FieldType::Select => value
                .as_str()
                .is_some_and(|s| options.iter().any(|o| o == s)),
            FieldType::Multiselect => value.as_array().is_some_and(|items| {
                let mut seen = HashSet::new();
                items.iter().all(|i| {
                    i.as_str()
                        .is_some_and(|s| options.iter().any(|o| o == s) && seen.insert(s))
                })
            }),
        };
        if !fits {
            let expected = match field.field_type {
                FieldType::Text => format!("text of at most {MAX_TEXT} characters"),
                FieldType::Number => "a number".to_owned(),
                FieldType::Boolean => "true or false".to_owned(),
                FieldType::Date => "a date like 2026-03-31".to_owned(),
                FieldType::Select => format!("one of {}", options.join(", ")),
                FieldType::Multiselect => {
                    format!("a list of distinct values from {}", options.join(", "))
                }
            };
            return Err(ToolError::invalid_input(
                &path,
                format!(
                    "{name} is a {} field: expected {expected}",
                    field.field_type.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Hides the values of fields the caller does not see (another person's personal fields,
/// removed fields) in rendered records. Loads the definitions only if some record has
/// custom values at all.
pub async fn hide_invisible<'v>(
    cx: &Cx<'_>,
    entity: Entity,
    customs: impl IntoIterator<Item = &'v mut Value>,
) -> Result<(), ToolError> {
    let mut customs: Vec<&mut Value> = customs
        .into_iter()
        .filter(|c| c.as_object().is_some_and(|o| !o.is_empty()))
        .collect();
    if customs.is_empty() {
        return Ok(());
    }
    let names: HashSet<String> = visible(cx, entity)
        .await?
        .into_iter()
        .map(|f| f.name)
        .collect();
    for custom in &mut customs {
        if let Some(object) = custom.as_object_mut() {
            object.retain(|k, _| names.contains(k));
        }
    }
    Ok(())
}

/// Renders rows with `render`, showing only the custom values the caller sees: the one way
/// every named tool shows records of an entity with custom fields.
pub async fn render(
    cx: &Cx<'_>,
    entity: Entity,
    rows: &[tokio_postgres::Row],
    render: fn(&tokio_postgres::Row) -> Value,
) -> Result<Vec<Value>, ToolError> {
    let mut records: Vec<Value> = rows.iter().map(render).collect();
    hide_invisible(
        cx,
        entity,
        records.iter_mut().filter_map(|r| r.get_mut("custom")),
    )
    .await?;
    Ok(records)
}

/// [`render`] for one row.
pub async fn render_one(
    cx: &Cx<'_>,
    entity: Entity,
    row: &tokio_postgres::Row,
    render_row: fn(&tokio_postgres::Row) -> Value,
) -> Result<Value, ToolError> {
    Ok(render(cx, entity, std::slice::from_ref(row), render_row)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// The custom-field tools of one product endpoint.
pub fn tools(product: Product) -> Vec<ToolDef> {
    let here = Endpoint::Product(product);
    vec![
        ToolDef::new(
            "add_custom_field",
            "Add a custom field to an entity of this product (e.g. entity \"account\", name \"renewal_quarter\", \
             type \"text\"). Types: text, number, boolean, date, select, multiselect (the select types need \
             `options`). A new field is personal: only you see it until an admin promotes it with \
             promote_custom_field. Its values go in the entity's `custom` object.",
            here,
            Role::Member,
            Effect::Write,
            add_custom_field,
        ),
        ToolDef::new(
            "promote_custom_field",
            "Make a custom field (anyone's personal field, by name) a team field, seen by everyone in the \
             workspace. Needs admin or owner.",
            here,
            Role::Admin,
            Effect::IdempotentWrite,
            promote_custom_field,
        ),
        ToolDef::new(
            "list_custom_fields",
            "List the custom fields you see on this product's entities (team fields and your personal ones), \
             with their types, options and scope.",
            here,
            Role::Reader,
            Effect::Read,
            list_custom_fields,
        ),
        ToolDef::new(
            "remove_custom_field",
            "Remove a custom field. Its values are kept but hidden, and come back if the field is added again \
             with the same type. A personal field can be removed by its creator; a team field needs admin or owner.",
            here,
            Role::Member,
            Effect::Destructive,
            remove_custom_field,
        ),
    ]
}

fn product_of(cx: &Cx<'_>) -> Result<Product, ToolError> {
    match cx.endpoint {
        Endpoint::Product(p) => Ok(p),
        Endpoint::Concierge | Endpoint::DataSource => Err(ToolError::internal(
            "custom-field tool outside a product endpoint",
        )),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct AddField {
    /// The entity, e.g. "account", "contact" or "deal" on the CRM.
    entity: String,
    /// The field's name: a lowercase letter, then up to 62 lowercase letters, digits or underscores.
    name: String,
    /// The value type.
    #[serde(rename = "type")]
    field_type: FieldType,
    /// The allowed values, for select and multiselect fields.
    #[serde(default)]
    options: Option<Vec<String>>,
    /// What the field is for (shown in tool schemas).
    #[serde(default)]
    description: Option<String>,
}

fn check_field_name(name: &str) -> Result<(), ToolError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ToolError::invalid_input(
            "name",
            "a field name is a lowercase letter, then up to 62 lowercase letters, digits or underscores",
        ))
    }
}

async fn add_custom_field(cx: &Cx<'_>, args: AddField) -> ToolResult {
    let product = product_of(cx)?;
    let entity = entity(product, &args.entity)?;
    check_field_name(&args.name)?;
    // Never shadow a built-in column of the entity's table.
    let catalog = cx.app.catalog.get(cx.scope, product.slug()).await?;
    let table = catalog.table("entity", entity.table)?;
    if table.column(&args.name).is_some() {
        return Err(ToolError::invalid_input(
            "name",
            format!(
                "{} already has a built-in column {:?}",
                entity.name, args.name
            ),
        ));
    }
    let options = match (args.field_type.has_options(), args.options) {
        (true, Some(options)) => {
            let mut seen = HashSet::new();
            let ok = (1..=100).contains(&options.len())
                && options
                    .iter()
                    .all(|o| (1..=200).contains(&o.chars().count()) && seen.insert(o.as_str()));
            if !ok {
                return Err(ToolError::invalid_input(
                    "options",
                    "options must be 1 to 100 distinct values of 1 to 200 characters",
                ));
            }
            Some(options)
        }
        (true, None) => {
            return Err(ToolError::invalid_input(
                "options",
                "select and multiselect fields need options",
            ));
        }
        (false, Some(_)) => {
            return Err(ToolError::invalid_input(
                "options",
                "only select and multiselect fields take options",
            ));
        }
        (false, None) => None,
    };
    if args
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(ToolError::invalid_input(
            "description",
            "at most 500 characters",
        ));
    }
    let owner = cx.principal.author_id();
    let now = cx.app.clock.now();
    let existing = cx
        .scope
        .query_opt(
            "SELECT type, owner, removed_at IS NOT NULL AS removed FROM hdls.custom_fields
             WHERE workspace_id = $4 AND product = $1 AND entity = $2 AND name = $3 FOR UPDATE",
            &[
                &product.slug(),
                &entity.name,
                &args.name,
                &cx.scope.workspace(),
            ],
        )
        .await?;
    let field_type = args.field_type.as_str();
    let mut personal = true;
    match existing {
        None => {
            cx.scope
                .execute(
                    "INSERT INTO hdls.custom_fields
                         (product, entity, name, type, options, description, owner, created_by, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
                    &[&product.slug(), &entity.name, &args.name, &field_type, &options, &args.description, &owner, &now],
                )
                .await?;
        }
        Some(row)
            if row.get::<_, bool>("removed") && {
                // Only whoever could see the removed field gets its values back: its
                // creator, or for a team field an admin. Anyone else would be handed
                // someone's hidden values by choosing the same name.
                let owner_then: Option<&str> = row.get("owner");
                match owner_then {
                    Some(o) => o == owner,
                    None => cx.principal.role >= Role::Admin,
                }
            } =>
        {
            if row.get::<_, &str>("type") != field_type {
                return Err(ToolError::conflict(format!(
                    "a removed {} field {:?} still holds values; add it again with type {} or choose another name",
                    row.get::<_, &str>("type"),
                    args.name,
                    row.get::<_, &str>("type")
                )));
            }
            // Back, with its values and its scope (personal stays personal, team stays team).
            personal = row.get::<_, Option<&str>>("owner").is_some();
            cx.scope
                .execute(
                    "UPDATE hdls.custom_fields SET removed_at = NULL, options = $4, description = $5
                     WHERE product = $1 AND entity = $2 AND name = $3",
                    &[&product.slug(), &entity.name, &args.name, &options, &args.description],
                )
                .await?;
        }
        Some(_) => {
            // Someone else's personal field is invisible, but its name is taken all the same.
            return Err(ToolError::conflict(format!(
                "{} already has a custom field named {:?}",
                entity.name, args.name
            )));
        }
    }
    let field = Definition {
        name: args.name,
        field_type: args.field_type,
        options,
        description: args.description,
        personal,
    };
    Ok(
        json!({ "entity": entity.name, "field": field.to_json(), "created_at": timestamp(Some(now)) }),
    )
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FieldRef {
    /// The entity, e.g. "account".
    entity: String,
    /// The field's name.
    name: String,
}

async fn find_visible(cx: &Cx<'_>, args: &FieldRef) -> Result<(Entity, Definition), ToolError> {
    let product = product_of(cx)?;
    let entity = entity(product, &args.entity)?;
    let field = visible(cx, entity)
        .await?
        .into_iter()
        .find(|f| f.name == args.name)
        .ok_or_else(|| {
            ToolError::not_found(format!(
                "no custom field {:?} on {} that you can see",
                args.name, entity.name
            ))
        })?;
    Ok((entity, field))
}

/// An admin promotes any member's personal field by name: that is how a field someone
/// tried out becomes the team's.
async fn promote_custom_field(cx: &Cx<'_>, args: FieldRef) -> ToolResult {
    let product = product_of(cx)?;
    let entity = entity(product, &args.entity)?;
    let row = cx
        .scope
        .query_opt(
            "UPDATE hdls.custom_fields SET owner = NULL
             WHERE product = $1 AND entity = $2 AND name = $3 AND removed_at IS NULL
             RETURNING name, type, options, description, false AS personal",
            &[&product.slug(), &entity.name, &args.name],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!(
                "no custom field {:?} on {}",
                args.name, entity.name
            ))
        })?;
    Ok(json!({ "entity": entity.name, "field": definition(&row)?.to_json() }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListFields {
    /// Only this entity's fields.
    #[serde(default)]
    entity: Option<String>,
}

async fn list_custom_fields(cx: &Cx<'_>, args: ListFields) -> ToolResult {
    let product = product_of(cx)?;
    let entities: Vec<Entity> = match &args.entity {
        Some(name) => vec![entity(product, name)?],
        None => entities_of(product).copied().collect(),
    };
    let mut out = Map::new();
    for e in entities {
        let fields = visible(cx, e).await?;
        out.insert(
            e.name.to_owned(),
            Value::Array(fields.iter().map(Definition::to_json).collect()),
        );
    }
    Ok(json!({ "fields": out }))
}

async fn remove_custom_field(cx: &Cx<'_>, args: FieldRef) -> ToolResult {
    let (entity, field) = find_visible(cx, &args).await?;
    if !field.personal && cx.principal.role < Role::Admin {
        return Err(ToolError::forbidden(
            "removing a team field needs the admin role or higher",
        ));
    }
    cx.scope
        .execute(
            "UPDATE hdls.custom_fields SET removed_at = $4 WHERE product = $1 AND entity = $2 AND name = $3",
            &[&entity.product.slug(), &entity.name, &field.name, &cx.app.clock.now()],
        )
        .await?;
    Ok(json!({ "entity": entity.name, "name": field.name, "removed": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, field_type: FieldType, options: Option<&[&str]>) -> Definition {
        Definition {
            name: name.into(),
            field_type,
            options: options.map(|o| o.iter().map(|s| (*s).to_owned()).collect()),
            description: None,
            personal: false,
        }
    }

    #[test]
    fn values_are_checked_against_their_fields() {
        let fields = [
            field("quarter", FieldType::Select, Some(&["Q1", "Q2"])),
            field("renews", FieldType::Date, None),
            field("seats", FieldType::Number, None),
            field("regions", FieldType::Multiselect, Some(&["eu", "us"])),
        ];
        let ok = |v: Value| check_against(&fields, v.as_object().unwrap(), false).is_ok();
        assert!(ok(
            json!({ "quarter": "Q1", "renews": "2026-03-31", "seats": 5, "regions": ["eu"] })
        ));
        assert!(!ok(json!({ "quarter": "Q3" })));
        assert!(!ok(json!({ "renews": "2026-02-30" })));
        assert!(!ok(json!({ "seats": "5" })));
        assert!(!ok(json!({ "regions": ["eu", "eu"] })));
        assert!(!ok(json!({ "unknown": 1 })));
        let err = check_against(
            &fields,
            json!({ "seats": true }).as_object().unwrap(),
            false,
        )
        .unwrap_err();
        assert_eq!(err.details["path"], "custom.seats");
        assert!(
            check_against(&fields, json!({ "seats": null }).as_object().unwrap(), true).is_ok()
        );
    }
}
