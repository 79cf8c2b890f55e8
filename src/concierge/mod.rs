//! The concierge (`/api/mcp`): the control plane of a workspace. Its tools manage the
//! workspace itself (identity, products, keys, usage, audit), its team (members,
//! invitations, OAuth connections) and its webhooks.

mod data_sources;
mod team;
mod webhooks;
mod workspace;

use crate::tools::ToolDef;

/// Every concierge tool.
pub fn tools() -> Vec<ToolDef> {
    let mut tools = workspace::tools();
    tools.extend(team::tools());
    tools.extend(webhooks::tools());
    tools.extend(data_sources::tools());
    tools
}
