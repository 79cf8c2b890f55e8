//! Contacts (`/api/mcp/contacts`): the workspace's address book of people and
//! organisations. Tables in the `contacts` schema (migrations V9, V11).

mod import;
mod organisations;
mod people;

use crate::identity::{Endpoint, Product};
use crate::tools::ToolDef;

const HERE: Endpoint = Endpoint::Product(Product::Contacts);

/// The address book's named tools (the power tools and custom-field tools are added by the
/// registry).
pub fn tools() -> Vec<ToolDef> {
    let mut tools = people::tools();
    tools.extend(organisations::tools());
    tools.extend(import::tools());
    tools
}
