//! Customer API keys: a key bound to one requester with the customer persona, for a team's
//! own backend that acts for a customer it has signed in. Minted like every credential:
//! bounded by the minter (`crate::credentials::bound_customer`), revoked with it, audited.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit::actions;
use crate::auth::api_key;
use crate::identity::{Endpoint, Product, Role};
use crate::tools::args::parse_duration;
use crate::tools::named;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult};

const HERE: Endpoint = Endpoint::Product(Product::Support);

/// The customer-key tool.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "mint_customer_key",
            "Mint an API key that acts as one requester (a customer), for your own backend serving a customer \
             it has signed in. The key has the customer persona: on /api/mcp/support it sees only the customer \
             tools (create_ticket, list_my_tickets, get_ticket, reply, rate_ticket) and only that requester's \
             tickets, never internal notes; it reaches nothing else. Optional expiry (e.g. \"30d\"; never later \
             than your own key's). Revoking your credential revokes this key too; disabling the requester stops \
             it at once; revoke it alone with revoke_api_key on /api/mcp. The key is shown once, in this \
             response only. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Write,
            mint_customer_key,
        )
        .audited(actions::API_KEY_MINT),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MintCustomerKey {
    /// The requester the key acts as (an id from search_requesters).
    requester_id: Uuid,
    /// A note to recognise the key by, e.g. "web app, customer sessions".
    #[serde(default)]
    label: Option<String>,
    /// Lifetime such as "30d", "12h" or "45m". Omit for a key that lives as long as yours.
    #[serde(default)]
    expires_in: Option<String>,
}

async fn mint_customer_key(cx: &Cx<'_>, args: MintCustomerKey) -> ToolResult {
    let label = named::opt_text("label", args.label.as_deref(), 200)?;
    let now = cx.app.clock.now();
    let expires_at = match &args.expires_in {
        Some(text) => Some(now + parse_duration("expires_in", text)?),
        None => None,
    };
    let minted = api_key::mint_customer(
        cx.scope,
        cx.principal,
        args.requester_id,
        label,
        expires_at,
        now,
    )
    .await?;
    let mut value = serde_json::to_value(&minted).map_err(ToolError::internal)?;
    value["notice"] = json!(
        "This key is shown once. Store it in a secret manager; it cannot be retrieved again."
    );
    Ok(value)
}
