//! The concierge (`/api/mcp`): the control plane of a workspace. Its tools manage the
//! workspace itself (identity, products, keys, usage, audit) and its team (members,
//! invitations, OAuth connections), and explain and prove the product (verify_security).

mod docs;
mod team;
mod verify;
pub mod whoami;
mod workspace;

use crate::identity::{Endpoint, Role};
use crate::tools::{Effect, ToolDef};

/// Every concierge tool.
pub fn tools() -> Vec<ToolDef> {
    let mut tools = workspace::tools();
    tools.extend(team::tools());
    tools.push(ToolDef::new(
        "verify_security",
        "Run the security checks live and report each with its evidence and how to check it yourself: the \
         database role serving tool calls is no superuser and cannot bypass row-level security; every table \
         has row-level security enabled and forced; a query without a workspace sees zero rows; this \
         credential is bound to exactly this workspace and no tool takes a workspace id; the token's \
         audience is this endpoint; PKCE is S256 only; secrets are stored encrypted; the rate limit is in \
         force. Reveals no addresses and nothing of other workspaces.",
        Endpoint::Concierge,
        Role::Reader,
        Effect::Read,
        verify::verify_security,
    ));
    tools.push(ToolDef::new(
        "search_docs",
        "Search the hdls documentation this server carries (how every product, tool, role, limit and \
         security guarantee behaves). Returns ranked sections: page, section title, a snippet with the \
         matched words, and the section's resource URI (hdls://docs/<page>#<section>) to read it whole. \
         Pass product to search only that product's pages. A page whose status says \"being built\" \
         describes tools this server does not serve yet.",
        Endpoint::Concierge,
        Role::Reader,
        Effect::Read,
        docs::search_docs,
    ));
    tools
}
