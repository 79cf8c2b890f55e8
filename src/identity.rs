//! The one identity type every layer reads: who is calling, in which workspace, with what rights.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The role ladder: reader < member < admin < owner. `Ord` follows the ladder.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Member,
    Admin,
    Owner,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Member, Role::Admin, Role::Owner];

    /// The lowercase name used on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            other => Err(format!(
                "unknown role {other:?} (expected reader, member, admin or owner)"
            )),
        }
    }
}

/// Which audience a credential serves. Frozen into the credential when it is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persona {
    /// The team's own operators: whole-workspace visibility under the role ladder.
    Agent,
    /// An external requester: only their own rows, only the customer allowlist.
    Customer,
}

impl Persona {
    /// The lowercase name stamped into `hdls.persona`.
    pub fn as_str(self) -> &'static str {
        match self {
            Persona::Agent => "agent",
            Persona::Customer => "customer",
        }
    }
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiKey,
    OauthToken,
    /// The operator's command line (`hdls admin …`), which has no bearer credential.
    Cli,
    /// A person signed in on the web pages (consent, invitations).
    User,
}

/// A product that can be installed into a workspace; each has its own MCP endpoint and schema.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Crm,
    Support,
    Contacts,
}

impl Product {
    /// Every product, in display order.
    pub const ALL: [Product; 3] = [Product::Crm, Product::Support, Product::Contacts];

    /// The slug used in URLs, schemas and the database.
    pub fn slug(self) -> &'static str {
        match self {
            Product::Crm => "crm",
            Product::Support => "support",
            Product::Contacts => "contacts",
        }
    }

    /// A one-line description for `list_products`.
    pub fn description(self) -> &'static str {
        match self {
            Product::Crm => "Accounts, contacts, deals and notes",
            Product::Support => "Requesters, tickets and replies, with a customer portal",
            Product::Contacts => "An address book of people, organisations and tags",
        }
    }

    /// Parses a slug.
    pub fn from_slug(slug: &str) -> Option<Product> {
        Product::ALL.into_iter().find(|p| p.slug() == slug)
    }
}

/// An MCP endpoint: the concierge (control plane) or one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Concierge,
    Product(Product),
    /// A linked database (`/api/mcp/db/<data source id>`): the power tools over its schema,
    /// for data-source keys bound to it. The id comes from the path, not from here.
    DataSource,
}

impl Endpoint {
    /// Every endpoint served.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Concierge,
        Endpoint::Product(Product::Crm),
        Endpoint::Product(Product::Support),
        Endpoint::Product(Product::Contacts),
    ];

    /// The URL path of this endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Concierge => "/api/mcp",
            Endpoint::Product(Product::Crm) => "/api/mcp/crm",
            Endpoint::Product(Product::Support) => "/api/mcp/support",
            Endpoint::Product(Product::Contacts) => "/api/mcp/contacts",
            Endpoint::DataSource => DATA_SOURCE_PATH,
        }
    }

    /// A short name for logs and server info.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Concierge => "concierge",
            Endpoint::Product(p) => p.slug(),
            Endpoint::DataSource => "db",
        }
    }

    /// The path of one linked data source's endpoint.
    pub fn data_source_path(id: Uuid) -> String {
        format!("{DATA_SOURCE_PREFIX}{id}")
    }

    /// The data source id in a path under [`DATA_SOURCE_PREFIX`].
    pub fn data_source_in(path: &str) -> Option<Uuid> {
        path.strip_prefix(DATA_SOURCE_PREFIX)?
            .trim_end_matches('/')
            .parse()
            .ok()
    }
}

/// Where linked data sources are served: `/api/mcp/db/<data source id>`.
pub const DATA_SOURCE_PREFIX: &str = "/api/mcp/db/";
/// The route pattern of [`Endpoint::DataSource`].
pub const DATA_SOURCE_PATH: &str = "/api/mcp/db/{id}";

/// What a data-source key is bound to: one linked database and one schema of it. Such a
/// key works only at that source's endpoint (`/api/mcp/db/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataSourceBinding {
    pub id: Uuid,
    pub schema: String,
}

/// Opaque reference to the credential a request presented (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRef {
    pub kind: CredentialKind,
    /// `key_…` for API keys; the grant id for OAuth tokens; `cli` for the operator.
    pub id: String,
}

/// Everything the server knows about a caller, built once by authentication and then immutable.
#[derive(Debug, Clone)]
pub struct Principal {
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub role: Role,
    pub persona: Persona,
    /// The customer's requester id; `None` for agents.
    pub principal_id: Option<Uuid>,
    /// The person behind an OAuth token; `None` for API keys and the operator.
    pub user_id: Option<Uuid>,
    /// Products this credential may reach right now (installed, and granted for OAuth).
    pub products: Vec<Product>,
    /// Whether the credential reaches every installed product, now or later (the operator, and
    /// API keys minted without a product set), rather than an explicit set.
    pub all_products: bool,
    pub credential: CredentialRef,
    pub expires_at: Option<OffsetDateTime>,
    /// The linked database a data-source key is bound to; `None` for every other credential.
    pub data_source: Option<DataSourceBinding>,
    /// The workspace's credential epoch this principal was resolved at, when it comes from the
    /// process's credential cache: every transaction it opens checks the epoch is unchanged
    /// (migration V19, `crate::db::Scope`). `None` when resolved for this very request, or
    /// not from a presented credential at all (the operator, the webhook worker, the portal).
    pub credential_epoch: Option<i64>,
}

impl Principal {
    /// Whether this credential may use the given product's endpoint.
    pub fn has_product(&self, product: Product) -> bool {
        self.products.contains(&product)
    }

    /// Who acts, as records name them (note authors, stage history, personal custom fields,
    /// ticket replies): a customer as their requester (`requester:<uuid>`), the person behind
    /// an OAuth connection (`user:<uuid>`), else the credential itself.
    pub fn author_id(&self) -> String {
        match (self.persona, self.principal_id, self.user_id) {
            (Persona::Customer, Some(requester), _) => format!("requester:{requester}"),
            (_, _, Some(user)) => format!("user:{user}"),
            _ => self.credential.id.clone(),
        }
    }

    /// The operator's identity for `hdls admin …` commands acting on one workspace.
    pub fn operator(workspace_id: Uuid, workspace_name: String) -> Principal {
        Principal {
            workspace_id,
            workspace_name,
            role: Role::Owner,
            persona: Persona::Agent,
            principal_id: None,
            user_id: None,
            products: Vec::new(),
            all_products: true,
            credential: CredentialRef {
                kind: CredentialKind::Cli,
                id: "cli".to_owned(),
            },
            expires_at: None,
            data_source: None,
            credential_epoch: None,
        }
    }
}
