//! Cross-product links as concierge tools: tie a ticket to a CRM account, a deal to an
//! address-book organisation, and see them from either end. Agents only.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::tools::links::{self, RecordRef};
use crate::tools::{Cx, ToolError, ToolResult, timestamp};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkArgs {
    /// One end, e.g. {"product": "support", "entity": "ticket", "id": "…"}.
    from: RecordRef,
    /// The other end, e.g. {"product": "crm", "entity": "account", "id": "…"}.
    to: RecordRef,
    /// What ties them, lowercase words joined by _, e.g. "reported_by" (default "related").
    #[serde(default)]
    relation: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlinkArgs {
    /// The link's id (link_id in list_links).
    id: Uuid,
}

pub async fn link_records(cx: &Cx<'_>, args: LinkArgs) -> ToolResult {
    let relation = args.relation.unwrap_or_else(|| "related".to_owned());
    let valid = relation.len() <= 40
        && relation.starts_with(|c: char| c.is_ascii_lowercase())
        && relation
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(ToolError::invalid_input(
            "relation",
            "relation is lowercase letters, digits and _, starting with a letter, at most 40",
        ));
    }
    links::check("from", &args.from)?;
    links::check("to", &args.to)?;
    if (args.from.product, &args.from.entity, args.from.id)
        == (args.to.product, &args.to.entity, args.to.id)
    {
        return Err(ToolError::invalid_input(
            "to",
            "a record cannot be linked to itself",
        ));
    }
    links::require(cx, "from", &args.from).await?;
    links::require(cx, "to", &args.to).await?;
    let now = cx.app.clock.now();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &args.from.product.slug(),
        &args.from.entity,
        &args.from.id,
        &args.to.product.slug(),
        &args.to.entity,
        &args.to.id,
        &relation,
        &now,
    ];
    let inserted = cx
        .scope
        .query_opt(
            "INSERT INTO hdls.links (id, from_product, from_entity, from_id, to_product, to_entity, to_id,
                                     relation, created_by, created_at)
             VALUES (hdls.uuid_v7($8), $1, $2, $3, $4, $5, $6, $7, $9, $8)
             ON CONFLICT ON CONSTRAINT links_once DO NOTHING
             RETURNING id, created_at",
            &[
                params[0], params[1], params[2], params[3], params[4], params[5], params[6],
                params[7], &cx.principal.author_id(),
            ],
        )
        .await?;
    let (id, created, existed) = match inserted {
        Some(r) => (r.get::<_, Uuid>("id"), r.get("created_at"), false),
        None => {
            let r = cx
                .scope
                .query_one(
                    "SELECT id, created_at FROM hdls.links
                     WHERE from_product = $1 AND from_entity = $2 AND from_id = $3
                       AND to_product = $4 AND to_entity = $5 AND to_id = $6 AND relation = $7",
                    &params[..7],
                )
                .await?;
            (r.get("id"), r.get("created_at"), true)
        }
    };
    Ok(json!({
        "link": {
            "link_id": id,
            "from": { "product": args.from.product, "entity": args.from.entity, "id": args.from.id },
            "to": { "product": args.to.product, "entity": args.to.entity, "id": args.to.id },
            "relation": relation,
            "created_at": timestamp(Some(created)),
        },
        "already_linked": existed,
    }))
}

pub async fn list_links(cx: &Cx<'_>, args: RecordRef) -> ToolResult {
    links::require(cx, "", &args).await?;
    let found = links::of(cx, args.product, &args.entity, args.id, None).await?;
    Ok(json!({
        "record": { "product": args.product, "entity": args.entity, "id": args.id },
        "links": found,
    }))
}

pub async fn unlink_records(cx: &Cx<'_>, args: UnlinkArgs) -> ToolResult {
    let removed = cx
        .scope
        .execute("DELETE FROM hdls.links WHERE id = $1", &[&args.id])
        .await?;
    if removed == 0 {
        return Err(ToolError::not_found(format!(
            "no link {} in this workspace",
            args.id
        )));
    }
    Ok(json!({ "link_id": args.id, "unlinked": true }))
}
