//! Cross-product links (`hdls.links`, migration V16): a record of one product tied to a record
//! of another. Here are the parts products and the concierge share: which records can be
//! linked, whether one is visible to the caller, and the links of a record as tools show them.
//!
//! A link whose end is gone (deleted, or in a product the caller does not reach) is left out
//! of every answer; nothing joins across tables (each product table is read by id on its own,
//! so the queries stay routable by workspace on Citus).

use std::collections::{HashMap, HashSet};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Cx, ToolError};
use crate::identity::{Persona, Product};

/// A record of a product, as link and memory tools take it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordRef {
    /// The product: crm, support or contacts.
    pub product: Product,
    /// The entity: crm account, contact or deal; support ticket or requester; contacts contact
    /// or organisation.
    pub entity: String,
    /// The record's id.
    pub id: Uuid,
}

/// A linkable entity: its table and an expression naming a row for people.
struct Linkable {
    product: Product,
    entity: &'static str,
    /// `SELECT id, <label> FROM <table> WHERE id = ANY($1)`: fixed SQL, never built from input.
    sql: &'static str,
}

const LINKABLE: &[Linkable] = &[
    Linkable {
        product: Product::Crm,
        entity: "account",
        sql: "SELECT id, name AS label FROM crm.accounts WHERE id = ANY($1)",
    },
    Linkable {
        product: Product::Crm,
        entity: "contact",
        sql: "SELECT id, concat_ws(' ', first_name, last_name) AS label FROM crm.contacts WHERE id = ANY($1)",
    },
    Linkable {
        product: Product::Crm,
        entity: "deal",
        sql: "SELECT id, name AS label FROM crm.deals WHERE id = ANY($1)",
    },
    Linkable {
        product: Product::Support,
        entity: "ticket",
        sql: "SELECT id, subject AS label FROM support.tickets WHERE id = ANY($1)",
    },
    Linkable {
        product: Product::Support,
        entity: "requester",
        sql: "SELECT id, coalesce(name, email) AS label FROM support.requesters WHERE id = ANY($1)",
    },
    Linkable {
        product: Product::Contacts,
        entity: "contact",
        sql: "SELECT id, name AS label FROM contacts.contacts WHERE id = ANY($1)",
    },
    Linkable {
        product: Product::Contacts,
        entity: "organisation",
        sql: "SELECT id, name AS label FROM contacts.organisations WHERE id = ANY($1)",
    },
];

fn linkable(product: Product, entity: &str) -> Option<&'static Linkable> {
    LINKABLE
        .iter()
        .find(|l| l.product == product && l.entity == entity)
}

/// Checks a reference names a linkable entity; `path` is the argument's name for errors.
pub fn check(path: &str, r: &RecordRef) -> Result<(), ToolError> {
    match linkable(r.product, &r.entity) {
        Some(_) => Ok(()),
        None => Err(ToolError::invalid_input(
            &format!("{path}.entity"),
            format!(
                "{} has no entity {:?}; linkable: crm account, contact, deal; support ticket, \
                 requester; contacts contact, organisation",
                r.product.slug(),
                r.entity
            ),
        )),
    }
}

/// The labels of those of `ids` that exist and that the caller may see (their product is one
/// the credential reaches; row-level security does the rest).
async fn visible(
    cx: &Cx<'_>,
    product: Product,
    entity: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, String>, ToolError> {
    let Some(l) = linkable(product, entity) else {
        return Ok(HashMap::new());
    };
    if cx.principal.persona != Persona::Agent || !cx.principal.has_product(product) {
        return Ok(HashMap::new());
    }
    let rows = cx.scope.query(l.sql, &[&ids]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get("id"),
                r.get::<_, Option<String>>("label").unwrap_or_default(),
            )
        })
        .collect())
}

/// `not_found` unless the record exists and the caller may see it.
pub async fn require(cx: &Cx<'_>, path: &str, r: &RecordRef) -> Result<(), ToolError> {
    check(path, r)?;
    if visible(cx, r.product, &r.entity, &[r.id])
        .await?
        .contains_key(&r.id)
    {
        Ok(())
    } else {
        Err(ToolError::not_found(format!(
            "no {} {} {} in this workspace",
            r.product.slug(),
            r.entity,
            r.id
        )))
    }
}

/// The links of one record whose other end exists and is visible, optionally only those
/// whose other end is in `only`: `[{link_id, relation, product, entity, id, label}]`.
/// Customers get none.
pub async fn of(
    cx: &Cx<'_>,
    product: Product,
    entity: &str,
    id: Uuid,
    only: Option<Product>,
) -> Result<Vec<Value>, ToolError> {
    if cx.principal.persona != Persona::Agent {
        return Ok(Vec::new());
    }
    let rows = cx
        .scope
        .query(
            "SELECT id, relation, created_at,
                    CASE WHEN from_product = $1 AND from_entity = $2 AND from_id = $3
                         THEN to_product ELSE from_product END AS product,
                    CASE WHEN from_product = $1 AND from_entity = $2 AND from_id = $3
                         THEN to_entity ELSE from_entity END AS entity,
                    CASE WHEN from_product = $1 AND from_entity = $2 AND from_id = $3
                         THEN to_id ELSE from_id END AS other
             FROM hdls.links
             WHERE (from_product = $1 AND from_entity = $2 AND from_id = $3)
                OR (to_product = $1 AND to_entity = $2 AND to_id = $3)
             ORDER BY created_at, id
             LIMIT 500",
            &[&product.slug(), &entity, &id],
        )
        .await?;
    let mut groups: HashMap<(String, String), Vec<Uuid>> = HashMap::new();
    for r in &rows {
        groups
            .entry((r.get("product"), r.get("entity")))
            .or_default()
            .push(r.get("other"));
    }
    let mut labels: HashMap<(String, String), HashMap<Uuid, String>> = HashMap::new();
    for ((p, e), ids) in groups {
        let Some(p_slug) = Product::from_slug(&p) else {
            continue;
        };
        if only.is_some_and(|o| o != p_slug) {
            continue;
        }
        let ids: Vec<Uuid> = ids
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        labels.insert((p.clone(), e.clone()), visible(cx, p_slug, &e, &ids).await?);
    }
    Ok(rows
        .iter()
        .filter_map(|r| {
            let key: (String, String) = (r.get("product"), r.get("entity"));
            let other: Uuid = r.get("other");
            let label = labels.get(&key)?.get(&other)?;
            Some(json!({
                "link_id": r.get::<_, Uuid>("id"),
                "relation": r.get::<_, &str>("relation"),
                "product": key.0,
                "entity": key.1,
                "id": other,
                "label": label,
            }))
        })
        .collect())
}
