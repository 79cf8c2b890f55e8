//! Custom fields: the seed's example as written, personal fields invisible to a teammate and
//! another key until promoted, typed values, typed tool schemas per credential, removal that
//! hides values and re-adding that brings them back, and filters on a field's path.

use hdls::identity::Role;
use serde_json::{Value, json};

use crate::harness::{Mcp, TestEnv};

/// The `custom` property of a tool's input schema as this client's `tools/list` shows it.
async fn custom_schema(client: &Mcp, tool: &str) -> Value {
    let tools = client.service.list_all_tools().await.unwrap();
    let tool = tools.iter().find(|t| t.name == tool).unwrap();
    Value::Object((*tool.input_schema).clone())["properties"]["custom"].clone()
}

#[tokio::test]
async fn the_seed_example_works_as_written() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("Seed").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    crm.ok(
        "add_custom_field",
        json!({ "entity": "account", "name": "renewal_quarter", "type": "text" }),
    )
    .await;
    let created = crm
        .ok(
            "create_account",
            json!({ "name": "Acme Robotics", "custom": { "renewal_quarter": "Q3" } }),
        )
        .await;
    assert_eq!(created["account"]["custom"]["renewal_quarter"], "Q3");
    // The power tools filter on the field's path, through the catalog and bound values.
    let found = crm
        .ok(
            "query_records",
            json!({ "table": "accounts",
                    "filter": { "column": "custom.renewal_quarter", "op": "eq", "value": "Q3" } }),
        )
        .await;
    assert_eq!(found["rows"].as_array().unwrap().len(), 1, "{found}");
    let none = crm
        .ok(
            "query_records",
            json!({ "table": "accounts",
                    "filter": { "column": "custom.renewal_quarter", "op": "eq", "value": "Q4" } }),
        )
        .await;
    assert!(none["rows"].as_array().unwrap().is_empty());
    // A key path only on a jsonb column.
    let refused = crm
        .err(
            "query_records",
            json!({ "table": "accounts", "filter": { "column": "name.first", "op": "eq", "value": "A" } }),
        )
        .await;
    assert_eq!(refused["path"], "filter.column", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not a jsonb column"),
        "{refused}"
    );
    let described = crm
        .ok("describe_table", json!({ "table": "accounts" }))
        .await;
    assert_eq!(described["custom_fields"][0]["name"], "renewal_quarter");
}

#[tokio::test]
async fn personal_fields_are_the_creators_until_promoted() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("Personal").await;
    let mine = env.key(ws, Role::Member).await;
    let teammate = env.key(ws, Role::Member).await;
    let me = env.client("/api/mcp/crm", &mine).await;
    let them = env.client("/api/mcp/crm", &teammate).await;
    me.ok(
        "add_custom_field",
        json!({ "entity": "account", "name": "tier", "type": "select", "options": ["gold", "silver"],
                "description": "Support tier" }),
    )
    .await;
    let id = me
        .ok(
            "create_account",
            json!({ "name": "Tiered", "custom": { "tier": "gold" } }),
        )
        .await["account"]["id"]
        .clone();
    // My tool schema is typed with my field; theirs is not.
    let schema = custom_schema(&me, "create_account").await;
    assert_eq!(
        schema["properties"]["tier"]["enum"],
        json!(["gold", "silver"]),
        "{schema}"
    );
    assert!(
        custom_schema(&them, "create_account").await["properties"]
            .as_object()
            .unwrap()
            .is_empty()
    );
    // The teammate sees neither the field nor its value, and cannot write it.
    let listed = them.ok("list_custom_fields", json!({})).await;
    assert_eq!(listed["fields"]["account"], json!([]));
    let seen = them.ok("get_account", json!({ "id": id })).await;
    assert_eq!(seen["account"]["custom"], json!({}), "{seen}");
    let refused = them
        .err(
            "update_account",
            json!({ "id": id, "custom": { "tier": "silver" } }),
        )
        .await;
    assert_eq!(refused["code"], "invalid_input");
    assert_eq!(refused["path"], "custom.tier");
    let described = them
        .ok("describe_table", json!({ "table": "accounts" }))
        .await;
    assert_eq!(described["custom_fields"], json!([]));
    // Nor through the power tools, reading or writing.
    let rows = them
        .ok("query_records", json!({ "table": "accounts" }))
        .await;
    assert_eq!(rows["rows"][0]["custom"], json!({}), "{rows}");
    let refused = them
        .err(
            "insert_record",
            json!({ "table": "accounts", "values": { "name": "P", "custom": { "tier": "gold" } } }),
        )
        .await;
    assert_eq!(refused["path"], "custom.tier", "{refused}");
    // Its name is taken all the same: one jsonb key per name.
    let taken = them
        .err(
            "add_custom_field",
            json!({ "entity": "account", "name": "tier", "type": "text" }),
        )
        .await;
    assert_eq!(taken["code"], "conflict");
    // Members cannot promote; an admin promotes it by name, and then everyone sees it.
    assert_eq!(
        me.err_code(
            "promote_custom_field",
            json!({ "entity": "account", "name": "tier" })
        )
        .await,
        "forbidden"
    );
    let owner = env.client("/api/mcp/crm", &owner_key).await;
    let promoted = owner
        .ok(
            "promote_custom_field",
            json!({ "entity": "account", "name": "tier" }),
        )
        .await;
    assert_eq!(promoted["field"]["scope"], "team");
    let listed = them
        .ok("list_custom_fields", json!({ "entity": "account" }))
        .await;
    assert_eq!(listed["fields"]["account"][0]["name"], "tier");
    assert_eq!(listed["fields"]["account"][0]["scope"], "team");
    let seen = them.ok("get_account", json!({ "id": id })).await;
    assert_eq!(seen["account"]["custom"]["tier"], "gold");
    let update = custom_schema(&them, "update_account").await;
    assert_eq!(
        update["properties"]["tier"]["anyOf"][0]["type"], "string",
        "{update}"
    );
    assert_eq!(
        update["properties"]["tier"]["anyOf"][1]["type"], "null",
        "an update clears a field with null"
    );
}

#[tokio::test]
async fn values_are_typed_and_built_in_columns_are_not_shadowed() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("Typed").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    for (name, field_type) in [
        ("seats", "number"),
        ("renews", "date"),
        ("active", "boolean"),
    ] {
        crm.ok(
            "add_custom_field",
            json!({ "entity": "account", "name": name, "type": field_type }),
        )
        .await;
    }
    for (custom, path) in [
        (json!({ "seats": "many" }), "custom.seats"),
        (json!({ "renews": "2026-02-30" }), "custom.renews"),
        (json!({ "active": "yes" }), "custom.active"),
        (json!({ "nope": 1 }), "custom.nope"),
    ] {
        let refused = crm
            .err("create_account", json!({ "name": "x", "custom": custom }))
            .await;
        assert_eq!(refused["code"], "invalid_input", "{refused}");
        assert_eq!(refused["path"], path);
    }
    let created = crm
        .ok(
            "create_account",
            json!({ "name": "Typed Co",
                    "custom": { "seats": 12, "renews": "2026-03-31", "active": true } }),
        )
        .await;
    assert_eq!(created["account"]["custom"]["seats"], 12);
    let bigger = crm
        .ok(
            "query_records",
            json!({ "table": "accounts",
                    "filter": { "column": "custom.seats", "op": "gt", "value": 10 } }),
        )
        .await;
    assert_eq!(bigger["rows"].as_array().unwrap().len(), 1);
    for (name, why) in [("domain", "built-in"), ("Bad-Name", "lowercase")] {
        let refused = crm
            .err(
                "add_custom_field",
                json!({ "entity": "account", "name": name, "type": "text" }),
            )
            .await;
        assert_eq!(refused["code"], "invalid_input", "{refused}");
        assert!(
            refused["message"].as_str().unwrap().contains(why),
            "{refused}"
        );
    }
    let refused = crm
        .err(
            "add_custom_field",
            json!({ "entity": "invoice", "name": "a", "type": "text" }),
        )
        .await;
    assert_eq!(refused["path"], "entity");
    let refused = crm
        .err(
            "add_custom_field",
            json!({ "entity": "account", "name": "q", "type": "select" }),
        )
        .await;
    assert_eq!(refused["path"], "options");
    // Readers read, members write.
    let reader = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;
    assert_eq!(
        reader
            .err_code(
                "add_custom_field",
                json!({ "entity": "account", "name": "r", "type": "text" })
            )
            .await,
        "forbidden"
    );
    reader.ok("list_custom_fields", json!({})).await;
}

#[tokio::test]
async fn removed_fields_hide_their_values_and_bring_them_back() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("Removal").await;
    let owner = env.client("/api/mcp/crm", &owner_key).await;
    owner
        .ok(
            "add_custom_field",
            json!({ "entity": "account", "name": "tier", "type": "text" }),
        )
        .await;
    owner
        .ok(
            "promote_custom_field",
            json!({ "entity": "account", "name": "tier" }),
        )
        .await;
    let id = owner
        .ok(
            "create_account",
            json!({ "name": "Kept", "custom": { "tier": "gold" } }),
        )
        .await["account"]["id"]
        .clone();
    // A member cannot remove a team field.
    let member = env
        .client("/api/mcp/crm", &env.key(ws, Role::Member).await)
        .await;
    let refused = member
        .err(
            "remove_custom_field",
            json!({ "entity": "account", "name": "tier" }),
        )
        .await;
    assert_eq!(refused["code"], "forbidden");
    owner
        .ok(
            "remove_custom_field",
            json!({ "entity": "account", "name": "tier" }),
        )
        .await;
    let hidden = owner.ok("get_account", json!({ "id": id })).await;
    assert_eq!(hidden["account"]["custom"], json!({}));
    // Re-added with another type: refused, the values are still there.
    let clash = owner
        .err(
            "add_custom_field",
            json!({ "entity": "account", "name": "tier", "type": "number" }),
        )
        .await;
    assert_eq!(clash["code"], "conflict");
    owner
        .ok(
            "add_custom_field",
            json!({ "entity": "account", "name": "tier", "type": "text" }),
        )
        .await;
    let back = owner.ok("get_account", json!({ "id": id })).await;
    assert_eq!(back["account"]["custom"]["tier"], "gold");
}

#[tokio::test]
async fn the_power_tools_never_reveal_fields_the_caller_cannot_see() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Inference").await;
    let alice = env
        .client("/api/mcp/crm", &env.key(ws, Role::Member).await)
        .await;
    let bob = env
        .client("/api/mcp/crm", &env.key(ws, Role::Member).await)
        .await;
    alice
        .ok(
            "add_custom_field",
            json!({ "entity": "account", "name": "salary", "type": "number" }),
        )
        .await;
    alice
        .ok(
            "create_account",
            json!({ "name": "Secret", "custom": { "salary": 90000 } }),
        )
        .await;
    for (tool, args, path) in [
        (
            "query_records",
            json!({ "table": "accounts", "filter": { "column": "custom.salary", "op": "gt", "value": 1 } }),
            "filter.column",
        ),
        (
            "query_records",
            json!({ "table": "accounts", "filter": { "not": { "column": "custom", "op": "contains", "value": {} } } }),
            "filter.not.column",
        ),
        (
            "query_records",
            json!({ "table": "accounts", "sort": [{ "column": "custom" }] }),
            "sort[0].column",
        ),
        (
            "aggregate_records",
            json!({ "table": "accounts", "aggregates": [{ "fn": "count" }], "group_by": ["custom"] }),
            "group_by[0]",
        ),
        (
            "update_record",
            json!({ "table": "accounts", "filter": { "column": "name", "op": "eq", "value": "Secret" },
                    "max_rows": 1, "values": { "custom": {} } }),
            "values.custom",
        ),
    ] {
        let refused = bob.err(tool, args).await;
        assert_eq!(refused["code"], "invalid_input", "{tool}: {refused}");
        assert_eq!(refused["path"], path, "{tool}: {refused}");
    }
    // Alice, who sees her field, may filter on it.
    let found = alice
        .ok(
            "query_records",
            json!({ "table": "accounts", "filter": { "column": "custom.salary", "op": "gt", "value": 1 } }),
        )
        .await;
    assert_eq!(found["rows"].as_array().unwrap().len(), 1);
    // Nor does re-adding a removed field hand its values to someone else.
    alice
        .ok(
            "remove_custom_field",
            json!({ "entity": "account", "name": "salary" }),
        )
        .await;
    let refused = bob
        .err(
            "add_custom_field",
            json!({ "entity": "account", "name": "salary", "type": "number" }),
        )
        .await;
    assert_eq!(refused["code"], "conflict", "{refused}");
    assert!(
        !refused["message"].as_str().unwrap().contains("number"),
        "{refused}"
    );
    alice
        .ok(
            "add_custom_field",
            json!({ "entity": "account", "name": "salary", "type": "number" }),
        )
        .await;
    let rows = alice
        .ok("query_records", json!({ "table": "accounts" }))
        .await;
    assert_eq!(rows["rows"][0]["custom"]["salary"], 90000);
}
