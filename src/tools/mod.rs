//! The one tool registry: each tool declared once; `tools/list` and `tools/call` both read it.

pub mod args;
mod call;
pub mod custom_fields;
pub mod links;
pub mod named;
pub mod power;

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::cursor;
pub use crate::error::{ErrorCode, ToolError};
pub use call::call;

use crate::app::App;
use crate::db::Scope;
use crate::identity::{Endpoint, Persona, Principal, Role};

/// What a tool handler can reach: who is calling, their open Scope, and the app's services.
pub struct Cx<'a> {
    pub principal: &'a Principal,
    pub scope: &'a Scope,
    pub app: &'a App,
    /// The tool's audit action, if it is a privileged one.
    pub action: Option<&'static str>,
    /// The endpoint the call arrived on (product tools read their schema from it).
    pub endpoint: Endpoint,
}

impl Cx<'_> {
    /// Records this privileged tool's action as allowed, in the same transaction as its effect.
    pub async fn audit(&self, target: &str) -> Result<(), ToolError> {
        let action = self.action.ok_or_else(|| {
            ToolError::internal("audit() called by a tool declared without an action")
        })?;
        crate::audit::record(
            self.scope,
            self.principal,
            action,
            Some(target),
            crate::audit::Outcome::Allowed,
            self.app.clock.now(),
        )
        .await
    }
}

/// A timestamp as tools show it: RFC 3339, or null.
pub fn timestamp(t: Option<time::OffsetDateTime>) -> Value {
    t.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .map_or(Value::Null, Value::String)
}

/// A tool's successful output: a JSON object, returned as structuredContent.
pub type ToolResult = Result<Value, ToolError>;

type Handler = Box<dyn for<'a> Fn(&'a Cx<'a>, Value) -> BoxFuture<'a, ToolResult> + Send + Sync>;

/// How a tool behaves, for MCP annotations (hints to clients, not guarantees).
#[derive(Debug, Clone, Copy)]
pub enum Effect {
    /// Reads only.
    Read,
    /// Writes; repeating the same call has no further effect.
    IdempotentWrite,
    /// Writes; repeating it writes again.
    Write,
    /// Deletes or revokes something.
    Destructive,
}

/// One tool, declared once.
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub endpoint: Endpoint,
    pub min_role: Role,
    pub personas: &'static [Persona],
    pub effect: Effect,
    /// Set for privileged tools: allowed calls and refused attempts go to the audit log.
    pub audit_action: Option<&'static str>,
    /// The entity whose custom fields the tool's `custom` argument takes: `tools/list` then
    /// types that argument with the fields the caller sees.
    pub custom_entity: Option<named::Entity>,
    /// Whether a null in that argument clears a field's value (update tools).
    pub custom_clears: bool,
    input_schema: Arc<JsonObject>,
    handler: Handler,
}

/// Personas for tools only the team's own operators use.
pub const AGENTS: &[Persona] = &[Persona::Agent];
/// Personas for the customer allowlist (support's customer tools).
pub const CUSTOMERS: &[Persona] = &[Persona::Customer];

/// Adapts `async fn(&Cx, Args) -> ToolResult` items to the registry's erased handler type.
pub trait ToolFn<'a, A>: Send + Sync + 'static {
    type Fut: Future<Output = ToolResult> + Send + 'a;
    fn call(&self, cx: &'a Cx<'a>, args: A) -> Self::Fut;
}

impl<'a, A, F, Fut> ToolFn<'a, A> for F
where
    A: 'a,
    F: Fn(&'a Cx<'a>, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ToolResult> + Send + 'a,
{
    type Fut = Fut;
    fn call(&self, cx: &'a Cx<'a>, args: A) -> Fut {
        self(cx, args)
    }
}

impl ToolDef {
    /// Declares a tool whose arguments are the Rust type `A` (its JSON schema is derived from it).
    pub fn new<A, F>(
        name: &'static str,
        description: &'static str,
        endpoint: Endpoint,
        min_role: Role,
        effect: Effect,
        handler: F,
    ) -> ToolDef
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        F: for<'a> ToolFn<'a, A>,
    {
        let handler: Handler = Box::new(move |cx, raw| match args::parse::<A>(raw) {
            Ok(parsed) => Box::pin(handler.call(cx, parsed)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        });
        ToolDef {
            name,
            description,
            endpoint,
            min_role,
            personas: AGENTS,
            effect,
            audit_action: None,
            custom_entity: None,
            custom_clears: false,
            input_schema: rmcp::handler::server::tool::schema_for_type::<A>(),
            handler,
        }
    }

    /// Restricts or widens the personas that may call this tool.
    pub fn personas(mut self, personas: &'static [Persona]) -> ToolDef {
        self.personas = personas;
        self
    }

    /// Declares that the tool's `custom` argument holds `entity`'s custom fields.
    pub fn custom_fields(mut self, entity: named::Entity) -> ToolDef {
        self.custom_entity = Some(entity);
        self
    }

    /// Like [`ToolDef::custom_fields`] for an update: a null value clears that field.
    pub fn custom_field_changes(mut self, entity: named::Entity) -> ToolDef {
        self.custom_entity = Some(entity);
        self.custom_clears = true;
        self
    }

    /// Marks the tool privileged: its calls and refused attempts are audited under `action`.
    pub fn audited(mut self, action: &'static str) -> ToolDef {
        self.audit_action = Some(action);
        self
    }

    /// The single rule for both listing and calling: role ladder, persona allowlist, product installed.
    pub fn permits(&self, principal: &Principal) -> Result<(), ToolError> {
        if !self.personas.contains(&principal.persona) {
            return Err(ToolError::forbidden(format!(
                "{} is not available to {} credentials",
                self.name,
                principal.persona.as_str()
            )));
        }
        if principal.role < self.min_role {
            return Err(ToolError::forbidden(format!(
                "{} needs the {} role or higher; this credential is {}",
                self.name, self.min_role, principal.role
            ))
            .with("required_role", self.min_role.as_str()));
        }
        // A data-source key reaches its source's endpoint and nothing else; nothing else
        // reaches a source's endpoint.
        match (self.endpoint, &principal.data_source) {
            (Endpoint::DataSource, None) => {
                return Err(ToolError::forbidden(
                    "linked databases are reached with a data-source key (mint_api_key with data_source)",
                ));
            }
            (endpoint, Some(_)) if endpoint != Endpoint::DataSource => {
                return Err(ToolError::forbidden(
                    "a data-source key works only at its data source's endpoint",
                ));
            }
            _ => {}
        }
        if let Endpoint::Product(product) = self.endpoint
            && !principal.has_product(product)
        {
            return Err(ToolError::forbidden(format!(
                "the {} product is not installed in this workspace (or not granted to this credential); \
                 an admin can install it with install_product on /api/mcp",
                product.slug()
            )));
        }
        Ok(())
    }

    /// Runs the handler with raw JSON arguments.
    pub fn invoke<'a>(&'a self, cx: &'a Cx<'a>, args: Value) -> BoxFuture<'a, ToolResult> {
        (self.handler)(cx, args)
    }

    /// The MCP description of this tool.
    pub fn to_mcp(&self) -> Tool {
        let (read_only, destructive, idempotent) = match self.effect {
            Effect::Read => (true, false, true),
            Effect::IdempotentWrite => (false, false, true),
            Effect::Write => (false, false, false),
            Effect::Destructive => (false, true, true),
        };
        let annotations = ToolAnnotations::new()
            .read_only(read_only)
            .destructive(destructive)
            .idempotent(idempotent)
            .open_world(false);
        Tool::new(self.name, self.description, self.input_schema.clone())
            .with_annotations(annotations)
    }
}

/// Every tool hdls serves.
pub struct Registry {
    tools: Vec<ToolDef>,
}

impl Registry {
    /// A registry of these tools (see `crate::products::registry` for the shipped one).
    /// Two tools may share a name on one endpoint only for different personas (support's
    /// `create_ticket` is one tool for agents and another, narrower one for customers).
    pub fn new(tools: Vec<ToolDef>) -> Registry {
        for (i, a) in tools.iter().enumerate() {
            for b in &tools[..i] {
                assert!(
                    a.name != b.name
                        || a.endpoint != b.endpoint
                        || !a.personas.iter().any(|p| b.personas.contains(p)),
                    "tool {} is declared twice on {} for the same persona",
                    a.name,
                    a.endpoint.name()
                );
            }
        }
        Registry { tools }
    }

    /// Every tool on an endpoint, whoever asks (for `get_tool` and tests).
    pub fn on(&self, endpoint: Endpoint) -> impl Iterator<Item = &ToolDef> {
        self.tools.iter().filter(move |t| t.endpoint == endpoint)
    }

    /// Every tool, on every endpoint.
    pub fn all(&self) -> impl Iterator<Item = &ToolDef> {
        self.tools.iter()
    }

    /// A tool by name on one endpoint, as a caller of `persona` means it: that persona's tool
    /// of the name if there is one, else any tool of the name (whose permit rule then refuses).
    pub fn find(&self, endpoint: Endpoint, name: &str, persona: Persona) -> Option<&ToolDef> {
        let mut named = self.on(endpoint).filter(|t| t.name == name).peekable();
        let first = named.peek().copied();
        named.find(|t| t.personas.contains(&persona)).or(first)
    }

    /// The tools this principal may call on this endpoint.
    pub fn visible<'a>(
        &'a self,
        endpoint: Endpoint,
        principal: &'a Principal,
    ) -> impl Iterator<Item = &'a ToolDef> {
        self.on(endpoint).filter(|t| t.permits(principal).is_ok())
    }
}
