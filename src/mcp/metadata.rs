//! RFC 9728 protected-resource metadata for each MCP endpoint.

use serde_json::{Value, json};

use crate::app::PublicUrl;
use crate::identity::Endpoint;

/// The metadata document for one endpoint.
pub fn protected_resource(public: &PublicUrl, endpoint: Endpoint) -> Value {
    // `authorization_servers` is added when the authorization server ships; until then
    // clients authenticate with API keys, and advertising a server that does not exist
    // would send them into a failing discovery.
    json!({
        "resource": public.endpoint_url(endpoint),
        "resource_name": format!("hdls {}", endpoint.name()),
        "bearer_methods_supported": ["header"],
    })
}
