//! Rate limits and monthly budgets: exact, per workspace, across processes, driven by the test's clock.

use std::process::{Child, Command, Stdio};

use hdls::db::OWNER_ROLE;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestEnv, no_args};

pub async fn set_plan(env: &TestEnv, ws: Uuid, per_minute: i32, monthly: Option<i64>) {
    let owner = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner, ws, None, per_minute, monthly, env.clock_now())
        .await
        .unwrap();
}

async fn ledger(env: &TestEnv, ws: Uuid) -> i64 {
    let su = env.db.connect_superuser().await;
    su.query_opt(
        "SELECT calls FROM hdls.usage_ledger WHERE workspace_id = $1",
        &[&ws],
    )
    .await
    .unwrap()
    .map_or(0, |r| r.get(0))
}

#[tokio::test]
async fn exactly_n_calls_per_minute_then_a_new_window() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("minute").await;
    set_plan(&env, ws, 5, None).await;
    env.align_to_minute_start();
    let client = env.client("/api/mcp", &key).await;
    for _ in 0..5 {
        client.ok("whoami", no_args()).await;
    }
    let refused = client.err("whoami", no_args()).await;
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(refused["limit"], 5);
    assert_eq!(refused["window"], "minute");
    assert_eq!(
        refused["retry_after_s"], 60,
        "retry_after_s at the start of a window"
    );
    // Refused calls cost nothing: the ledger holds exactly the admitted ones.
    assert_eq!(ledger(&env, ws).await, 5);

    env.clock.advance(time::Duration::seconds(45));
    let refused = client.err("whoami", no_args()).await;
    assert_eq!(refused["retry_after_s"], 15);

    env.clock.advance(time::Duration::seconds(15));
    for _ in 0..5 {
        client.ok("whoami", no_args()).await;
    }
    assert_eq!(client.err_code("whoami", no_args()).await, "rate_limited");
    assert_eq!(ledger(&env, ws).await, 10);
}

/// A tool that only reads is admitted by its own transaction's commit: a refused read shows
/// no rows, a failed read still counts, and a plan's limit holds across reads and writes.
#[tokio::test]
async fn reads_are_admitted_before_they_run_and_failed_reads_still_count() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("reads").await;
    set_plan(&env, ws, 4, None).await;
    env.align_to_minute_start();
    let crm = env.client("/api/mcp/crm", &key).await;
    crm.ok("create_account", json!({ "name": "Acme" })).await;
    let found = crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
    // A read that fails (no such account) is counted like any call.
    let missing = crm
        .err("get_account", json!({ "id": Uuid::new_v4() }))
        .await;
    assert_eq!(missing["code"], "not_found");
    crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    assert_eq!(ledger(&env, ws).await, 4);
    // The fifth call is refused: no rows, nothing counted, and the same without the database
    // for the rest of the window.
    for _ in 0..2 {
        let refused = crm.err("search_accounts", json!({ "query": "Acme" })).await;
        assert_eq!(refused["code"], "rate_limited", "{refused}");
        assert_eq!(refused["window"], "minute");
        assert_eq!(refused["limit"], 4);
    }
    assert_eq!(
        crm.err_code("create_account", json!({ "name": "Beta" }))
            .await,
        "rate_limited"
    );
    assert_eq!(ledger(&env, ws).await, 4);
    env.clock.advance(time::Duration::minutes(1));
    crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    assert_eq!(ledger(&env, ws).await, 5);
}

/// Reads of one workspace that arrive together are admitted in batches (crate::limits::batch);
/// a batch that straddles the limit is admitted exactly as far as it fits.
#[tokio::test]
async fn concurrent_reads_across_the_limit_are_admitted_exactly_up_to_it() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("burst").await;
    set_plan(&env, ws, 10, None).await;
    env.align_to_minute_start();
    let mut clients = Vec::new();
    for _ in 0..25 {
        clients.push(env.client("/api/mcp", &key).await);
    }
    let outcomes = futures_util::future::join_all(clients.iter().map(|c| async move {
        let result = c.call("whoami", no_args()).await;
        match result.is_error {
            Some(true) => result.structured_content.expect("an error object")["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            _ => "ok".to_owned(),
        }
    }))
    .await;
    let admitted = outcomes.iter().filter(|o| *o == "ok").count();
    let refused = outcomes.iter().filter(|o| *o == "rate_limited").count();
    assert_eq!((admitted, refused), (10, 15), "{outcomes:?}");
    assert_eq!(ledger(&env, ws).await, 10);
}

#[tokio::test]
async fn the_default_is_120_per_minute() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("default").await;
    env.align_to_minute_start();
    let client = env.client("/api/mcp", &key).await;
    for _ in 0..120 {
        client.ok("whoami", no_args()).await;
    }
    let refused = client.err("whoami", no_args()).await;
    assert_eq!(refused["code"], "rate_limited");
    assert_eq!(refused["limit"], 120);
}

#[tokio::test]
async fn a_monthly_budget_refuses_call_m_plus_one_and_does_not_bill_it() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("month").await;
    set_plan(&env, ws, 100, Some(3)).await;
    env.align_to_minute_start();
    let client = env.client("/api/mcp/crm", &key).await;
    for i in 0..3 {
        client
            .ok("create_account", json!({ "name": format!("Billed {i}") }))
            .await;
    }
    for _ in 0..2 {
        let refused = client
            .err("create_account", json!({ "name": "Not billed" }))
            .await;
        assert_eq!(refused["code"], "rate_limited");
        assert_eq!(refused["window"], "month");
        assert_eq!(refused["limit"], 3);
        assert!(refused["retry_after_s"].as_i64().unwrap() >= 1);
    }
    assert_eq!(ledger(&env, ws).await, 3, "refused calls were billed");
    // The refused calls did not run either.
    let su = env.db.connect_superuser().await;
    let created: i64 = su
        .query_one(
            "SELECT count(*) FROM crm.accounts WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 3);
    // And they did not take minute slots.
    let minute: i32 = su
        .query_one(
            "SELECT window_calls FROM hdls.usage_ledger WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(minute, 3);

    // A new month admits calls again.
    env.clock.advance(time::Duration::days(32));
    client.ok("search_accounts", json!({})).await;
}

#[tokio::test]
async fn one_workspace_exhausting_its_limit_does_not_affect_another() {
    let env = TestEnv::start().await;
    let (a, a_key) = env.workspace("A").await;
    let (_, b_key) = env.workspace("B").await;
    set_plan(&env, a, 2, None).await;
    env.align_to_minute_start();
    let a_client = env.client("/api/mcp", &a_key).await;
    let b_client = env.client("/api/mcp", &b_key).await;
    a_client.ok("whoami", no_args()).await;
    a_client.ok("whoami", no_args()).await;
    assert_eq!(a_client.err_code("whoami", no_args()).await, "rate_limited");
    for _ in 0..10 {
        b_client.ok("whoami", no_args()).await;
    }
}

#[tokio::test]
async fn get_usage_reports_the_windows() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("usage").await;
    set_plan(&env, ws, 50, Some(1000)).await;
    env.align_to_minute_start();
    let client = env.client("/api/mcp", &key).await;
    client.ok("whoami", no_args()).await;
    client.ok("whoami", no_args()).await;
    // Every call is admitted before it runs, so the counts include this one.
    let usage = client.ok("get_usage", no_args()).await;
    assert_eq!(usage["minute"]["calls"], 3, "{usage}");
    assert_eq!(usage["minute"]["limit"], 50);
    assert_eq!(usage["month"]["calls"], 3);
    let usage = client.ok("get_usage", no_args()).await;
    assert_eq!(usage["minute"]["calls"], 4, "{usage}");
    assert_eq!(usage["month"]["budget"], 1000);
    assert_eq!(usage["plan"], format!("ws-{ws}"));
    assert!(usage["minute"]["resets_at"].is_string());
    assert!(usage["month"]["resets_at"].is_string());
}

/// A `hdls serve` process against the test's database.
pub struct ServeProcess {
    child: Child,
    /// Its concierge endpoint.
    pub url: String,
    /// Its `/metrics` (on a loopback port of its own).
    pub metrics_url: String,
}

impl ServeProcess {
    pub fn start(database_url: &str, data_dir: &std::path::Path) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_hdls"))
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--metrics-bind",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("HDLS_DATABASE_URL", database_url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hdls serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut metrics_url) = (None, None);
        while url.is_none() || metrics_url.is_none() {
            let line = lines.next().expect("serve printed its endpoints").unwrap();
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("concierge") {
                url = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("metrics") {
                metrics_url = Some(rest.trim().to_owned());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ServeProcess {
            child,
            url: url.unwrap_or_default(),
            metrics_url: metrics_url.unwrap_or_default(),
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn whoami_code(http: &reqwest::Client, url: &str, key: &str) -> Option<String> {
    let response: Value = http
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": "whoami", "arguments": {} } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["result"]["structuredContent"]["error"]["code"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn the_limit_holds_exactly_across_three_processes() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("spread").await;
    set_plan(&env, ws, 7, None).await;
    let dir = std::env::temp_dir().join(format!("hdls-spread-{}", Uuid::new_v4().simple()));
    let url = env.db.superuser_url();
    let servers: Vec<ServeProcess> = (0..3).map(|_| ServeProcess::start(&url, &dir)).collect();
    let http = reqwest::Client::new();
    let su = env.db.connect_superuser().await;
    // These processes use the real clock: if a minute boundary falls inside an attempt,
    // the attempt straddles two windows and is repeated (counters are reset first).
    let mut verified = false;
    for _attempt in 0..3 {
        su.execute(
            "UPDATE hdls.usage_ledger SET window_calls = 0 WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap();
        let minute_before = current_minute();
        let mut admitted = 0;
        let mut refused = 0;
        for i in 0..12 {
            match whoami_code(&http, &servers[i % 3].url, &key)
                .await
                .as_deref()
            {
                None => admitted += 1,
                Some("rate_limited") => refused += 1,
                Some(other) => panic!("unexpected error {other}"),
            }
        }
        if current_minute() != minute_before {
            continue;
        }
        assert_eq!(
            (admitted, refused),
            (7, 5),
            "calls admitted across three processes"
        );
        verified = true;
        break;
    }
    assert!(verified, "every attempt straddled a minute boundary");
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

fn current_minute() -> i64 {
    #[allow(clippy::disallowed_methods)] // compares with the serve processes' real clock
    let now = time::OffsetDateTime::now_utc();
    now.unix_timestamp() / 60
}
