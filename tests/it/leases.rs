//! Admission leases (src/limits/lease.rs, migration V22): far from its limits, a workspace's
//! reads are admitted from calls a process leased in advance, and billed exactly as far as
//! they ran; a credential revoked while its workspace holds a lease is refused on its next
//! call and not billed; the limits still hold exactly; small plans never lease.

use std::time::{Duration, Instant};

use hdls::identity::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestEnv, no_args};
use crate::limits::{ServeProcess, set_plan};

/// One stateless MCP `tools/call` without arguments: the HTTP status and the JSON-RPC body.
async fn call(http: &reqwest::Client, url: &str, key: &str, tool: &str) -> (u16, Value) {
    crate::credential_cache::call(http, url, key, tool, json!({})).await
}

/// The month's billed calls, the minute's counted calls and the minute's leased calls.
async fn usage(env: &TestEnv, ws: Uuid) -> (i64, i32, i32) {
    let su = env.db.connect_superuser().await;
    su.query_opt(
        "SELECT calls, window_calls, window_leased FROM hdls.usage_ledger WHERE workspace_id = $1",
        &[&ws],
    )
    .await
    .unwrap()
    .map_or((0, 0, 0), |r| (r.get(0), r.get(1), r.get(2)))
}

/// `hdls_admissions_total{outcome}` from a /metrics text.
fn admissions(metrics: &str, outcome: &str) -> f64 {
    crate::credential_cache::counter(metrics, "hdls_admissions_total", outcome)
}

#[tokio::test]
async fn leased_calls_are_billed_as_far_as_they_ran_and_a_revoked_key_is_not() {
    // Leases that outlive the test, so that it decides when they are settled.
    let env = TestEnv::start_with_app(|app| app.with_lease_ttl(Duration::from_secs(3600))).await;
    let (ws, _) = env.workspace("leased").await;
    set_plan(&env, ws, 100_000, None).await;
    env.align_to_minute_start();
    let key = env.key(ws, Role::Reader).await;
    let http = reqwest::Client::new();
    let url = env.url("/api/mcp");
    for _ in 0..6 {
        let (status, body) = call(&http, &url, &key, "whoami").await;
        assert_eq!(status, 200);
        assert_eq!(body["result"]["isError"], false, "{body}");
    }
    let leased = admissions(&env.app.metrics.encode(), "lease");
    assert!(leased >= 3.0, "reads admitted from a lease: {leased}");
    let (billed, minute, held) = usage(&env, ws).await;
    assert!(held > 0, "the lease is held: {held}");
    assert!(billed < 6, "leased calls are billed when settled: {billed}");
    assert_eq!(
        i64::from(minute),
        billed + i64::from(held),
        "leased calls count in their minute at once"
    );

    // Revoked in the database, as `hdls admin key revoke` does. This process would admit
    // the key's next call from its lease: the call's own transaction refuses it, and it is
    // given back.
    let su = env.db.connect_superuser().await;
    let key_id = key.split('_').nth(1).unwrap().to_owned();
    su.execute(
        "UPDATE hdls.api_keys SET revoked_at = now() WHERE key_id = $1",
        &[&key_id],
    )
    .await
    .unwrap();
    let (status, body) = call(&http, &url, &key, "whoami").await;
    assert_eq!(status, 401, "a revoked key is refused at once: {body}");

    env.app.admissions.settle_all(&env.app.pools.runtime).await;
    assert_eq!(
        usage(&env, ws).await,
        (6, 6, 0),
        "billed: the six calls that ran; nothing left leased"
    );
}

#[tokio::test]
async fn a_leasing_workspace_is_admitted_exactly_up_to_its_limit() {
    let env = TestEnv::start_with_app(|app| app.with_lease_ttl(Duration::from_secs(3600))).await;
    let (ws, key) = env.workspace("edge").await;
    // Far enough from 800 for leases at first (9 leases' worth of room), not near the end.
    set_plan(&env, ws, 800, None).await;
    env.align_to_minute_start();
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(env.client("/api/mcp", &key).await);
    }
    let outcomes = futures_util::future::join_all(clients.iter().map(|c| async move {
        let mut outcomes = Vec::new();
        for _ in 0..110 {
            let result = c.call("whoami", no_args()).await;
            outcomes.push(match result.is_error {
                Some(true) => result.structured_content.expect("an error object")["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                _ => "ok".to_owned(),
            });
        }
        outcomes
    }))
    .await
    .concat();
    let admitted = outcomes.iter().filter(|o| *o == "ok").count();
    let refused = outcomes.iter().filter(|o| *o == "rate_limited").count();
    assert_eq!((admitted, refused), (800, 80), "{outcomes:?}");
    assert!(admissions(&env.app.metrics.encode(), "lease") > 0.0);
    env.app.admissions.settle_all(&env.app.pools.runtime).await;
    assert_eq!(usage(&env, ws).await, (800, 800, 0));
}

#[tokio::test]
async fn the_default_plan_never_leases() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("small").await;
    env.align_to_minute_start();
    let client = env.client("/api/mcp", &key).await;
    for _ in 0..10 {
        client.ok("whoami", no_args()).await;
    }
    assert_eq!(admissions(&env.app.metrics.encode(), "lease"), 0.0);
    assert_eq!(usage(&env, ws).await, (10, 10, 0));
}

#[tokio::test]
async fn concurrent_reads_on_two_processes_are_billed_exactly_once_settled() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("spread").await;
    set_plan(&env, ws, 100_000, None).await;
    let dir = std::env::temp_dir().join(format!("hdls-leases-{}", Uuid::new_v4().simple()));
    let url = env.db.superuser_url();
    let servers = [
        ServeProcess::start(&url, &dir),
        ServeProcess::start(&url, &dir),
    ];
    let http = reqwest::Client::new();
    let tasks = (0..12).map(|i| {
        let (http, url, key) = (http.clone(), servers[i % 2].url.clone(), key.clone());
        async move {
            let mut ok = 0;
            for _ in 0..20 {
                let (status, body) = call(&http, &url, &key, "whoami").await;
                if status == 200 && body["result"]["isError"] == false {
                    ok += 1;
                }
            }
            ok
        }
    });
    let ran: i64 = futures_util::future::join_all(tasks).await.iter().sum();
    assert_eq!(ran, 240);
    for server in &servers {
        let metrics = crate::credential_cache::scrape(&http, &server.metrics_url).await;
        assert!(
            admissions(&metrics, "lease") > 0.0,
            "each process admitted reads from its leases"
        );
    }
    // Each lease ends within 100 ms and is settled by its process.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (billed, _, held) = usage(&env, ws).await;
        if held == 0 && billed == ran {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never settled: billed {billed} of {ran}, {held} still leased"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A leased read opens its transaction with its first statement (src/db/scope.rs,
/// `Opening`): the epoch check travels with the query and is read before the rows are used.
/// A key revoked meanwhile gets a 401 and none of the rows its query fetched, and the call
/// is given back to the lease, not billed.
#[tokio::test]
async fn a_revoked_key_gets_no_rows_from_a_query_sent_with_its_check() {
    let env = TestEnv::start_with_app(|app| app.with_lease_ttl(Duration::from_secs(3600))).await;
    let (ws, owner) = env.workspace("rows").await;
    set_plan(&env, ws, 100_000, None).await;
    env.align_to_minute_start();
    let http = reqwest::Client::new();
    let crm = env.url("/api/mcp/crm");
    let (status, body) = crate::credential_cache::call(
        &http,
        &crm,
        &owner,
        "create_account",
        json!({ "name": "Zephyr Secretco" }),
    )
    .await;
    assert_eq!(
        (status, &body["result"]["isError"]),
        (200, &json!(false)),
        "{body}"
    );
    let key = env.key(ws, Role::Reader).await;
    let search = || {
        crate::credential_cache::call(
            &http,
            &crm,
            &key,
            "search_accounts",
            json!({ "query": "Zephyr" }),
        )
    };
    for _ in 0..4 {
        let (status, body) = search().await;
        assert_eq!(status, 200);
        assert_eq!(
            body["result"]["structuredContent"]["accounts"][0]["name"], "Zephyr Secretco",
            "{body}"
        );
    }
    assert!(admissions(&env.app.metrics.encode(), "lease") >= 1.0);

    let key_id = key.split('_').nth(1).unwrap().to_owned();
    env.db
        .connect_superuser()
        .await
        .execute(
            "UPDATE hdls.api_keys SET revoked_at = now() WHERE key_id = $1",
            &[&key_id],
        )
        .await
        .unwrap();
    let (status, body) = search().await;
    assert_eq!(status, 401, "{body}");
    assert!(
        !body.to_string().contains("Zephyr"),
        "nothing of what the query fetched is answered: {body}"
    );

    env.app.admissions.settle_all(&env.app.pools.runtime).await;
    let (billed, minute, held) = usage(&env, ws).await;
    assert_eq!(held, 0);
    assert_eq!(
        billed, 5,
        "the owner's write and the reader's four searches, not the refused one"
    );
    assert_eq!(i64::from(minute), billed);
}

/// A read's Scope sends its opening with its first statement (src/db/scope.rs, `Opening`).
/// Once its check has refused the credential, nothing more runs in it, even for a tool that
/// ignored the first refusal; a read that ran no statement is checked by its commit; the
/// lease hears `false` only for a refusal.
#[tokio::test]
async fn a_refused_read_scope_runs_nothing_more_and_one_without_statements_is_checked_at_commit() {
    use hdls::db::Scope;
    use hdls::error::ErrorCode;
    use hdls::identity::Persona;
    use std::sync::{Arc, Mutex};

    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("opening").await;
    let epoch: Option<i64> = env
        .db
        .connect_superuser()
        .await
        .query_opt(
            "SELECT epoch FROM hdls.credential_epochs WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap()
        .map(|r| r.get(0));
    let reader = |epoch| crate::harness::principal(ws, Persona::Agent, Role::Reader, Some(epoch));
    let (stale, current) = (reader(epoch.unwrap_or(0) + 1), reader(epoch.unwrap_or(0)));
    let pool = &env.app.pools.runtime;
    let code = |r: Result<(), hdls::error::ToolError>| r.err().map(|e| e.code);

    // Refused by the check that travelled with the first statement; the lease is told.
    let told = Arc::new(Mutex::new(None));
    let tell = told.clone();
    let scope = Scope::begin_leased_read(
        pool,
        &stale,
        Box::new(move |ran| *tell.lock().unwrap() = Some(ran)),
    )
    .await
    .unwrap();
    let first = scope.query("SELECT 1", &[]).await.map(drop);
    assert_eq!(code(first), Some(ErrorCode::Unauthenticated));
    assert_eq!(*told.lock().unwrap(), Some(false));
    // A tool that went on anyway: every later statement and the commit are refused.
    let second = scope.query("SELECT 1", &[]).await.map(drop);
    assert_eq!(code(second), Some(ErrorCode::Unauthenticated));
    assert_eq!(code(scope.commit().await), Some(ErrorCode::Unauthenticated));

    // No statement at all: the commit carries the check.
    let scope = Scope::begin_unmetered_read(pool, &stale).await.unwrap();
    assert_eq!(code(scope.commit().await), Some(ErrorCode::Unauthenticated));

    // A current credential reads and commits; the lease hears that the call ran.
    let told = Arc::new(Mutex::new(None));
    let tell = told.clone();
    let scope = Scope::begin_leased_read(
        pool,
        &current,
        Box::new(move |ran| *tell.lock().unwrap() = Some(ran)),
    )
    .await
    .unwrap();
    let rows = scope.query("SELECT 1", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    scope.commit().await.unwrap();
    assert_eq!(*told.lock().unwrap(), Some(true));
}
