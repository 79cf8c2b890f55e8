//! The per-process credential cache (src/auth/cache.rs) never outlives a change: a key
//! revoked through one `hdls serve` process is refused on the very next request at another
//! that has it cached, and an unrelated change in the workspace only costs a fresh lookup.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestEnv;
use crate::limits::ServeProcess;

/// One stateless MCP request: the HTTP status and, for a tools/call, the JSON-RPC body.
pub async fn call(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    tool: &str,
    args: Value,
) -> (u16, Value) {
    let response = http
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": tool, "arguments": args } }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn ok(body: &Value) -> &Value {
    assert_eq!(body["result"]["isError"], false, "{body}");
    &body["result"]["structuredContent"]
}

/// `credential_lookups` by outcome, from a process's /metrics.
async fn lookups(http: &reqwest::Client, metrics_url: &str, outcome: &str) -> f64 {
    let text = scrape(http, metrics_url).await;
    counter(&text, "hdls_credential_lookups_total", outcome)
}

/// A process's /metrics text.
pub async fn scrape(http: &reqwest::Client, metrics_url: &str) -> String {
    http.get(metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A counter with an `outcome` label from a /metrics text (0 when not there yet).
pub fn counter(metrics: &str, family: &str, outcome: &str) -> f64 {
    let needle = format!("{family}{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_key_revoked_on_one_process_is_refused_next_on_another_that_cached_it() {
    let env = TestEnv::start().await;
    let (ws, admin) = env.workspace("cached").await;
    let dir = std::env::temp_dir().join(format!("hdls-cache-{}", Uuid::new_v4().simple()));
    let url = env.db.superuser_url();
    let a = ServeProcess::start(&url, &dir);
    let b = ServeProcess::start(&url, &dir);
    let http = reqwest::Client::new();

    let minted = ok(&call(
        &http,
        &a.url,
        &admin,
        "mint_api_key",
        json!({ "role": "member" }),
    )
    .await
    .1)
    .clone();
    let key = minted["key"].as_str().unwrap().to_owned();
    let other = ok(&call(
        &http,
        &a.url,
        &admin,
        "mint_api_key",
        json!({ "role": "reader" }),
    )
    .await
    .1)
    .clone();

    // B resolves the key once and then serves it from its cache.
    for _ in 0..3 {
        let (status, body) = call(&http, &b.url, &key, "whoami", json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(ok(&body)["workspace"]["id"], ws.to_string(), "{body}");
    }

    // An unrelated change moves the workspace's epoch: B's cached entry is found stale, the
    // key resolved again, and the call still answered.
    let (status, body) = call(
        &http,
        &a.url,
        &admin,
        "revoke_api_key",
        json!({ "key_id": other["key_id"] }),
    )
    .await;
    assert_eq!(status, 200);
    ok(&body);
    let (status, body) = call(&http, &b.url, &key, "whoami", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ok(&body)["workspace"]["id"], ws.to_string());

    // Revoked through A; the very next request at B, which holds it cached, is refused.
    let (status, body) = call(
        &http,
        &a.url,
        &admin,
        "revoke_api_key",
        json!({ "key_id": minted["key_id"] }),
    )
    .await;
    assert_eq!(status, 200);
    ok(&body);
    let (status, body) = call(&http, &b.url, &key, "whoami", json!({})).await;
    assert_eq!(
        status, 401,
        "a revoked key must be refused at once on every process: {body}"
    );
    let (status, _) = call(&http, &b.url, &key, "whoami", json!({})).await;
    assert_eq!(status, 401);

    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cached_credentials_are_counted_in_metrics() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("counted").await;
    let dir = std::env::temp_dir().join(format!("hdls-cache-{}", Uuid::new_v4().simple()));
    let server = ServeProcess::start(&env.db.superuser_url(), &dir);
    let http = reqwest::Client::new();
    for _ in 0..4 {
        let (status, body) = call(&http, &server.url, &key, "whoami", json!({})).await;
        assert_eq!(status, 200);
        ok(&body);
    }
    let metrics = server.metrics_url.clone();
    assert!(lookups(&http, &metrics, "miss").await >= 1.0);
    assert!(
        lookups(&http, &metrics, "hit").await >= 3.0,
        "later requests are served from the cache"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Changes that narrow a cached credential take effect on its next tool call in the same
/// process too: a customer's requester disabled, a product removed from the workspace.
#[tokio::test]
async fn narrowing_changes_reach_the_next_tool_call_of_a_cached_credential() {
    let env = TestEnv::start().await;
    let (ws, owner) = env.workspace("narrowed").await;
    let http = reqwest::Client::new();
    let concierge = env.url("/api/mcp");
    let support = env.url("/api/mcp/support");
    let crm = env.url("/api/mcp/crm");
    ok(&call(
        &http,
        &concierge,
        &owner,
        "install_product",
        json!({ "product": "support" }),
    )
    .await
    .1);
    let requester = ok(&call(
        &http,
        &support,
        &owner,
        "create_requester",
        json!({ "email": "pat@example.com", "name": "Pat" }),
    )
    .await
    .1)["requester"]
        .clone();
    let customer = ok(&call(
        &http,
        &support,
        &owner,
        "mint_customer_key",
        json!({ "requester_id": requester["id"] }),
    )
    .await
    .1)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = env.key(ws, hdls::identity::Role::Member).await;

    for _ in 0..2 {
        let (status, body) = call(&http, &support, &customer, "list_my_tickets", json!({})).await;
        assert_eq!(status, 200);
        ok(&body);
        let (status, body) = call(
            &http,
            &crm,
            &member,
            "search_accounts",
            json!({ "query": "x" }),
        )
        .await;
        assert_eq!(status, 200);
        ok(&body);
    }

    ok(&call(
        &http,
        &support,
        &owner,
        "update_requester",
        json!({ "id": requester["id"], "disabled": true }),
    )
    .await
    .1);
    let (status, body) = call(&http, &support, &customer, "list_my_tickets", json!({})).await;
    assert_eq!(
        status, 401,
        "a disabled requester's key must stop at once: {body}"
    );

    ok(&call(
        &http,
        &concierge,
        &owner,
        "uninstall_product",
        json!({ "product": "crm" }),
    )
    .await
    .1);
    let (status, body) = call(
        &http,
        &crm,
        &member,
        "search_accounts",
        json!({ "query": "x" }),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["result"]["isError"], true,
        "crm is no longer installed: {body}"
    );
}
