//! Benchmark: substring search over MCP at 1 connection on a large workspace (issue 15,
//! target 4: p50 ≤ 5 ms). 100,000 accounts in the searched workspace, 1,000,009 across 100
//! workspaces (the names of benches/substring_search.sh, which measures the SQL alone).
//!
//! `cargo bench --bench substring_mcp`. Knobs: HDLS_BENCH_SECONDS (default 10),
//! HDLS_BENCH_DATABASE_URL (a superuser URL; default: a private cluster in a temp dir).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdls::app::{App, PublicUrl};
use hdls::clock::SystemClock;
use hdls::db::{Pools, connect};
use serde_json::{Value, json};

mod common;
use common::env_number;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const LOAD: &str = include_str!("accounts_at_scale.sql");

/// p50 and p99 of `seconds` of one tool call after another on one connection.
async fn one_connection(url: &str, key: &str, tool: &str, args: Value, seconds: u64) -> String {
    let http = reqwest::Client::new();
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": tool, "arguments": args }
    })
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    let mut rows = 0;
    while Instant::now() < deadline {
        let t = Instant::now();
        let response: Value = http
            .post(url)
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
        latencies.push(t.elapsed());
        let content = &response["result"]["structuredContent"];
        assert_ne!(response["result"]["isError"], true, "{response}");
        rows = content["accounts"]
            .as_array()
            .or(content["rows"].as_array())
            .map_or(0, Vec::len);
    }
    latencies.sort();
    let at = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:>7.2} ms   p99 {:>7.2} ms   ({} calls, {rows} rows each)",
        at(0.5),
        at(0.99),
        latencies.len()
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("HDLS_BENCH_SECONDS", 10);
    let database = common::BenchDatabase::create("hdls_substring").await?;
    let target = database.target.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Arc::new(App::new(
        Pools::open(&target)?,
        Arc::new(SystemClock),
        PublicUrl::parse(&base, &[])?,
    ));
    let server = hdls::server::spawn(app.clone(), listener)?;
    let now = hdls::clock::Clock::now(&SystemClock);
    let created = hdls::workspaces::create(&app.pools.runtime, "bench", now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Limits stay on but out of reach.
    let owner = target.pool(hdls::db::OWNER_ROLE, 1)?;
    hdls::workspaces::set_plan(&owner, created.workspace_id, None, 100_000_000, None, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("loading 1,000,009 accounts (100,000 in the searched workspace) ...");
    let su = connect(&target.as_given()).await?;
    su.batch_execute(&LOAD.replace("$WS$", &format!("'{}'", created.workspace_id)))
        .await?;
    su.batch_execute("VACUUM ANALYZE crm.accounts").await?;

    let url = format!("{base}/api/mcp/crm");
    let key = created.owner_key;
    println!("over MCP (JSON-RPC POST, API key), 1 connection, {seconds} s each:");
    for query in ["cme Rob", "grove Rob", "zzqx", "Acme"] {
        let figures = one_connection(
            &url,
            &key,
            "search_accounts",
            json!({ "query": query }),
            seconds,
        )
        .await;
        println!("  search_accounts {:<24} {figures}", format!("{query:?}"));
    }
    for pattern in ["%cme Rob%", "%zzqx%"] {
        let args = json!({ "table": "accounts", "select": ["id", "name", "domain"],
                           "filter": { "column": "name", "op": "ilike", "value": pattern } });
        let figures = one_connection(&url, &key, "query_records", args, seconds).await;
        println!(
            "  query_records ilike {:<18} {figures}",
            format!("{pattern:?}")
        );
    }

    server.stop().await;
    drop(app);
    database.remove().await?;
    Ok(())
}
