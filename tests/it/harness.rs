//! Test harness: a PostgreSQL server (HDLS_TEST_DATABASE_URL or a private ephemeral cluster),
//! a fresh database per test cloned from a migrated template, and an in-process server.
//!
//! Citus mode: with HDLS_TEST_CITUS_URL (a coordinator superuser URL whose database has
//! Citus and its workers registered, e.g. postgres://postgres@127.0.0.1:9700/postgres) each
//! test database is made a Citus cluster of its own on the coordinator and every worker, then
//! set up and migrated, which distributes it (migration V20). No template: a Citus database
//! cannot be cloned while its maintenance daemons hold connections to it.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use hdls::app::{App, PublicUrl};
use hdls::clock::{Clock, ManualClock};
use hdls::db::embedded::Cluster;
use hdls::db::{DbTarget, Pools, connect, migrate, setup};
use hdls::identity::Role;
use hdls::server::{self, RunningServer};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The superuser target every test database is created from.
struct Server {
    superuser: DbTarget,
    template: String,
    file_copy: bool,
    /// Set in Citus mode.
    citus: Option<CitusNodes>,
}

/// A Citus coordinator's nodes, read from its `pg_dist_node`.
struct CitusNodes {
    /// Where the coordinator is, as the workers reach it.
    coordinator: (String, i32),
    /// Each worker as a superuser target (the coordinator URL with the worker's host and port).
    workers: Vec<DbTarget>,
}

/// Shards per distributed table in test databases: enough for every worker to hold several,
/// few enough that distributing the schema takes seconds (Citus's default is 32).
const CITUS_TEST_SHARDS: i32 = 4;

/// The coordinator URL of Citus mode, if set.
fn citus_url() -> Option<String> {
    std::env::var("HDLS_TEST_CITUS_URL")
        .ok()
        .filter(|url| !url.is_empty())
}

/// Whether the suite runs against Citus (HDLS_TEST_CITUS_URL).
pub fn on_citus() -> bool {
    citus_url().is_some()
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static OWN_CLUSTER: OnceLock<Cluster> = OnceLock::new();

extern "C" fn stop_own_cluster() {
    if let Some(cluster) = OWN_CLUSTER.get() {
        cluster.stop_blocking_immediate();
        let _ = std::fs::remove_dir_all(cluster.root());
    }
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            if let Some(url) = citus_url() {
                return citus_server(&url).await;
            }
            let superuser = match std::env::var("HDLS_TEST_DATABASE_URL") {
                Ok(url) if !url.is_empty() => {
                    DbTarget::from_url(&url).expect("HDLS_TEST_DATABASE_URL")
                }
                _ => {
                    let dir =
                        std::env::temp_dir().join(format!("hdls-test-{}", std::process::id()));
                    let cluster = Cluster::start(&dir)
                        .await
                        .expect("starting an ephemeral PostgreSQL cluster");
                    let target = DbTarget::from_config(cluster.superuser_config("postgres"));
                    let _ = OWN_CLUSTER.set(cluster);
                    // SAFETY: registering a plain extern "C" function with libc's atexit.
                    unsafe {
                        libc::atexit(stop_own_cluster);
                    }
                    target
                }
            };
            let admin = connect(&superuser.with_dbname("postgres").as_given())
                .await
                .expect("connect as superuser");
            let version: i32 = admin
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .await
                .unwrap()
                .get(0);
            let fingerprint = format!(
                "{}{}",
                migrate::fingerprint(),
                &hex_digest(include_str!("../../src/db/setup.rs"))[..8]
            );
            let template = format!("hdls_tpl_{fingerprint}");
            drop_stale_databases(&admin).await;
            // Serialise template creation across concurrently running test processes.
            admin
                .execute("SELECT pg_advisory_lock(7163)", &[])
                .await
                .unwrap();
            let exists = admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{template}_building");
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
                    .await
                    .unwrap();
                admin
                    .batch_execute(&format!("CREATE DATABASE {building}"))
                    .await
                    .unwrap();
                let target = superuser.with_dbname(&building);
                setup::run(&target).await.expect("setup");
                migrate::run(&target).await.expect("migrate");
                // Renamed only once complete, so a half-built template is never used.
                admin
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
                    .await
                    .unwrap();
            }
            admin
                .execute("SELECT pg_advisory_unlock(7163)", &[])
                .await
                .unwrap();
            Server {
                superuser,
                template,
                file_copy: version >= 150000,
                citus: None,
            }
        })
        .await
}

/// Citus mode: the coordinator and its workers, from the coordinator's `pg_dist_node`.
async fn citus_server(url: &str) -> Server {
    let superuser = DbTarget::from_url(url).expect("HDLS_TEST_CITUS_URL");
    let admin = connect(&superuser.as_given())
        .await
        .expect("connect to the Citus coordinator (HDLS_TEST_CITUS_URL) as superuser");
    let rows = admin
        .query(
            "SELECT groupid = 0, nodename, nodeport FROM pg_dist_node
             WHERE noderole = 'primary' AND isactive ORDER BY nodeid",
            &[],
        )
        .await
        .expect("HDLS_TEST_CITUS_URL must name a database with the citus extension");
    let mut coordinator = None;
    let mut workers = Vec::new();
    for row in rows {
        let (host, port): (String, i32) = (row.get(1), row.get(2));
        if row.get::<_, bool>(0) {
            coordinator = Some((host, port));
        } else {
            // The coordinator's credentials at the worker's address (Config::host appends).
            let given = superuser.as_given();
            let mut config = tokio_postgres::Config::new();
            config
                .host(&host)
                .port(u16::try_from(port).expect("worker port"))
                .dbname(superuser.dbname());
            if let Some(user) = given.get_user() {
                config.user(user);
            }
            if let Some(password) = given.get_password() {
                config.password(password);
            }
            workers.push(DbTarget::from_config(config));
        }
    }
    assert!(
        !workers.is_empty(),
        "the Citus coordinator at HDLS_TEST_CITUS_URL has no workers in pg_dist_node"
    );
    let coordinator = coordinator.unwrap_or_else(|| {
        let config = superuser.as_given();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
            _ => panic!("HDLS_TEST_CITUS_URL must name a TCP host the workers can reach"),
        };
        (
            host,
            i32::from(*config.get_ports().first().unwrap_or(&5432)),
        )
    });
    let nodes = CitusNodes {
        coordinator,
        workers,
    };
    for node in std::iter::once(&superuser).chain(&nodes.workers) {
        let client = connect(&node.with_dbname("postgres").as_given())
            .await
            .expect("connect to a Citus node as superuser");
        drop_stale_databases(&client).await;
    }
    Server {
        superuser,
        template: String::new(),
        file_copy: false,
        citus: Some(nodes),
    }
}

fn hex_digest(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Drops databases left by earlier test processes that are no longer running.
async fn drop_stale_databases(admin: &tokio_postgres::Client) {
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'hdls_t\\_%'",
            &[],
        )
        .await
        .unwrap();
    for row in rows {
        let name: String = row.get(0);
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// A fresh database for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub target: DbTarget,
    superuser: DbTarget,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let server = server().await;
        let name = format!("hdls_t_{}_{}", std::process::id(), Uuid::new_v4().simple());
        if let Some(nodes) = &server.citus {
            return Self::create_on_citus(server, nodes, name).await;
        }
        let admin = connect(&server.superuser.with_dbname("postgres").as_given())
            .await
            .unwrap();
        let strategy = if server.file_copy {
            " STRATEGY FILE_COPY"
        } else {
            ""
        };
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {}{strategy}",
                server.template
            ))
            .await
            .expect("create test database");
        let target = server.superuser.with_dbname(&name);
        // Database-level grants are not copied from the template.
        setup::run(&target).await.expect("setup on test database");
        TestDb {
            name,
            target,
            superuser: server.superuser.clone(),
        }
    }

    /// A new Citus cluster of its own (the order Citus needs: the database and the extension
    /// on every worker, then on the coordinator, then the nodes registered in it), set up and
    /// migrated, which distributes the schema. Registering a node now and then fails while
    /// another test's database is being dropped on the same nodes; such an attempt is
    /// dropped and made again under a new name.
    async fn create_on_citus(server: &Server, nodes: &CitusNodes, name: String) -> TestDb {
        let mut last_error = None;
        for attempt in 0..3 {
            let name = if attempt == 0 {
                name.clone()
            } else {
                format!("{name}_{attempt}")
            };
            match try_create_on_citus(server, nodes, &name).await {
                Ok(target) => {
                    return TestDb {
                        name,
                        target,
                        superuser: server.superuser.clone(),
                    };
                }
                Err(error) => {
                    eprintln!(
                        "creating Citus test database {name} failed, trying again: {error:#}"
                    );
                    drop_everywhere(server, nodes, &name).await;
                    last_error = Some(error);
                }
            }
        }
        panic!("could not create a Citus test database: {last_error:?}");
    }

    /// Citus mode: a database as it was before Citus (plain on the coordinator, set up and
    /// migrated there, so nothing is distributed), with the citus extension already in its
    /// copies on the workers. [`TestDb::register_citus_nodes`] then does the operator's steps.
    pub async fn create_before_citus() -> TestDb {
        let server = server().await;
        let nodes = server.citus.as_ref().expect("Citus mode");
        let name = format!("hdls_t_{}_{}", std::process::id(), Uuid::new_v4().simple());
        for worker in &nodes.workers {
            create_citus_database(worker, &name).await.unwrap();
        }
        let target = create_citus_database(&server.superuser, &name)
            .await
            .unwrap();
        // Setup makes a database Citus when the library is preloaded; one from before Citus
        // was migrated without it, which dropping the extension reproduces.
        setup::run(&target).await.unwrap();
        connect(&target.as_given())
            .await
            .unwrap()
            .batch_execute("DROP EXTENSION citus")
            .await
            .unwrap();
        migrate::run(&target).await.unwrap();
        TestDb {
            name,
            target,
            superuser: server.superuser.clone(),
        }
    }

    /// The operator's steps on a database from before Citus: the extension on the
    /// coordinator, the coordinator and the workers registered.
    pub async fn register_citus_nodes(&self) {
        let nodes = server().await.citus.as_ref().expect("Citus mode");
        let coordinator = self.connect_superuser().await;
        coordinator
            .batch_execute("SET client_min_messages = warning; CREATE EXTENSION citus")
            .await
            .unwrap();
        register_nodes(&self.superuser, nodes, &coordinator)
            .await
            .unwrap();
    }

    /// The superuser targets of this database on each Citus worker (empty without Citus).
    pub async fn citus_workers(&self) -> Vec<DbTarget> {
        match &server().await.citus {
            Some(nodes) => nodes
                .workers
                .iter()
                .map(|w| w.with_dbname(&self.name))
                .collect(),
            None => Vec::new(),
        }
    }

    /// A connection as the given hdls role.
    pub async fn connect_as(&self, role: &str) -> tokio_postgres::Client {
        connect(&self.target.for_role(role))
            .await
            .expect("connect as role")
    }

    /// The superuser connection string for this database, as the CLI takes it.
    pub fn superuser_url(&self) -> String {
        let config = self.target.as_given();
        let mut parts = Vec::new();
        for host in config.get_hosts() {
            match host {
                tokio_postgres::config::Host::Tcp(name) => parts.push(format!("host={name}")),
                tokio_postgres::config::Host::Unix(path) => {
                    parts.push(format!("host={}", path.display()))
                }
            }
        }
        if let Some(port) = config.get_ports().first() {
            parts.push(format!("port={port}"));
        }
        if let Some(user) = config.get_user() {
            parts.push(format!("user={user}"));
        }
        if let Some(password) = config.get_password() {
            parts.push(format!("password={}", String::from_utf8_lossy(password)));
        }
        parts.push(format!("dbname={}", self.name));
        parts.join(" ")
    }

    /// A connection as the superuser (for assertions that must see every row).
    pub async fn connect_superuser(&self) -> tokio_postgres::Client {
        connect(&self.target.as_given())
            .await
            .expect("connect as superuser")
    }

    /// Makes this database refuse every connection, existing and new, as a database that went
    /// away would (`ALLOW_CONNECTIONS false`, then its backends terminated); `reopen` undoes it.
    pub async fn cut_off(&self) {
        let admin = self.maintenance().await;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';",
                name = self.name
            ))
            .await
            .expect("cut the test database off");
    }

    /// Lets connections to this database in again after `cut_off`.
    pub async fn reopen(&self) {
        self.maintenance()
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} ALLOW_CONNECTIONS true",
                self.name
            ))
            .await
            .expect("reopen the test database");
    }

    /// A superuser connection to the server's `postgres` database (not this one).
    async fn maintenance(&self) -> tokio_postgres::Client {
        connect(&self.superuser.with_dbname("postgres").as_given())
            .await
            .expect("connect to the postgres database as superuser")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The coordinator first (its connections to the workers close with it), then each
        // Citus worker: every node holds one database per test and a maintenance worker for it.
        let mut nodes = vec![self.superuser.with_dbname("postgres").as_given()];
        if let Some(Some(citus)) = SERVER.get().map(|s| s.citus.as_ref()) {
            nodes.extend(
                citus
                    .workers
                    .iter()
                    .map(|w| w.with_dbname("postgres").as_given()),
            );
        }
        // Drop is synchronous and the test's runtime may be shutting down: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                for admin in nodes {
                    if let Ok(client) = connect(&admin).await {
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                }
                Some(())
            })
        })
        .join();
    }
}

/// One attempt at [`TestDb::create_on_citus`]; returns the coordinator's target.
async fn try_create_on_citus(
    server: &Server,
    nodes: &CitusNodes,
    name: &str,
) -> anyhow::Result<DbTarget> {
    for worker in &nodes.workers {
        create_citus_database(worker, name).await?;
    }
    let target = create_citus_database(&server.superuser, name).await?;
    let coordinator = connect(&target.as_given()).await?;
    register_nodes(&server.superuser, nodes, &coordinator).await?;
    coordinator
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET citus.shard_count = {CITUS_TEST_SHARDS}"
        ))
        .await?;
    // A diagnostic: HDLS_TEST_CITUS_MULTI_SHARD=warning makes the coordinator log every
    // statement that visits more than one shard, with its text (in the server log).
    if let Ok(level) = std::env::var("HDLS_TEST_CITUS_MULTI_SHARD") {
        anyhow::ensure!(
            ["debug", "log", "notice", "warning", "error"].contains(&level.as_str()),
            "HDLS_TEST_CITUS_MULTI_SHARD is a message level (e.g. warning)"
        );
        coordinator
            .batch_execute(&format!(
                "ALTER DATABASE {name} SET citus.multi_task_query_log_level = '{level}';
                 ALTER DATABASE {name} SET log_min_error_statement = '{level}'"
            ))
            .await?;
    }
    drop(coordinator);
    setup::run(&target).await?;
    migrate::run(&target).await?;
    Ok(target)
}

/// Registers the coordinator and the workers in the database `coordinator` is connected to.
/// One test database at a time across every test process: registering a node makes Citus
/// alter the (cluster-wide) roles on it, and two at once fail with "tuple concurrently
/// updated" (one database per cluster, as in production, never meets this).
async fn register_nodes(
    superuser: &DbTarget,
    nodes: &CitusNodes,
    coordinator: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let lock = connect(&superuser.with_dbname("postgres").as_given()).await?;
    lock.execute("SELECT pg_advisory_lock(7165)", &[]).await?;
    let registered = async {
        let (host, port) = &nodes.coordinator;
        coordinator
            .execute("SELECT citus_set_coordinator_host($1, $2)", &[host, port])
            .await?;
        for worker in &nodes.workers {
            let config = worker.as_given();
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(name)) => name.clone(),
                _ => anyhow::bail!("a Citus worker without a TCP host"),
            };
            let port = i32::from(config.get_ports()[0]);
            coordinator
                .execute("SELECT citus_add_node($1, $2)", &[&host, &port])
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    lock.execute("SELECT pg_advisory_unlock(7165)", &[]).await?;
    registered
}

/// Drops `name` on the coordinator, then on every worker.
async fn drop_everywhere(server: &Server, nodes: &CitusNodes, name: &str) {
    for node in std::iter::once(&server.superuser).chain(&nodes.workers) {
        if let Ok(client) = connect(&node.with_dbname("postgres").as_given()).await {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// Creates `name` with the citus extension on one Citus node; returns its superuser target.
async fn create_citus_database(node: &DbTarget, name: &str) -> anyhow::Result<DbTarget> {
    let admin = connect(&node.with_dbname("postgres").as_given()).await?;
    // Alone: CREATE DATABASE cannot run in the implicit transaction of a multi-statement query.
    admin
        .batch_execute("SET client_min_messages = warning")
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let target = node.with_dbname(name);
    connect(&target.as_given())
        .await?
        .batch_execute("SET client_min_messages = warning; CREATE EXTENSION citus")
        .await?;
    Ok(target)
}

/// A running hdls server on a loopback port over its own database, with a clock the test controls.
pub struct TestEnv {
    pub app: Arc<App>,
    pub clock: ManualClock,
    pub base_url: String,
    server: Option<RunningServer>,
    pub db: TestDb,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        Self::start_with(|target| target.clone()).await
    }

    /// Starts with an adjusted database target (e.g. a short statement timeout).
    pub async fn start_with(adjust: impl FnOnce(&DbTarget) -> DbTarget) -> TestEnv {
        Self::start_full(adjust, |app| app).await
    }

    /// Starts with an adjusted App (e.g. an outbound guard that allows loopback).
    pub async fn start_with_app(adjust: impl FnOnce(App) -> App) -> TestEnv {
        Self::start_full(|target| target.clone(), adjust).await
    }

    async fn start_full(
        adjust: impl FnOnce(&DbTarget) -> DbTarget,
        adjust_app: impl FnOnce(App) -> App,
    ) -> TestEnv {
        // Before any reqwest client exists in this process (reqwest has no built-in provider).
        hdls::net::fetch::install_tls_provider();
        // Server logs go to the test's captured output: shown only when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("hdls=debug,warn"))
            .with_test_writer()
            .try_init();
        let db = TestDb::create().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base_url = format!("http://{addr}");
        let clock = ManualClock::starting_now();
        let app = Arc::new(adjust_app(App::new(
            Pools::open(&adjust(&db.target)).unwrap(),
            Arc::new(clock.clone()),
            PublicUrl::parse(&base_url, &[]).unwrap(),
        )));
        let server = server::spawn(app.clone(), listener).unwrap();
        TestEnv {
            app,
            clock,
            base_url,
            server: Some(server),
            db,
        }
    }

    /// Creates a workspace and returns (id, owner key).
    pub async fn workspace(&self, name: &str) -> (Uuid, String) {
        let created = hdls::workspaces::create(&self.app.pools.runtime, name, self.clock.now())
            .await
            .unwrap();
        (created.workspace_id, created.owner_key)
    }

    /// Mints a key with a role in a workspace (operator authority).
    pub async fn key(&self, workspace: Uuid, role: Role) -> String {
        hdls::workspaces::mint_key(
            &self.app.pools.runtime,
            workspace,
            role,
            None,
            None,
            self.clock.now(),
        )
        .await
        .unwrap()
        .key
    }

    /// A person who can sign in (email + password) with a membership of `role` in `workspace`.
    /// Signing in again with the same email adds another membership to the same person.
    pub async fn person(&self, workspace: Uuid, email: &str, password: &str, role: Role) -> Uuid {
        hdls::people::provision(
            &self.app.pools.auth,
            workspace,
            email,
            Some(password),
            role,
            self.clock.now(),
        )
        .await
        .unwrap()
        .user_id
    }

    /// An MCP client on an endpoint path (e.g. "/api/mcp/crm") with a bearer key.
    pub async fn client(&self, path: &str, key: &str) -> Mcp {
        Mcp::connect(&format!("{}{path}", self.base_url), key).await
    }

    /// The test clock's current time.
    pub fn clock_now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Moves the test clock to the first second of the next minute, so a test's calls
    /// share one rate-limit window whatever the wall clock says.
    pub fn align_to_minute_start(&self) {
        let now = self.clock.now();
        let into_minute = time::Duration::seconds(now.second() as i64)
            + time::Duration::nanoseconds(now.nanosecond() as i64);
        self.clock.advance(time::Duration::minutes(1) - into_minute);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown.cancel();
        }
    }
}

/// The official rmcp client over Streamable HTTP, with helpers for assertions.
pub struct Mcp {
    pub service: RunningService<RoleClient, ClientConfig>,
}

impl Mcp {
    pub async fn connect(url: &str, key: &str) -> Mcp {
        Self::try_connect(url, key).await.expect("MCP initialize")
    }

    pub async fn try_connect(
        url: &str,
        key: &str,
    ) -> Result<Mcp, rmcp::service::ClientInitializeError> {
        // The client is reqwest too, and a test that starts no TestEnv has installed no provider.
        hdls::net::fetch::install_tls_provider();
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url).auth_header(key),
        );
        let service = ClientConfig::default().serve(transport).await?;
        Ok(Mcp { service })
    }

    /// Connects with an explicit lifecycle: the 2026-07-28 `server/discover` flow, or `initialize`.
    pub async fn connect_with(url: &str, key: &str, lifecycle: rmcp::ClientLifecycleMode) -> Mcp {
        use rmcp::ClientServiceExt;
        hdls::net::fetch::install_tls_provider();
        let transport = StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(url).auth_header(key),
        );
        let service = ClientConfig::default()
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .expect("MCP connect");
        Mcp { service }
    }

    /// Names of the tools this credential sees.
    pub async fn tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .service
            .list_all_tools()
            .await
            .expect("tools/list")
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Calls a tool and returns the raw result (a JSON-RPC error panics).
    pub async fn call(&self, name: &str, args: Value) -> CallToolResult {
        let params = match args {
            Value::Object(map) => CallToolRequestParams::new(name.to_owned()).with_arguments(map),
            Value::Null => CallToolRequestParams::new(name.to_owned()),
            other => panic!("arguments must be an object, got {other}"),
        };
        self.service
            .call_tool(params)
            .await
            .unwrap_or_else(|e| panic!("tools/call {name}: {e}"))
    }

    /// Calls a tool that must succeed; returns its structuredContent.
    pub async fn ok(&self, name: &str, args: Value) -> Value {
        let result = self.call(name, args).await;
        assert_ne!(
            result.is_error,
            Some(true),
            "{name} failed: {:?}",
            result.structured_content
        );
        assert!(
            !result.content.is_empty(),
            "{name} returned no text rendering"
        );
        result.structured_content.expect("structuredContent")
    }

    /// Calls a tool that must fail; returns the error object `{code, message, …}`.
    pub async fn err(&self, name: &str, args: Value) -> Value {
        let result = self.call(name, args).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{name} unexpectedly succeeded: {:?}",
            result.structured_content
        );
        let body = result
            .structured_content
            .expect("structuredContent on error");
        body["error"].clone()
    }

    /// The error code of a failing call.
    pub async fn err_code(&self, name: &str, args: Value) -> String {
        self.err(name, args).await["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Runs `sql`'s `;`-separated statements one message each, as the server sends them (a
/// multi-statement string is forwarded to a Citus worker whole, where a statement that
/// touches another shard fails). For test SQL without `;` inside literals.
pub async fn statements(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<(), tokio_postgres::Error> {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        client.batch_execute(statement).await?;
    }
    Ok(())
}

/// An empty JSON object, for tools without arguments.
/// A principal of `ws` with `persona` and `role`, reaching every product (customers get a
/// requester), its cached credential carrying `epoch`: for tests that call below the
/// transport (the registry, a Scope).
pub fn principal(
    ws: Uuid,
    persona: hdls::identity::Persona,
    role: Role,
    epoch: Option<i64>,
) -> hdls::identity::Principal {
    use hdls::identity::{CredentialKind, CredentialRef, Persona, Principal, Product};
    Principal {
        workspace_id: ws,
        workspace_name: "w".into(),
        role,
        persona,
        principal_id: (persona == Persona::Customer).then(Uuid::new_v4),
        user_id: None,
        products: Product::ALL.to_vec(),
        all_products: true,
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "key_0000000000000000".into(),
        },
        expires_at: None,
        data_source: None,
        credential_epoch: epoch,
    }
}

pub fn no_args() -> Value {
    json!({})
}

/// Runs `npm ci` in `dir` unless `node_modules/<package>` is already there (pinned test
/// dependencies: the TypeScript SDK, playwright-core).
/// The Python of a virtualenv in `dir` with its pinned `requirements.txt` installed (made on
/// first use), or `None` on a machine without Python, which CI is not.
pub fn python_env_once(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::process::Command;
    let have_python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_python {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have Python for the interop tests"
        );
        eprintln!("skipping: python3 is not installed");
        return None;
    }
    let python = dir.join(".venv/bin/python");
    if !python.exists() {
        let venv = Command::new("python3")
            .args(["-m", "venv", ".venv"])
            .current_dir(dir)
            .status()
            .expect("python3 -m venv");
        assert!(
            venv.success(),
            "could not create a virtualenv in {}",
            dir.display()
        );
        let install = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ])
            .current_dir(dir)
            .status()
            .expect("pip install");
        assert!(install.success(), "pip install -r requirements.txt failed");
    }
    Some(python)
}

pub fn npm_ci_once(dir: &std::path::Path, package: &str) {
    if dir.join("node_modules").join(package).exists() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(dir)
        .status()
        .expect("run npm ci");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}

/// Asserts that a statement was refused by the database with SQLSTATE `code` and a message
/// containing `reason`. A bare `is_err()` also passes on a typo (42601), a missing table
/// (42P01) or a dropped connection, so it proves nothing about the guard being tested.
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    code: &tokio_postgres::error::SqlState,
    reason: &str,
    what: &str,
) {
    let error = match result {
        Ok(value) => panic!("{what}: was allowed ({value:?})"),
        Err(error) => error,
    };
    let db = error
        .as_db_error()
        .unwrap_or_else(|| panic!("{what}: not a database refusal: {error}"));
    assert_eq!(
        db.code(),
        code,
        "{what}: SQLSTATE {} ({})",
        db.code().code(),
        db.message()
    );
    assert!(
        db.message().contains(reason),
        "{what}: refused for another reason: {}",
        db.message()
    );
}
