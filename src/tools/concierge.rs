//! Concierge (control plane) tools on `/api/mcp`: identity, products, API keys.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::args::parse_duration;
use super::{Cx, Effect, ToolDef, ToolError, ToolResult};
use crate::auth::api_key;
use crate::identity::{Endpoint, Product, Role};

const HERE: Endpoint = Endpoint::Concierge;

/// The concierge's tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "whoami",
            "Who am I connected as: the workspace (id and name), my role and persona, the kind of credential, \
             the products I can reach, and when the credential expires.",
            HERE,
            Role::Reader,
            Effect::Read,
            whoami,
        ),
        ToolDef::new(
            "list_products",
            "List the products hdls offers and whether each is installed in this workspace, with its MCP endpoint URL.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_products,
        ),
        ToolDef::new(
            "install_product",
            "Install a product (crm, support, contacts) into this workspace. Reinstalling brings back the data \
             the workspace had. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::IdempotentWrite,
            install_product,
        ),
        ToolDef::new(
            "uninstall_product",
            "Uninstall a product. Its endpoint stops serving tool calls; the workspace's data is kept and comes \
             back on reinstall. Needs owner.",
            HERE,
            Role::Owner,
            Effect::Destructive,
            uninstall_product,
        ),
        ToolDef::new(
            "mint_api_key",
            "Mint a scoped API key for server-to-server use: bound to this workspace, with a role no higher than \
             yours and an optional expiry (e.g. \"30d\"). The key is shown once, in this response only; store it \
             in a secret manager. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Write,
            mint_api_key,
        ),
        ToolDef::new(
            "list_api_keys",
            "List this workspace's API keys: id, role, label, created, expiry, last use and status. \
             Never shows a key or its hash. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Read,
            list_api_keys,
        ),
        ToolDef::new(
            "revoke_api_key",
            "Revoke an API key by its id (key_…). It stops working on its next request. You cannot revoke a key \
             whose role is above yours. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Destructive,
            revoke_api_key,
        ),
    ]
}

fn rfc3339(t: Option<OffsetDateTime>) -> serde_json::Value {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

async fn whoami(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let p = cx.principal;
    Ok(json!({
        "workspace": { "id": p.workspace_id, "name": p.workspace_name },
        "role": p.role,
        "persona": p.persona,
        "credential": { "kind": p.credential.kind, "id": p.credential.id },
        "products": p.products,
        "expires_at": rfc3339(p.expires_at),
    }))
}

async fn list_products(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let rows = cx
        .scope
        .query(
            "SELECT product, installed_at, uninstalled_at FROM hdls.installed_products",
            &[],
        )
        .await?;
    let products: Vec<_> = Product::ALL
        .into_iter()
        .map(|product| {
            let row = rows
                .iter()
                .find(|r| r.get::<_, &str>("product") == product.slug());
            let installed_at: Option<OffsetDateTime> = row.map(|r| r.get("installed_at"));
            let uninstalled_at: Option<OffsetDateTime> = row.and_then(|r| r.get("uninstalled_at"));
            json!({
                "product": product,
                "description": product.description(),
                "installed": installed_at.is_some() && uninstalled_at.is_none(),
                "installed_at": rfc3339(installed_at.filter(|_| uninstalled_at.is_none())),
                "endpoint": cx.app.public.endpoint_url(Endpoint::Product(product)),
            })
        })
        .collect();
    Ok(json!({ "products": products }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ProductArg {
    /// The product to act on.
    product: Product,
}

async fn install_product(cx: &Cx<'_>, args: ProductArg) -> ToolResult {
    cx.scope
        .execute(
            "INSERT INTO hdls.installed_products (product) VALUES ($1)
             ON CONFLICT (workspace_id, product) DO UPDATE
               SET uninstalled_at = NULL,
                   installed_at = CASE WHEN hdls.installed_products.uninstalled_at IS NULL
                                       THEN hdls.installed_products.installed_at ELSE now() END",
            &[&args.product.slug()],
        )
        .await?;
    Ok(json!({
        "product": args.product,
        "installed": true,
        "endpoint": cx.app.public.endpoint_url(Endpoint::Product(args.product)),
    }))
}

async fn uninstall_product(cx: &Cx<'_>, args: ProductArg) -> ToolResult {
    let changed = cx
        .scope
        .execute(
            "UPDATE hdls.installed_products SET uninstalled_at = now()
             WHERE product = $1 AND uninstalled_at IS NULL",
            &[&args.product.slug()],
        )
        .await?;
    if changed == 0 {
        return Err(ToolError::not_found(format!(
            "{} is not installed",
            args.product.slug()
        )));
    }
    Ok(json!({ "product": args.product, "installed": false, "data_retained": true }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MintArgs {
    /// The key's role; at most your own.
    role: Role,
    /// A note to recognise the key by, e.g. "nightly sync job".
    #[serde(default)]
    label: Option<String>,
    /// Lifetime such as "30d", "12h" or "45m". Omit for a key that does not expire.
    #[serde(default)]
    expires_in: Option<String>,
}

async fn mint_api_key(cx: &Cx<'_>, args: MintArgs) -> ToolResult {
    api_key::check_ceiling(cx.principal, args.role)?;
    if args.label.as_ref().is_some_and(|l| l.chars().count() > 200) {
        return Err(ToolError::invalid_input(
            "label",
            "label must be at most 200 characters",
        ));
    }
    let expires_at = match &args.expires_in {
        Some(text) => Some(cx.app.clock.now() + parse_duration("expires_in", text)?),
        None => None,
    };
    let minted = api_key::mint(
        cx.scope,
        args.role,
        args.label,
        expires_at,
        &cx.principal.credential.id,
    )
    .await?;
    let mut value = serde_json::to_value(&minted).map_err(ToolError::internal)?;
    value["notice"] = json!(
        "This key is shown once. Store it in a secret manager; it cannot be retrieved again."
    );
    Ok(value)
}

async fn list_api_keys(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let rows = cx
        .scope
        .query(
            "SELECT key_id, role, label, created_by, created_at, expires_at, revoked_at, last_used_at
             FROM hdls.api_keys ORDER BY created_at DESC, key_id",
            &[],
        )
        .await?;
    let now = cx.app.clock.now();
    let keys: Vec<_> = rows
        .iter()
        .map(|r| {
            let expires_at: Option<OffsetDateTime> = r.get("expires_at");
            let revoked_at: Option<OffsetDateTime> = r.get("revoked_at");
            let status = if revoked_at.is_some() {
                "revoked"
            } else if expires_at.is_some_and(|t| t <= now) {
                "expired"
            } else {
                "active"
            };
            json!({
                "key_id": api_key::display_id(r.get("key_id")),
                "role": r.get::<_, &str>("role"),
                "label": r.get::<_, Option<&str>>("label"),
                "created_by": r.get::<_, &str>("created_by"),
                "created_at": rfc3339(Some(r.get("created_at"))),
                "expires_at": rfc3339(expires_at),
                "revoked_at": rfc3339(revoked_at),
                "last_used_at": rfc3339(r.get("last_used_at")),
                "status": status,
            })
        })
        .collect();
    Ok(json!({ "keys": keys }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RevokeArgs {
    /// The key's id as listed, e.g. "key_3f2a9c0d1e4b5a67".
    key_id: String,
}

async fn revoke_api_key(cx: &Cx<'_>, args: RevokeArgs) -> ToolResult {
    let key_id = api_key::parse_display_id(&args.key_id).ok_or_else(|| {
        ToolError::invalid_input("key_id", "expected a key id like key_3f2a9c0d1e4b5a67")
    })?;
    let row = cx
        .scope
        .query_opt(
            "SELECT role, revoked_at FROM hdls.api_keys WHERE key_id = $1 FOR UPDATE",
            &[&key_id],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!("no API key {} in this workspace", args.key_id))
        })?;
    let role: Role = row
        .get::<_, &str>("role")
        .parse()
        .map_err(ToolError::internal)?;
    if role > cx.principal.role {
        return Err(ToolError::forbidden(format!(
            "a {} credential cannot revoke a {} key",
            cx.principal.role, role
        )));
    }
    let already: Option<OffsetDateTime> = row.get("revoked_at");
    if already.is_none() {
        cx.scope
            .execute(
                "UPDATE hdls.api_keys SET revoked_at = $2 WHERE key_id = $1",
                &[&key_id, &cx.app.clock.now()],
            )
            .await?;
    }
    Ok(json!({ "key_id": api_key::display_id(key_id), "revoked": true }))
}
