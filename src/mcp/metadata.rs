//! RFC 9728 protected-resource metadata for each MCP endpoint.

use serde_json::{Value, json};

use crate::app::PublicUrl;
use crate::identity::Endpoint;

/// The metadata document for one endpoint.
pub fn protected_resource(public: &PublicUrl, endpoint: Endpoint) -> Value {
    // hdls is its own authorization server; its issuer is the public URL.
    json!({
        "resource": public.endpoint_url(endpoint),
        "resource_name": format!("hdls {}", endpoint.name()),
        "authorization_servers": [public.base()],
        "bearer_methods_supported": ["header"],
        "resource_signing_alg_values_supported": ["EdDSA"],
    })
}
