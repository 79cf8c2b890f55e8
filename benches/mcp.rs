//! Benchmark: `search_accounts` through MCP over loopback HTTP vs. the same SQL transaction
//! issued directly with tokio-postgres, at the same concurrency, in one run.
//!
//! `cargo bench --bench mcp`. Knobs: HDLS_BENCH_SECONDS (default 10), HDLS_BENCH_CONCURRENCY
//! (default 16), HDLS_BENCH_DATABASE_URL (a superuser URL; default: a private cluster in a temp dir).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdls::app::{App, PublicUrl};
use hdls::clock::SystemClock;
use hdls::db::{Pools, RUNTIME_ROLE, connect};
use hdls::products::crm::SEARCH_SQL;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

// The same allocator as the hdls binary (see src/main.rs), for both sides of the comparison.
mod common;
use common::env_number;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const QUERY: &str = "Acme 1";
const PAGE: i64 = 20;

struct Measurement {
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }
    fn report(&self, label: &str) {
        println!(
            "{label:<28} {:>9.0} calls/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} calls)",
            self.rate(),
            self.percentile(0.50).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.calls
        );
    }
}

/// Runs `concurrency` workers, each looping `work` until the deadline.
async fn drive<W, F>(concurrency: usize, seconds: u64, make_worker: W) -> Measurement
where
    W: Fn(usize) -> F,
    F: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|i| tokio::spawn(make_worker(i)))
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.expect("worker"));
    }
    let _ = seconds;
    Measurement {
        calls: latencies.len(),
        elapsed: started.elapsed(),
        latencies,
    }
}

/// Drives `search_accounts` with plain JSON-RPC POSTs (2025-11-25 style, no session).
/// An access token for `resource`, through the real code exchange: a person, a grant with its
/// code (as the consent page would create), then `POST /oauth/token` with the PKCE verifier.
async fn oauth_access_token(
    app: &App,
    workspace_id: uuid::Uuid,
    base: &str,
    resource: &str,
) -> anyhow::Result<String> {
    use sha2::Digest;
    let now = hdls::clock::Clock::now(&SystemClock);
    let person = hdls::people::provision(
        &app.pools.auth,
        workspace_id,
        "bench@example.com",
        Some("bench password 123"),
        hdls::identity::Role::Owner,
        now,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let verifier = "v".repeat(64);
    let challenge = hdls::secret::b64url(&sha2::Sha256::digest(verifier.as_bytes()));
    let grant = hdls::oauth::grants::Grant {
        workspace_id,
        grant_id: uuid::Uuid::now_v7(),
        user_id: person.user_id,
        client_id: "bench".into(),
        resource: resource.to_owned(),
        products: vec![hdls::identity::Product::Crm],
        persona: hdls::identity::Persona::Agent,
        principal_id: None,
    };
    let db = app.pools.auth.get().await?;
    let redirect = "http://127.0.0.1:9/callback";
    let code =
        hdls::oauth::grants::create_with_code(&db, &grant, "bench", redirect, &challenge, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let body = format!(
        "grant_type=authorization_code&code={code}&client_id=bench&redirect_uri={}&code_verifier={verifier}",
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let response: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?
        .json()
        .await?;
    response["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access token: {response}"))
}

async fn json_rpc_side(url: &str, key: &str, concurrency: usize, seconds: u64) -> Measurement {
    let args = json!({ "query": QUERY, "limit": PAGE });
    json_rpc_tool(
        url,
        key,
        "search_accounts",
        args,
        "accounts",
        concurrency,
        seconds,
    )
    .await
}

/// Drives one tool with plain JSON-RPC POSTs, checking each reply holds `PAGE` items under `list`.
async fn json_rpc_tool(
    url: &str,
    key: &str,
    tool: &'static str,
    args: serde_json::Value,
    list: &'static str,
    concurrency: usize,
    seconds: u64,
) -> Measurement {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    drive(concurrency, seconds, |_| {
        let url = url.to_owned();
        let key = key.to_owned();
        let args = args.clone();
        async move {
            let http = reqwest::Client::new();
            let body = json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": { "name": tool, "arguments": args }
            })
            .to_string();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let response: serde_json::Value = http
                    .post(&url)
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2025-11-25")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("post")
                    .json()
                    .await
                    .expect("json");
                assert_eq!(
                    response["result"]["structuredContent"][list]
                        .as_array()
                        .map(Vec::len),
                    Some(PAGE as usize),
                    "{response}"
                );
                latencies.push(t.elapsed());
            }
            latencies
        }
    })
    .await
}

/// A bound parameter shared by every worker of a direct side.
type Param = Box<dyn tokio_postgres::types::ToSql + Send + Sync>;

/// Drives `sql` directly as the runtime role, the way hdls must run it: BEGIN, stamp the
/// workspace, the query (prepared once per connection), COMMIT. Each reply must hold PAGE+1 rows.
async fn direct_side(
    config: &tokio_postgres::Config,
    workspace_id: uuid::Uuid,
    sql: &'static str,
    params: Vec<Param>,
    concurrency: usize,
    seconds: u64,
) -> Measurement {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let params = Arc::new(params);
    drive(concurrency, seconds, |_| {
        let config = config.clone();
        let params = params.clone();
        async move {
            let mut client = connect(&config).await.expect("connect");
            let statement = client.prepare(sql).await.expect("prepare");
            let set = format!("SET LOCAL hdls.workspace_id = '{workspace_id}'");
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let tx = client.transaction().await.expect("begin");
                tx.batch_execute(&set).await.expect("set");
                let rows = tx.query(&statement, &refs).await.expect("select");
                assert_eq!(rows.len() as i64, PAGE + 1);
                tx.commit().await.expect("commit");
                latencies.push(t.elapsed());
            }
            latencies
        }
    })
    .await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("HDLS_BENCH_SECONDS", 10);
    let concurrency = env_number("HDLS_BENCH_CONCURRENCY", 16) as usize;

    // A database of our own.
    let database = common::BenchDatabase::create("hdls_bench").await?;
    let target = database.target.clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Arc::new(App::new(
        Pools::open(&target)?,
        Arc::new(SystemClock),
        PublicUrl::parse(&base, &[])?,
    ));
    let server = hdls::server::spawn(app.clone(), listener)?;

    // Two workspaces with 2,000 accounts each; the benchmark reads one of them.
    let mut workspace_id = None;
    let mut key = String::new();
    for name in ["bench", "neighbour"] {
        let created = hdls::workspaces::create(
            &app.pools.runtime,
            name,
            hdls::clock::Clock::now(&SystemClock),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let rt = connect(&target.for_role(RUNTIME_ROLE)).await?;
        rt.batch_execute(&format!(
            "BEGIN; SET LOCAL hdls.workspace_id = '{}';
             INSERT INTO crm.accounts (name, domain)
               SELECT CASE WHEN i % 2 = 0 THEN 'Acme ' ELSE 'Other ' END || lpad(i::text, 4, '0'),
                      'd' || i || '.example'
               FROM generate_series(1, 2000) AS i;
             COMMIT; ANALYZE crm.accounts;",
            created.workspace_id
        ))
        .await
        .ok();
        if workspace_id.is_none() {
            // Limits stay on but out of reach, so the benchmark measures their cost, not their refusals.
            let owner = target.pool(hdls::db::OWNER_ROLE, 1)?;
            hdls::workspaces::set_plan(
                &owner,
                created.workspace_id,
                None,
                100_000_000,
                None,
                hdls::clock::Clock::now(&SystemClock),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            workspace_id = Some(created.workspace_id);
            key = created.owner_key;
        }
    }
    let workspace_id = workspace_id.expect("workspace");
    println!(
        "search_accounts {{query: {QUERY:?}, limit: {PAGE}}} over 2 x 2,000 accounts; concurrency {concurrency}; {seconds} s per side"
    );

    // Side 1: through MCP (rmcp client -> HTTP -> auth -> registry -> Scope -> SQL).
    let url = format!("{base}/api/mcp/crm");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mcp = drive(concurrency, seconds, |_| {
        let url = url.clone();
        let key = key.clone();
        async move {
            let transport = StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(url).auth_header(key),
            );
            let client = ClientConfig::default()
                .serve(transport)
                .await
                .expect("connect");
            let args = json!({ "query": QUERY, "limit": PAGE });
            let args = args.as_object().cloned().unwrap_or_default();
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let result = client
                    .call_tool(
                        CallToolRequestParams::new("search_accounts").with_arguments(args.clone()),
                    )
                    .await
                    .expect("call");
                assert_ne!(result.is_error, Some(true));
                latencies.push(t.elapsed());
            }
            latencies
        }
    })
    .await;

    // Side 1b: the same tool call as plain JSON-RPC POSTs (what SDKs in other languages send),
    // so the figure is not dominated by one client library's own cost.
    let raw = json_rpc_side(&url, &key, concurrency, seconds).await;

    // Side 1d: the same calls with an OAuth access token (EdDSA JWT) instead of the API key.
    let access_token = oauth_access_token(&app, workspace_id, &base, &url).await?;
    let oauth = json_rpc_side(&url, &access_token, concurrency, seconds).await;

    // Side 1c: the same, with rate limits and the usage ledger switched off.
    let off_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let off_base = format!("http://{}", off_listener.local_addr()?);
    let off_app = Arc::new(App {
        enforce_limits: false,
        ..App::new(
            app.pools.clone(),
            Arc::new(SystemClock),
            PublicUrl::parse(&off_base, &[])?,
        )
    });
    let off_server = hdls::server::spawn(off_app, off_listener)?;
    let raw_off = json_rpc_side(
        &format!("{off_base}/api/mcp/crm"),
        &key,
        concurrency,
        seconds,
    )
    .await;
    off_server.stop().await;

    // Side 2: the same transaction straight to PostgreSQL as the runtime role.
    let config = target.for_role(RUNTIME_ROLE);
    let search_params: Vec<Param> = vec![
        Box::new(Some(format!("%{QUERY}%"))),
        Box::new(None::<String>),
        Box::new(None::<uuid::Uuid>),
        Box::new(PAGE + 1),
        // SEARCH_SQL names the workspace (so Citus routes it to one shard).
        Box::new(workspace_id),
    ];
    let direct = direct_side(
        &config,
        workspace_id,
        SEARCH_SQL,
        search_params,
        concurrency,
        seconds,
    )
    .await;

    // query_records: a two-condition filter and a sort, 20 rows, vs the same hand-written SQL.
    let query_args = json!({
        "table": "accounts",
        "filter": { "and": [
            { "column": "name", "op": "ilike", "value": "acme%" },
            { "column": "domain", "op": "like", "value": "d1%" }
        ] },
        "sort": [{ "column": "name", "direction": "desc" }],
        "limit": PAGE
    });
    let power = json_rpc_tool(
        &url,
        &key,
        "query_records",
        query_args,
        "rows",
        concurrency,
        seconds,
    )
    .await;
    let hand_written_params: Vec<Param> = vec![
        Box::new("acme%".to_owned()),
        Box::new("d1%".to_owned()),
        Box::new(PAGE + 1),
    ];
    let hand_written = direct_side(
        &config,
        workspace_id,
        "SELECT id, name, domain, custom, created_at, updated_at FROM crm.accounts
         WHERE name ILIKE $1 AND domain LIKE $2 ORDER BY name DESC, id LIMIT $3",
        hand_written_params,
        concurrency,
        seconds,
    )
    .await;

    mcp.report("hdls, rmcp client");
    raw.report("hdls, JSON-RPC client");
    oauth.report("hdls, JSON-RPC, OAuth JWT");
    raw_off.report("hdls, limits+ledger off");
    direct.report("direct (tokio-postgres)");
    println!(
        "ratio hdls/direct (rmcp client):        {:.2}",
        mcp.rate() / direct.rate()
    );
    println!(
        "ratio hdls/direct (JSON-RPC client):    {:.2}",
        raw.rate() / direct.rate()
    );
    println!(
        "ratio OAuth JWT/API key (JSON-RPC):     {:.2}",
        oauth.rate() / raw.rate()
    );
    println!(
        "ratio limits on/off (JSON-RPC client):  {:.2}",
        raw.rate() / raw_off.rate()
    );
    println!();
    println!("query_records {{2-condition filter, sort, {PAGE} rows}}");
    power.report("hdls query_records");
    hand_written.report("direct hand-written SQL");
    println!(
        "ratio query_records/direct:             {:.2}",
        power.rate() / hand_written.rate()
    );

    server.stop().await;
    drop(app);
    database.remove().await?;
    Ok(())
}
