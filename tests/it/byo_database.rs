//! Bring your own PostgreSQL: a second PostgreSQL cluster on loopback TCP, started by the
//! test, linked through the concierge and served at `/api/mcp/db/<id>` with data-source keys.
//! The server is started with the operator's allowance for 127.0.0.0/8 (`--outbound-allow`),
//! since the guard refuses loopback otherwise.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hdls::app::App;
use hdls::db::embedded::Cluster;
use hdls::identity::Role;
use hdls::net::guard::{Cidr, Guard, Resolver, SystemResolver};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv, no_args};

/// A PostgreSQL cluster of "the user's", listening on 127.0.0.1 only.
pub struct UserCluster {
    cluster: Mutex<Option<Cluster>>,
    dir: PathBuf,
    pub port: u16,
}

impl UserCluster {
    /// Initialises and starts a cluster, then moves it to TCP on a free loopback port
    /// (`ALTER SYSTEM` outlives the socket-only settings the embedded cluster writes).
    pub async fn start() -> UserCluster {
        let dir = std::env::temp_dir().join(format!(
            "hdls-byo-{}-{}",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        let cluster = Cluster::start(&dir).await.expect("starting a user cluster");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let su = hdls::db::connect(&cluster.superuser_config("postgres"))
            .await
            .unwrap();
        su.batch_execute("ALTER SYSTEM SET listen_addresses = '127.0.0.1'")
            .await
            .unwrap();
        su.batch_execute(&format!("ALTER SYSTEM SET port = {port}"))
            .await
            .unwrap();
        // Passwords are checked over TCP (initdb's trust would accept any), except for the
        // test's own superuser. The server writes the file, so it owns it.
        let hba = cluster.data_dir().join("pg_hba_byo.conf");
        su.batch_execute(&format!(
            "COPY (VALUES ('local all all trust'), ('host all postgres 127.0.0.1/32 trust'),
                          ('host all all 127.0.0.1/32 scram-sha-256')) TO '{}'",
            hba.display()
        ))
        .await
        .unwrap();
        su.batch_execute(&format!("ALTER SYSTEM SET hba_file = '{}'", hba.display()))
            .await
            .unwrap();
        drop(su);
        cluster.stop().await.unwrap();
        let cluster = Cluster::start(&dir).await.expect("restarting on TCP");
        UserCluster {
            cluster: Mutex::new(Some(cluster)),
            dir,
            port,
        }
    }

    /// The superuser over TCP.
    pub async fn superuser(&self, dbname: &str) -> tokio_postgres::Client {
        let url = format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port);
        hdls::db::connect(&url.parse().unwrap()).await.unwrap()
    }

    /// A database with a role that may use one schema (`shop`, a `products` table), as a
    /// customer would prepare it. Returns (connection string, password).
    pub async fn prepare(&self) -> (String, String) {
        let tag = &Uuid::new_v4().simple().to_string()[..12];
        let (db, role, password) = (
            format!("shop_{tag}"),
            format!("app_{tag}"),
            format!("pw-{tag}-S3cret"),
        );
        let su = self.superuser("postgres").await;
        su.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        su.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
            .await
            .unwrap();
        let su = self.superuser(&db).await;
        su.batch_execute(&format!(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.products (id serial PRIMARY KEY, name text NOT NULL, price numeric(10, 2));
             COMMENT ON TABLE shop.products IS 'What the shop sells';
             INSERT INTO shop.products (name, price) VALUES ('Anvil', 99.50), ('Rope', 5);
             CREATE TABLE shop.secrets (id int PRIMARY KEY, note text);
             GRANT USAGE ON SCHEMA shop TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON shop.products TO {role};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA shop TO {role};"
        ))
        .await
        .unwrap();
        (
            format!("postgres://{role}:{password}@127.0.0.1:{}/{db}", self.port),
            password,
        )
    }

    pub async fn stop(&self) {
        let cluster = self.cluster.lock().unwrap().take();
        if let Some(cluster) = cluster {
            cluster.stop().await.unwrap();
        }
    }

    pub async fn restart(&self) {
        let cluster = Cluster::start(&self.dir).await.expect("restarting");
        *self.cluster.lock().unwrap() = Some(cluster);
    }
}

impl Drop for UserCluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.lock().unwrap().take() {
            cluster.stop_blocking_immediate();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SHARED: OnceCell<UserCluster> = OnceCell::const_new();
static SHARED_STOP: std::sync::OnceLock<()> = std::sync::OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(shared) = SHARED.get()
        && let Some(cluster) = shared.cluster.lock().unwrap().take()
    {
        cluster.stop_blocking_immediate();
        let _ = std::fs::remove_dir_all(&shared.dir);
    }
}

/// One user cluster shared by the tests that do not stop it.
pub async fn shared_cluster() -> &'static UserCluster {
    let cluster = SHARED.get_or_init(UserCluster::start).await;
    SHARED_STOP.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function with libc's atexit.
        unsafe {
            libc::atexit(stop_shared);
        }
    });
    cluster
}

/// The operator's allowance for loopback, with `resolver` answering names.
fn allowing_loopback(resolver: Arc<dyn Resolver>) -> impl FnOnce(App) -> App {
    move |app| {
        app.with_outbound(Guard::new(
            resolver,
            vec![Cidr::parse("127.0.0.0/8").unwrap()],
        ))
    }
}

pub async fn loopback_env() -> TestEnv {
    TestEnv::start_with_app(allowing_loopback(Arc::new(SystemResolver))).await
}

/// Links `connection_string` (schema `shop`) and returns the data source id.
pub async fn link(owner: &Mcp, connection_string: &str) -> Uuid {
    let linked = owner
        .ok(
            "link_database",
            json!({ "name": "shop", "connection_string": connection_string, "schema": "shop" }),
        )
        .await;
    linked["id"].as_str().unwrap().parse().unwrap()
}

async fn mint(owner: &Mcp, id: Uuid, role: &str) -> String {
    let minted = owner
        .ok("mint_api_key", json!({ "data_source": id, "role": role }))
        .await;
    assert_eq!(minted["data_source"]["id"], json!(id));
    assert_eq!(minted["data_source"]["schema"], "shop");
    minted["key"].as_str().unwrap().to_owned()
}

/// The HTTP status of an MCP `initialize` with `key` at `path` (authentication's answer).
async fn status_at(env: &TestEnv, path: &str, key: &str) -> StatusCode {
    reqwest::Client::new()
        .post(env.url(path))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .status()
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn byo_link_serve_power_tools_and_unlink() {
    let user = shared_cluster().await;
    let (connection_string, _) = user.prepare().await;
    let env = loopback_env().await;
    let (ws, owner_key) = env.workspace("BYO").await;
    let owner = env.client("/api/mcp", &owner_key).await;

    // A reader or a member cannot link.
    for role in [Role::Reader, Role::Member] {
        let key = env.key(ws, role).await;
        let client = env.client("/api/mcp", &key).await;
        let refused = client
            .err(
                "link_database",
                json!({ "name": "shop", "connection_string": connection_string, "schema": "shop" }),
            )
            .await;
        assert_eq!(refused["code"], "forbidden", "{role}: {refused}");
    }

    // A wrong password is the user's to fix, and says so without the string.
    let password = connection_string
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    let wrong = connection_string.replace(password, "Wr0ng");
    let refused = owner
        .err(
            "link_database",
            json!({ "name": "shop", "connection_string": wrong, "schema": "shop" }),
        )
        .await;
    assert_eq!(refused["code"], "invalid_input", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("refused the user name or password")
    );
    assert!(!refused.to_string().contains("Wr0ng"), "{refused}");
    // A schema that is not there.
    let missing = owner
        .err(
            "link_database",
            json!({ "name": "shop", "connection_string": connection_string, "schema": "nope" }),
        )
        .await;
    assert_eq!(missing["path"], "schema", "{missing}");

    let linked = owner
        .ok(
            "link_database",
            json!({ "name": "shop", "connection_string": connection_string, "schema": "shop" }),
        )
        .await;
    let shown = linked.to_string();
    assert!(
        !shown.contains("S3cret") && !shown.contains("postgres://"),
        "{shown}"
    );
    assert_eq!(linked["host"], "127.0.0.1");
    // Only what the linked role may read is introspected.
    assert_eq!(names(&linked, "tables"), vec!["products"]);
    let id: Uuid = linked["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/api/mcp/db/{id}");

    let listed = owner.ok("list_databases", no_args()).await;
    assert_eq!(listed["databases"][0]["status"], "linked");
    assert!(!listed.to_string().contains("S3cret"));

    let member_key = mint(&owner, id, "member").await;
    let reader_key = mint(&owner, id, "reader").await;

    // The member: the power tools and nothing else.
    let member = env.client(&path, &member_key).await;
    assert_eq!(
        member.tool_names().await,
        vec![
            "aggregate_records",
            "delete_record",
            "describe_table",
            "insert_record",
            "list_tables",
            "query_records",
            "update_record"
        ]
    );
    let tables = member.ok("list_tables", no_args()).await;
    assert_eq!(tables["schema"], "shop");
    assert_eq!(tables["tables"][0]["name"], "products");
    assert_eq!(tables["tables"][0]["rows"], 2);
    let inserted = member
        .ok(
            "insert_record",
            json!({ "table": "products", "values": { "name": "Hammer", "price": 12.25 } }),
        )
        .await;
    let new_id = inserted["rows"][0]["id"].clone();
    member
        .ok(
            "update_record",
            json!({ "table": "products", "key": { "id": new_id }, "values": { "price": 13 } }),
        )
        .await;
    let found = member
        .ok(
            "query_records",
            json!({ "table": "products", "filter": { "column": "name", "op": "eq", "value": "Hammer" } }),
        )
        .await;
    assert!(
        found["rows"][0]["price"].to_string().contains("13"),
        "{found}"
    );
    let total = member
        .ok(
            "aggregate_records",
            json!({ "table": "products", "aggregates": [{ "fn": "count" }] }),
        )
        .await;
    assert!(total.to_string().contains('3'), "{total}");
    member
        .ok(
            "delete_record",
            json!({ "table": "products", "key": { "id": new_id } }),
        )
        .await;

    // The reader reads, and is refused writes.
    let reader = env.client(&path, &reader_key).await;
    reader
        .ok("query_records", json!({ "table": "products" }))
        .await;
    assert_eq!(
        reader
            .err_code(
                "insert_record",
                json!({ "table": "products", "values": { "name": "Nope" } })
            )
            .await,
        "forbidden"
    );

    // A table created in the user's database afterwards appears without a restart.
    let su = user.superuser(tables_db(&connection_string)).await;
    let role = connection_string
        .trim_start_matches("postgres://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    su.batch_execute(&format!(
        "CREATE TABLE shop.orders (id int PRIMARY KEY, total numeric, workspace_id text);
         GRANT SELECT, INSERT ON shop.orders TO {role};"
    ))
    .await
    .unwrap();
    let described = member
        .ok("describe_table", json!({ "table": "orders" }))
        .await;
    assert_eq!(described["table"], "orders");
    // A column the user named workspace_id is theirs: hdls stamps (and hides) that name only
    // in its own schemas.
    assert!(
        described.to_string().contains("\"workspace_id\""),
        "{described}"
    );
    let inserted = member
        .ok(
            "insert_record",
            json!({ "table": "orders", "values": { "id": 1, "total": 5, "workspace_id": "theirs" } }),
        )
        .await;
    assert_eq!(inserted["rows"][0]["workspace_id"], "theirs");
    let tables = member.ok("list_tables", no_args()).await;
    assert_eq!(names(&tables, "tables"), vec!["orders", "products"]);

    // A data-source key works only at its own source's endpoint; nothing else works there.
    assert_eq!(
        status_at(&env, "/api/mcp", &member_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_at(&env, "/api/mcp/crm", &member_key).await,
        StatusCode::UNAUTHORIZED
    );
    let elsewhere = format!("/api/mcp/db/{}", Uuid::now_v7());
    assert_eq!(
        status_at(&env, &elsewhere, &member_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_at(&env, &path, &owner_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_at(&env, &path, &member_key).await, StatusCode::OK);

    // Another workspace cannot mint a key for this source.
    let (_, other_owner_key) = env.workspace("Other").await;
    let other = env.client("/api/mcp", &other_owner_key).await;
    assert_eq!(
        other
            .err_code(
                "mint_api_key",
                json!({ "data_source": id, "role": "reader" })
            )
            .await,
        "not_found"
    );

    // Unlinking revokes the keys (and closes the pool).
    let unlinked = owner.ok("unlink_database", json!({ "id": id })).await;
    assert_eq!(unlinked["keys_revoked"], 2, "{unlinked}");
    assert_eq!(
        status_at(&env, &path, &member_key).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status_at(&env, &path, &reader_key).await,
        StatusCode::UNAUTHORIZED
    );
    let keys = owner.ok("list_api_keys", no_args()).await;
    let bound: Vec<&Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| !k["data_source"].is_null())
        .collect();
    assert_eq!(bound.len(), 2);
    assert!(bound.iter().all(|k| k["status"] == "revoked"));
    assert_eq!(
        owner
            .err_code(
                "mint_api_key",
                json!({ "data_source": id, "role": "reader" })
            )
            .await,
        "not_found"
    );
    let _ = ws;
}

/// The database name at the end of a connection string.
fn tables_db(connection_string: &str) -> &str {
    connection_string.rsplit('/').next().unwrap()
}

/// Every refused form, each its own case: the reason is the guard's or the parser's, and the
/// message never carries the string.
async fn refused_at_link(env: &TestEnv, connection_string: &str) -> Value {
    let (_, owner_key) = env.workspace("Refusals").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let error = owner
        .err(
            "link_database",
            json!({ "name": "x", "connection_string": connection_string, "schema": "public" }),
        )
        .await;
    assert_eq!(
        error["code"], "invalid_input",
        "{connection_string}: {error}"
    );
    assert_eq!(error["path"], "connection_string");
    assert!(!error.to_string().contains("S3cret"), "{error}");
    let listed = owner.ok("list_databases", no_args()).await;
    assert_eq!(listed["databases"], json!([]));
    error
}

const BLOCKED: &str = "resolves to an address hdls does not connect to";

async fn refused_env() -> TestEnv {
    TestEnv::start().await
}

#[tokio::test]
async fn byo_refuses_metadata_address() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@169.254.169.254:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_loopback_without_the_allowance() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@127.0.0.1:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_ipv6_loopback() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@[::1]:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_ipv4_mapped_loopback() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@[::ffff:127.0.0.1]:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_private_10() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@10.0.0.1:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_cgnat() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@100.64.0.1:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_decimal_loopback() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@2130706433:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_hex_loopback() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@0x7f000001:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_octal_loopback() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@0177.0.0.1:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_short_loopback() {
    let env = refused_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@127.1:5432/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
}

#[tokio::test]
async fn byo_refuses_socket_path() {
    let env = loopback_env().await;
    let e = refused_at_link(&env, "/var/run/postgresql").await;
    assert!(
        e["message"].as_str().unwrap().contains("postgres://"),
        "{e}"
    );
    let e = refused_at_link(&env, "postgres://u:S3cret@%2Fvar%2Frun%2Fpostgresql/db").await;
    assert!(
        e["message"].as_str().unwrap().contains("Unix-socket"),
        "{e}"
    );
}

#[tokio::test]
async fn byo_refuses_hostless() {
    let env = loopback_env().await;
    let e = refused_at_link(&env, "postgres:///db").await;
    assert!(e["message"].as_str().unwrap().contains("no host"), "{e}");
}

#[tokio::test]
async fn byo_refuses_host_in_query() {
    let env = loopback_env().await;
    let e = refused_at_link(&env, "postgres://u:S3cret@db.example.com/db?host=/tmp").await;
    assert!(
        e["message"].as_str().unwrap().contains("Unix socket"),
        "{e}"
    );
    let e = refused_at_link(
        &env,
        "postgres://u:S3cret@db.example.com/db?hostaddr=10.0.0.1",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("hostaddr"), "{e}");
}

#[tokio::test]
async fn byo_refuses_two_hosts() {
    let env = loopback_env().await;
    let e = refused_at_link(
        &env,
        "postgres://u:S3cret@db1.example.com:5432,db2.example.com:5432/db",
    )
    .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("more than one host"),
        "{e}"
    );
}

#[tokio::test]
async fn byo_refuses_plain_outside_allowed_networks() {
    // A public address answered for the name; sslmode=disable is refused before any dial.
    let resolver = Arc::new(Scripted::new(&["93.184.216.34"]));
    let env =
        TestEnv::start_with_app(|app| app.with_outbound(Guard::new(resolver.clone(), Vec::new())))
            .await;
    let e = refused_at_link(
        &env,
        "postgres://u:S3cret@db.example.com/db?sslmode=disable",
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("sslmode=disable"),
        "{e}"
    );
    assert!(env.app.data_sources.recent_dials().is_empty());
}

/// A resolver answering from a script, one answer per lookup (the last one repeats), and
/// counting lookups.
struct Scripted {
    answers: Mutex<VecDeque<Vec<IpAddr>>>,
    last: Mutex<Vec<IpAddr>>,
    lookups: Mutex<usize>,
}

impl Scripted {
    fn new(answers: &[&str]) -> Scripted {
        let answers: VecDeque<Vec<IpAddr>> =
            answers.iter().map(|a| vec![a.parse().unwrap()]).collect();
        Scripted {
            last: Mutex::new(answers.back().cloned().unwrap_or_default()),
            answers: Mutex::new(answers),
            lookups: Mutex::new(0),
        }
    }

    fn answer_from_now_on(&self, answer: &str) {
        self.answers.lock().unwrap().clear();
        *self.last.lock().unwrap() = vec![answer.parse().unwrap()];
    }

    fn lookups(&self) -> usize {
        *self.lookups.lock().unwrap()
    }
}

impl Resolver for Scripted {
    fn resolve<'a>(&'a self, _host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        *self.lookups.lock().unwrap() += 1;
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.last.lock().unwrap().clone());
        Box::pin(async move { Ok(answer) })
    }
}

#[tokio::test]
async fn byo_refuses_a_name_resolving_to_a_private_address() {
    let resolver = Arc::new(Scripted::new(&["192.168.1.20"]));
    let env =
        TestEnv::start_with_app(|app| app.with_outbound(Guard::new(resolver.clone(), Vec::new())))
            .await;
    let e = refused_at_link(&env, "postgres://u:S3cret@db.customer.example/db").await;
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(BLOCKED), "{e}");
    assert!(
        message.contains("db.customer.example") && !message.contains("192.168"),
        "{e}"
    );
    assert!(env.app.data_sources.recent_dials().is_empty());
}

#[tokio::test]
async fn byo_rebinding_is_refused_at_connect_and_the_checked_address_is_dialed() {
    // Public at the link's check, loopback at its connect: refused at connect, nothing dialed.
    let resolver = Arc::new(Scripted::new(&["93.184.216.34", "127.0.0.1"]));
    let env =
        TestEnv::start_with_app(|app| app.with_outbound(Guard::new(resolver.clone(), Vec::new())))
            .await;
    let e = refused_at_link(&env, "postgres://u:S3cret@rebind.example/db").await;
    assert!(e["message"].as_str().unwrap().contains(BLOCKED), "{e}");
    assert_eq!(resolver.lookups(), 2, "the connect resolved again");
    assert!(env.app.data_sources.recent_dials().is_empty());

    // With the loopback allowance, a name that resolves to the user's cluster: the connector
    // dials the checked address and keeps the name for TLS.
    let user = shared_cluster().await;
    let (connection_string, _) = user.prepare().await;
    let named = connection_string.replace("127.0.0.1", "db.customer.example");
    let resolver = Arc::new(Scripted::new(&["127.0.0.1"]));
    let env = TestEnv::start_with_app(allowing_loopback(resolver.clone())).await;
    let (_, owner_key) = env.workspace("Pinned").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let id = link(&owner, &named).await;
    let dials = env.app.data_sources.recent_dials();
    assert_eq!(dials.len(), 1, "{dials:?}");
    assert_eq!(dials[0].host, "db.customer.example");
    assert_eq!(
        dials[0].address,
        format!("127.0.0.1:{}", user.port).parse().unwrap()
    );
    let member_key = mint(&owner, id, "member").await;
    let member = env.client(&format!("/api/mcp/db/{id}"), &member_key).await;
    member.ok("list_tables", no_args()).await;
    let before = resolver.lookups();
    assert!(before >= 3, "every connect resolves again ({before})");

    // The name now points at the metadata address: a new connection is refused, even though
    // the row was checked when it was linked.
    resolver.answer_from_now_on("169.254.169.254");
    let tested = owner.ok("test_database", json!({ "id": id })).await;
    assert_eq!(tested["ok"], false, "{tested}");
    assert_eq!(tested["error"]["code"], "invalid_input", "{tested}");
    assert!(
        tested["error"]["message"]
            .as_str()
            .unwrap()
            .contains(BLOCKED)
    );
    let listed = owner.ok("list_databases", no_args()).await;
    assert_eq!(listed["databases"][0]["status"], "unavailable");
    assert_eq!(
        env.app.data_sources.recent_dials().len(),
        2,
        "no dial after the refusal"
    );
}

#[tokio::test]
async fn byo_connection_string_is_ciphertext_at_rest() {
    let user = shared_cluster().await;
    let (connection_string, password) = user.prepare().await;
    let env = loopback_env().await;
    let (ws, owner_key) = env.workspace("Sealed").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let id = link(&owner, &connection_string).await;

    let su = env.db.connect_superuser().await;
    let row = su
        .query_one(
            "SELECT sealed_connection, host, database FROM hdls.data_sources WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get(0);
    let stored = String::from_utf8_lossy(&sealed);
    assert!(!stored.contains(&password) && !stored.contains("postgres://"));
    let whole = su
        .query_one(
            "SELECT d::text FROM hdls.data_sources d WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(
        !whole.contains(&password),
        "the password is stored in the clear"
    );
    assert!(!whole.contains(&hex::encode(password.as_bytes())));

    // This server's key opens it; another key cannot, and says so without the string.
    assert!(hdls::datasources::open(env.app.keys.master(), ws, id, &sealed).is_ok());
    let wrong = hdls::datasources::open(&hdls::master_key::MasterKey::ephemeral(), ws, id, &sealed)
        .unwrap_err();
    assert_eq!(wrong.code, hdls::error::ErrorCode::Unavailable);
    assert!(wrong.message.contains("master key"), "{}", wrong.message);
    assert!(!wrong.message.contains(&password));
    // Moved to another source id, it does not open either (bound as associated data).
    assert!(hdls::datasources::open(env.app.keys.master(), ws, Uuid::now_v7(), &sealed).is_err());
}

#[tokio::test]
async fn byo_a_stopped_database_is_unavailable_fast_and_recovers() {
    let user = UserCluster::start().await;
    let (connection_string, _) = user.prepare().await;
    let env = loopback_env().await;
    let (_, owner_key) = env.workspace("Flaky").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let id = link(&owner, &connection_string).await;
    let key = mint(&owner, id, "reader").await;
    let client = env.client(&format!("/api/mcp/db/{id}"), &key).await;
    client
        .ok("query_records", json!({ "table": "products" }))
        .await;

    // Another workspace on managed products, unaffected throughout.
    let (_, other_key) = env.workspace("Steady").await;
    let other = env.client("/api/mcp/crm", &other_key).await;

    user.stop().await;
    let started = Instant::now();
    for _ in 0..3 {
        let error = client
            .err("query_records", json!({ "table": "products" }))
            .await;
        assert_eq!(error["code"], "unavailable", "{error}");
        assert!(!error.to_string().contains("S3cret"), "{error}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "unavailable took {:?}",
        started.elapsed()
    );
    other.ok("create_account", json!({ "name": "Acme" })).await;
    other.ok("search_accounts", json!({})).await;

    user.restart().await;
    let mut recovered = false;
    for _ in 0..20 {
        let result = client
            .call("query_records", json!({ "table": "products" }))
            .await;
        if result.is_error != Some(true) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recovered,
        "calls did not recover after the database came back"
    );
}
