//! Bad input gets a clear answer, never `internal`: values outside PostgreSQL's ranges are
//! refused at their path before any SQL runs, and whatever PostgreSQL still refuses maps by
//! SQLSTATE class (data exceptions → `invalid_input`, integrity violations → `conflict` or
//! `invalid_input`) without echoing values.

use hdls::identity::Role;
use serde_json::{Value, json};

use crate::harness::{Mcp, TestEnv};
use crate::power_tools::{await_table, crm_as};

/// A table with the types and declarations the engine must respect: type modifiers,
/// CHECK constraints (a length one the catalog exposes, a pattern one it cannot), NOT NULL,
/// an exclusion constraint, and types the engine passes through as text.
pub const EDGE_DDL: &str = "
CREATE TABLE crm.edge (
  workspace_id uuid NOT NULL DEFAULT hdls.current_workspace() REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  code varchar(8) CONSTRAINT edge_code_upper CHECK (code ~ '^[A-Z]*$'),
  label text NOT NULL CHECK (length(label) BETWEEN 2 AND 20),
  price numeric(5,2),
  ratio real,
  wide float8,
  big numeric,
  qty int4,
  at_local timestamp,
  at_zone timestamptz,
  day date,
  clock timetz,
  span interval,
  slot int4,
  tags varchar(3)[],
  PRIMARY KEY (workspace_id, id),
  EXCLUDE USING btree (workspace_id WITH =, slot WITH =)
);
ALTER TABLE crm.edge ENABLE ROW LEVEL SECURITY; ALTER TABLE crm.edge FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON crm.edge USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace());
GRANT SELECT, INSERT, UPDATE, DELETE ON crm.edge TO hdls_runtime;
NOTIFY hdls_catalog;
";

/// Creates `crm.edge` and returns a member's CRM client that sees it.
pub async fn edge_table(env: &TestEnv, workspace: &str) -> Mcp {
    let su = env.db.connect_superuser().await;
    su.batch_execute(EDGE_DDL).await.expect("create crm.edge");
    let (_, crm) = crm_as(env, workspace, Role::Member).await;
    await_table(&crm, "edge").await;
    crm
}

/// Asserts an `invalid_input` at `path` and returns its message.
async fn invalid_at(crm: &Mcp, tool: &str, args: Value, path: &str) -> String {
    let error = crm.err(tool, args.clone()).await;
    assert_eq!(error["code"], "invalid_input", "{tool} {args}: {error}");
    assert_eq!(error["path"], path, "{tool} {args}: {error}");
    error["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn timestamps_outside_postgres_ranges_are_refused_at_their_path() {
    let env = TestEnv::start().await;
    let crm = edge_table(&env, "offsets").await;
    for at in [
        "2024-01-01T00:00:00+23:59",
        "2024-01-01T00:00:00-16:00",
        "0000-01-01T00:00:00Z",
    ] {
        let message = invalid_at(
            &crm,
            "insert_record",
            json!({ "table": "edge", "values": { "label": "ok", "at_zone": at } }),
            "values.at_zone",
        )
        .await;
        assert!(!message.contains(at), "{message}");
        invalid_at(
            &crm,
            "query_records",
            json!({ "table": "edge", "filter": { "column": "at_zone", "op": "lt", "value": at } }),
            "filter.value",
        )
        .await;
        invalid_at(
            &crm,
            "aggregate_records",
            json!({ "table": "edge", "aggregates": [{ "fn": "count" }],
                    "filter": { "or": [{ "column": "at_zone", "op": "in", "value": ["2024-01-01T00:00:00Z", at] }] } }),
            "filter.or[0].value[1]",
        )
        .await;
    }
    invalid_at(
        &crm,
        "insert_record",
        json!({ "table": "edge", "values": { "label": "ok", "at_local": "2024-01-01T00:00:00+23:59" } }),
        "values.at_local",
    )
    .await;
    invalid_at(
        &crm,
        "insert_record",
        json!({ "table": "edge", "values": { "label": "ok", "day": "0000-12-31" } }),
        "values.day",
    )
    .await;
    // The edges PostgreSQL does accept are accepted, and read back as the same instants.
    let row = crm
        .ok(
            "insert_record",
            json!({ "table": "edge", "values": { "label": "ok",
                    "at_zone": "9999-12-31T23:59:59-15:59", "at_local": "2024-01-01 00:00:00+15:59",
                    "day": "0001-01-01" } }),
        )
        .await;
    assert_eq!(row["count"], 1, "{row}");
    assert_eq!(row["rows"][0]["day"], "0001-01-01");
    assert_eq!(row["rows"][0]["at_local"], "2024-01-01T00:00:00");
    let found = crm
        .ok(
            "query_records",
            json!({ "table": "edge", "filter": { "column": "at_zone", "op": "eq",
                    "value": "9999-12-31T23:59:59-15:59" } }),
        )
        .await;
    assert_eq!(found["rows"].as_array().unwrap().len(), 1, "{found}");
}

#[tokio::test]
async fn declared_limits_are_checked_before_the_write_with_the_path() {
    let env = TestEnv::start().await;
    let crm = edge_table(&env, "limits").await;
    let insert = |values: Value| json!({ "table": "edge", "values": values });
    let message = invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "ok", "code": "ABCDEFGHI" })),
        "values.code",
    )
    .await;
    assert!(message.contains("at most 8 characters"), "{message}");
    let message = invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "x" })),
        "values.label",
    )
    .await;
    assert!(message.contains("2 to 20 characters"), "{message}");
    invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "é".repeat(21) })),
        "values.label",
    )
    .await;
    for price in [json!(1000), json!("999.995"), json!("1e20"), json!(-1e300)] {
        let message = invalid_at(
            &crm,
            "insert_record",
            insert(json!({ "label": "ok", "price": price })),
            "values.price",
        )
        .await;
        assert!(message.contains("numeric(5,2)"), "{message}");
    }
    invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "ok", "ratio": "1e39" })),
        "values.ratio",
    )
    .await;
    invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "ok", "wide": "1e309" })),
        "values.wide",
    )
    .await;
    invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "ok", "big": "1e1001" })),
        "values.big",
    )
    .await;
    invalid_at(
        &crm,
        "insert_record",
        insert(json!({ "label": "ok", "tags": ["abc", "abcd"] })),
        "values.tags[1]",
    )
    .await;
    invalid_at(
        &crm,
        "insert_record",
        json!({ "table": "edge", "rows": [{ "label": "ok" }, { "label": "far too long for twenty" }] }),
        "rows[1].label",
    )
    .await;
    // What fits is stored as given; a filter may still compare with any value of the type.
    let ok = crm
        .ok(
            "insert_record",
            insert(json!({ "label": "é".repeat(20), "code": "ABCDEFGH", "price": "999.994",
                           "ratio": "3.4e38", "wide": "-Infinity", "big": "-1e-300", "tags": ["abc"] })),
        )
        .await;
    let id = ok["rows"][0]["id"].clone();
    assert_eq!(ok["rows"][0]["price"], 999.99, "{ok}");
    assert_eq!(ok["rows"][0]["wide"], "-Infinity", "{ok}");
    let wide = crm
        .ok(
            "query_records",
            json!({ "table": "edge", "select": ["id"],
                    "filter": { "and": [{ "column": "price", "op": "lt", "value": "1e20" },
                                        { "column": "code", "op": "neq", "value": "ABCDEFGHIJKLMNOP" }] } }),
        )
        .await;
    assert_eq!(wide["rows"], json!([{ "id": id }]));
    invalid_at(
        &crm,
        "update_record",
        json!({ "table": "edge", "key": { "id": id }, "values": { "price": 100000 } }),
        "values.price",
    )
    .await;
}

#[tokio::test]
async fn what_postgres_refuses_maps_by_sqlstate_class_without_echoing_values() {
    let env = TestEnv::start().await;
    let crm = edge_table(&env, "classes").await;
    let insert = |values: Value| json!({ "table": "edge", "values": values });

    // Data exceptions (class 22) the engine cannot see coming: these types travel as text.
    for (column, value) in [
        ("clock", "12:00:00+23:59"),   // 22009 invalid time zone displacement
        ("span", "2147483648 years"),  // 22015 interval field overflow
        ("span", "a fortnight or so"), // 22007 invalid datetime format
        ("clock", "25:61:00"),         // 22008 datetime field overflow
    ] {
        for args in [
            insert(json!({ "label": "ok", column: value })),
            json!({ "table": "edge", "filter": { "column": column, "op": "eq", "value": value } }),
        ] {
            let tool = if args.get("values").is_some() {
                "insert_record"
            } else {
                "query_records"
            };
            let error = crm.err(tool, args.clone()).await;
            assert_eq!(error["code"], "invalid_input", "{tool} {args}: {error}");
            let message = error["message"].as_str().unwrap();
            assert!(!message.contains(value), "{message}");
        }
    }

    // Integrity violations (class 23).
    crm.ok(
        "insert_record",
        insert(json!({ "label": "first", "slot": 7 })),
    )
    .await;
    let error = crm
        .err(
            "insert_record",
            insert(json!({ "label": "second", "slot": 7 })),
        )
        .await;
    assert_eq!(error["code"], "conflict", "exclusion violation: {error}");
    let row = crm
        .ok("insert_record", insert(json!({ "label": "keyed" })))
        .await;
    let id = row["rows"][0]["id"].as_str().unwrap().to_owned();
    let error = crm
        .err(
            "insert_record",
            insert(json!({ "label": "again", "id": id })),
        )
        .await;
    assert_eq!(error["code"], "conflict", "{error}");
    assert!(
        !error["message"].as_str().unwrap().contains(&id),
        "the DETAIL's value leaked: {error}"
    );
    // NOT NULL names the column the database reported; a CHECK the engine cannot read
    // ahead of time names the column its constraint is on.
    let error = crm
        .err("insert_record", insert(json!({ "code": "ABC" })))
        .await;
    assert_eq!(error["code"], "invalid_input", "{error}");
    assert_eq!(error["path"], "values.label", "{error}");
    let error = crm
        .err(
            "insert_record",
            json!({ "table": "edge", "rows": [{ "label": "ok" }, { "label": "ok", "code": "lower" }] }),
        )
        .await;
    assert_eq!(error["code"], "invalid_input", "{error}");
    assert_eq!(error["path"], "rows", "{error}");
    assert_eq!(error["column"], "code", "{error}");
    assert!(!error["message"].as_str().unwrap().contains("lower"));
    let error = crm
        .err(
            "update_record",
            json!({ "table": "edge", "key": { "id": id }, "values": { "code": "lower" } }),
        )
        .await;
    assert_eq!(error["code"], "invalid_input", "{error}");
    assert_eq!(error["path"], "values.code", "{error}");
}
