//! The concierge (`/api/mcp`): the control plane of a workspace. Its tools manage the
//! workspace itself (identity, products, keys, usage, audit), its team (members,
//! invitations, OAuth connections), its webhooks and linked databases, workspace memory and
//! links, and explain and prove the product (docs, verify_security).

mod data_sources;
mod docs;
mod links;
mod memory;
mod team;
mod verify;
mod webhooks;
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
    tools.extend(managed());
    tools.extend(webhooks::tools());
    tools.extend(data_sources::tools());
    tools
}

/// Workspace memory and cross-product links: managed workspaces only, team credentials only.
fn managed() -> Vec<ToolDef> {
    const HERE: Endpoint = Endpoint::Concierge;
    vec![
        ToolDef::new(
            "remember",
            "Remember a note for the team's assistants, shared by the whole workspace (e.g. \"our fiscal year \
             starts in February\"), optionally tagged and about one record ({product, entity, id}, which must \
             exist). Up to 4000 characters per entry and 1000 entries per workspace (conflict when full). \
             Needs member or higher.",
            HERE,
            Role::Member,
            Effect::Write,
            memory::remember,
        ),
        ToolDef::new(
            "recall",
            "Recall workspace memory: ranked full-text matches for `query`, or the newest entries first \
             without one (paged by cursor); narrow by `tag` or by the record it is `about`.",
            HERE,
            Role::Reader,
            Effect::Read,
            memory::recall,
        ),
        ToolDef::new(
            "forget",
            "Forget a memory entry by id. Its author can, and admins and owners can forget anyone's.",
            HERE,
            Role::Member,
            Effect::Destructive,
            memory::forget,
        ),
        ToolDef::new(
            "link_records",
            "Link two records of different products (or the same), e.g. a support ticket to the CRM account \
             it is about: from and to are {product, entity, id} (crm account/contact/deal, support \
             ticket/requester, contacts contact/organisation); both must exist and be visible to you. \
             relation defaults to \"related\". Linking twice returns the existing link. Needs member or higher.",
            HERE,
            Role::Member,
            Effect::IdempotentWrite,
            links::link_records,
        ),
        ToolDef::new(
            "list_links",
            "The links of one record ({product, entity, id}): the other end of each, with its label and the \
             relation. Links whose other end was deleted, or is in a product your credential does not reach, \
             are left out.",
            HERE,
            Role::Reader,
            Effect::Read,
            links::list_links,
        ),
        ToolDef::new(
            "unlink_records",
            "Remove a link by its id (link_id from list_links or link_records). Needs member or higher.",
            HERE,
            Role::Member,
            Effect::Destructive,
            links::unlink_records,
        ),
    ]
}
