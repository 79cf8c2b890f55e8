//! Tenant isolation through every CRM tool: workspace A never sees, changes or deletes B's rows.

use serde_json::json;

use crate::harness::{TestEnv, no_args};

#[tokio::test]
async fn seed_example_works_as_written() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("seed").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    let created = crm
        .ok(
            "create_account",
            json!({ "name": "Acme Robotics", "domain": "acme.example" }),
        )
        .await;
    assert_eq!(created["account"]["name"], "Acme Robotics");
    assert_eq!(created["account"]["domain"], "acme.example");
    let found = crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    let accounts = found["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["id"], created["account"]["id"]);
    // Case-insensitive, and matches the domain too.
    let by_domain = crm
        .ok("search_accounts", json!({ "query": "ACME.EXAMPLE" }))
        .await;
    assert_eq!(by_domain["accounts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn no_tool_accepts_a_tenant_id() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("a").await;
    let (b_id, _) = env.workspace("b").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    let error = crm
        .err(
            "create_account",
            json!({ "name": "X", "workspace_id": b_id }),
        )
        .await;
    assert_eq!(error["code"], "invalid_input");
    let concierge = env.client("/api/mcp", &key).await;
    let error = concierge.err("whoami", json!({ "tenant_id": b_id })).await;
    assert_eq!(error["code"], "invalid_input");
}

#[tokio::test]
async fn workspaces_never_see_or_touch_each_other() {
    let env = TestEnv::start().await;
    let (a_id, a_key) = env.workspace("A").await;
    let (b_id, b_key) = env.workspace("B").await;
    let a = env.client("/api/mcp/crm", &a_key).await;
    let b = env.client("/api/mcp/crm", &b_key).await;

    let a_row = a
        .ok(
            "create_account",
            json!({ "name": "Shared Name Inc", "domain": "a.example" }),
        )
        .await["account"]
        .clone();
    let b_row = b
        .ok(
            "create_account",
            json!({ "name": "Shared Name Inc", "domain": "b.example" }),
        )
        .await["account"]
        .clone();
    b.ok("create_account", json!({ "name": "Only In B" })).await;

    // Search: each sees only its own rows, with or without a query.
    for query in [
        json!({}),
        json!({ "query": "Shared" }),
        json!({ "query": "b.example" }),
    ] {
        let seen = a.ok("search_accounts", query).await;
        for row in seen["accounts"].as_array().unwrap() {
            assert_eq!(
                row["domain"], "a.example",
                "A saw a row that is not its own: {row}"
            );
        }
    }
    assert_eq!(
        b.ok("search_accounts", json!({})).await["accounts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // By id: B's row does not exist for A.
    let b_id_arg = json!({ "id": b_row["id"] });
    assert_eq!(
        a.err_code("get_account", b_id_arg.clone()).await,
        "not_found"
    );
    assert_eq!(
        a.err_code(
            "update_account",
            json!({ "id": b_row["id"], "name": "Hijacked", "domain": null })
        )
        .await,
        "not_found"
    );
    assert_eq!(
        a.err_code("delete_account", b_id_arg.clone()).await,
        "not_found"
    );

    // B's row is unchanged afterwards.
    let mut after = b.ok("get_account", b_id_arg).await["account"].clone();
    // get_account adds the account's context (contacts, deals, notes, linked tickets) to the record.
    for extra in [
        "contacts_count",
        "open_deals",
        "latest_notes",
        "linked_tickets",
    ] {
        after.as_object_mut().unwrap().remove(extra);
    }
    assert_eq!(after, b_row);

    // And A's own operations still work on A's row.
    let updated = a
        .ok(
            "update_account",
            json!({ "id": a_row["id"], "name": "Renamed" }),
        )
        .await;
    assert_eq!(updated["account"]["name"], "Renamed");
    a.ok("delete_account", json!({ "id": a_row["id"] })).await;

    // whoami names the credential's own workspace.
    let who_a = env
        .client("/api/mcp", &a_key)
        .await
        .ok("whoami", no_args())
        .await;
    assert_eq!(who_a["workspace"]["id"], json!(a_id));
    let who_b = env
        .client("/api/mcp", &b_key)
        .await
        .ok("whoami", no_args())
        .await;
    assert_eq!(who_b["workspace"]["id"], json!(b_id));

    // The superuser confirms B still has both rows and A has none.
    let su = env.db.connect_superuser().await;
    let counts: Vec<(uuid::Uuid, i64)> = su
        .query(
            "SELECT workspace_id, count(*) FROM crm.accounts GROUP BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counts, vec![(b_id, 2)]);
}

#[tokio::test]
async fn search_pages_with_an_opaque_cursor() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("paging").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    for i in 0..7 {
        crm.ok(
            "create_account",
            json!({ "name": format!("Company {i:02}") }),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor = serde_json::Value::Null;
    loop {
        let mut args = json!({ "limit": 3 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = crm.ok("search_accounts", args).await;
        for row in page["accounts"].as_array().unwrap() {
            seen.push(row["name"].as_str().unwrap().to_owned());
        }
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            assert_eq!(page["has_more"], false);
            break;
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("Company {i:02}")).collect();
    assert_eq!(seen, expected);

    assert_eq!(
        crm.err_code("search_accounts", json!({ "limit": 201 }))
            .await,
        "invalid_input"
    );
    assert_eq!(
        crm.err_code("search_accounts", json!({ "limit": 0 })).await,
        "invalid_input"
    );
    let bad_cursor = crm
        .err("search_accounts", json!({ "cursor": "not-a-cursor" }))
        .await;
    assert_eq!(bad_cursor["code"], "invalid_input");
    assert_eq!(bad_cursor["path"], "cursor");
    // LIKE metacharacters are matched literally.
    assert_eq!(
        crm.ok("search_accounts", json!({ "query": "%" })).await["accounts"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn bad_input_is_invalid_input_with_a_path() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("input").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    let e = crm.err("get_account", json!({ "id": "not-a-uuid" })).await;
    assert_eq!(e["code"], "invalid_input");
    assert_eq!(e["path"], "id");
    let e = crm.err("create_account", json!({ "name": "" })).await;
    assert_eq!(e["code"], "invalid_input");
    let e = crm
        .err("create_account", json!({ "name": "x".repeat(501) }))
        .await;
    assert_eq!(e["code"], "invalid_input");
    let e = crm.err("create_account", json!({})).await;
    assert_eq!(e["code"], "invalid_input");
    let e = crm
        .err(
            "create_account",
            json!({ "name": "x", "custom": { "tier": "gold" } }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input");
    assert_eq!(e["path"], "custom.tier", "{e}");
    let e = crm
        .err(
            "update_account",
            json!({ "id": uuid::Uuid::new_v4(), "name": "Nobody's" }),
        )
        .await;
    assert_eq!(e["code"], "not_found");
}
