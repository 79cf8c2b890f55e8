//! The generic power tools on the product endpoints: catalog discovery, every filter operator
//! on every column type, sorting, keyset paging under concurrent writes, aggregates, guarded
//! writes, the role ladder, tenant isolation and input validation with exact paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hdls::db::OWNER_ROLE;
use hdls::identity::Role;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv, no_args, statements};

/// The fixture table every power-tool test works on (created after the server started).
pub const PROBE_DDL: &str = "
CREATE TYPE crm.probe_status AS ENUM ('new', 'open', 'closed');
CREATE TABLE crm.probe (
  workspace_id uuid NOT NULL DEFAULT hdls.current_workspace() REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  title text NOT NULL,
  amount numeric(12,2),
  qty int4,
  ratio float8,
  flag bool,
  happened_at timestamptz,
  day date,
  status crm.probe_status,
  tags text[],
  scores int4[],
  attrs jsonb,
  search tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(title, ''))) STORED,
  PRIMARY KEY (workspace_id, id)
);
COMMENT ON TABLE crm.probe IS 'Probe rows for tests';
ALTER TABLE crm.probe ENABLE ROW LEVEL SECURITY; ALTER TABLE crm.probe FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON crm.probe USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace());
GRANT SELECT, INSERT, UPDATE, DELETE ON crm.probe TO hdls_runtime;
SELECT hdls.distribute('crm.probe');
NOTIFY hdls_catalog;
";

/// Creates `crm.probe` as the superuser, announces it, and waits until the server's catalog has it.
pub async fn probe_table(env: &TestEnv) {
    let su = env.db.connect_superuser().await;
    su.batch_execute(PROBE_DDL).await.expect("create crm.probe");
    // Any workspace sees the same catalog; a throwaway one keeps the tests' workspaces clean.
    let (ws, _) = env.workspace("catalog-watch").await;
    unlimited(env, ws).await;
    let watcher = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;
    await_table(&watcher, "probe").await;
}

/// Waits (bounded) until `describe_table` on the client's endpoint knows `table`.
pub async fn await_table(client: &Mcp, table: &str) {
    for _ in 0..200 {
        let result = client
            .call("describe_table", json!({ "table": table }))
            .await;
        if result.is_error != Some(true) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the server's catalog never picked up {table} after NOTIFY hdls_catalog");
}

/// Lifts the per-minute rate limit for a workspace, so a test's many calls are never refused.
pub async fn unlimited(env: &TestEnv, ws: Uuid) {
    let owner = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner, ws, None, 1_000_000, None, env.clock_now())
        .await
        .unwrap();
}

/// A workspace with the rate limit lifted, and an MCP client on its CRM endpoint with `role`.
pub async fn crm_as(env: &TestEnv, name: &str, role: Role) -> (Uuid, Mcp) {
    let (ws, _) = env.workspace(name).await;
    unlimited(env, ws).await;
    let key = env.key(ws, role).await;
    (ws, env.client("/api/mcp/crm", &key).await)
}

/// A recognisable row id: `pid(0xa, 3)` = 00000000-0000-4000-8000-00000000a003.
pub fn pid(space: u32, n: u32) -> String {
    format!("00000000-0000-4000-8000-{:08x}{:04x}", space, n)
}

/// The six rows of the operator tests, as insert_record values (row n has id `pid(0xa, n)`).
fn six_rows(space: u32, title_suffix: &str) -> Vec<Value> {
    let t = |s: &str| format!("{s}{title_suffix}");
    vec![
        json!({ "id": pid(space, 1), "title": t("alpha apple"), "amount": "10.50", "qty": 1, "ratio": 0.5, "flag": true,
                "happened_at": "2026-01-05T10:00:00Z", "day": "2026-01-05", "status": "new",
                "tags": ["red", "blue"], "scores": [1, 2, 3], "attrs": { "tier": "gold", "n": 1 } }),
        json!({ "id": pid(space, 2), "title": t("beta banana"), "amount": 20, "qty": 2, "ratio": 1.5, "flag": false,
                "happened_at": "2026-01-05T18:30:00Z", "day": "2026-01-06", "status": "open",
                "tags": ["blue"], "scores": [2], "attrs": { "tier": "silver", "nested": { "k": "v" } } }),
        json!({ "id": pid(space, 3), "title": t("gamma cherry"), "amount": 30.25, "qty": 3, "ratio": 2.25, "flag": true,
                "happened_at": "2026-02-10T00:00:00Z", "day": "2026-02-10", "status": "closed",
                "tags": ["green"], "scores": [3, 4], "attrs": { "tier": "gold", "n": 3 } }),
        json!({ "id": pid(space, 4), "title": t("delta apple pie"), "amount": -5, "qty": 10, "ratio": -1.0, "flag": false,
                "happened_at": "2025-12-31T23:59:59Z", "day": "2025-12-31", "status": "open",
                "tags": [], "scores": [], "attrs": {} }),
        json!({ "id": pid(space, 5), "title": t("epsilon"), "amount": null, "qty": null, "ratio": null, "flag": null,
                "happened_at": null, "day": null, "status": null,
                "tags": null, "scores": null, "attrs": null }),
        json!({ "id": pid(space, 6), "title": t("zeta_under%score"), "amount": "20.00", "qty": 2, "ratio": 1.5, "flag": true,
                "happened_at": "2026-03-01T12:00:00+02:00", "day": "2026-03-01", "status": "new",
                "tags": ["red"], "scores": [5], "attrs": { "list": [1, 2] } }),
    ]
}

/// Inserts the six operator-test rows in one batch.
async fn seed_six(crm: &Mcp, space: u32, title_suffix: &str) -> Value {
    let inserted = crm
        .ok(
            "insert_record",
            json!({ "table": "probe", "rows": six_rows(space, title_suffix) }),
        )
        .await;
    assert_eq!(inserted["count"], 6, "{inserted}");
    assert_eq!(inserted["rows"].as_array().unwrap().len(), 6);
    inserted
}

/// The row numbers (`pid(space, n)` → n) of every row a query returns; fails on paging.
async fn numbers(crm: &Mcp, space: u32, filter: Value) -> Result<BTreeSet<u32>, String> {
    let result = crm
        .call(
            "query_records",
            json!({ "table": "probe", "select": ["id"], "filter": filter, "limit": 200 }),
        )
        .await;
    let body = result.structured_content.unwrap_or(Value::Null);
    if result.is_error == Some(true) {
        return Err(format!("error {}", body["error"]));
    }
    if body["has_more"] != false {
        return Err(format!("unexpected has_more: {body}"));
    }
    body["rows"]
        .as_array()
        .ok_or_else(|| format!("no rows array: {body}"))?
        .iter()
        .map(|r| {
            let id = r["id"]
                .as_str()
                .ok_or_else(|| format!("row without id: {r}"))?;
            let prefix = format!("00000000-0000-4000-8000-{space:08x}");
            id.strip_prefix(&prefix)
                .and_then(|n| u32::from_str_radix(n, 16).ok())
                .ok_or_else(|| format!("a row that is not ours: {id}"))
        })
        .collect()
}

fn set(items: &[u32]) -> BTreeSet<u32> {
    items.iter().copied().collect()
}

/// A JSON number (or numeric string) as f64.
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a number: {v}")),
        _ => panic!("not a number: {v}"),
    }
}

fn instant(v: &Value) -> OffsetDateTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {v}"));
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("not RFC 3339: {s}: {e}"))
}

fn at(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

/// All rows of a workspace as the superuser sees them, for before/after comparisons.
pub async fn snapshot(env: &TestEnv, ws: Uuid) -> Vec<Value> {
    let su = env.db.connect_superuser().await;
    su.query(
        "SELECT to_jsonb(p) FROM crm.probe p WHERE workspace_id = $1 ORDER BY id",
        &[&ws],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[tokio::test]
async fn list_and_describe_come_from_the_live_catalog() {
    let env = TestEnv::start().await;
    let (ws, crm) = crm_as(&env, "catalog", Role::Reader).await;

    // Loaded before the table exists: the catalog must refresh on NOTIFY.
    let before = crm.ok("list_tables", no_args()).await;
    assert_eq!(before["schema"], "crm");
    let names = |v: &Value| -> Vec<String> {
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(names(&before).contains(&"accounts".to_owned()));
    assert!(!names(&before).contains(&"probe".to_owned()));

    probe_table(&env).await;
    await_table(&crm, "probe").await;
    let listed = crm.ok("list_tables", no_args()).await;
    assert_eq!(listed["schema"], "crm");
    let tables = names(&listed);
    assert!(tables.contains(&"accounts".to_owned()), "{listed}");
    assert!(tables.contains(&"probe".to_owned()), "{listed}");
    for foreign in ["workspaces", "api_keys", "installed_products", "plans"] {
        assert!(
            !tables.contains(&foreign.to_owned()),
            "{foreign} is not a crm table: {listed}"
        );
    }
    let probe = listed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "probe")
        .unwrap();
    assert_eq!(probe["description"], "Probe rows for tests");
    assert_eq!(probe["rows"], 0, "{probe}");
    assert!(probe.get("row_estimate").is_none(), "{probe}");

    let described = crm.ok("describe_table", json!({ "table": "probe" })).await;
    assert_eq!(described["table"], "probe");
    assert_eq!(described["description"], "Probe rows for tests");
    assert_eq!(described["primary_key"], json!(["id"]));
    assert_eq!(described["search_column"], "search");
    assert_eq!(described["custom_fields"], json!([]));
    let columns: HashMap<String, Value> = described["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c.clone()))
        .collect();
    let order: Vec<&str> = described["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "id",
            "title",
            "amount",
            "qty",
            "ratio",
            "flag",
            "happened_at",
            "day",
            "status",
            "tags",
            "scores",
            "attrs",
            "search"
        ],
        "columns in table order, without workspace_id"
    );
    // Types as PostgreSQL names them (either the SQL name or the internal one).
    let expected_types: [(&str, &[&str]); 13] = [
        ("id", &["uuid"]),
        ("title", &["text"]),
        ("amount", &["numeric(12,2)"]),
        ("qty", &["integer", "int4"]),
        ("ratio", &["double precision", "float8"]),
        ("flag", &["boolean", "bool"]),
        ("happened_at", &["timestamp with time zone", "timestamptz"]),
        ("day", &["date"]),
        ("status", &["crm.probe_status", "probe_status"]),
        ("tags", &["text[]", "_text"]),
        ("scores", &["integer[]", "int4[]", "_int4"]),
        ("attrs", &["jsonb"]),
        ("search", &["tsvector"]),
    ];
    for (name, types) in expected_types {
        let ty = columns[name]["type"].as_str().unwrap_or_default();
        assert!(types.contains(&ty), "type of {name}: {ty}");
    }
    assert_eq!(columns["title"]["nullable"], false);
    assert_eq!(columns["id"]["nullable"], false);
    assert_eq!(columns["amount"]["nullable"], true);
    assert!(
        columns["id"]["default"]
            .as_str()
            .is_some_and(|d| d.contains("gen_random_uuid")),
        "{}",
        columns["id"]
    );
    assert_eq!(columns["search"]["writable"], false);
    for name in ["id", "title", "amount", "tags", "attrs", "status"] {
        assert_eq!(columns[name]["writable"], true, "{name} is writable");
    }
    // The tenant stamp appears nowhere in the description.
    let text = described.to_string();
    assert!(!text.contains("workspace_id"), "{described}");
    for fk in described["foreign_keys"].as_array().unwrap() {
        assert!(!fk["columns"].as_array().unwrap().is_empty());
    }
    let indexes = described["indexes"].as_array().unwrap();
    assert!(
        indexes
            .iter()
            .any(|i| i["columns"] == json!(["id"]) && i["unique"] == true),
        "{described}"
    );

    // The migrated table too: its index leads with workspace_id, which is not shown.
    let accounts = crm
        .ok("describe_table", json!({ "table": "accounts" }))
        .await;
    assert_eq!(accounts["primary_key"], json!(["id"]));
    assert!(!accounts.to_string().contains("workspace_id"), "{accounts}");
    assert_eq!(accounts["search_column"], Value::Null);

    // A column added later appears after NOTIFY, and one dropped disappears.
    let member = env
        .client("/api/mcp/crm", &env.key(ws, Role::Member).await)
        .await;
    let su = env.db.connect_superuser().await;
    statements(
        &su,
        "ALTER TABLE crm.probe ADD COLUMN note text; NOTIFY hdls_catalog;",
    )
    .await
    .unwrap();
    await_column(&crm, "note", true).await;
    member
        .ok(
            "insert_record",
            json!({ "table": "probe", "values": { "title": "noted", "note": "hello" } }),
        )
        .await;
    let noted = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "select": ["note"] }),
        )
        .await;
    assert_eq!(noted["rows"], json!([{ "note": "hello" }]));
    statements(
        &su,
        "ALTER TABLE crm.probe DROP COLUMN note; NOTIFY hdls_catalog;",
    )
    .await
    .unwrap();
    await_column(&crm, "note", false).await;
    let after = crm.ok("query_records", json!({ "table": "probe" })).await;
    assert_eq!(after["rows"][0]["title"], "noted");
    assert!(after["rows"][0].get("note").is_none(), "{after}");
    let e = crm
        .err(
            "query_records",
            json!({ "table": "probe", "select": ["note"] }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input");
    assert_eq!(e["path"], "select[0]");
}

/// Waits (bounded) until `describe_table probe` does (or no longer does) list `column`.
async fn await_column(client: &Mcp, column: &str, present: bool) {
    for _ in 0..200 {
        let described = client
            .ok("describe_table", json!({ "table": "probe" }))
            .await;
        let listed = described["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == column);
        if listed == present {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("describe_table never showed {column} present={present} after NOTIFY hdls_catalog");
}

#[tokio::test]
async fn every_operator_on_every_type_round_trips() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (_, crm) = crm_as(&env, "ops", Role::Member).await;
    let inserted = seed_six(&crm, 0xa, "").await;
    let id = |n| pid(0xa, n);

    // Values come back in their JSON shapes, exactly as written.
    let r1 = inserted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id(1))
        .unwrap()
        .clone();
    let queried = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "filter": { "column": "id", "op": "eq", "value": id(1) } }),
        )
        .await;
    assert_eq!(queried["rows"].as_array().unwrap().len(), 1);
    assert_eq!(queried["has_more"], false);
    assert_eq!(queried["next_cursor"], Value::Null);
    for row in [&r1, &queried["rows"][0]] {
        let keys: BTreeSet<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "id",
                "title",
                "amount",
                "qty",
                "ratio",
                "flag",
                "happened_at",
                "day",
                "status",
                "tags",
                "scores",
                "attrs"
            ]),
            "default columns: all but workspace_id and the search vector: {row}"
        );
        assert_eq!(row["title"], "alpha apple");
        assert!(row["amount"].is_number(), "numeric as a JSON number: {row}");
        assert_eq!(num(&row["amount"]), 10.5);
        assert_eq!(row["qty"], json!(1));
        assert_eq!(num(&row["ratio"]), 0.5);
        assert_eq!(row["flag"], true);
        assert_eq!(instant(&row["happened_at"]), at("2026-01-05T10:00:00Z"));
        assert_eq!(row["day"], "2026-01-05");
        assert_eq!(row["status"], "new");
        assert_eq!(row["tags"], json!(["red", "blue"]));
        assert_eq!(row["scores"], json!([1, 2, 3]));
        assert_eq!(row["attrs"], json!({ "tier": "gold", "n": 1 }));
    }
    let r5 = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "filter": { "column": "id", "op": "eq", "value": id(5) } }),
        )
        .await["rows"][0]
        .clone();
    for column in [
        "amount",
        "qty",
        "ratio",
        "flag",
        "happened_at",
        "day",
        "status",
        "tags",
        "scores",
        "attrs",
    ] {
        assert_eq!(r5[column], Value::Null, "{column} of row 5: {r5}");
    }
    let r6 = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "select": ["happened_at", "attrs", "amount"],
                    "filter": { "column": "id", "op": "eq", "value": id(6) } }),
        )
        .await["rows"][0]
        .clone();
    assert_eq!(
        r6.as_object().unwrap().len(),
        3,
        "only the selected columns: {r6}"
    );
    assert_eq!(instant(&r6["happened_at"]), at("2026-03-01T10:00:00Z"));
    assert_eq!(r6["attrs"], json!({ "list": [1, 2] }));
    assert_eq!(num(&r6["amount"]), 20.0);

    let c = |column: &str, op: &str, value: Value| json!({ "column": column, "op": op, "value": value });
    let cases: Vec<(&str, Value, &[u32])> = vec![
        // text
        ("text eq", c("title", "eq", json!("gamma cherry")), &[3]),
        (
            "text neq",
            c("title", "neq", json!("gamma cherry")),
            &[1, 2, 4, 5, 6],
        ),
        ("text lt", c("title", "lt", json!("delta")), &[1, 2]),
        (
            "text lte",
            c("title", "lte", json!("delta apple pie")),
            &[1, 2, 4],
        ),
        ("text gt", c("title", "gt", json!("epsilon")), &[3, 6]),
        ("text gte", c("title", "gte", json!("epsilon")), &[3, 5, 6]),
        (
            "text in",
            c("title", "in", json!(["alpha apple", "epsilon", "nope"])),
            &[1, 5],
        ),
        ("like", c("title", "like", json!("%apple%")), &[1, 4]),
        (
            "like is case-sensitive",
            c("title", "like", json!("%APPLE%")),
            &[],
        ),
        (
            "like single char",
            c("title", "like", json!("_eta%")),
            &[2, 6],
        ),
        (
            "like escaped underscore",
            c("title", "like", json!("zeta\\_%")),
            &[6],
        ),
        (
            "like escaped percent",
            c("title", "like", json!("%\\%%")),
            &[6],
        ),
        ("ilike", c("title", "ilike", json!("%APPLE%")), &[1, 4]),
        ("ilike prefix", c("title", "ilike", json!("GAMMA%")), &[3]),
        // numeric
        ("numeric eq number", c("amount", "eq", json!(20)), &[2, 6]),
        (
            "numeric eq string",
            c("amount", "eq", json!("20.00")),
            &[2, 6],
        ),
        ("numeric neq", c("amount", "neq", json!(20)), &[1, 3, 4]),
        ("numeric lt", c("amount", "lt", json!(10.5)), &[4]),
        ("numeric lte", c("amount", "lte", json!("10.5")), &[1, 4]),
        ("numeric gt", c("amount", "gt", json!(20)), &[3]),
        ("numeric gte", c("amount", "gte", json!("20")), &[2, 3, 6]),
        // int4
        ("int eq", c("qty", "eq", json!(2)), &[2, 6]),
        ("int neq", c("qty", "neq", json!(2)), &[1, 3, 4]),
        ("int lt", c("qty", "lt", json!(2)), &[1]),
        ("int lte", c("qty", "lte", json!(2)), &[1, 2, 6]),
        ("int gt", c("qty", "gt", json!(3)), &[4]),
        ("int gte", c("qty", "gte", json!(3)), &[3, 4]),
        ("int in", c("qty", "in", json!([1, 10, 99])), &[1, 4]),
        // float8
        ("float eq", c("ratio", "eq", json!(1.5)), &[2, 6]),
        ("float neq", c("ratio", "neq", json!(1.5)), &[1, 3, 4]),
        ("float lt", c("ratio", "lt", json!(0.5)), &[4]),
        ("float lte", c("ratio", "lte", json!(0.5)), &[1, 4]),
        ("float gt", c("ratio", "gt", json!(1.5)), &[3]),
        ("float gte", c("ratio", "gte", json!(1.5)), &[2, 3, 6]),
        // timestamptz, with offsets compared as instants
        (
            "timestamptz eq",
            c("happened_at", "eq", json!("2026-03-01T10:00:00Z")),
            &[6],
        ),
        (
            "timestamptz neq",
            c("happened_at", "neq", json!("2026-03-01T10:00:00Z")),
            &[1, 2, 3, 4],
        ),
        (
            "timestamptz lt",
            c("happened_at", "lt", json!("2026-01-05T10:00:00Z")),
            &[4],
        ),
        (
            "timestamptz lte",
            c("happened_at", "lte", json!("2026-01-05T10:00:00Z")),
            &[1, 4],
        ),
        (
            "timestamptz gt",
            c("happened_at", "gt", json!("2026-02-10T00:00:00+00:00")),
            &[6],
        ),
        (
            "timestamptz gte",
            c("happened_at", "gte", json!("2026-02-10T01:00:00+01:00")),
            &[3, 6],
        ),
        // date
        ("date eq", c("day", "eq", json!("2026-01-06")), &[2]),
        (
            "date neq",
            c("day", "neq", json!("2026-01-06")),
            &[1, 3, 4, 6],
        ),
        ("date lt", c("day", "lt", json!("2026-01-05")), &[4]),
        ("date lte", c("day", "lte", json!("2026-01-05")), &[1, 4]),
        ("date gt", c("day", "gt", json!("2026-02-10")), &[6]),
        ("date gte", c("day", "gte", json!("2026-02-10")), &[3, 6]),
        // uuid
        ("uuid eq", c("id", "eq", json!(id(3))), &[3]),
        ("uuid neq", c("id", "neq", json!(id(3))), &[1, 2, 4, 5, 6]),
        ("uuid lt", c("id", "lt", json!(id(3))), &[1, 2]),
        ("uuid lte", c("id", "lte", json!(id(3))), &[1, 2, 3]),
        ("uuid gt", c("id", "gt", json!(id(4))), &[5, 6]),
        ("uuid gte", c("id", "gte", json!(id(4))), &[4, 5, 6]),
        (
            "uuid in",
            c("id", "in", json!([id(1), id(6), Uuid::new_v4()])),
            &[1, 6],
        ),
        // enum: declaration order (new < open < closed), not alphabetical
        ("enum eq", c("status", "eq", json!("open")), &[2, 4]),
        ("enum neq", c("status", "neq", json!("open")), &[1, 3, 6]),
        ("enum lt", c("status", "lt", json!("open")), &[1, 6]),
        ("enum lte", c("status", "lte", json!("open")), &[1, 2, 4, 6]),
        ("enum gt", c("status", "gt", json!("new")), &[2, 3, 4]),
        ("enum gte", c("status", "gte", json!("open")), &[2, 3, 4]),
        (
            "enum in",
            c("status", "in", json!(["new", "closed"])),
            &[1, 3, 6],
        ),
        // bool
        ("bool eq true", c("flag", "eq", json!(true)), &[1, 3, 6]),
        ("bool eq false", c("flag", "eq", json!(false)), &[2, 4]),
        ("bool neq", c("flag", "neq", json!(true)), &[2, 4]),
        // is_null
        ("is_null true", c("amount", "is_null", json!(true)), &[5]),
        (
            "is_null false",
            c("amount", "is_null", json!(false)),
            &[1, 2, 3, 4, 6],
        ),
        (
            "is_null default",
            json!({ "column": "status", "op": "is_null" }),
            &[5],
        ),
        ("is_null array", c("tags", "is_null", json!(true)), &[5]),
        (
            "is_null jsonb false",
            c("attrs", "is_null", json!(false)),
            &[1, 2, 3, 4, 6],
        ),
        // contains
        (
            "jsonb contains",
            c("attrs", "contains", json!({ "tier": "gold" })),
            &[1, 3],
        ),
        (
            "jsonb contains nested",
            c("attrs", "contains", json!({ "nested": { "k": "v" } })),
            &[2],
        ),
        (
            "jsonb contains array element",
            c("attrs", "contains", json!({ "list": [1] })),
            &[6],
        ),
        (
            "jsonb contains number",
            c("attrs", "contains", json!({ "n": 3 })),
            &[3],
        ),
        (
            "jsonb contains empty",
            c("attrs", "contains", json!({})),
            &[1, 2, 3, 4, 6],
        ),
        (
            "text[] contains",
            c("tags", "contains", json!(["blue"])),
            &[1, 2],
        ),
        (
            "text[] contains both",
            c("tags", "contains", json!(["red", "blue"])),
            &[1],
        ),
        (
            "int4[] contains",
            c("scores", "contains", json!([2])),
            &[1, 2],
        ),
        (
            "int4[] contains both",
            c("scores", "contains", json!([3, 4])),
            &[3],
        ),
        // full-text search on the generated vector
        (
            "search default column",
            json!({ "op": "search", "value": "apple" }),
            &[1, 4],
        ),
        (
            "search named column",
            c("search", "search", json!("cherry")),
            &[3],
        ),
        (
            "search websearch minus",
            json!({ "op": "search", "value": "apple -pie" }),
            &[1],
        ),
        (
            "search websearch or",
            json!({ "op": "search", "value": "cherry OR banana" }),
            &[2, 3],
        ),
        (
            "search phrase",
            json!({ "op": "search", "value": "\"apple pie\"" }),
            &[4],
        ),
        // and / or / not, nested
        (
            "and",
            json!({ "and": [c("qty", "gte", json!(2)), c("flag", "eq", json!(true))] }),
            &[3, 6],
        ),
        (
            "or",
            json!({ "or": [c("status", "eq", json!("closed")), c("amount", "lt", json!(0))] }),
            &[3, 4],
        ),
        (
            "not",
            json!({ "not": c("title", "like", json!("%apple%")) }),
            &[2, 3, 5, 6],
        ),
        (
            "nested",
            json!({ "or": [
                { "and": [c("status", "eq", json!("new")), { "not": c("qty", "eq", json!(1)) }] },
                { "and": [c("title", "ilike", json!("%CHERRY%")), c("ratio", "gte", json!(2))] }
            ] }),
            &[3, 6],
        ),
        (
            "not of or",
            json!({ "not": { "or": [c("tags", "contains", json!(["red"])), c("title", "eq", json!("epsilon"))] } }),
            &[2, 3, 4],
        ),
        (
            "double not",
            json!({ "not": { "not": c("status", "in", json!(["open"])) } }),
            &[2, 4],
        ),
    ];
    let mut failures = Vec::new();
    for (label, filter, expected) in &cases {
        match numbers(&crm, 0xa, filter.clone()).await {
            Ok(got) if got == set(expected) => {}
            Ok(got) => failures.push(format!(
                "{label}: filter {filter}: expected rows {:?}, got {got:?}",
                set(expected)
            )),
            Err(e) => failures.push(format!("{label}: filter {filter}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} operator cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The order of `pid(0xa, n)` row numbers a sorted query returns.
async fn sorted(crm: &Mcp, sort: Value) -> Vec<u32> {
    let page = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "select": ["id"], "sort": sort }),
        )
        .await;
    page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap();
            u32::from_str_radix(&id[id.len() - 4..], 16).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn sorting_by_several_columns_with_nulls_placed() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (_, crm) = crm_as(&env, "sort", Role::Member).await;
    seed_six(&crm, 0xa, "").await;

    // Enum order (new < open < closed); NULL status first; amount descending within.
    assert_eq!(
        sorted(
            &crm,
            json!([{ "column": "status", "direction": "asc", "nulls": "first" },
                   { "column": "amount", "direction": "desc", "nulls": "last" }])
        )
        .await,
        vec![5, 6, 1, 2, 4, 3]
    );
    assert_eq!(
        sorted(
            &crm,
            json!([{ "column": "status", "direction": "desc", "nulls": "last" },
                   { "column": "amount", "direction": "asc", "nulls": "first" }])
        )
        .await,
        vec![3, 4, 2, 1, 6, 5]
    );
    // Ties on qty broken by the second key, NULLs last.
    assert_eq!(
        sorted(
            &crm,
            json!([{ "column": "qty", "direction": "desc", "nulls": "last" },
                   { "column": "title", "direction": "desc" }])
        )
        .await,
        vec![4, 3, 6, 2, 1, 5]
    );
    assert_eq!(
        sorted(
            &crm,
            json!([{ "column": "happened_at", "direction": "asc", "nulls": "first" }])
        )
        .await,
        vec![5, 4, 1, 2, 3, 6]
    );
    // Booleans: true before false descending; ties by the primary key descending.
    assert_eq!(
        sorted(
            &crm,
            json!([{ "column": "flag", "direction": "desc", "nulls": "last" },
                   { "column": "id", "direction": "desc" }])
        )
        .await,
        vec![6, 3, 1, 4, 2, 5]
    );
    // Defaults: ascending, and the primary key breaks ties.
    assert_eq!(
        sorted(&crm, json!([{ "column": "day" }])).await[..5],
        [4, 1, 2, 3, 6]
    );
    assert_eq!(
        sorted(&crm, json!([{ "column": "ratio", "nulls": "first" }])).await,
        vec![5, 4, 1, 2, 6, 3]
    );
    assert_eq!(sorted(&crm, json!([])).await, vec![1, 2, 3, 4, 5, 6]);
}

/// One paging-test row as this test knows it.
#[derive(Clone, Debug)]
struct Known {
    id: String,
    qty: Option<i64>,
    status: Option<u8>,
    amount: Option<f64>,
}

fn status_rank(s: &Value) -> Option<u8> {
    match s.as_str() {
        Some("new") => Some(0),
        Some("open") => Some(1),
        Some("closed") => Some(2),
        None => None,
        Some(other) => panic!("unknown status {other}"),
    }
}

/// Pages through `probe` with limit 3 and returns the ids in the order visited.
async fn page_all(crm: &Mcp, sort: &Value, mut between_pages: impl AsyncFnMut()) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..200 {
        let mut args = json!({ "table": "probe", "select": ["id"], "sort": sort, "limit": 3 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = crm.ok("query_records", args).await;
        let rows = page["rows"].as_array().unwrap();
        assert!(rows.len() <= 3, "a page larger than the limit: {page}");
        seen.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            assert_eq!(page["has_more"], false, "{page}");
            return seen;
        }
        assert_eq!(page["has_more"], true, "{page}");
        assert_eq!(rows.len(), 3, "a middle page is full: {page}");
        between_pages().await;
    }
    panic!("paging never ended");
}

#[tokio::test]
async fn keyset_paging_visits_every_row_once_even_while_rows_are_inserted() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (ws, _) = env.workspace("paging").await;
    unlimited(&env, ws).await;
    let key = env.key(ws, Role::Member).await;
    let crm = env.client("/api/mcp/crm", &key).await;

    let statuses = [json!("new"), json!("open"), json!("closed"), Value::Null];
    let rows: Vec<Value> = (0..25)
        .map(|i| {
            json!({
                "title": format!("page {i:02}"),
                "qty": if i % 5 == 0 { Value::Null } else { json!(i % 4) },
                "status": statuses[i % 4].clone(),
                "amount": if i % 6 == 0 { Value::Null } else { json!((i % 3) * 10) },
                "ratio": if i % 7 == 0 { Value::Null } else { json!((i % 5) as f64 / 3.0) },
                "flag": if i % 8 == 0 { Value::Null } else { json!(i % 2 == 0) },
                "happened_at": if i % 6 == 1 { Value::Null } else {
                    json!(format!("2026-01-{:02}T10:00:{:02}.123456Z", 1 + i % 4, i % 3))
                },
                "day": if i % 9 == 2 { Value::Null } else { json!(format!("2026-02-{:02}", 1 + i % 3)) },
            })
        })
        .collect();
    let inserted = crm
        .ok("insert_record", json!({ "table": "probe", "rows": rows }))
        .await;
    assert_eq!(inserted["count"], 25);
    let known: Vec<Known> = inserted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Known {
            id: r["id"].as_str().unwrap().to_owned(),
            qty: r["qty"].as_i64(),
            status: status_rank(&r["status"]),
            amount: r["amount"].as_f64(),
        })
        .collect();

    // Each sort, with the order it must produce (the primary key breaks ties, ascending).
    type Order = fn(&Known, &Known) -> std::cmp::Ordering;
    fn nulls<T: PartialOrd>(
        a: &Option<T>,
        b: &Option<T>,
        desc: bool,
        first: bool,
    ) -> std::cmp::Ordering {
        use std::cmp::Ordering::*;
        match (a, b) {
            (None, None) => Equal,
            (None, Some(_)) => {
                if first {
                    Less
                } else {
                    Greater
                }
            }
            (Some(_), None) => {
                if first {
                    Greater
                } else {
                    Less
                }
            }
            (Some(x), Some(y)) => {
                let o = x.partial_cmp(y).unwrap();
                if desc { o.reverse() } else { o }
            }
        }
    }
    let variants: Vec<(Value, Order)> = vec![
        (
            json!([{ "column": "qty", "direction": "asc", "nulls": "first" }]),
            |a, b| nulls(&a.qty, &b.qty, false, true).then(a.id.cmp(&b.id)),
        ),
        (
            json!([{ "column": "qty", "direction": "asc", "nulls": "last" }]),
            |a, b| nulls(&a.qty, &b.qty, false, false).then(a.id.cmp(&b.id)),
        ),
        (
            json!([{ "column": "qty", "direction": "desc", "nulls": "last" }]),
            |a, b| nulls(&a.qty, &b.qty, true, false).then(a.id.cmp(&b.id)),
        ),
        (
            json!([{ "column": "qty", "direction": "desc", "nulls": "first" }]),
            |a, b| nulls(&a.qty, &b.qty, true, true).then(a.id.cmp(&b.id)),
        ),
        (
            json!([{ "column": "status", "direction": "asc", "nulls": "last" },
                   { "column": "amount", "direction": "desc", "nulls": "first" }]),
            |a, b| {
                nulls(&a.status, &b.status, false, false)
                    .then(nulls(&a.amount, &b.amount, true, true))
                    .then(a.id.cmp(&b.id))
            },
        ),
        (
            json!([{ "column": "amount", "direction": "asc", "nulls": "first" },
                   { "column": "qty", "direction": "desc", "nulls": "last" }]),
            |a, b| {
                nulls(&a.amount, &b.amount, false, true)
                    .then(nulls(&a.qty, &b.qty, true, false))
                    .then(a.id.cmp(&b.id))
            },
        ),
        (json!([]), |a, b| a.id.cmp(&b.id)),
    ];
    for (sort, order) in &variants {
        let seen = page_all(&crm, sort, async || {}).await;
        let mut expected = known.clone();
        expected.sort_by(order);
        let expected: Vec<String> = expected.into_iter().map(|k| k.id).collect();
        assert_eq!(seen, expected, "paging order for sort {sort}");
    }
    // Every other sortable type, with duplicates and NULLs: each row exactly once.
    for (column, direction, nulls) in [
        ("happened_at", "desc", "last"),
        ("happened_at", "asc", "first"),
        ("ratio", "asc", "last"),
        ("ratio", "desc", "first"),
        ("flag", "desc", "last"),
        ("day", "asc", "first"),
        ("title", "desc", "last"),
        ("id", "desc", "first"),
    ] {
        let sort = json!([{ "column": column, "direction": direction, "nulls": nulls },
                          { "column": "status", "direction": "desc", "nulls": "first" }]);
        let seen = page_all(&crm, &sort, async || {}).await;
        let distinct: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(seen.len(), 25, "rows visited with sort {sort}");
        assert_eq!(distinct.len(), 25, "each row once with sort {sort}");
    }

    // Now page while another task inserts rows between (and around) the pages.
    let writer = env.client("/api/mcp/crm", &key).await;
    let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Vec<String>>(1);
    let inserter = tokio::spawn(async move {
        let mut n = 0;
        let mut added = Vec::new();
        while go_rx.recv().await.is_some() {
            let rows: Vec<Value> = (0..3)
                .map(|k| {
                    n += 1;
                    json!({ "title": format!("late {n}"),
                            "qty": if (n + k) % 5 == 0 { Value::Null } else { json!(n % 4) } })
                })
                .collect();
            let inserted = writer
                .ok("insert_record", json!({ "table": "probe", "rows": rows }))
                .await;
            for r in inserted["rows"].as_array().unwrap() {
                added.push(r["id"].as_str().unwrap().to_owned());
            }
            if done_tx.send(added.clone()).await.is_err() {
                break;
            }
        }
        added
    });
    let start: BTreeSet<String> = {
        let all = crm
            .ok(
                "query_records",
                json!({ "table": "probe", "select": ["id"], "limit": 200 }),
            )
            .await;
        all["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(start.len(), 25);
    for sort in [
        json!([{ "column": "qty", "direction": "asc", "nulls": "first" }]),
        json!([{ "column": "qty", "direction": "desc", "nulls": "last" }]),
    ] {
        let seen = page_all(&crm, &sort, async || {
            go_tx.send(()).await.unwrap();
            done_rx.recv().await.unwrap();
        })
        .await;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &seen {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "ids seen twice with sort {sort}: {twice:?}"
        );
        let missing: Vec<_> = start
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "rows present at the start but never seen with sort {sort}: {missing:?}"
        );
    }
    drop(go_tx);
    let added = inserter.await.unwrap();
    assert!(
        added.len() >= 2 * 3 * 8,
        "the writer really ran: {}",
        added.len()
    );
}

#[tokio::test]
async fn aggregates_count_sum_avg_min_max_and_group() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (ws, member) = crm_as(&env, "agg", Role::Member).await;
    let crm = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;
    let empty = crm
        .ok(
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }] }),
        )
        .await;
    assert_eq!(
        empty["rows"],
        json!([{ "count": 0 }]),
        "count over no rows is one row of 0"
    );
    seed_six(&member, 0xa, "").await;
    let agg = |args: Value| {
        let mut args = args;
        args["table"] = json!("probe");
        args
    };

    let all = crm
        .ok(
            "aggregate_records",
            agg(json!({ "aggregates": [
                { "fn": "count" },
                { "fn": "count", "column": "amount" },
                { "fn": "count_distinct", "column": "status" },
                { "fn": "sum", "column": "amount" },
                { "fn": "avg", "column": "amount" },
                { "fn": "min", "column": "amount" },
                { "fn": "max", "column": "amount" },
                { "fn": "sum", "column": "qty", "as": "total_qty" },
                { "fn": "avg", "column": "qty" },
                { "fn": "min", "column": "qty" },
                { "fn": "max", "column": "qty" },
                { "fn": "min", "column": "happened_at" },
                { "fn": "max", "column": "day" },
                { "fn": "max", "column": "status" }
            ] })),
        )
        .await;
    let rows = all["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{all}");
    let r = &rows[0];
    assert_eq!(r["count"].as_i64(), Some(6), "count is a JSON integer: {r}");
    assert_eq!(r["count_amount"].as_i64(), Some(5), "{r}");
    assert_eq!(r["count_distinct_status"].as_i64(), Some(3), "{r}");
    assert!((num(&r["sum_amount"]) - 75.75).abs() < 1e-9, "{r}");
    assert!((num(&r["avg_amount"]) - 15.15).abs() < 1e-9, "{r}");
    assert_eq!(num(&r["min_amount"]), -5.0);
    assert_eq!(num(&r["max_amount"]), 30.25);
    assert_eq!(num(&r["total_qty"]), 18.0);
    assert!((num(&r["avg_qty"]) - 3.6).abs() < 1e-9, "{r}");
    assert_eq!(r["min_qty"], json!(1));
    assert_eq!(r["max_qty"], json!(10));
    assert_eq!(instant(&r["min_happened_at"]), at("2025-12-31T23:59:59Z"));
    assert_eq!(r["max_day"], "2026-03-01");
    assert_eq!(r["max_status"], "closed", "enum order, not alphabetical");

    // Grouped by a column: one row per value, NULL its own group.
    let by_status = crm
        .ok(
            "aggregate_records",
            agg(json!({ "group_by": ["status"],
                        "aggregates": [{ "fn": "count" }, { "fn": "sum", "column": "qty" }] })),
        )
        .await;
    let groups: BTreeMap<String, (i64, Value)> = by_status["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["status"].as_str().unwrap_or("NULL").to_owned(),
                (g["count"].as_i64().unwrap(), g["sum_qty"].clone()),
            )
        })
        .collect();
    assert_eq!(groups.len(), 4, "{by_status}");
    assert_eq!(groups["new"].0, 2);
    assert_eq!(num(&groups["new"].1), 3.0);
    assert_eq!(groups["open"].0, 2);
    assert_eq!(num(&groups["open"].1), 12.0);
    assert_eq!(groups["closed"].0, 1);
    assert_eq!(groups["NULL"].0, 1);
    assert_eq!(groups["NULL"].1, Value::Null);

    // With a filter.
    let flagged = crm
        .ok(
            "aggregate_records",
            agg(
                json!({ "group_by": ["status"], "aggregates": [{ "fn": "count" }],
                        "filter": { "column": "flag", "op": "eq", "value": true } }),
            ),
        )
        .await;
    let groups: BTreeMap<String, i64> = flagged["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["status"].as_str().unwrap().to_owned(),
                g["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        BTreeMap::from([("new".into(), 2), ("closed".into(), 1)])
    );
    let counted = crm
        .ok(
            "aggregate_records",
            agg(json!({ "aggregates": [{ "fn": "count" }],
                        "filter": { "or": [{ "column": "qty", "op": "gt", "value": 2 },
                                           { "op": "search", "value": "epsilon" }] } })),
        )
        .await;
    assert_eq!(counted["rows"], json!([{ "count": 3 }]));

    // Truncated to the day (UTC) and to the month.
    let group_day = |v: &Value| -> String {
        let s = v.as_str().unwrap_or_else(|| panic!("group value {v}"));
        match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => t.to_offset(time::UtcOffset::UTC).date().to_string(),
            Err(_) => s[..10].to_owned(),
        }
    };
    let by_day = crm
        .ok(
            "aggregate_records",
            agg(
                json!({ "group_by": [{ "column": "happened_at", "trunc": "day" }],
                        "aggregates": [{ "fn": "count" }],
                        "filter": { "column": "happened_at", "op": "is_null", "value": false } }),
            ),
        )
        .await;
    let days: BTreeMap<String, i64> = by_day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (group_day(&g["happened_at"]), g["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        days,
        BTreeMap::from([
            ("2025-12-31".into(), 1),
            ("2026-01-05".into(), 2),
            ("2026-02-10".into(), 1),
            ("2026-03-01".into(), 1),
        ]),
        "{by_day}"
    );
    let by_month = crm
        .ok(
            "aggregate_records",
            agg(json!({ "group_by": [{ "column": "happened_at", "trunc": "month" }],
                        "aggregates": [{ "fn": "count" }, { "fn": "sum", "column": "amount", "as": "total" }],
                        "filter": { "and": [{ "column": "status", "op": "neq", "value": "closed" },
                                            { "column": "happened_at", "op": "is_null", "value": false }] } })),
        )
        .await;
    let months: BTreeMap<String, (i64, f64)> = by_month["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                group_day(&g["happened_at"]),
                (g["count"].as_i64().unwrap(), num(&g["total"])),
            )
        })
        .collect();
    assert_eq!(
        months,
        BTreeMap::from([
            ("2025-12-01".into(), (1, -5.0)),
            ("2026-01-01".into(), (2, 30.5)),
            ("2026-03-01".into(), (1, 20.0)),
        ]),
        "{by_month}"
    );
    // Group by a date column truncated, together with a plain column.
    let mixed = crm
        .ok(
            "aggregate_records",
            agg(
                json!({ "group_by": [{ "column": "day", "trunc": "month" }, "flag"],
                        "aggregates": [{ "fn": "count" }],
                        "filter": { "column": "day", "op": "gte", "value": "2026-01-01" } }),
            ),
        )
        .await;
    let mixed: BTreeSet<(String, bool, i64)> = mixed["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["day"].as_str().unwrap()[..10].to_owned(),
                g["flag"].as_bool().unwrap(),
                g["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mixed,
        BTreeSet::from([
            ("2026-01-01".into(), true, 1),
            ("2026-01-01".into(), false, 1),
            ("2026-02-01".into(), true, 1),
            ("2026-03-01".into(), true, 1),
        ])
    );
}

async fn qty_of(crm: &Mcp, n: u32) -> Option<Value> {
    let page = crm
        .ok(
            "query_records",
            json!({ "table": "probe", "select": ["qty"],
                    "filter": { "column": "id", "op": "eq", "value": pid(0xa, n) } }),
        )
        .await;
    page["rows"]
        .as_array()
        .unwrap()
        .first()
        .map(|r| r["qty"].clone())
}

async fn count(crm: &Mcp) -> i64 {
    crm.ok(
        "aggregate_records",
        json!({ "table": "probe", "aggregates": [{ "fn": "count" }] }),
    )
    .await["rows"][0]["count"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn writes_by_batch_key_and_guarded_filter() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    // A member, the lowest role that writes.
    let (ws, crm) = crm_as(&env, "writes", Role::Member).await;
    seed_six(&crm, 0xa, "").await;

    // Batches: 100 in one call, 101 refused whole, 0 refused.
    let hundred: Vec<Value> = (0..100)
        .map(|i| json!({ "title": format!("bulk {i}"), "qty": i }))
        .collect();
    let done = crm
        .ok(
            "insert_record",
            json!({ "table": "probe", "rows": hundred }),
        )
        .await;
    assert_eq!(done["count"], 100);
    assert_eq!(done["rows"].as_array().unwrap().len(), 100);
    assert_eq!(count(&crm).await, 106);
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({ "title": format!("over {i}") }))
        .collect();
    let e = crm
        .err(
            "insert_record",
            json!({ "table": "probe", "rows": too_many }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input", "{e}");
    assert!(
        e["path"].as_str().unwrap_or_default().starts_with("rows"),
        "{e}"
    );
    let e = crm
        .err("insert_record", json!({ "table": "probe", "rows": [] }))
        .await;
    assert_eq!(e["code"], "invalid_input", "{e}");
    assert_eq!(
        count(&crm).await,
        106,
        "nothing of a refused batch was written"
    );
    // One bad row refuses the whole batch.
    let e = crm
        .err(
            "insert_record",
            json!({ "table": "probe", "rows": [{ "title": "fine" }, { "title": "bad", "qty": "many" }] }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input", "{e}");
    assert_eq!(e["path"], "rows[1].qty", "{e}");
    assert_eq!(count(&crm).await, 106);
    // A single row with `values`, getting its defaults.
    let one = crm
        .ok(
            "insert_record",
            json!({ "table": "probe", "values": { "title": "single", "tags": ["x", "y"] } }),
        )
        .await;
    assert_eq!(one["count"], 1);
    assert_eq!(one["rows"][0]["title"], "single");
    assert_eq!(one["rows"][0]["tags"], json!(["x", "y"]));
    assert!(Uuid::parse_str(one["rows"][0]["id"].as_str().unwrap()).is_ok());
    assert!(one["rows"][0].get("workspace_id").is_none(), "{one}");

    // A duplicate primary key is a conflict that does not echo the value.
    let e = crm
        .err(
            "insert_record",
            json!({ "table": "probe", "values": { "id": pid(0xa, 1), "title": "dup" } }),
        )
        .await;
    assert_eq!(e["code"], "conflict", "{e}");
    assert!(!e.to_string().contains(&pid(0xa, 1)), "{e}");
    // A missing NOT NULL column is the caller's mistake, not a server fault.
    let e = crm
        .err(
            "insert_record",
            json!({ "table": "probe", "values": { "qty": 1 } }),
        )
        .await;
    assert!(
        e["code"] == "invalid_input" || e["code"] == "conflict",
        "{e}"
    );

    // By key.
    let updated = crm
        .ok(
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) },
                    "values": { "qty": 42, "attrs": { "x": [1] }, "status": "closed", "happened_at": null } }),
        )
        .await;
    assert_eq!(updated["count"], 1);
    assert_eq!(updated["rows"][0]["qty"], 42);
    assert_eq!(updated["rows"][0]["attrs"], json!({ "x": [1] }));
    assert_eq!(updated["rows"][0]["happened_at"], Value::Null);
    assert_eq!(qty_of(&crm, 1).await, Some(json!(42)));
    let missing = json!({ "id": Uuid::new_v4() });
    assert_eq!(
        crm.err_code(
            "update_record",
            json!({ "table": "probe", "key": missing, "values": { "qty": 1 } })
        )
        .await,
        "not_found"
    );
    assert_eq!(
        crm.err_code("delete_record", json!({ "table": "probe", "key": missing }))
            .await,
        "not_found"
    );
    let deleted = crm
        .ok(
            "delete_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 5) } }),
        )
        .await;
    assert_eq!(deleted["count"], 1);
    assert_eq!(deleted["rows"][0]["id"], pid(0xa, 5));
    assert_eq!(qty_of(&crm, 5).await, None);
    assert_eq!(
        crm.err_code(
            "delete_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 5) } })
        )
        .await,
        "not_found"
    );

    // By filter, behind the max_rows guard: too many → refused and nothing changed.
    let open = json!({ "column": "status", "op": "eq", "value": "open" });
    let e = crm
        .err(
            "update_record",
            json!({ "table": "probe", "filter": open, "max_rows": 1, "values": { "qty": 7 } }),
        )
        .await;
    assert!(
        e["code"] == "invalid_input" || e["code"] == "conflict",
        "{e}"
    );
    assert_eq!(qty_of(&crm, 2).await, Some(json!(2)));
    assert_eq!(qty_of(&crm, 4).await, Some(json!(10)));
    let e = crm
        .err(
            "update_record",
            json!({ "table": "probe", "filter": open, "values": { "qty": 7 } }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input", "max_rows is required: {e}");
    assert_eq!(e["path"], "max_rows");
    let changed = crm
        .ok(
            "update_record",
            json!({ "table": "probe", "filter": open, "max_rows": 2, "values": { "qty": 7 } }),
        )
        .await;
    assert_eq!(changed["count"], 2);
    assert_eq!(qty_of(&crm, 2).await, Some(json!(7)));
    assert_eq!(qty_of(&crm, 4).await, Some(json!(7)));

    let bulk = json!({ "column": "title", "op": "like", "value": "bulk %" });
    let e = crm
        .err(
            "delete_record",
            json!({ "table": "probe", "filter": bulk, "max_rows": 99 }),
        )
        .await;
    assert!(
        e["code"] == "invalid_input" || e["code"] == "conflict",
        "{e}"
    );
    assert_eq!(count(&crm).await, 106, "a refused delete removes nothing");
    let gone = crm
        .ok(
            "delete_record",
            json!({ "table": "probe", "filter": bulk, "max_rows": 100 }),
        )
        .await;
    assert_eq!(gone["count"], 100);
    assert_eq!(count(&crm).await, 6);

    // The tenant stamp and generated columns are not writable.
    let (b, _) = env.workspace("elsewhere").await;
    for (tool, args, path) in [
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "stamp", "workspace_id": b } }),
            "values.workspace_id",
        ),
        (
            "insert_record",
            json!({ "table": "probe", "rows": [{ "title": "gen" }, { "title": "gen", "search": "x" }] }),
            "rows[1].search",
        ),
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "gen", "search": "'x'" } }),
            "values.search",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 3) }, "values": { "workspace_id": b } }),
            "values.workspace_id",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 3) }, "values": { "search": "x" } }),
            "values.search",
        ),
        (
            "update_record",
            json!({ "table": "probe", "filter": { "column": "workspace_id", "op": "eq", "value": ws },
                    "max_rows": 10, "values": { "qty": 1 } }),
            "filter.column",
        ),
        (
            "delete_record",
            json!({ "table": "probe", "filter": { "column": "workspace_id", "op": "neq", "value": b },
                    "max_rows": 10 }),
            "filter.column",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "workspace_id": ws, "id": pid(0xa, 3) }, "values": { "qty": 1 } }),
            "key.workspace_id",
        ),
    ] {
        let e = crm.err(tool, args.clone()).await;
        assert_eq!(e["code"], "invalid_input", "{tool} {args}: {e}");
        assert_eq!(e["path"], path, "{tool} {args}: {e}");
    }
    assert_eq!(count(&crm).await, 6);
    assert_eq!(qty_of(&crm, 3).await, Some(json!(3)));
    let su = env.db.connect_superuser().await;
    let elsewhere: i64 = su
        .query_one(
            "SELECT count(*) FROM crm.probe WHERE workspace_id = $1",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(elsewhere, 0);
}

/// `list_tables` counts the caller's rows only: PostgreSQL's planner estimate (`reltuples`)
/// covers every workspace, so it would reveal how much data other tenants keep.
#[tokio::test]
async fn list_tables_counts_only_this_workspaces_rows_up_to_a_cap() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (_, small) = crm_as(&env, "small", Role::Reader).await;
    let (big_ws, big) = crm_as(&env, "big", Role::Reader).await;
    let (_, small_member) = crm_as(&env, "small-writer", Role::Member).await;
    seed_six(&small_member, 0xa, "").await;
    let su = env.db.connect_superuser().await;
    su.execute(
        "INSERT INTO crm.probe (workspace_id, title)
         SELECT $1, 'big ' || g FROM generate_series(1, 1000) g",
        &[&big_ws],
    )
    .await
    .unwrap();
    // Make the planner's estimate exact, so a leak of it would show 1006.
    su.batch_execute("ANALYZE crm.probe").await.unwrap();
    let rows = |listed: &Value, table: &str| -> Value {
        listed["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == table)
            .unwrap_or_else(|| panic!("no {table} in {listed}"))["rows"]
            .clone()
    };
    let listed = small_member.ok("list_tables", no_args()).await;
    assert_eq!(rows(&listed, "probe"), 6, "{listed}");
    assert!(
        listed["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("row_estimate").is_none()),
        "{listed}"
    );
    let listed = small.ok("list_tables", no_args()).await;
    assert_eq!(rows(&listed, "probe"), 0, "{listed}");
    assert_eq!(rows(&listed, "accounts"), 0, "{listed}");
    let listed = big.ok("list_tables", no_args()).await;
    assert_eq!(rows(&listed, "probe"), 1000, "exactly the cap: {listed}");
    su.execute(
        "INSERT INTO crm.probe (workspace_id, title) VALUES ($1, 'one more')",
        &[&big_ws],
    )
    .await
    .unwrap();
    let listed = big.ok("list_tables", no_args()).await;
    assert_eq!(rows(&listed, "probe"), "1000+", "{listed}");
    // The small workspace's count is still its own.
    let listed = small_member.ok("list_tables", no_args()).await;
    assert_eq!(rows(&listed, "probe"), 6, "{listed}");
    let described = big.ok("describe_table", json!({ "table": "probe" })).await;
    assert!(described.get("row_estimate").is_none(), "{described}");
}

#[tokio::test]
async fn readers_query_but_never_write() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (ws, member) = crm_as(&env, "ladder", Role::Member).await;
    seed_six(&member, 0xa, "").await;
    let reader = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;

    let listed = reader.tool_names().await;
    for read in [
        "list_tables",
        "describe_table",
        "query_records",
        "aggregate_records",
    ] {
        assert!(
            listed.contains(&read.to_owned()),
            "{read} listed for a reader: {listed:?}"
        );
    }
    for write in ["insert_record", "update_record", "delete_record"] {
        assert!(
            !listed.contains(&write.to_owned()),
            "{write} listed for a reader: {listed:?}"
        );
    }
    let member_tools = member.tool_names().await;
    for tool in [
        "list_tables",
        "describe_table",
        "query_records",
        "aggregate_records",
        "insert_record",
        "update_record",
        "delete_record",
    ] {
        assert!(
            member_tools.contains(&tool.to_owned()),
            "{tool} for a member"
        );
    }

    let before = snapshot(&env, ws).await;
    for (tool, args) in [
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "nope" } }),
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) }, "values": { "title": "nope" } }),
        ),
        (
            "update_record",
            json!({ "table": "probe", "filter": { "column": "qty", "op": "gt", "value": 0 },
                    "max_rows": 100, "values": { "title": "nope" } }),
        ),
        (
            "delete_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) } }),
        ),
        (
            "delete_record",
            json!({ "table": "probe", "filter": { "column": "qty", "op": "gt", "value": 0 }, "max_rows": 100 }),
        ),
    ] {
        assert_eq!(
            reader.err_code(tool, args).await,
            "forbidden",
            "reader calling {tool}"
        );
    }
    assert_eq!(snapshot(&env, ws).await, before, "a reader changed nothing");

    let page = reader
        .ok(
            "query_records",
            json!({ "table": "probe", "select": ["title"], "sort": [{ "column": "id" }] }),
        )
        .await;
    assert_eq!(page["rows"].as_array().unwrap().len(), 6);
    assert_eq!(page["rows"][0]["title"], "alpha apple");
    assert_eq!(count(&reader).await, 6);
    reader
        .ok("describe_table", json!({ "table": "probe" }))
        .await;
}

#[tokio::test]
async fn a_workspace_sees_and_touches_only_its_own_rows() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (a_ws, a) = crm_as(&env, "A", Role::Member).await;
    let (b_ws, b) = crm_as(&env, "B", Role::Member).await;
    let marker = format!("MARKER-B-{}", Uuid::new_v4());
    // The same primary keys in both workspaces: keys are per workspace.
    seed_six(&a, 0xa, "").await;
    seed_six(&b, 0xa, &format!(" {marker}")).await;
    let extra: Vec<Value> = (0..5)
        .map(|i| json!({ "title": format!("{marker} extra {i}"), "qty": i }))
        .collect();
    b.ok("insert_record", json!({ "table": "probe", "rows": extra }))
        .await;
    let b_before = snapshot(&env, b_ws).await;
    assert_eq!(b_before.len(), 11);

    let no_marker = |what: &str, v: &Value| {
        assert!(
            !v.to_string().contains(&marker),
            "{what} leaked B's rows: {v}"
        );
    };
    let everything = json!({ "table": "probe", "limit": 200 });
    let page = a.ok("query_records", everything.clone()).await;
    no_marker("query_records", &page);
    assert_eq!(page["rows"].as_array().unwrap().len(), 6);
    for filter in [
        json!({ "column": "title", "op": "like", "value": "%MARKER%" }),
        json!({ "op": "search", "value": "extra" }),
        json!({ "column": "title", "op": "ilike", "value": format!("%{marker}%") }),
    ] {
        let page = a
            .ok(
                "query_records",
                json!({ "table": "probe", "filter": filter }),
            )
            .await;
        assert_eq!(page["rows"], json!([]), "{filter}");
    }
    let counted = a
        .ok(
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }, { "fn": "sum", "column": "qty" }] }),
        )
        .await;
    assert_eq!(counted["rows"][0]["count"].as_i64(), Some(6), "{counted}");
    assert_eq!(num(&counted["rows"][0]["sum_qty"]), 18.0);
    let grouped = a
        .ok(
            "aggregate_records",
            json!({ "table": "probe", "group_by": ["title"], "aggregates": [{ "fn": "count" }], "limit": 1000 }),
        )
        .await;
    no_marker("aggregate_records", &grouped);
    assert_eq!(grouped["rows"].as_array().unwrap().len(), 6);

    // Writes by key hit A's row with that id, never B's row with the same id.
    a.ok(
        "update_record",
        json!({ "table": "probe", "key": { "id": pid(0xa, 1) }, "values": { "title": "A only" } }),
    )
    .await;
    a.ok(
        "delete_record",
        json!({ "table": "probe", "key": { "id": pid(0xa, 2) } }),
    )
    .await;
    assert_eq!(snapshot(&env, b_ws).await, b_before);

    // A bulk update and a bulk delete over "everything" count and touch only A's rows.
    let all = json!({ "column": "title", "op": "is_null", "value": false });
    let updated = a
        .ok(
            "update_record",
            json!({ "table": "probe", "filter": all, "max_rows": 1000, "values": { "qty": 999, "title": "overwritten" } }),
        )
        .await;
    assert_eq!(updated["count"], 5, "{updated}");
    no_marker("update_record", &updated);
    assert_eq!(snapshot(&env, b_ws).await, b_before);
    // The guard counts only A's rows: 5 fit under max_rows 5 although 16 exist in all.
    let deleted = a
        .ok(
            "delete_record",
            json!({ "table": "probe", "filter": { "or": [all, { "column": "title", "op": "like", "value": "%MARKER%" }] },
                    "max_rows": 5 }),
        )
        .await;
    assert_eq!(deleted["count"], 5, "{deleted}");
    no_marker("delete_record", &deleted);
    assert_eq!(snapshot(&env, a_ws).await, Vec::<Value>::new());
    assert_eq!(snapshot(&env, b_ws).await, b_before);
    assert_eq!(count(&a).await, 0);
    assert_eq!(count(&b).await, 11);
    // Re-using B's ids in A is no conflict, and reveals nothing.
    let again = a
        .ok(
            "insert_record",
            json!({ "table": "probe", "values": { "id": pid(0xa, 3), "title": "A again" } }),
        )
        .await;
    assert_eq!(again["count"], 1);
    no_marker("insert_record", &again);
    assert_eq!(snapshot(&env, b_ws).await, b_before);
}

#[tokio::test]
async fn bad_input_is_invalid_input_at_the_offending_path() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (_, crm) = crm_as(&env, "input", Role::Member).await;
    seed_six(&crm, 0xa, "").await;
    let q = |extra: Value| {
        let mut args = json!({ "table": "probe" });
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };
    let title_eq = json!({ "column": "title", "op": "eq", "value": "x" });
    let exact: Vec<(&str, Value, &str)> = vec![
        ("query_records", json!({ "table": "nope" }), "table"),
        (
            "query_records",
            json!({ "table": "hdls.workspaces" }),
            "table",
        ),
        ("describe_table", json!({ "table": "nope" }), "table"),
        (
            "aggregate_records",
            json!({ "table": "api_keys", "aggregates": [{ "fn": "count" }] }),
            "table",
        ),
        (
            "insert_record",
            json!({ "table": "nope", "values": { "title": "x" } }),
            "table",
        ),
        (
            "query_records",
            q(
                json!({ "filter": { "and": [title_eq, { "column": "nope", "op": "eq", "value": 1 }] } }),
            ),
            "filter.and[1].column",
        ),
        (
            "query_records",
            q(
                json!({ "filter": { "or": [title_eq, { "not": { "column": "nope", "op": "eq", "value": 1 } }] } }),
            ),
            "filter.or[1].not.column",
        ),
        (
            "query_records",
            q(json!({ "select": ["nope"] })),
            "select[0]",
        ),
        (
            "query_records",
            q(json!({ "select": ["title", "workspace_id"] })),
            "select[1]",
        ),
        (
            "query_records",
            q(json!({ "sort": [{ "column": "nope" }] })),
            "sort[0].column",
        ),
        (
            "query_records",
            q(json!({ "sort": [{ "column": "title" }, { "column": "workspace_id" }] })),
            "sort[1].column",
        ),
        (
            "query_records",
            q(
                json!({ "filter": { "column": "workspace_id", "op": "eq", "value": Uuid::new_v4() } }),
            ),
            "filter.column",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "title", "op": "regex", "value": "x" } })),
            "filter.op",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "qty", "op": "in", "value": 5 } })),
            "filter.value",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "qty", "op": "in", "value": "1,2" } })),
            "filter.value",
        ),
        (
            "query_records",
            q(json!({ "cursor": "garbage!!" })),
            "cursor",
        ),
        (
            "query_records",
            q(json!({ "cursor": "eyJzIjoiIiwidiI6W119" })),
            "cursor",
        ),
        ("query_records", q(json!({ "limit": 0 })), "limit"),
        ("query_records", q(json!({ "limit": 201 })), "limit"),
        ("query_records", q(json!({ "limit": -1 })), "limit"),
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "x", "nope": 1 } }),
            "values.nope",
        ),
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "x", "qty": "abc" } }),
            "values.qty",
        ),
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "x", "qty": 3_000_000_000u64 } }),
            "values.qty",
        ),
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "x", "status": "bogus" } }),
            "values.status",
        ),
        (
            "insert_record",
            json!({ "table": "probe", "values": { "title": "x", "id": "not-a-uuid" } }),
            "values.id",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) }, "values": { "day": "2026-02-30" } }),
            "values.day",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) }, "values": { "nope": 1 } }),
            "values.nope",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "sum", "column": "nope" }] }),
            "aggregates[0].column",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "group_by": ["workspace_id"] }),
            "group_by[0]",
        ),
    ];
    let mut failures = Vec::new();
    for (tool, args, path) in &exact {
        let result = crm.call(tool, args.clone()).await;
        let body = result.structured_content.clone().unwrap_or(Value::Null);
        let e = &body["error"];
        if result.is_error != Some(true) || e["code"] != "invalid_input" || e["path"] != *path {
            failures.push(format!(
                "{tool} {args}: expected invalid_input at {path}, got {body}"
            ));
        }
    }

    // Wrong value types, bad sort options and bad aggregate functions: the path points into them.
    let prefixed: Vec<(&str, Value, &str)> = vec![
        (
            "query_records",
            q(json!({ "filter": { "column": "qty", "op": "eq", "value": "abc" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "id", "op": "eq", "value": 123 } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "id", "op": "eq", "value": "not-a-uuid" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "happened_at", "op": "gt", "value": "yesterday" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "day", "op": "lt", "value": "2026-13-45" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "status", "op": "eq", "value": "bogus" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "flag", "op": "eq", "value": "yes" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "amount", "op": "gt", "value": "ten" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "amount", "op": "gt", "value": { "n": 1 } } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "qty", "op": "in", "value": [1, "two"] } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "qty", "op": "like", "value": "1%" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "tags", "op": "contains", "value": "red" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "title", "op": "contains", "value": "a" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "qty", "op": "search", "value": "x" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "amount", "op": "is_null", "value": "yes" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "and": title_eq } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": "title = 'x'" })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "filter": { "column": "title", "value": "x" } })),
            "filter",
        ),
        (
            "query_records",
            q(json!({ "sort": [{ "column": "title", "direction": "sideways" }] })),
            "sort[0]",
        ),
        (
            "query_records",
            q(json!({ "sort": [{ "column": "title", "nulls": "middle" }] })),
            "sort[0]",
        ),
        ("query_records", q(json!({ "sort": "title" })), "sort"),
        ("query_records", q(json!({ "select": "title" })), "select"),
        ("query_records", q(json!({ "limit": "ten" })), "limit"),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "median", "column": "qty" }] }),
            "aggregates[0]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "sum", "column": "title" }] }),
            "aggregates[0]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "sum" }] }),
            "aggregates[0]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "group_by": [{ "column": "title", "trunc": "day" }] }),
            "group_by[0]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "group_by": [{ "column": "happened_at", "trunc": "year; DROP" }] }),
            "group_by[0]",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "limit": 0 }),
            "limit",
        ),
        (
            "aggregate_records",
            json!({ "table": "probe", "aggregates": [{ "fn": "count" }], "limit": 1001 }),
            "limit",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) }, "values": { "tags": "red" } }),
            "values.tags",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "id": 5 }, "values": { "qty": 1 } }),
            "key",
        ),
        (
            "update_record",
            json!({ "table": "probe", "key": { "title": "x" }, "values": { "qty": 1 } }),
            "key",
        ),
        (
            "update_record",
            json!({ "table": "probe", "filter": title_eq, "max_rows": 0, "values": { "qty": 1 } }),
            "max_rows",
        ),
        ("delete_record", json!({ "table": "probe" }), ""),
        (
            "delete_record",
            json!({ "table": "probe", "filter": title_eq }),
            "max_rows",
        ),
        (
            "delete_record",
            json!({ "table": "probe", "key": { "id": pid(0xa, 1) }, "filter": title_eq, "max_rows": 1 }),
            "",
        ),
    ];
    for (tool, args, prefix) in &prefixed {
        let result = crm.call(tool, args.clone()).await;
        let body = result.structured_content.clone().unwrap_or(Value::Null);
        let e = &body["error"];
        let path = e["path"].as_str();
        if result.is_error != Some(true)
            || e["code"] != "invalid_input"
            || !path.is_some_and(|p| p.starts_with(prefix))
        {
            failures.push(format!(
                "{tool} {args}: expected invalid_input with a path starting {prefix:?}, got {body}"
            ));
        }
    }

    // A real cursor only fits the sort it came from.
    let page = crm
        .ok(
            "query_records",
            q(json!({ "limit": 2, "sort": [{ "column": "qty" }] })),
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let e = crm
        .err(
            "query_records",
            q(json!({ "limit": 2, "cursor": cursor, "sort": [{ "column": "title" }] })),
        )
        .await;
    if e["code"] != "invalid_input" || e["path"] != "cursor" {
        failures.push(format!("a cursor replayed with another sort: {e}"));
    }
    let next = crm
        .ok(
            "query_records",
            q(json!({ "limit": 2, "cursor": cursor, "sort": [{ "column": "qty" }] })),
        )
        .await;
    assert_eq!(next["rows"].as_array().unwrap().len(), 2);

    assert!(
        failures.is_empty(),
        "{} bad inputs were not refused as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing of all that changed a row.
    assert_eq!(count(&crm).await, 6);
}

#[tokio::test]
async fn every_product_endpoint_works_on_its_own_schema() {
    let env = TestEnv::start().await;
    probe_table(&env).await;
    let (ws, owner_key) = env.workspace("products").await;
    unlimited(&env, ws).await;
    let concierge = env.client("/api/mcp", &owner_key).await;
    for product in ["support", "contacts"] {
        concierge
            .ok("install_product", json!({ "product": product }))
            .await;
    }
    let su = env.db.connect_superuser().await;
    su.batch_execute(
        "CREATE TABLE contacts.probe_c (
           workspace_id uuid NOT NULL DEFAULT hdls.current_workspace() REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
           id uuid NOT NULL DEFAULT gen_random_uuid(),
           name text NOT NULL,
           PRIMARY KEY (workspace_id, id)
         );
         ALTER TABLE contacts.probe_c ENABLE ROW LEVEL SECURITY; ALTER TABLE contacts.probe_c FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON contacts.probe_c USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace());
         GRANT SELECT, INSERT, UPDATE, DELETE ON contacts.probe_c TO hdls_runtime;
         NOTIFY hdls_catalog;",
    )
    .await
    .unwrap();
    let member = env.key(ws, Role::Member).await;
    let contacts = env.client("/api/mcp/contacts", &member).await;
    await_table(&contacts, "probe_c").await;
    let listed = contacts.ok("list_tables", no_args()).await;
    assert_eq!(listed["schema"], "contacts");
    let names: Vec<&str> = listed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"probe_c"), "{listed}");
    assert!(
        !names.contains(&"probe") && !names.contains(&"accounts"),
        "{listed}"
    );
    contacts
        .ok(
            "insert_record",
            json!({ "table": "probe_c", "values": { "name": "Ada" } }),
        )
        .await;
    let page = contacts
        .ok("query_records", json!({ "table": "probe_c" }))
        .await;
    assert_eq!(page["rows"][0]["name"], "Ada");
    assert_eq!(
        contacts
            .err("query_records", json!({ "table": "probe" }))
            .await["code"],
        "invalid_input",
        "crm tables are not reachable from the contacts endpoint"
    );

    let crm = env.client("/api/mcp/crm", &member).await;
    assert_eq!(
        crm.err("describe_table", json!({ "table": "probe_c" }))
            .await["code"],
        "invalid_input"
    );
    let support = env.client("/api/mcp/support", &member).await;
    let listed = support.ok("list_tables", no_args()).await;
    assert_eq!(listed["schema"], "support");
    assert!(!listed.to_string().contains("probe"), "{listed}");
}

#[tokio::test]
async fn any_column_name_round_trips_as_an_object_key() {
    let env = TestEnv::start().await;
    let su = env.db.connect_superuser().await;
    // Names that collide with SQL words and with whatever aliases an engine might use.
    su.batch_execute(
        r#"CREATE TABLE crm.odd (
             workspace_id uuid NOT NULL DEFAULT hdls.current_workspace() REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
             id uuid NOT NULL DEFAULT gen_random_uuid(),
             x int4, t text, r int4, s text, "row" text, "position" int4, "select" text, "Mixed Case" text, "we""ird" text,
             PRIMARY KEY (workspace_id, id)
           );
           ALTER TABLE crm.odd ENABLE ROW LEVEL SECURITY; ALTER TABLE crm.odd FORCE ROW LEVEL SECURITY;
           CREATE POLICY tenant ON crm.odd USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace());
           GRANT SELECT, INSERT, UPDATE, DELETE ON crm.odd TO hdls_runtime;
           NOTIFY hdls_catalog;"#,
    )
    .await
    .unwrap();
    let (_, crm) = crm_as(&env, "odd", Role::Member).await;
    await_table(&crm, "odd").await;
    let values = json!({ "x": 1, "t": "tee", "r": 2, "s": "ess", "row": "roe", "position": 3, "select": "sel",
                         "Mixed Case": "mc", "we\"ird": "w" });
    let mut failures = Vec::new();
    let mut check = |what: String, got: &Value, keys: &[&str], expected: &Value| {
        for k in keys {
            if got.get(k) != expected.get(k) {
                failures.push(format!(
                    "{what}: {k} should be {}, the row came back as {got}",
                    expected[k]
                ));
                return;
            }
        }
    };
    let all_keys: Vec<&str> = values
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();

    let inserted = crm
        .ok("insert_record", json!({ "table": "odd", "values": values }))
        .await;
    check(
        "insert_record".into(),
        &inserted["rows"][0],
        &all_keys,
        &values,
    );
    let id = crm
        .ok("query_records", json!({ "table": "odd", "select": ["id"] }))
        .await["rows"][0]["id"]
        .clone();
    for select in [
        vec!["x"],
        vec!["t"],
        vec!["r"],
        vec!["s"],
        vec!["row", "position"],
        all_keys.clone(),
    ] {
        let page = crm
            .ok(
                "query_records",
                json!({ "table": "odd", "select": select, "sort": [{ "column": "position" }] }),
            )
            .await;
        check(
            format!("query_records select {select:?}"),
            &page["rows"][0],
            &select,
            &values,
        );
    }
    let page = crm.ok("query_records", json!({ "table": "odd" })).await;
    check(
        "query_records default select".into(),
        &page["rows"][0],
        &all_keys,
        &values,
    );

    let updated = crm
        .ok(
            "update_record",
            json!({ "table": "odd", "key": { "id": id }, "values": { "row": "r2" } }),
        )
        .await;
    let mut expected = values.clone();
    expected["row"] = json!("r2");
    check(
        "update_record".into(),
        &updated["rows"][0],
        &all_keys,
        &expected,
    );
    let grouped = crm
        .ok(
            "aggregate_records",
            json!({ "table": "odd", "group_by": ["x", "row", "s"], "aggregates": [{ "fn": "sum", "column": "r" }] }),
        )
        .await;
    check(
        "aggregate_records".into(),
        &grouped["rows"][0],
        &["x", "row", "s", "sum_r"],
        &json!({ "x": 1, "row": "r2", "s": "ess", "sum_r": 2 }),
    );
    let counted = crm
        .ok(
            "aggregate_records",
            json!({ "table": "odd", "aggregates": [{ "fn": "count", "column": "x" }],
                    "filter": { "column": "we\"ird", "op": "eq", "value": "w" } }),
        )
        .await;
    check(
        "aggregate_records filter".into(),
        &counted["rows"][0],
        &["count_x"],
        &json!({ "count_x": 1 }),
    );
    let deleted = crm
        .ok(
            "delete_record",
            json!({ "table": "odd", "key": { "id": id } }),
        )
        .await;
    check(
        "delete_record".into(),
        &deleted["rows"][0],
        &all_keys,
        &expected,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Rows wider than one json_build_object call (50 pairs) come back whole, in column order.
#[tokio::test]
async fn wide_tables_round_trip_every_column() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("wide").await;
    let columns: Vec<String> = (0..60).map(|i| format!("c{i:02} int4")).collect();
    let su = env.db.connect_superuser().await;
    su.batch_execute(&format!(
        "CREATE TABLE crm.wide (
           workspace_id uuid NOT NULL DEFAULT hdls.current_workspace() REFERENCES hdls.workspaces (workspace_id),
           id uuid NOT NULL DEFAULT gen_random_uuid(), {}, PRIMARY KEY (workspace_id, id));
         ALTER TABLE crm.wide ENABLE ROW LEVEL SECURITY; ALTER TABLE crm.wide FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant ON crm.wide USING (workspace_id = hdls.current_workspace())
           WITH CHECK (workspace_id = hdls.current_workspace());
         GRANT SELECT, INSERT, UPDATE, DELETE ON crm.wide TO hdls_runtime;
         NOTIFY hdls_catalog;",
        columns.join(", ")
    ))
    .await
    .unwrap();
    let crm = env.client("/api/mcp/crm", &key).await;
    await_table(&crm, "wide").await;
    let values: serde_json::Map<String, Value> =
        (0..60).map(|i| (format!("c{i:02}"), json!(i))).collect();
    let inserted = crm
        .ok(
            "insert_record",
            json!({ "table": "wide", "values": values }),
        )
        .await;
    assert_eq!(
        inserted["rows"][0].as_object().unwrap().len(),
        61,
        "{inserted}"
    );
    let page = crm.ok("query_records", json!({ "table": "wide" })).await;
    let row = page["rows"][0].as_object().unwrap();
    assert_eq!(row.len(), 61);
    assert_eq!(row["c59"], 59);
    assert_eq!(row["c00"], 0);
}
