//! Refused and anonymous requests cost the caller, not the server: refusals count against the
//! workspace's limit, bad credentials are throttled per client address (behind a trusted
//! proxy, the forwarded address), and one workspace cannot hold every connection.

use std::time::Duration;

use hdls::db::OWNER_ROLE;
use hdls::identity::Role;
use hdls::limits::concurrency::WorkspaceGate;
use hdls::net::guard::Cidr;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{TestEnv, no_args};

#[tokio::test]
async fn refused_calls_count_against_the_limit_and_stop_being_audited_past_it() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("Refusals").await;
    let owner_pool = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner_pool, ws, None, 5, None, env.clock_now())
        .await
        .unwrap();
    let reader_key = env.key(ws, Role::Reader).await;
    env.align_to_minute_start();
    let reader = env.client("/api/mcp", &reader_key).await;
    let mut codes = Vec::new();
    for _ in 0..12 {
        let refused = reader
            .err(
                "mint_api_key",
                json!({ "role": "owner", "label": "a long free-text label that must never be stored" }),
            )
            .await;
        codes.push(refused["code"].as_str().unwrap().to_owned());
    }
    assert_eq!(codes[..5], ["forbidden"; 5]);
    assert_eq!(codes[5..], ["rate_limited"; 7]);
    // The window is spent for everyone in the workspace, refusals included.
    env.clock.advance(time::Duration::seconds(61));
    let owner = env.client("/api/mcp", &owner_key).await;
    let events = owner
        .ok("list_audit_events", json!({ "action": "api_key.mint" }))
        .await;
    let events: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .collect();
    assert_eq!(events.len(), 5, "{events:?}");
    for event in events {
        let target = event["target"].as_str().unwrap();
        assert!(target.len() <= hdls::audit::MAX_TARGET_CHARS);
        assert!(target.contains("role=owner"), "{target}");
        assert!(!target.contains("free-text"), "{target}");
    }
}

#[test]
fn audit_targets_keep_names_and_ids_only() {
    let target = hdls::audit::target_of(&json!({
        "key_id": "key_0123456789abcdef",
        "label": "secret-ish note",
        "role": "admin",
        "body": "x".repeat(5000),
    }));
    assert_eq!(target, "body key_id=key_0123456789abcdef label role=admin");
    let long = hdls::audit::target_of(&json!({ "x".repeat(300): 1 }));
    assert!(long.chars().count() <= hdls::audit::MAX_TARGET_CHARS);
}

async fn status_with(
    env: &TestEnv,
    key: &str,
    forwarded_for: &str,
) -> (StatusCode, Option<String>) {
    let response = reqwest::Client::new()
        .post(env.url("/api/mcp"))
        .header("authorization", format!("Bearer {key}"))
        .header("x-forwarded-for", forwarded_for)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" }))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry_after)
}

fn random_key() -> String {
    format!(
        "hdls_{}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16],
        "A".repeat(43)
    )
}

#[tokio::test]
async fn a_flood_of_bad_keys_is_throttled_per_forwarded_address() {
    let env = TestEnv::start_with_app(|app| {
        app.with_trusted_proxies(vec![Cidr::parse("127.0.0.0/8").unwrap()])
    })
    .await;
    let (_, key) = env.workspace("Flood").await;
    let flooder = "198.51.100.66";
    for _ in 0..hdls::limits::per_address::BEARER_FAILURES_PER_MINUTE {
        assert_eq!(
            status_with(&env, &random_key(), flooder).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, retry_after) = status_with(&env, &random_key(), flooder).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("60"));
    // Even a valid key from that address waits: the check comes before any lookup.
    assert_eq!(
        status_with(&env, &key, flooder).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy is unaffected; a spoofed leftmost entry is not
    // believed (the proxy's own hop, the rightmost, names the client).
    let other = format!("{flooder}, 198.51.100.67");
    assert_eq!(status_with(&env, &key, &other).await.0, StatusCode::OK);
    // The window ends.
    env.clock.advance(time::Duration::seconds(60));
    assert_eq!(status_with(&env, &key, flooder).await.0, StatusCode::OK);
}

#[tokio::test]
async fn without_a_trusted_proxy_forwarded_for_is_ignored() {
    let env = TestEnv::start().await;
    for i in 0..hdls::limits::per_address::BEARER_FAILURES_PER_MINUTE {
        // A different forwarded address each time changes nothing: the TCP peer is counted.
        let spoofed = format!("203.0.113.{i}");
        assert_eq!(
            status_with(&env, &random_key(), &spoofed).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        status_with(&env, &random_key(), "203.0.113.200").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_workspace_at_its_concurrency_bound_does_not_block_another() {
    let env = TestEnv::start_with_app(|app| {
        app.with_workspace_gate(WorkspaceGate::new(2, Duration::from_millis(300)))
    })
    .await;
    let (a, a_key) = env.workspace("Busy").await;
    let (_, b_key) = env.workspace("Calm").await;
    let a_client = env.client("/api/mcp/crm", &a_key).await;
    let account = a_client
        .ok("create_account", json!({ "name": "Locked Co" }))
        .await;
    let id = account["account"]["id"].as_str().unwrap().to_owned();
    // Hold A's two slots: updates that wait on a row lock the test holds.
    let mut locker = env.db.connect_superuser().await;
    let tx = locker.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM crm.accounts WHERE workspace_id = $1 FOR UPDATE",
        &[&a],
    )
    .await
    .unwrap();
    let mut stuck = Vec::new();
    for i in 0..2 {
        let client = env.client("/api/mcp/crm", &a_key).await;
        let id = id.clone();
        stuck.push(tokio::spawn(async move {
            client
                .call(
                    "update_account",
                    json!({ "id": id, "name": format!("Renamed {i}") }),
                )
                .await
        }));
    }
    // Wait until both are really inside the database, waiting on the lock (on Citus, on the
    // worker holding the shard: citus_stat_activity shows every node).
    let watcher = env.db.connect_superuser().await;
    let activity = if crate::harness::on_citus() {
        "citus_stat_activity"
    } else {
        "pg_stat_activity"
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = watcher
            .query_one(
                &format!(
                    "SELECT count(*) FROM {activity}
                     WHERE datname = current_database() AND wait_event_type = 'Lock'
                       AND query LIKE 'UPDATE%'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two updates never reached the lock"
        );
        tokio::task::yield_now().await;
    }
    let refused = a_client.err("search_accounts", no_args()).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["window"], "concurrency");
    assert_eq!(refused["limit"], 2);
    // B goes on as if nothing happened.
    env.client("/api/mcp/crm", &b_key)
        .await
        .ok("search_accounts", no_args())
        .await;
    tx.rollback().await.unwrap();
    for call in stuck {
        assert!(call.await.unwrap().is_error != Some(true));
    }
    a_client.ok("search_accounts", no_args()).await;
}
