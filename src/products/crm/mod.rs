//! The CRM (`/api/mcp/crm`): accounts, the people at them (contacts), deals in a pipeline of
//! stages, and notes on any of them. Tables in the `crm` schema (migrations V1, V8).

mod accounts;

use crate::tools::ToolDef;

/// The CRM's named tools (the power tools and custom-field tools are added by the registry).
pub fn tools() -> Vec<ToolDef> {
    accounts::tools()
}

/// The statement `search_accounts` runs (the benchmark issues the same SQL directly).
pub use accounts::SEARCH_SQL;
