//! The rmcp ServerHandler for one endpoint: lists and calls tools from the registry as the request's Principal.

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
    CustomRequest, CustomResult, ErrorCode, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, Implementation, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, Prompt, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, Role as MessageRole, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::app::App;
use crate::docs;
use crate::error::ToolError;
use crate::identity::{Endpoint, Persona, Principal};
use crate::tools::custom_fields;

use super::user_content;

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

    /// Whether this endpoint serves the docs as resources and the "Just ask" phrases as
    /// prompts to this caller: the concierge, to team credentials (customers get none).
    fn serves_docs(&self, principal: &Principal) -> bool {
        self.endpoint == Endpoint::Concierge && principal.persona == Persona::Agent
    }

    /// The prompts whose every tool this server registers.
    fn prompts(&self) -> impl Iterator<Item = &'static docs::prompts::PromptDef> + '_ {
        docs::prompts::PROMPTS.iter().filter(|p| {
            p.tools
                .iter()
                .all(|name| self.app.registry.all().any(|t| t.name == *name))
        })
    }

    /// The Principal the auth middleware attached to this HTTP request.
    /// Tells authentication that the cached credential this request ran with is out of date
    /// (see `crate::auth::cache`): it resolves the credential again and reruns the request.
    fn mark_stale(context: &RequestContext<RoleServer>) {
        if let Some(stale) = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<crate::auth::StaleCredential>>())
        {
            stale.mark();
        }
    }

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
/// pretty: models read it equally well and every byte is paid for twice. User-supplied text
/// stays inside that JSON; when the tool's result carries some, a second block (our words,
/// never theirs) names the fields that hold it.
fn success(value: Value, user_fields: Option<&str>) -> CallToolResult {
    let mut result = CallToolResult::structured(value);
    if let Some(fields) = user_fields {
        result
            .content
            .push(ContentBlock::text(user_content::notice(fields)));
    }
    result
}

/// A tool as `tools/list` shows it: its description also names the result's user-supplied fields.
fn describe(endpoint: Endpoint, tool: &crate::tools::ToolDef) -> Tool {
    let mut mcp = tool.to_mcp();
    if let Some(fields) = user_content::fields(endpoint, tool.name) {
        let text = format!(
            "{}{}",
            mcp.description.as_deref().unwrap_or_default(),
            user_content::describe(fields)
        );
        mcp.description = Some(text.into());
    }
    mcp
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
                "hdls concierge: manage this workspace (whoami, products, team, API keys, usage, audit), \
                 prove its security (verify_security) and answer questions about hdls (search_docs; \
                 the docs are also resources hdls://docs/<page>). Your credential is bound to one \
                 workspace; no tool takes a tenant id."
            }
            Endpoint::Product(_) => {
                "hdls product endpoint. Your credential is bound to one workspace; no tool takes a tenant id."
            }
            Endpoint::DataSource => {
                "hdls linked database: the power tools over the schema your data-source key is bound to, \
                 run with exactly the privileges of the database role the database was linked with."
            }
        };
        let capabilities = match self.endpoint {
            Endpoint::Concierge => ServerCapabilities::builder()
                .enable_prompts()
                .enable_resources()
                .enable_tools()
                .build(),
            Endpoint::Product(_) | Endpoint::DataSource => {
                ServerCapabilities::builder().enable_tools().build()
            }
        };
        ServerConfig::new(capabilities)
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
                let mut tool = describe(self.endpoint, t);
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
            Ok(value) => success(value, user_content::fields(self.endpoint, tool.name)),
            Err(error) => {
                if error.code == crate::error::ErrorCode::Unauthenticated {
                    Self::mark_stale(&context);
                }
                failure(&error)
            }
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let principal = Self::principal(&context)?;
        let resources: Vec<Resource> = if self.serves_docs(&principal) {
            docs::PAGES
                .iter()
                .map(|p| {
                    Resource::new(p.uri(), p.slug)
                        .with_title(p.title())
                        .with_description(format!("{} ({})", p.summary(), p.status.as_str()))
                        .with_mime_type("text/markdown")
                        .with_size(p.markdown.len() as u64)
                })
                .collect()
        } else {
            Vec::new()
        };
        // The pages change only with the binary, but whether a caller gets them depends on the
        // credential: fresh for an hour, for this caller only.
        Ok(ListResourcesResult::with_all_items(resources)
            .with_ttl_ms(docs::TTL_MS)
            .with_cache_scope(CacheScope::Private))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let principal = Self::principal(&context)?;
        let text = self
            .serves_docs(&principal)
            .then(|| docs::read(&request.uri))
            .flatten()
            .ok_or_else(|| {
                McpError::resource_not_found(format!("no resource {:?} here", request.uri), None)
            })?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, request.uri).with_mime_type("text/markdown"),
        ])
        .with_ttl_ms(docs::TTL_MS)
        .with_cache_scope(CacheScope::Private)
        .into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let principal = Self::principal(&context)?;
        let prompts: Vec<Prompt> = if self.serves_docs(&principal) {
            self.prompts()
                .map(|p| {
                    Prompt::new(
                        p.name,
                        Some(format!("\"{}\" Uses: {}.", p.phrase, p.tools.join(", "))),
                        None,
                    )
                    .with_title(p.title)
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(ListPromptsResult::with_all_items(prompts)
            .with_ttl_ms(docs::TTL_MS)
            .with_cache_scope(CacheScope::Private))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let principal = Self::principal(&context)?;
        let prompt = self
            .serves_docs(&principal)
            .then(|| self.prompts().find(|p| p.name == request.name))
            .flatten()
            .ok_or_else(|| {
                McpError::invalid_params(format!("no prompt {:?} here", request.name), None)
            })?;
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            MessageRole::User,
            prompt.text(),
        )])
        .with_description(prompt.title)
        .into())
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
            method @ ("tools/list" | "initialize" | "server/discover" | "ping"
            | "resources/list" | "resources/read" | "prompts/list" | "prompts/get") => Err(
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
            .map(|t| describe(self.endpoint, t))
    }
}
