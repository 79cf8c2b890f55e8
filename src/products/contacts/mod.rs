//! Contacts (`/api/mcp/contacts`): the workspace's address book of people and
//! organisations. Tables in the `contacts` schema (migration V9).

use crate::tools::ToolDef;

/// The address book's named tools.
pub fn tools() -> Vec<ToolDef> {
    Vec::new()
}
