//! Benchmark: webhook delivery to a loopback receiver.
//!
//! 1. `create_account` over MCP (JSON-RPC POSTs) for HDLS_BENCH_SECONDS without any webhook
//!    subscription, then the same with one active subscription: the write path's throughput
//!    both ways, and for the second run the latency from each call's return (its commit) to
//!    the receiver's arrival of that event, p50/p99.
//! 2. A backlog: HDLS_BENCH_BACKLOG accounts inserted in one transaction (one event and one
//!    delivery each), then the time until the receiver has them all: sustained deliveries/s.
//!
//! `cargo bench --bench webhooks`. Knobs: HDLS_BENCH_SECONDS (default 10),
//! HDLS_BENCH_CONCURRENCY (default 8), HDLS_BENCH_BACKLOG (default 20000),
//! HDLS_BENCH_DATABASE_URL (a superuser URL; default: a private cluster in a temp dir).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use hdls::app::{App, PublicUrl};
use hdls::clock::SystemClock;
use hdls::db::{Pools, RUNTIME_ROLE, connect};
use hdls::net::guard::{Cidr, Guard, SystemResolver};
use serde_json::{Value, json};

mod common;
use common::env_number;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arrival instants by account name.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(arrivals): State<Arrivals>, body: Bytes) -> &'static str {
    let at = Instant::now();
    if let Ok(value) = serde_json::from_slice::<Value>(&body)
        && let Some(name) = value["data"]["name"].as_str()
    {
        arrivals.lock().unwrap().insert(name.to_owned(), at);
    }
    "ok"
}

async fn call(http: &reqwest::Client, url: &str, key: &str, tool: &str, args: Value) -> Value {
    let response: Value = http
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": { "name": tool, "arguments": args } })
            .to_string(),
        )
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_ne!(
        response["result"]["isError"],
        json!(true),
        "{tool}: {response}"
    );
    response
}

/// Creates accounts named `{prefix}-{worker}-{n}` for `seconds` at `concurrency`; returns
/// each one's return instant by name.
async fn write(
    url: &str,
    key: &str,
    prefix: &str,
    concurrency: usize,
    seconds: u64,
) -> (HashMap<String, Instant>, Duration) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (url, key, prefix) = (url.to_owned(), key.to_owned(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut done = HashMap::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let name = format!("{prefix}-{worker}-{n}");
                call(&http, &url, &key, "create_account", json!({ "name": name })).await;
                done.insert(name, Instant::now());
                n += 1;
            }
            done
        }));
    }
    let mut all = HashMap::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    (all, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

async fn wait_for(arrivals: &Arrivals, prefix: &str, n: usize, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let (count, last) = {
            let a = arrivals.lock().unwrap();
            let mine: Vec<&Instant> = a
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v)
                .collect();
            (mine.len(), mine.into_iter().max().copied())
        };
        if count >= n {
            return last.unwrap_or_else(Instant::now);
        }
        assert!(
            Instant::now() < deadline,
            "only {count} of {n} {prefix} deliveries arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env_number("HDLS_BENCH_SECONDS", 10);
    let concurrency = env_number("HDLS_BENCH_CONCURRENCY", 8) as usize;
    let backlog = env_number("HDLS_BENCH_BACKLOG", 20_000) as usize;

    let database = common::BenchDatabase::create("hdls_bench_hooks").await?;
    let target = database.target.clone();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Arc::new(
        App::new(
            Pools::open(&target)?,
            Arc::new(SystemClock),
            PublicUrl::parse(&base, &[])?,
        )
        .with_outbound(Guard::new(
            Arc::new(SystemResolver),
            vec![Cidr::parse("127.0.0.0/8").expect("cidr")],
        )),
    );
    let server = hdls::server::spawn(app.clone(), listener)?;
    let created = hdls::workspaces::create(
        &app.pools.runtime,
        "bench",
        hdls::clock::Clock::now(&SystemClock),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let key = created.owner_key;

    let arrivals: Arrivals = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", receiver.local_addr()?);
    let router = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(receiver, router).await });

    let crm = format!("{base}/api/mcp/crm");
    println!("create_account over MCP, concurrency {concurrency}, {seconds} s per run");
    let (plain, plain_time) = write(&crm, &key, "plain", concurrency, seconds).await;
    let plain_rate = plain.len() as f64 / plain_time.as_secs_f64();
    println!("  no subscription          {plain_rate:>8.0} writes/s");

    let http = reqwest::Client::new();
    call(
        &http,
        &format!("{base}/api/mcp"),
        &key,
        "subscribe_webhook",
        json!({ "target_url": hook, "schema_name": "crm", "event_types": ["insert"] }),
    )
    .await;
    let (hooked, hooked_time) = write(&crm, &key, "hooked", concurrency, seconds).await;
    let hooked_rate = hooked.len() as f64 / hooked_time.as_secs_f64();
    wait_for(&arrivals, "hooked", hooked.len(), Duration::from_secs(120)).await;
    let mut latencies: Vec<Duration> = {
        let a = arrivals.lock().unwrap();
        hooked
            .iter()
            .map(|(name, returned)| a[name].saturating_duration_since(*returned))
            .collect()
    };
    latencies.sort();
    println!(
        "  one subscription         {hooked_rate:>8.0} writes/s   ({:.2} x without)",
        hooked_rate / plain_rate
    );
    println!(
        "  commit -> delivery       p50 {:>7.1} ms   p99 {:>7.1} ms   ({} deliveries)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.len()
    );

    // The backlog: events made in one transaction, delivered as fast as the worker can.
    let rt = connect(&target.for_role(RUNTIME_ROLE)).await?;
    let started = Instant::now();
    rt.batch_execute(&format!(
        "BEGIN; SET LOCAL hdls.workspace_id = '{}'; SET LOCAL hdls.persona = 'agent';
         INSERT INTO crm.accounts (name, created_at, updated_at)
           SELECT 'backlog-' || i, now(), now() FROM generate_series(1, {backlog}) AS i;
         COMMIT;",
        created.workspace_id
    ))
    .await?;
    let committed = Instant::now();
    let last = wait_for(&arrivals, "backlog", backlog, Duration::from_secs(600)).await;
    let elapsed = last.saturating_duration_since(committed);
    println!(
        "backlog of {backlog} events (made in {:.1} s): delivered in {:.1} s = {:.0} deliveries/s",
        committed.duration_since(started).as_secs_f64(),
        elapsed.as_secs_f64(),
        backlog as f64 / elapsed.as_secs_f64()
    );

    server.stop().await;
    drop(owner);
    drop(rt);
    app.pools.runtime.close();
    app.pools.auth.close();
    database.remove().await?;
    Ok(())
}
