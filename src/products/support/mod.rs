//! Support (`/api/mcp/support`): requesters (the team's customers), tickets with their thread,
//! SLA targets and satisfaction ratings. Two personas use it: agents (the team, under the
//! role ladder) and customers (one requester each, only their own tickets). Tables in the
//! `support` schema (migration V13), whose row policies enforce the customer's isolation.

mod customer;
mod customer_access;
mod customer_keys;
mod requesters;
mod sla;
mod summary;
mod thread;
mod tickets;

use crate::tools::ToolDef;

/// Support's named tools for both personas (the power tools and custom-field tools are added
/// by the registry, for agents only).
pub fn tools() -> Vec<ToolDef> {
    let mut tools = requesters::tools();
    tools.extend(tickets::tools());
    tools.extend(thread::tools());
    tools.extend(sla::tools());
    tools.extend(summary::tools());
    tools.extend(customer::tools());
    tools.extend(customer_access::tools());
    tools.extend(customer_keys::tools());
    tools
}
