//! The products: each a folder with its named tools and their SQL. What every product's
//! tools share (the registry, the call path, helpers for named tools, custom fields, the power
//! tools) sits below, in `crate::tools` and `crate::engine`.

pub mod contacts;
pub mod crm;
pub mod support;

use crate::identity::Product;
use crate::tools::{Registry, ToolDef, custom_fields, power};

/// Every product's tools: named tools, custom-field tools where it has entities, power tools.
pub fn tools() -> Vec<ToolDef> {
    let mut tools = crm::tools();
    tools.extend(support::tools());
    tools.extend(contacts::tools());
    for product in Product::ALL {
        if custom_fields::entities_of(product).next().is_some() {
            tools.extend(custom_fields::tools(product));
        }
        tools.extend(power::tools(product));
    }
    // Linked databases get the same power tools, declared once for their endpoint.
    tools.extend(power::tools_on(crate::identity::Endpoint::DataSource));
    tools
}

/// The registry of every shipped tool: the concierge's and every product's.
pub fn registry() -> Registry {
    let mut all = crate::concierge::tools();
    all.extend(tools());
    Registry::new(all)
}
