//! The rmcp ServerHandler for one endpoint: lists and calls tools from the registry as the request's Principal.

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    CustomRequest, CustomResult, ErrorCode, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::app::App;
use crate::error::ToolError;
use crate::identity::{Endpoint, Principal};
use crate::tools::custom_fields;

/// One MCP endpoint (concierge or a product) bound to the shared app state.
#[derive(Clone)]
pub struct McpEndpoint {
    app: Arc<App>,
    endpoint: Endpoint,
}

impl McpEndpoint {
    pub fn new(app: Arc<App>, endpoint: Endpoint) -> McpEndpoint {
        McpEndpoint { app, endpoint }
    }

    /// The Principal the auth middleware attached to this HTTP request.
    fn principal(context: &RequestContext<RoleServer>) -> Result<Arc<Principal>, McpError> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<Principal>>())
            .cloned()
            .ok_or_else(|| {
                McpError::internal_error("request reached MCP without authentication", None)
            })
    }
}

/// A successful result: the object as structuredContent plus the same JSON as text, for
/// clients that read only text (the MCP spec's backwards-compatibility rule). Compact, not
/// pretty: models read it equally well and every byte is paid for twice.
fn success(value: Value) -> CallToolResult {
    CallToolResult::structured(value)
}

/// The properties object that holds a tool's `custom` argument: at the top, or inside a
/// `values` object (support's `create_ticket {values: {…, custom}}`, whose schema is inlined).
fn custom_slot(
    input: &mut serde_json::Map<String, Value>,
) -> Option<&mut serde_json::Map<String, Value>> {
    let top = input.get("properties")?.as_object()?;
    let nested = !top.contains_key("custom")
        && top
            .get("values")
            .and_then(|v| v.get("properties"))
            .and_then(Value::as_object)
            .is_some_and(|p| p.contains_key("custom"));
    let properties = input.get_mut("properties")?.as_object_mut()?;
    if nested {
        properties
            .get_mut("values")?
            .get_mut("properties")?
            .as_object_mut()
    } else {
        Some(properties)
    }
}

/// A refusal: `isError: true` with `{"error": {"code", "message", …}}`.
fn failure(error: &ToolError) -> CallToolResult {
    let body = error.to_json();
    let mut result = CallToolResult::structured_error(body);
    result.content = vec![ContentBlock::text(format!(
        "error ({}): {}",
        error.code.as_str(),
        error.message
    ))];
    result
}

impl ServerHandler for McpEndpoint {
    fn get_info(&self) -> ServerConfig {
        let instructions = match self.endpoint {
            Endpoint::Concierge => {
                "hdls concierge: manage this workspace (whoami, products, API keys). \
                 Your credential is bound to one workspace; no tool takes a tenant id."
            }
            Endpoint::Product(_) => {
                "hdls product endpoint. Your credential is bound to one workspace; no tool takes a tenant id."
            }
            Endpoint::DataSource => {
                "hdls linked database: the power tools over the schema your data-source key is bound to, \
                 run with exactly the privileges of the database role the database was linked with."
            }
        };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                format!("hdls-{}", self.endpoint.name()),
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(instructions)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let principal = Self::principal(&context)?;
        let visible: Vec<&crate::tools::ToolDef> = self
            .app
            .registry
            .visible(self.endpoint, &principal)
            .collect();
        // Tools that take custom-field values get that argument typed with the fields this
        // caller sees; one query, only when such a tool is listed.
        let custom = match self.endpoint {
            Endpoint::Product(product) if visible.iter().any(|t| t.custom_entity.is_some()) => {
                // A database query like a tool call's, so it takes the workspace's slot too.
                let schemas = match self.app.workspace_gate.enter(principal.workspace_id).await {
                    Ok(_slot) => {
                        custom_fields::argument_schemas(&self.app, &principal, product).await
                    }
                    Err(busy) => Err(busy),
                };
                match schemas {
                    Ok(schemas) => schemas,
                    Err(error) => {
                        tracing::warn!(%error, "custom field schemas unavailable; listing the generic ones");
                        Default::default()
                    }
                }
            }
            _ => Default::default(),
        };
        let tools: Vec<Tool> = visible
            .iter()
            .map(|t| {
                let mut tool = t.to_mcp();
                let typed = t.custom_entity.and_then(|e| custom.get(e.name));
                if let Some(schema) = typed {
                    let mut input = (*tool.input_schema).clone();
                    let schema = if t.custom_clears {
                        custom_fields::clearable(schema)
                    } else {
                        schema.clone()
                    };
                    if let Some(properties) = custom_slot(&mut input) {
                        properties.insert("custom".into(), schema);
                    }
                    tool.input_schema = Arc::new(input);
                }
                tool
            })
            .collect();
        // The list depends on the credential: only that caller may cache it.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let principal = Self::principal(&context)?;
        let Some(tool) = self
            .app
            .registry
            .find(self.endpoint, &request.name, principal.persona)
        else {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?} on this endpoint", request.name),
                None,
            ));
        };
        let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let result = match crate::tools::call(&self.app, tool, &principal, args).await {
            Ok(value) => success(value),
            Err(error) => failure(&error),
        };
        Ok(result.into())
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        // rmcp parses each method it knows into its typed request and falls back to a
        // custom request only when that fails: a known method arriving here had params
        // that do not fit it. That is invalid params (-32602), not an unknown method.
        match request.method.as_str() {
            "tools/call" => Err(McpError::invalid_params(
                "tools/call takes params {\"name\": string, \"arguments\": object}; \
                 arguments, when given, must be a JSON object",
                None,
            )),
            method @ ("tools/list" | "initialize" | "server/discover" | "ping") => Err(
                McpError::invalid_params(format!("the params of {method} are malformed"), None),
            ),
            method => Err(McpError::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("unknown method {method:?}"),
                None,
            )),
        }
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        // Used by rmcp for Mcp-Param header validation, without request context. A name has
        // one schema per endpoint and persona; the agent's is given, since the customer tools
        // that share a name take a subset of the agent tool's arguments.
        self.app
            .registry
            .find(self.endpoint, name, crate::identity::Persona::Agent)
            .map(|t| t.to_mcp())
    }
}
