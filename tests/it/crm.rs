//! The CRM beyond accounts: contacts, deals and their stage history, pipeline stages and the
//! pipeline summary, notes. Happy paths, and each refusal with its reason.

use hdls::db::OWNER_ROLE;
use hdls::identity::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv, no_args};
use crate::oauth_support::authorize;

/// A workspace with the CRM (as every new one has) and a per-minute limit these tests cannot
/// reach; returns its id and an owner's CRM client.
async fn workspace(env: &TestEnv, name: &str) -> (Uuid, Mcp) {
    let (ws, owner_key) = env.workspace(name).await;
    let owner_pool = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner_pool, ws, None, 100_000, None, env.clock_now())
        .await
        .unwrap();
    (ws, env.client("/api/mcp/crm", &owner_key).await)
}

/// A CRM client with a fresh key of `role`.
async fn as_role(env: &TestEnv, ws: Uuid, role: Role) -> Mcp {
    env.client("/api/mcp/crm", &env.key(ws, role).await).await
}

/// The id of the credential behind a key (what notes and stage history record for it).
async fn credential_id(env: &TestEnv, key: &str) -> String {
    let who = env
        .client("/api/mcp", key)
        .await
        .ok("whoami", no_args())
        .await;
    who["credential"]["id"].as_str().unwrap().to_owned()
}

/// Asserts an `invalid_input` at `path`; returns the message.
async fn invalid_at(crm: &Mcp, tool: &str, args: Value, path: &str) -> String {
    let error = crm.err(tool, args.clone()).await;
    assert_eq!(error["code"], "invalid_input", "{tool} {args}: {error}");
    assert_eq!(error["path"], path, "{tool} {args}: {error}");
    error["message"].as_str().unwrap_or_default().to_owned()
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn contacts_are_created_found_updated_and_deleted() {
    let env = TestEnv::start().await;
    let (ws, owner) = workspace(&env, "contacts").await;
    let member = as_role(&env, ws, Role::Member).await;
    let reader = as_role(&env, ws, Role::Reader).await;
    let acme = owner.ok("create_account", json!({ "name": "Acme" })).await["account"]["id"].clone();

    let ann = member
        .ok(
            "create_contact",
            json!({
                "first_name": " Ann ", "last_name": "Lee", "email": "Ann@Acme.Example",
                "phone": "+1 555 0100", "title": "CTO", "account_id": acme, "tags": ["champion", "tech"],
            }),
        )
        .await["contact"]
        .clone();
    assert_eq!(ann["first_name"], "Ann");
    assert_eq!(ann["email"], "ann@acme.example");
    assert_eq!(ann["account_id"], acme);
    assert_eq!(ann["tags"], json!(["champion", "tech"]));
    assert_eq!(ann["custom"], json!({}));
    let bob = member
        .ok(
            "create_contact",
            json!({ "first_name": "Bob", "tags": ["tech"] }),
        )
        .await["contact"]
        .clone();
    assert_eq!(bob["last_name"], Value::Null);
    assert_eq!(bob["account_id"], Value::Null);
    for i in 0..3 {
        member
            .ok("create_contact", json!({ "first_name": format!("Zed{i}") }))
            .await;
    }

    assert_eq!(
        reader.ok("get_contact", json!({ "id": ann["id"] })).await["contact"],
        ann
    );
    // The query matches first name, last name, full name and email, ignoring case.
    for query in ["ann", "LEE", "ann lee", "acme.EXAMPLE"] {
        let found = reader
            .ok("search_contacts", json!({ "query": query }))
            .await;
        assert_eq!(names(&found, "contacts", "first_name"), ["Ann"], "{query}");
    }
    let at_acme = reader
        .ok("search_contacts", json!({ "account_id": acme }))
        .await;
    assert_eq!(names(&at_acme, "contacts", "first_name"), ["Ann"]);
    let tech = reader.ok("search_contacts", json!({ "tag": "tech" })).await;
    assert_eq!(names(&tech, "contacts", "first_name"), ["Ann", "Bob"]);
    // Pages of two through all five, in first-name order.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({ "limit": 2 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = reader.ok("search_contacts", args).await;
        seen.extend(names(&page, "contacts", "first_name"));
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, ["Ann", "Bob", "Zed0", "Zed1", "Zed2"]);

    env.clock.advance(time::Duration::seconds(5));
    let updated = member
        .ok(
            "update_contact",
            json!({ "id": ann["id"], "title": null, "account_id": null, "last_name": "Li", "tags": [] }),
        )
        .await["contact"]
        .clone();
    assert_eq!(updated["title"], Value::Null);
    assert_eq!(updated["account_id"], Value::Null);
    assert_eq!(updated["last_name"], "Li");
    assert_eq!(updated["tags"], json!([]));
    assert_eq!(
        updated["email"], "ann@acme.example",
        "untouched when absent"
    );
    assert_eq!(updated["created_at"], ann["created_at"]);
    assert_ne!(updated["updated_at"], ann["updated_at"]);

    // Refusals: role, bad input at its path, unknown ids.
    for (tool, args) in [
        ("create_contact", json!({ "first_name": "X" })),
        (
            "update_contact",
            json!({ "id": bob["id"], "first_name": "X" }),
        ),
        ("delete_contact", json!({ "id": bob["id"] })),
    ] {
        assert_eq!(reader.err_code(tool, args).await, "forbidden", "{tool}");
    }
    invalid_at(
        &member,
        "create_contact",
        json!({ "first_name": "  " }),
        "first_name",
    )
    .await;
    invalid_at(
        &member,
        "create_contact",
        json!({ "first_name": "X", "email": "not-an-email" }),
        "email",
    )
    .await;
    invalid_at(
        &member,
        "create_contact",
        json!({ "first_name": "X", "tags": ["ok", ""] }),
        "tags[1]",
    )
    .await;
    let message = invalid_at(
        &member,
        "create_contact",
        json!({ "first_name": "X", "account_id": Uuid::now_v7() }),
        "account_id",
    )
    .await;
    assert!(message.contains("no account"), "{message}");
    invalid_at(
        &member,
        "update_contact",
        json!({ "id": bob["id"], "account_id": Uuid::now_v7() }),
        "account_id",
    )
    .await;
    invalid_at(&reader, "search_contacts", json!({ "limit": 201 }), "limit").await;
    invalid_at(
        &reader,
        "search_contacts",
        json!({ "cursor": "garbage" }),
        "cursor",
    )
    .await;
    let missing = json!({ "id": Uuid::now_v7() });
    assert_eq!(
        reader.err_code("get_contact", missing.clone()).await,
        "not_found"
    );
    assert_eq!(
        member
            .err_code(
                "update_contact",
                json!({ "id": missing["id"], "first_name": "X" })
            )
            .await,
        "not_found"
    );
    assert_eq!(
        member.err_code("delete_contact", missing).await,
        "not_found"
    );

    member
        .ok("delete_contact", json!({ "id": bob["id"] }))
        .await;
    assert_eq!(
        reader
            .err_code("get_contact", json!({ "id": bob["id"] }))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn a_duplicate_email_is_a_conflict_naming_the_existing_contact() {
    let env = TestEnv::start().await;
    let (_, crm) = workspace(&env, "emails").await;
    let ann = crm
        .ok(
            "create_contact",
            json!({ "first_name": "Ann", "email": "ann@example.com" }),
        )
        .await["contact"]["id"]
        .clone();
    let bob = crm
        .ok(
            "create_contact",
            json!({ "first_name": "Bob", "email": "bob@example.com" }),
        )
        .await["contact"]["id"]
        .clone();

    let error = crm
        .err(
            "create_contact",
            json!({ "first_name": "Other Ann", "email": " ANN@example.COM " }),
        )
        .await;
    assert_eq!(error["code"], "conflict", "{error}");
    assert_eq!(error["existing_id"], ann);
    let error = crm
        .err(
            "update_contact",
            json!({ "id": bob, "email": "Ann@Example.com" }),
        )
        .await;
    assert_eq!(error["code"], "conflict", "{error}");
    assert_eq!(error["existing_id"], ann);
    // Nothing was written by either refusal.
    let all = crm.ok("search_contacts", json!({})).await;
    assert_eq!(
        names(&all, "contacts", "email"),
        ["ann@example.com", "bob@example.com"]
    );

    // A contact keeps its own address in another case; a freed address can be taken.
    crm.ok(
        "update_contact",
        json!({ "id": ann, "email": "ANN@EXAMPLE.COM" }),
    )
    .await;
    crm.ok("update_contact", json!({ "id": bob, "email": null }))
        .await;
    let carol = crm
        .ok(
            "create_contact",
            json!({ "first_name": "Carol", "email": "bob@example.com" }),
        )
        .await;
    assert_eq!(carol["contact"]["email"], "bob@example.com");
    // Many contacts without an email are fine.
    crm.ok("create_contact", json!({ "first_name": "Dan" }))
        .await;
    crm.ok("create_contact", json!({ "first_name": "Eve" }))
        .await;
}

#[tokio::test]
async fn custom_values_on_contacts_and_deals_are_checked_and_stored() {
    let env = TestEnv::start().await;
    let (ws, crm) = workspace(&env, "custom").await;
    crm.ok(
        "add_custom_field",
        json!({ "entity": "contact", "name": "seats", "type": "number" }),
    )
    .await;
    crm.ok(
        "add_custom_field",
        json!({ "entity": "deal", "name": "tier", "type": "select", "options": ["gold", "silver"] }),
    )
    .await;

    // tools/list types each entity's `custom` argument with its fields, on create and update.
    let tools = crm.service.list_all_tools().await.unwrap();
    let schema = |tool: &str| {
        let found = tools.iter().find(|t| t.name == tool).unwrap();
        Value::Object((*found.input_schema).clone())
    };
    // An update's field also takes null (which clears it): the type is its first alternative.
    let field = |custom: &Value, name: &str| {
        let f = custom[name].clone();
        if f.get("anyOf").is_some() {
            assert_eq!(f["anyOf"][1]["type"], "null", "{f}");
            f["anyOf"][0].clone()
        } else {
            f
        }
    };
    for tool in ["create_contact", "update_contact"] {
        let custom = &schema(tool)["properties"]["custom"]["properties"];
        assert_eq!(field(custom, "seats")["type"], "number", "{tool}: {custom}");
        assert!(custom.get("tier").is_none(), "{tool}: {custom}");
    }
    for tool in ["create_deal", "update_deal"] {
        let properties = &schema(tool)["properties"];
        assert_eq!(
            field(&properties["custom"]["properties"], "tier")["enum"],
            json!(["gold", "silver"])
        );
        assert!(
            properties["amount"]["anyOf"].is_array(),
            "{tool}: {properties}"
        );
    }

    invalid_at(
        &crm,
        "create_contact",
        json!({ "first_name": "Ann", "custom": { "seats": "five" } }),
        "custom.seats",
    )
    .await;
    invalid_at(
        &crm,
        "create_contact",
        json!({ "first_name": "Ann", "custom": { "tier": "gold" } }),
        "custom.tier",
    )
    .await;
    let ann = crm
        .ok(
            "create_contact",
            json!({ "first_name": "Ann", "custom": { "seats": 5 } }),
        )
        .await["contact"]
        .clone();
    assert_eq!(ann["custom"], json!({ "seats": 5 }));
    invalid_at(
        &crm,
        "update_contact",
        json!({ "id": ann["id"], "custom": { "seats": true } }),
        "custom.seats",
    )
    .await;
    let cleared = crm
        .ok(
            "update_contact",
            json!({ "id": ann["id"], "custom": { "seats": null } }),
        )
        .await;
    assert_eq!(cleared["contact"]["custom"], json!({}));

    invalid_at(
        &crm,
        "create_deal",
        json!({ "name": "Big", "custom": { "tier": "bronze" } }),
        "custom.tier",
    )
    .await;
    let deal = crm
        .ok(
            "create_deal",
            json!({ "name": "Big", "custom": { "tier": "gold" } }),
        )
        .await["deal"]
        .clone();
    assert_eq!(deal["custom"], json!({ "tier": "gold" }));
    invalid_at(
        &crm,
        "update_deal",
        json!({ "id": deal["id"], "custom": { "tier": 1 } }),
        "custom.tier",
    )
    .await;
    let silver = crm
        .ok(
            "update_deal",
            json!({ "id": deal["id"], "custom": { "tier": "silver" } }),
        )
        .await;
    assert_eq!(silver["deal"]["custom"], json!({ "tier": "silver" }));

    // Another key does not see the personal fields' values.
    let other = as_role(&env, ws, Role::Member).await;
    let seen = other.ok("get_deal", json!({ "id": deal["id"] })).await;
    assert_eq!(seen["deal"]["custom"], json!({}));
}

#[tokio::test]
async fn deals_are_created_found_updated_and_deleted() {
    let env = TestEnv::start().await;
    let (ws, owner) = workspace(&env, "deals").await;
    let member = as_role(&env, ws, Role::Member).await;
    let reader = as_role(&env, ws, Role::Reader).await;
    let seller = env
        .person(ws, "seller@example.com", "a long password 1", Role::Member)
        .await;
    let acme = owner.ok("create_account", json!({ "name": "Acme" })).await["account"]["id"].clone();
    let ann = owner
        .ok(
            "create_contact",
            json!({ "first_name": "Ann", "account_id": acme }),
        )
        .await["contact"]["id"]
        .clone();

    // Defaults: the first open stage, USD, no amount.
    let plain = member.ok("create_deal", json!({ "name": "Plain" })).await["deal"].clone();
    assert_eq!(plain["stage"], "lead");
    assert_eq!(plain["currency"], "USD");
    assert_eq!(plain["amount"], Value::Null);
    assert_eq!(plain["stage_changed_at"], plain["created_at"]);
    let big = member
        .ok(
            "create_deal",
            json!({
                "name": "Acme expansion", "account_id": acme, "contact_id": ann, "amount": 1250.5,
                "currency": "eur", "stage": "proposal", "close_date": "2026-06-30", "owner": seller,
            }),
        )
        .await["deal"]
        .clone();
    assert_eq!(big["amount"], "1250.50");
    assert_eq!(big["currency"], "EUR");
    assert_eq!(big["stage"], "proposal");
    assert_eq!(big["close_date"], "2026-06-30");
    assert_eq!(big["owner"], json!(seller));
    assert_eq!(big["contact_id"], ann);
    let exact = member
        .ok(
            "create_deal",
            json!({ "name": "Exact", "amount": "9999999999999999.99", "close_date": "2026-01-15" }),
        )
        .await["deal"]
        .clone();
    assert_eq!(exact["amount"], "9999999999999999.99");

    let got = reader.ok("get_deal", json!({ "id": big["id"] })).await["deal"].clone();
    assert_eq!(got["name"], "Acme expansion");
    assert_eq!(got["stage_history"].as_array().unwrap().len(), 1);

    let search = |args: Value| {
        let reader = &reader;
        async move { names(&reader.ok("search_deals", args).await, "deals", "name") }
    };
    assert_eq!(
        search(json!({})).await,
        ["Acme expansion", "Exact", "Plain"]
    );
    assert_eq!(
        search(json!({ "query": "EXPAN" })).await,
        ["Acme expansion"]
    );
    assert_eq!(search(json!({ "stage": "lead" })).await, ["Exact", "Plain"]);
    assert_eq!(
        search(json!({ "account_id": acme })).await,
        ["Acme expansion"]
    );
    assert_eq!(search(json!({ "owner": seller })).await, ["Acme expansion"]);
    assert_eq!(
        search(json!({ "closing_before": "2026-06-30" })).await,
        ["Exact"]
    );
    assert_eq!(
        search(json!({ "closing_before": "2026-07-01" })).await,
        ["Acme expansion", "Exact"]
    );
    let first = reader.ok("search_deals", json!({ "limit": 2 })).await;
    assert_eq!(first["has_more"], true);
    let rest = reader
        .ok(
            "search_deals",
            json!({ "limit": 2, "cursor": first["next_cursor"] }),
        )
        .await;
    assert_eq!(names(&rest, "deals", "name"), ["Plain"]);
    assert_eq!(rest["has_more"], false);

    env.clock.advance(time::Duration::seconds(5));
    let updated = member
        .ok(
            "update_deal",
            json!({
                "id": big["id"], "amount": "99", "currency": "GBP", "close_date": null, "owner": null,
                "contact_id": null, "name": "Acme renewal",
            }),
        )
        .await["deal"]
        .clone();
    assert_eq!(updated["amount"], "99.00");
    assert_eq!(updated["currency"], "GBP");
    assert_eq!(updated["close_date"], Value::Null);
    assert_eq!(updated["owner"], Value::Null);
    assert_eq!(updated["contact_id"], Value::Null);
    assert_eq!(updated["account_id"], acme, "untouched when absent");
    assert_eq!(updated["stage"], "proposal");
    assert_eq!(updated["stage_changed_at"], big["stage_changed_at"]);
    assert_ne!(updated["updated_at"], big["updated_at"]);
    let cleared = member
        .ok("update_deal", json!({ "id": big["id"], "amount": null }))
        .await;
    assert_eq!(cleared["deal"]["amount"], Value::Null);

    // Refusals.
    for (tool, args) in [
        ("create_deal", json!({ "name": "X" })),
        ("update_deal", json!({ "id": big["id"], "name": "X" })),
        ("delete_deal", json!({ "id": big["id"] })),
        (
            "move_deal_stage",
            json!({ "id": big["id"], "stage": "won" }),
        ),
    ] {
        assert_eq!(reader.err_code(tool, args).await, "forbidden", "{tool}");
    }
    for bad in [
        json!(-1),
        json!(1.005),
        json!("12.345"),
        json!("1e3"),
        json!("10000000000000000"),
        json!(true),
    ] {
        invalid_at(
            &member,
            "create_deal",
            json!({ "name": "X", "amount": bad }),
            "amount",
        )
        .await;
    }
    invalid_at(
        &member,
        "update_deal",
        json!({ "id": big["id"], "amount": "abc" }),
        "amount",
    )
    .await;
    invalid_at(
        &member,
        "create_deal",
        json!({ "name": "X", "currency": "EURO" }),
        "currency",
    )
    .await;
    invalid_at(
        &member,
        "create_deal",
        json!({ "name": "X", "close_date": "2026-02-30" }),
        "close_date",
    )
    .await;
    let message = invalid_at(
        &member,
        "create_deal",
        json!({ "name": "X", "stage": "nowhere" }),
        "stage",
    )
    .await;
    assert!(message.contains("lead, qualified"), "{message}");
    invalid_at(
        &member,
        "create_deal",
        json!({ "name": "X", "owner": Uuid::now_v7() }),
        "owner",
    )
    .await;
    invalid_at(
        &member,
        "create_deal",
        json!({ "name": "X", "account_id": Uuid::now_v7() }),
        "account_id",
    )
    .await;
    invalid_at(
        &member,
        "create_deal",
        json!({ "name": "X", "contact_id": Uuid::now_v7() }),
        "contact_id",
    )
    .await;
    invalid_at(
        &member,
        "update_deal",
        json!({ "id": big["id"], "stage": "won" }),
        "stage",
    )
    .await;
    invalid_at(
        &reader,
        "search_deals",
        json!({ "closing_before": "soon" }),
        "closing_before",
    )
    .await;
    let missing = json!({ "id": Uuid::now_v7() });
    assert_eq!(
        reader.err_code("get_deal", missing.clone()).await,
        "not_found"
    );
    assert_eq!(
        member
            .err_code("update_deal", json!({ "id": missing["id"], "name": "X" }))
            .await,
        "not_found"
    );
    assert_eq!(member.err_code("delete_deal", missing).await, "not_found");
    // Nothing above created a deal.
    assert_eq!(search(json!({})).await.len(), 3);

    member.ok("delete_deal", json!({ "id": plain["id"] })).await;
    assert_eq!(
        reader
            .err_code("get_deal", json!({ "id": plain["id"] }))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn moving_a_deal_records_its_stage_history() {
    let env = TestEnv::start().await;
    let (ws, _) = workspace(&env, "moves").await;
    let key = env.key(ws, Role::Member).await;
    let member = env.client("/api/mcp/crm", &key).await;
    let who = credential_id(&env, &key).await;
    let created_at = env.clock_now();
    let deal = member.ok("create_deal", json!({ "name": "Mover" })).await["deal"].clone();

    env.clock.advance(time::Duration::minutes(10));
    let moved = member
        .ok(
            "move_deal_stage",
            json!({ "id": deal["id"], "stage": "qualified" }),
        )
        .await;
    assert_eq!(moved["changed"], true);
    assert_eq!(moved["from_stage"], "lead");
    assert_eq!(moved["deal"]["stage"], "qualified");
    assert_ne!(moved["deal"]["stage_changed_at"], deal["stage_changed_at"]);
    env.clock.advance(time::Duration::minutes(10));
    member
        .ok(
            "move_deal_stage",
            json!({ "id": deal["id"], "stage": "won" }),
        )
        .await;
    // Moving to the stage it is in changes nothing and records nothing.
    let same = member
        .ok(
            "move_deal_stage",
            json!({ "id": deal["id"], "stage": "won" }),
        )
        .await;
    assert_eq!(same["changed"], false);

    let got = member.ok("get_deal", json!({ "id": deal["id"] })).await["deal"].clone();
    let history = got["stage_history"].as_array().unwrap();
    let moves: Vec<(Value, Value)> = history
        .iter()
        .map(|h| (h["from_stage"].clone(), h["to_stage"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (Value::Null, json!("lead")),
            (json!("lead"), json!("qualified")),
            (json!("qualified"), json!("won")),
        ]
    );
    assert!(
        history.iter().all(|h| h["changed_by"] == who),
        "{history:?}"
    );
    let first_at = time::OffsetDateTime::parse(
        history[0]["changed_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((first_at - created_at).abs() < time::Duration::seconds(1));
    assert_ne!(history[1]["changed_at"], history[2]["changed_at"]);

    // Refusals leave the deal where it is.
    let message = invalid_at(
        &member,
        "move_deal_stage",
        json!({ "id": deal["id"], "stage": "limbo" }),
        "stage",
    )
    .await;
    assert!(message.contains("limbo"), "{message}");
    invalid_at(
        &member,
        "move_deal_stage",
        json!({ "id": deal["id"], "stage": "Bad Name" }),
        "stage",
    )
    .await;
    assert_eq!(
        member
            .err_code(
                "move_deal_stage",
                json!({ "id": Uuid::now_v7(), "stage": "won" })
            )
            .await,
        "not_found"
    );
    let after = member.ok("get_deal", json!({ "id": deal["id"] })).await["deal"].clone();
    assert_eq!(after["stage"], "won");
    assert_eq!(after["stage_history"].as_array().unwrap().len(), 3);

    // The history goes with the deal.
    member.ok("delete_deal", json!({ "id": deal["id"] })).await;
    let su = env.db.connect_superuser().await;
    let left: i64 = su
        .query_one("SELECT count(*) FROM crm.deal_stage_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn pipeline_stages_are_replaced_but_never_while_deals_use_them() {
    let env = TestEnv::start().await;
    let (ws, owner) = workspace(&env, "stages").await;
    let admin = as_role(&env, ws, Role::Admin).await;
    let member = as_role(&env, ws, Role::Member).await;
    let reader = as_role(&env, ws, Role::Reader).await;

    let defaults = reader.ok("list_pipeline_stages", no_args()).await;
    assert_eq!(
        names(&defaults, "stages", "name"),
        [
            "lead",
            "qualified",
            "proposal",
            "negotiation",
            "won",
            "lost"
        ]
    );
    assert_eq!(
        defaults["stages"][2],
        json!({ "name": "proposal", "probability": 50, "kind": "open", "deals": 0 })
    );

    let stage = |name: &str, probability: i64, kind: &str| json!({ "name": name, "probability": probability, "kind": kind });
    let error = member
        .err(
            "set_pipeline_stages",
            json!({ "stages": [stage("a", 1, "open")] }),
        )
        .await;
    assert_eq!(error["code"], "forbidden");
    assert_eq!(error["required_role"], "admin");

    for (stages, path) in [
        (json!([]), "stages"),
        (
            Value::Array(
                (0..31)
                    .map(|i| stage(&format!("s{i}"), 1, "open"))
                    .collect(),
            ),
            "stages",
        ),
        (
            json!([stage("a", 1, "open"), stage("Bad", 1, "open")]),
            "stages[1].name",
        ),
        (
            json!([stage("a", 1, "open"), stage("b", 101, "won")]),
            "stages[1].probability",
        ),
        (json!([stage("a", -1, "open")]), "stages[0].probability"),
        (
            json!([stage("a", 1, "open"), stage("a", 2, "won")]),
            "stages[1].name",
        ),
        (
            json!([stage("a", 1, "open"), stage("b", 2, "maybe")]),
            "stages[1].kind",
        ),
        (
            json!([stage("won", 100, "won"), stage("lost", 0, "lost")]),
            "stages",
        ),
    ] {
        invalid_at(
            &admin,
            "set_pipeline_stages",
            json!({ "stages": stages }),
            path,
        )
        .await;
    }

    // Two deals in proposal, one in lead: neither stage can go.
    for name in ["One", "Two"] {
        member
            .ok("create_deal", json!({ "name": name, "stage": "proposal" }))
            .await;
    }
    member.ok("create_deal", json!({ "name": "Three" })).await;
    let without_proposal = json!({ "stages": [
        stage("lead", 10, "open"), stage("won", 100, "won"), stage("lost", 0, "lost"),
    ] });
    let error = admin
        .err("set_pipeline_stages", without_proposal.clone())
        .await;
    assert_eq!(error["code"], "conflict", "{error}");
    assert_eq!(error["stage"], "proposal");
    assert_eq!(error["deals"], 2);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("proposal") && message.contains('2'),
        "{message}"
    );
    // Nothing changed.
    assert_eq!(
        reader.ok("list_pipeline_stages", no_args()).await["stages"],
        {
            let mut expected = defaults["stages"].clone();
            expected[0]["deals"] = json!(1);
            expected[2]["deals"] = json!(2);
            expected
        }
    );

    // Reorder, reweigh, add one, remove the unused ones; in one go.
    let replaced = owner
        .ok(
            "set_pipeline_stages",
            json!({ "stages": [
                stage("lead", 5, "open"), stage("demo", 30, "open"), stage("proposal", 60, "open"),
                stage("closed_won", 100, "won"), stage("closed_lost", 0, "lost"),
            ] }),
        )
        .await;
    assert_eq!(
        names(&replaced, "stages", "name"),
        ["lead", "demo", "proposal", "closed_won", "closed_lost"]
    );
    let mut removed: Vec<String> = replaced["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    removed.sort();
    assert_eq!(removed, ["lost", "negotiation", "qualified", "won"]);
    assert_eq!(replaced["stages"][0]["probability"], 5);
    assert_eq!(replaced["stages"][2]["deals"], 2);
    assert_eq!(
        reader.ok("list_pipeline_stages", no_args()).await["stages"],
        replaced["stages"]
    );

    // A pipeline whose first open stage is no longer the first stage: new deals start there.
    admin
        .ok(
            "set_pipeline_stages",
            json!({ "stages": [
                stage("closed_won", 100, "won"), stage("demo", 30, "open"), stage("lead", 5, "open"),
                stage("proposal", 60, "open"),
            ] }),
        )
        .await;
    let next = member.ok("create_deal", json!({ "name": "Four" })).await;
    assert_eq!(next["deal"]["stage"], "demo");
    invalid_at(
        &member,
        "move_deal_stage",
        json!({ "id": next["deal"]["id"], "stage": "won" }),
        "stage",
    )
    .await;
}

#[tokio::test]
async fn pipeline_summary_sums_and_weights_per_stage_and_currency() {
    let env = TestEnv::start().await;
    let (ws, crm) = workspace(&env, "summary").await;
    for (name, amount, currency, stage) in [
        ("a", json!("100"), "USD", "lead"),
        ("b", json!(200.5), "USD", "lead"),
        ("c", json!("1000"), "EUR", "lead"),
        ("d", Value::Null, "USD", "lead"),
        ("e", json!("333.33"), "USD", "qualified"),
        ("f", json!("10"), "EUR", "won"),
    ] {
        crm.ok(
            "create_deal",
            json!({ "name": name, "amount": amount, "currency": currency, "stage": stage }),
        )
        .await;
    }
    let reader = as_role(&env, ws, Role::Reader).await;
    let summary = reader.ok("pipeline_summary", no_args()).await;
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(
        stages
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "lead",
            "qualified",
            "proposal",
            "negotiation",
            "won",
            "lost"
        ]
    );
    assert_eq!(
        stages[0],
        json!({
            "stage": "lead", "kind": "open", "probability": 10, "count": 4,
            "amount": { "EUR": "1000.00", "USD": "300.50" },
            "weighted_amount": { "EUR": "100.00", "USD": "30.05" },
        })
    );
    assert_eq!(stages[1]["count"], 1);
    assert_eq!(stages[1]["amount"], json!({ "USD": "333.33" }));
    // 25% of 333.33 is 83.3325, rounded to cents.
    assert_eq!(stages[1]["weighted_amount"], json!({ "USD": "83.33" }));
    assert_eq!(
        stages[2],
        json!({
            "stage": "proposal", "kind": "open", "probability": 50, "count": 0,
            "amount": {}, "weighted_amount": {},
        })
    );
    assert_eq!(stages[4]["amount"], json!({ "EUR": "10.00" }));
    assert_eq!(stages[4]["weighted_amount"], json!({ "EUR": "10.00" }));
}

#[tokio::test]
async fn notes_hang_off_records_and_only_their_author_or_an_admin_deletes_them() {
    let env = TestEnv::start().await;
    let (ws, owner) = workspace(&env, "notes").await;
    let writer_key = env.key(ws, Role::Member).await;
    let writer = env.client("/api/mcp/crm", &writer_key).await;
    let other = as_role(&env, ws, Role::Member).await;
    let admin = as_role(&env, ws, Role::Admin).await;
    let reader = as_role(&env, ws, Role::Reader).await;
    let account =
        owner.ok("create_account", json!({ "name": "Acme" })).await["account"]["id"].clone();
    let contact = owner
        .ok("create_contact", json!({ "first_name": "Ann" }))
        .await["contact"]["id"]
        .clone();
    let deal = owner.ok("create_deal", json!({ "name": "Big" })).await["deal"]["id"].clone();

    let mut on_deal = Vec::new();
    for i in 0..3 {
        env.clock.advance(time::Duration::seconds(1));
        let note = writer
            .ok(
                "add_note",
                json!({ "record_type": "deal", "record_id": deal, "body": format!("call {i}") }),
            )
            .await["note"]
            .clone();
        on_deal.push(note);
    }
    assert_eq!(on_deal[0]["author"], credential_id(&env, &writer_key).await);
    assert_eq!(on_deal[0]["record_type"], "deal");
    writer
        .ok(
            "add_note",
            json!({ "record_type": "account", "record_id": account, "body": "on the account" }),
        )
        .await;
    writer
        .ok(
            "add_note",
            json!({ "record_type": "contact", "record_id": contact, "body": "on the contact" }),
        )
        .await;

    // Newest first, in pages.
    let first = reader
        .ok(
            "list_notes",
            json!({ "record_type": "deal", "record_id": deal, "limit": 2 }),
        )
        .await;
    assert_eq!(names(&first, "notes", "body"), ["call 2", "call 1"]);
    let rest = reader
        .ok(
            "list_notes",
            json!({ "record_type": "deal", "record_id": deal, "limit": 2, "cursor": first["next_cursor"] }),
        )
        .await;
    assert_eq!(names(&rest, "notes", "body"), ["call 0"]);
    assert_eq!(rest["has_more"], false);
    let on_contact = reader
        .ok(
            "list_notes",
            json!({ "record_type": "contact", "record_id": contact }),
        )
        .await;
    assert_eq!(names(&on_contact, "notes", "body"), ["on the contact"]);
    let account_view = reader.ok("get_account", json!({ "id": account })).await;
    assert_eq!(
        account_view["account"]["latest_notes"][0]["body"],
        "on the account"
    );

    // Refusals.
    let error = other
        .err("delete_note", json!({ "id": on_deal[0]["id"] }))
        .await;
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_eq!(
        reader
            .err_code(
                "add_note",
                json!({ "record_type": "deal", "record_id": deal, "body": "x" })
            )
            .await,
        "forbidden"
    );
    assert_eq!(
        reader
            .err_code("delete_note", json!({ "id": on_deal[0]["id"] }))
            .await,
        "forbidden"
    );
    // A record id of the wrong type, or none at all, is not found.
    for (record_type, id) in [("account", deal.clone()), ("deal", json!(Uuid::now_v7()))] {
        let args = json!({ "record_type": record_type, "record_id": id, "body": "x" });
        assert_eq!(writer.err_code("add_note", args).await, "not_found");
        let args = json!({ "record_type": record_type, "record_id": id });
        assert_eq!(reader.err_code("list_notes", args).await, "not_found");
    }
    invalid_at(
        &writer,
        "add_note",
        json!({ "record_type": "ticket", "record_id": deal, "body": "x" }),
        "record_type",
    )
    .await;
    invalid_at(
        &writer,
        "add_note",
        json!({ "record_type": "deal", "record_id": deal, "body": " " }),
        "body",
    )
    .await;
    assert_eq!(
        writer
            .err_code("delete_note", json!({ "id": Uuid::now_v7() }))
            .await,
        "not_found"
    );

    // The author deletes their own; an admin deletes anyone's.
    writer
        .ok("delete_note", json!({ "id": on_deal[0]["id"] }))
        .await;
    admin
        .ok("delete_note", json!({ "id": on_deal[1]["id"] }))
        .await;
    let left = reader
        .ok(
            "list_notes",
            json!({ "record_type": "deal", "record_id": deal }),
        )
        .await;
    assert_eq!(names(&left, "notes", "body"), ["call 2"]);
}

#[tokio::test]
async fn a_person_is_recorded_by_user_id_and_deletes_their_own_notes() {
    let env = TestEnv::start().await;
    let authorized = authorize(&env, Role::Member, &["crm"], "/api/mcp/crm").await;
    let tokens = authorized.tokens(&env).await;
    let person = env.client("/api/mcp/crm", &tokens.access).await;
    let members = env
        .client("/api/mcp", &authorized.owner_key)
        .await
        .ok("list_members", no_args())
        .await;
    let user_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == authorized.email.as_str())
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = format!("user:{user_id}");

    let deal = person.ok("create_deal", json!({ "name": "Theirs" })).await["deal"]["id"].clone();
    person
        .ok(
            "move_deal_stage",
            json!({ "id": deal, "stage": "qualified" }),
        )
        .await;
    let history =
        person.ok("get_deal", json!({ "id": deal })).await["deal"]["stage_history"].clone();
    assert_eq!(history[0]["changed_by"], me.as_str());
    assert_eq!(history[1]["changed_by"], me.as_str());
    let note = person
        .ok(
            "add_note",
            json!({ "record_type": "deal", "record_id": deal, "body": "mine" }),
        )
        .await["note"]
        .clone();
    assert_eq!(note["author"], me.as_str());
    // A member's key is not the person.
    let key = as_role(&env, authorized.workspace, Role::Member).await;
    assert_eq!(
        key.err_code("delete_note", json!({ "id": note["id"] }))
            .await,
        "forbidden"
    );
    person.ok("delete_note", json!({ "id": note["id"] })).await;
}

#[tokio::test]
async fn another_workspaces_records_are_not_found_and_stay_unchanged() {
    let env = TestEnv::start().await;
    let (_, a) = workspace(&env, "A").await;
    let (_, b) = workspace(&env, "B").await;
    let b_account =
        b.ok("create_account", json!({ "name": "B Corp" })).await["account"]["id"].clone();
    let b_contact = b
        .ok(
            "create_contact",
            json!({ "first_name": "Bea", "email": "bea@b.example", "account_id": b_account }),
        )
        .await["contact"]
        .clone();
    let b_deal = b
        .ok(
            "create_deal",
            json!({ "name": "B deal", "amount": "5", "contact_id": b_contact["id"] }),
        )
        .await["deal"]
        .clone();
    let b_note = b
        .ok(
            "add_note",
            json!({ "record_type": "deal", "record_id": b_deal["id"], "body": "B's" }),
        )
        .await["note"]
        .clone();
    let b_deal = b.ok("get_deal", json!({ "id": b_deal["id"] })).await["deal"].clone();

    let contact = json!({ "id": b_contact["id"] });
    let deal = json!({ "id": b_deal["id"] });
    for (tool, args) in [
        ("get_contact", contact.clone()),
        (
            "update_contact",
            json!({ "id": b_contact["id"], "first_name": "Hijacked", "email": "x@a.example" }),
        ),
        ("delete_contact", contact.clone()),
        ("get_deal", deal.clone()),
        ("update_deal", json!({ "id": b_deal["id"], "amount": "1" })),
        (
            "move_deal_stage",
            json!({ "id": b_deal["id"], "stage": "won" }),
        ),
        ("delete_deal", deal.clone()),
        (
            "add_note",
            json!({ "record_type": "deal", "record_id": b_deal["id"], "body": "x" }),
        ),
        (
            "add_note",
            json!({ "record_type": "contact", "record_id": b_contact["id"], "body": "x" }),
        ),
        (
            "list_notes",
            json!({ "record_type": "deal", "record_id": b_deal["id"] }),
        ),
        ("delete_note", json!({ "id": b_note["id"] })),
    ] {
        assert_eq!(a.err_code(tool, args).await, "not_found", "{tool}");
    }
    // As links, B's ids are bad input in A.
    invalid_at(
        &a,
        "create_contact",
        json!({ "first_name": "X", "account_id": b_account }),
        "account_id",
    )
    .await;
    invalid_at(
        &a,
        "create_deal",
        json!({ "name": "X", "contact_id": b_contact["id"] }),
        "contact_id",
    )
    .await;
    // A's searches and summary see none of B's rows; B's email is free in A.
    assert_eq!(
        a.ok("search_contacts", json!({ "query": "bea" })).await["contacts"],
        json!([])
    );
    assert_eq!(a.ok("search_deals", json!({})).await["deals"], json!([]));
    assert_eq!(
        a.ok("pipeline_summary", no_args()).await["stages"][0]["count"],
        0
    );
    a.ok(
        "create_contact",
        json!({ "first_name": "Bea too", "email": "BEA@b.example" }),
    )
    .await;

    // B's records are as they were.
    assert_eq!(b.ok("get_contact", contact).await["contact"], b_contact);
    assert_eq!(b.ok("get_deal", deal).await["deal"], b_deal);
    let notes = b
        .ok(
            "list_notes",
            json!({ "record_type": "deal", "record_id": b_deal["id"] }),
        )
        .await;
    assert_eq!(notes["notes"], json!([b_note]));
}

#[tokio::test]
async fn deleting_records_unlinks_what_points_at_them_and_deletes_their_notes() {
    let env = TestEnv::start().await;
    let (_, crm) = workspace(&env, "cascade").await;
    let account = crm
        .ok("create_account", json!({ "name": "Gone Inc" }))
        .await["account"]["id"]
        .clone();
    let contact = crm
        .ok(
            "create_contact",
            json!({ "first_name": "Ann", "account_id": account }),
        )
        .await["contact"]["id"]
        .clone();
    let deal = crm
        .ok(
            "create_deal",
            json!({ "name": "D", "account_id": account, "contact_id": contact }),
        )
        .await["deal"]["id"]
        .clone();
    for (record_type, id) in [
        ("account", &account),
        ("contact", &contact),
        ("deal", &deal),
    ] {
        crm.ok(
            "add_note",
            json!({ "record_type": record_type, "record_id": id, "body": "n" }),
        )
        .await;
    }
    let su = env.db.connect_superuser().await;
    let notes = |record_type: &'static str| {
        let su = &su;
        async move {
            su.query_one(
                "SELECT count(*) FROM crm.notes WHERE record_type = $1",
                &[&record_type],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };

    crm.ok("delete_account", json!({ "id": account })).await;
    let kept = crm.ok("get_contact", json!({ "id": contact })).await;
    assert_eq!(kept["contact"]["account_id"], Value::Null);
    let kept = crm.ok("get_deal", json!({ "id": deal })).await;
    assert_eq!(kept["deal"]["account_id"], Value::Null);
    assert_eq!(notes("account").await, 0);
    assert_eq!((notes("contact").await, notes("deal").await), (1, 1));

    crm.ok("delete_contact", json!({ "id": contact })).await;
    let kept = crm.ok("get_deal", json!({ "id": deal })).await;
    assert_eq!(kept["deal"]["contact_id"], Value::Null);
    assert_eq!((notes("contact").await, notes("deal").await), (0, 1));

    crm.ok("delete_deal", json!({ "id": deal })).await;
    assert_eq!(notes("deal").await, 0);
}

#[tokio::test]
async fn who_wrote_a_note_is_stamped_by_the_database_not_the_caller() {
    let env = TestEnv::start().await;
    let (ws, owner) = workspace(&env, "Stamps").await;
    let account = owner
        .ok("create_account", json!({ "name": "Stamped" }))
        .await["account"]["id"]
        .clone();
    let alice_key = env.key(ws, Role::Member).await;
    let alice = env.client("/api/mcp/crm", &alice_key).await;
    let note = alice
        .ok(
            "add_note",
            json!({ "record_type": "account", "record_id": account, "body": "mine" }),
        )
        .await["note"]
        .clone();
    let bob_key = env.key(ws, Role::Member).await;
    let bob = env.client("/api/mcp/crm", &bob_key).await;
    // Through the power tools, Bob cannot write in Alice's name…
    let forged = bob
        .ok(
            "insert_record",
            json!({ "table": "notes", "values": {
                "id": Uuid::now_v7(), "record_type": "account", "record_id": account,
                "body": "forged", "author": note["author"], "created_at": "2026-01-01T00:00:00Z" } }),
        )
        .await;
    assert_eq!(
        forged["rows"][0]["author"],
        credential_id(&env, &bob_key).await.as_str(),
        "{forged}"
    );
    // …nor touch hers (only its author or an admin may)…
    assert_eq!(
        bob.err_code(
            "update_record",
            json!({ "table": "notes", "key": { "id": note["id"] }, "values": { "author": "cli" } }),
        )
        .await,
        "forbidden"
    );
    // …and no one, not even the author or the owner, rewrites who wrote it.
    let rewritten = owner
        .ok(
            "update_record",
            json!({ "table": "notes", "key": { "id": note["id"] }, "values": { "author": "cli" } }),
        )
        .await;
    assert_eq!(
        rewritten["rows"][0]["author"], note["author"],
        "{rewritten}"
    );
    assert_eq!(
        note["author"],
        credential_id(&env, &alice_key).await.as_str()
    );
}

/// The power tools reach the notes table too: there, as in the named tools, only a note's
/// author or an admin or owner may change or delete it (a rule in the database, V16), and a
/// note still goes with its record whoever deletes the record.
#[tokio::test]
async fn the_power_tools_cannot_rewrite_or_delete_another_members_note() {
    let env = TestEnv::start().await;
    let (ws, owner) = workspace(&env, "note rules").await;
    let writer = as_role(&env, ws, Role::Member).await;
    let other = as_role(&env, ws, Role::Member).await;
    let admin = as_role(&env, ws, Role::Admin).await;
    let account =
        owner.ok("create_account", json!({ "name": "Acme" })).await["account"]["id"].clone();
    let add = |body: &'static str| {
        let writer = &writer;
        let account = account.clone();
        async move {
            writer
                .ok(
                    "add_note",
                    json!({ "record_type": "account", "record_id": account, "body": body }),
                )
                .await["note"]["id"]
                .clone()
        }
    };
    let note = add("mine").await;
    let key = json!({ "id": note });
    for (tool, args) in [
        (
            "update_record",
            json!({ "table": "notes", "key": key, "values": { "body": "rewritten" } }),
        ),
        ("delete_record", json!({ "table": "notes", "key": key })),
    ] {
        let refused = other.err(tool, args).await;
        assert_eq!(refused["code"], "forbidden", "{tool}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("only a note's author, or an admin or owner"),
            "{tool}: {refused}"
        );
    }
    let listed = owner
        .ok(
            "list_notes",
            json!({ "record_type": "account", "record_id": account }),
        )
        .await;
    assert_eq!(listed["notes"][0]["body"], "mine", "nothing changed");
    // The author may, through the power tools too; so may an admin.
    writer
        .ok(
            "update_record",
            json!({ "table": "notes", "key": key, "values": { "body": "edited" } }),
        )
        .await;
    admin
        .ok("delete_record", json!({ "table": "notes", "key": key }))
        .await;
    // Deleting the record takes its notes, whoever wrote them.
    add("goes with the account").await;
    other.ok("delete_account", json!({ "id": account })).await;
    let left: i64 = env
        .db
        .connect_superuser()
        .await
        .query_one("SELECT count(*) FROM crm.notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
