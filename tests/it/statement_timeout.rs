//! A statement that runs past the time limit is cancelled and reported as `unavailable`.

use std::time::Duration;

use serde_json::json;

use crate::harness::TestEnv;

#[tokio::test]
async fn a_slow_query_times_out_as_unavailable() {
    let env = TestEnv::start_with(|t| t.with_statement_timeout(Duration::from_millis(300))).await;
    let (_, key) = env.workspace("slow").await;
    let su = env.db.connect_superuser().await;
    // A view that takes a second per row, visible to the engine like any table.
    su.batch_execute(
        "CREATE VIEW crm.slow_view WITH (security_invoker = true) AS
             SELECT gen_random_uuid() AS id, pg_sleep(1)::text AS slept;
         GRANT SELECT ON crm.slow_view TO hdls_runtime;
         NOTIFY hdls_catalog;",
    )
    .await
    .unwrap();
    let crm = env.client("/api/mcp/crm", &key).await;
    let mut error = None;
    // The catalog refresh is asynchronous: wait (boundedly) until the view is known.
    for _ in 0..100 {
        let e = crm
            .err("query_records", json!({ "table": "slow_view" }))
            .await;
        if e["code"] == "invalid_input" {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        error = Some(e);
        break;
    }
    let error = error.expect("the view never appeared in the catalog");
    assert_eq!(error["code"], "unavailable", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("too long"),
        "{error}"
    );
    // The connection is healthy afterwards.
    crm.ok("query_records", json!({ "table": "accounts" }))
        .await;
}
