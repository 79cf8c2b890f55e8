//! The shared state every request reads: pools, the tool registry, the clock, the public URL.

use std::sync::Arc;

use url::Url;

use crate::client_address::TrustedProxies;
use crate::clock::Clock;
use crate::datasources::DataSources;
use crate::db::Pools;
use crate::engine::catalog::CatalogCache;
use crate::identity::Endpoint;
use crate::limits::concurrency::{self, WorkspaceGate};
use crate::limits::per_address::{self, AddressWindow, CustomerWindow};
use crate::mail::Mailer;
use crate::master_key::MasterKey;
use crate::metrics::Metrics;
use crate::net::guard::Cidr;
use crate::net::guard::Guard;
use crate::oauth::keys::Keyring;
use crate::tools::Registry;
use crate::webhooks::Webhooks;

/// Services shared by every request.
pub struct App {
    pub pools: Pools,
    /// Catalog snapshots for the power tools, refreshed on `NOTIFY hdls_catalog`.
    pub catalog: Arc<CatalogCache>,
    pub registry: Registry,
    pub clock: Arc<dyn Clock>,
    pub public: PublicUrl,
    /// Rate limits and the usage ledger on every tool call. Always on in `serve`; the
    /// benchmark turns it off to measure its cost.
    pub enforce_limits: bool,
    /// OAuth token signing keys (sealed under the master key).
    pub keys: Keyring,
    /// The outbound SSRF guard for every server-initiated connection.
    pub outbound: Guard,
    /// SMTP for invitation emails, when the operator configured it.
    pub mailer: Option<Arc<Mailer>>,
    /// Proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`); none by default.
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Failed bearer authentications per client address (this node).
    pub bearer_failures: AddressWindow,
    /// Credentials this process resolved, checked by epoch on every call (`auth::cache`).
    pub credentials: crate::auth::cache::CredentialCache,
    /// Workspaces just refused as over a limit, answered without the database until the
    /// window ends (`limits::refused`).
    pub recent_refusals: crate::limits::refused::RecentRefusals,
    /// This process's batches of read-only calls being admitted (`limits::batch`).
    pub admissions: Arc<crate::limits::batch::Admissions>,
    /// Dynamic client registrations per client address (this node).
    pub registrations: AddressWindow,
    /// Tool calls per customer (this node): one customer cannot use up the workspace's limit.
    pub customer_calls: CustomerWindow,
    /// Concurrent tool calls per workspace (this node).
    pub workspace_gate: WorkspaceGate,
    /// Webhook delivery settings, the worker's wake-up and its pinned HTTP clients.
    pub webhooks: Arc<Webhooks>,
    /// Linked databases' pools and catalogs (this node).
    pub data_sources: DataSources,
    /// What `/metrics` exports (served on its own listener, never the public one).
    pub metrics: Metrics,
}

impl App {
    /// The standard app: every shipped tool, limits enforced, an empty catalog cache.
    pub fn new(pools: Pools, clock: Arc<dyn Clock>, public: PublicUrl) -> App {
        crate::net::fetch::install_tls_provider();
        App {
            catalog: Arc::new(CatalogCache::default()),
            registry: crate::products::registry(),
            clock,
            public,
            enforce_limits: true,
            // Replaced by `serve` with the real master key; a process-local one suits tests.
            keys: Keyring::new(MasterKey::ephemeral()),
            outbound: Guard::system(),
            mailer: None,
            trusted_proxies: Arc::new(TrustedProxies::default()),
            credentials: Default::default(),
            recent_refusals: Default::default(),
            admissions: Default::default(),
            bearer_failures: AddressWindow::new(
                per_address::BEARER_FAILURES_PER_MINUTE,
                time::Duration::minutes(1),
            ),
            registrations: AddressWindow::new(
                per_address::REGISTRATIONS_PER_HOUR,
                time::Duration::hours(1),
            ),
            customer_calls: CustomerWindow::new(
                per_address::CUSTOMER_CALLS_PER_MINUTE,
                time::Duration::minutes(1),
            ),
            workspace_gate: WorkspaceGate::new(
                workspace_concurrency(pools.runtime.status().max_size),
                concurrency::DEFAULT_WAIT,
            ),
            webhooks: Arc::new(Webhooks::default()),
            data_sources: DataSources::default(),
            metrics: Metrics::default(),
            pools,
        }
    }

    /// Believes `X-Forwarded-For` from these proxies.
    pub fn with_trusted_proxies(mut self, proxies: Vec<Cidr>) -> App {
        self.trusted_proxies = Arc::new(TrustedProxies(proxies));
        self
    }

    /// Bounds concurrent tool calls per workspace on this node.
    pub fn with_workspace_gate(mut self, gate: WorkspaceGate) -> App {
        self.workspace_gate = gate;
        self
    }

    /// Uses admission leases for at most `ttl` (see `crate::limits::lease`).
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> App {
        self.admissions = Arc::new(crate::limits::batch::Admissions::with_lease_ttl(ttl));
        self
    }

    /// Uses `key` to seal and open token signing keys.
    pub fn with_master_key(mut self, key: MasterKey) -> App {
        self.keys = Keyring::new(key);
        self
    }

    /// Sends invitation emails through `mailer`.
    pub fn with_mailer(mut self, mailer: Mailer) -> App {
        self.mailer = Some(Arc::new(mailer));
        self
    }

    /// Delivers webhooks with these settings (timeout, lease, retention).
    pub fn with_webhook_settings(mut self, settings: crate::webhooks::Settings) -> App {
        self.webhooks = Arc::new(Webhooks::new(settings));
        self
    }

    /// Uses `guard` for outbound connections (an operator may allow extra networks).
    pub fn with_outbound(mut self, guard: Guard) -> App {
        self.outbound = guard;
        self
    }
}

/// `HDLS_WORKSPACE_CONCURRENCY`, or half the runtime pool: one workspace can never hold every
/// connection, whatever it sends.
fn workspace_concurrency(runtime_pool: usize) -> usize {
    std::env::var("HDLS_WORKSPACE_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(runtime_pool / 2)
        .max(1)
}

/// The URL clients use to reach this server; the source of resource URLs, allowed Hosts and Origins.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    base: String,
    origin: String,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
}

impl PublicUrl {
    /// Parses `--public-url`; extra Origins (e.g. a browser app's) may be allowed too.
    pub fn parse(text: &str, extra_origins: &[String]) -> anyhow::Result<PublicUrl> {
        let url =
            Url::parse(text).map_err(|e| anyhow::anyhow!("invalid public URL {text:?}: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "the public URL must be http or https"
        );
        anyhow::ensure!(
            url.query().is_none() && url.fragment().is_none() && url.path() == "/",
            "the public URL must be an origin only, like https://hdls.example.com"
        );
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("the public URL needs a host"))?
            .to_owned();
        let origin = url.origin().ascii_serialization();
        let port = url.port();
        let mut names = vec![host.clone()];
        // A loopback public URL is reachable under every loopback name.
        if matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
            names = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
        }
        let mut allowed_hosts = Vec::new();
        let mut allowed_origins = extra_origins.to_vec();
        for name in &names {
            match port {
                Some(p) => {
                    allowed_hosts.push(format!("{name}:{p}"));
                    allowed_origins.push(format!("{}://{name}:{p}", url.scheme()));
                }
                None => {
                    allowed_hosts.push(name.clone());
                    allowed_origins.push(format!("{}://{name}", url.scheme()));
                }
            }
        }
        Ok(PublicUrl {
            base: origin.clone(),
            origin,
            allowed_hosts,
            allowed_origins,
        })
    }

    /// `https://host[:port]` with no trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether clients reach us over TLS (cookies are then marked Secure).
    pub fn is_https(&self) -> bool {
        self.base.starts_with("https://")
    }

    /// The serialised origin of the public URL.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The MCP endpoint's full URL, which is also its OAuth resource identifier.
    pub fn endpoint_url(&self, endpoint: Endpoint) -> String {
        format!("{}{}", self.base, endpoint.path())
    }

    /// Where the endpoint's RFC 9728 protected-resource metadata lives.
    pub fn resource_metadata_url(&self, endpoint: Endpoint) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource{}",
            self.base,
            endpoint.path()
        )
    }

    /// `Host` header values accepted (DNS-rebinding protection).
    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// `Origin` header values accepted when a browser sends one.
    pub fn allowed_origins(&self) -> &[String] {
        &self.allowed_origins
    }

    /// Whether a Host header value is one of ours (case-insensitive).
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether an Origin header value is one of ours (exact serialised-origin match).
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    }
}
