//! Each refusal the engine makes on its own (beyond unknown names and bad values) answers
//! `invalid_input` at the exact path of the offending part, and changes nothing.

use hdls::identity::Role;
use serde_json::{Value, json};

use crate::harness::TestEnv;
use crate::power_tools::{await_table, crm_as, probe_table};

#[tokio::test]
async fn engine_refusals_name_their_path() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let su = env.db.connect_superuser().await;
    su.batch_execute(
        "CREATE VIEW crm.probe_titles WITH (security_invoker = true) AS SELECT id, title FROM crm.probe;
         GRANT SELECT, INSERT, UPDATE, DELETE ON crm.probe_titles TO hdls_runtime;
         NOTIFY hdls_catalog;",
    )
    .await
    .unwrap();
    let (_, crm) = crm_as(&env, "refusals", Role::Owner).await;
    await_table(&crm, "probe_titles").await;
    let id = uuid::Uuid::new_v4();
    crm.ok(
        "insert_record",
        json!({ "table": "probe", "values": { "id": id, "title": "kept" } }),
    )
    .await;

    let eq = |column: &str, value: Value| json!({ "column": column, "op": "eq", "value": value });
    let cases: Vec<(&str, Value, &str)> = vec![
        // Writes: views are read-only here; a key takes no guard.
        (
            "insert_record",
            json!({ "table": "probe_titles", "values": { "title": "x" } }),
            "table",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": id }, "max_rows": 1, "values": { "title": "x" } }),
            "max_rows",
        ),
        // Sorting: twice on one column, or on a column without an order.
        (
            "query_records",
            json!({ "table": "probe", "sort": [{ "column": "qty" }, { "column": "qty", "direction": "desc" }] }),
            "sort[1].column",
        ),
        (
            "query_records",
            json!({ "table": "probe", "sort": [{ "column": "attrs" }] }),
            "sort[0].column",
        ),
        // Grouping: twice on one column, or on a search vector; one output name twice.
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "group_by": ["status", "status"] }),
            "group_by[1]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "group_by": ["search"] }),
            "group_by[0]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }, { "fn": "max", "column": "qty", "as": "count" }] }),
            "aggregates[1].as",
        ),
        // Full-text search: a table without a vector, or a column that is not one.
        (
            "query_records",
            json!({ "table": "accounts", "filter": { "op": "search", "value": "acme" } }),
            "filter.op",
        ),
        (
            "query_records",
            json!({ "table": "probe", "filter": { "column": "title", "op": "search", "value": "kept" } }),
            "filter.column",
        ),
        // NULL is matched with is_null only.
        (
            "query_records",
            json!({ "table": "probe", "filter": eq("title", Value::Null) }),
            "filter.value",
        ),
        (
            "query_records",
            json!({ "table": "probe", "filter": { "column": "title", "op": "in", "value": ["kept", null] } }),
            "filter.value",
        ),
        // A combinator takes nothing beside it.
        (
            "query_records",
            json!({ "table": "probe", "filter": { "and": [eq("title", json!("kept"))], "column": "qty" } }),
            "filter.column",
        ),
    ];
    for (tool, args, path) in cases {
        let error = crm.err(tool, args.clone()).await;
        assert_eq!(error["code"], "invalid_input", "{tool} {args}: {error}");
        assert_eq!(error["path"], path, "{tool} {args}: {error}");
    }
    // Nothing was changed by any of them.
    let row = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "filter": eq("id", json!(id)) }),
        )
        .await;
    assert_eq!(row["rows"][0]["title"], "kept");
    assert_eq!(
        crm.ok("query_records", json!({ "table": "probe" })).await["rows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
