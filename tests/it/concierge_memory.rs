//! Workspace memory and cross-product links through the concierge tools: isolation between
//! workspaces, role refusals, bounds, and links shown where they matter (never to customers).

use hdls::db::RUNTIME_ROLE;
use hdls::identity::Role;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

use crate::harness::{TestEnv, assert_refused};

const CONCIERGE: &str = "/api/mcp";

#[tokio::test]
async fn memory_is_shared_by_the_team_ranked_bounded_and_kept_per_workspace() {
    let env = TestEnv::start().await;
    let (ws, owner) = env.workspace("Memory").await;
    let member_a = env
        .client(CONCIERGE, &env.key(ws, Role::Member).await)
        .await;
    let member_b = env
        .client(CONCIERGE, &env.key(ws, Role::Member).await)
        .await;
    let reader = env
        .client(CONCIERGE, &env.key(ws, Role::Reader).await)
        .await;
    let admin = env.client(CONCIERGE, &env.key(ws, Role::Admin).await).await;

    let account = env
        .client("/api/mcp/crm", &owner)
        .await
        .ok("create_account", json!({ "name": "Acme Robotics" }))
        .await;
    let acme = account["account"]["id"].clone();
    let fiscal = member_a
        .ok(
            "remember",
            json!({ "content": "Our fiscal year starts in February.", "tags": ["finance"] }),
        )
        .await;
    member_a
        .ok(
            "remember",
            json!({ "content": "Acme renews every March; talk to their CFO first.",
                    "about": { "product": "crm", "entity": "account", "id": acme } }),
        )
        .await;
    for i in 0..3 {
        member_b
            .ok("remember", json!({ "content": format!("filler note {i}") }))
            .await;
    }

    // Ranked full text, by anyone in the team, readers included.
    let found = reader.ok("recall", json!({ "query": "fiscal year" })).await;
    assert_eq!(found["memories"][0]["id"], fiscal["memory"]["id"]);
    assert_eq!(found["memories"].as_array().unwrap().len(), 1);
    let renewing = reader
        .ok("recall", json!({ "query": "renewal March" }))
        .await;
    assert!(
        renewing["memories"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Acme renews")
    );
    // Newest first without a query, paged by cursor.
    let first = reader.ok("recall", json!({ "limit": 2 })).await;
    assert_eq!(first["memories"][0]["content"], "filler note 2");
    assert_eq!(first["has_more"], true);
    let second = reader
        .ok(
            "recall",
            json!({ "limit": 10, "cursor": first["next_cursor"] }),
        )
        .await;
    assert_eq!(second["memories"].as_array().unwrap().len(), 3);
    assert_eq!(second["has_more"], false);
    // By tag and by the record it is about.
    let tagged = reader.ok("recall", json!({ "tag": "finance" })).await;
    assert_eq!(tagged["memories"].as_array().unwrap().len(), 1);
    let about = reader
        .ok(
            "recall",
            json!({ "about": { "product": "crm", "entity": "account", "id": acme } }),
        )
        .await;
    assert!(
        about["memories"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Acme renews")
    );

    // Roles: a reader cannot remember; only the author or an admin forgets.
    let refused = reader.err("remember", json!({ "content": "x" })).await;
    assert_eq!(refused["code"], "forbidden");
    let id = fiscal["memory"]["id"].clone();
    let refused = member_b.err("forget", json!({ "id": id })).await;
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(refused["required_role"], "admin");
    member_a.ok("forget", json!({ "id": id })).await;
    assert_eq!(
        member_a.err_code("forget", json!({ "id": id })).await,
        "not_found"
    );
    let filler = first["memories"][0]["id"].clone();
    admin.ok("forget", json!({ "id": filler })).await;

    // Bounds: an entry's size, a record that does not exist, and a full workspace.
    let long = member_a
        .err("remember", json!({ "content": "x".repeat(4001) }))
        .await;
    assert_eq!(
        (long["code"].as_str(), long["path"].as_str()),
        (Some("invalid_input"), Some("content"))
    );
    let missing = member_a
        .err(
            "remember",
            json!({ "content": "about nothing",
                    "about": { "product": "crm", "entity": "account", "id": uuid::Uuid::now_v7() } }),
        )
        .await;
    assert_eq!(missing["code"], "not_found");
    env.db
        .connect_superuser()
        .await
        .batch_execute(&format!(
            "INSERT INTO hdls.memories (workspace_id, id, content, author, created_at)
             SELECT '{ws}', gen_random_uuid(), 'bulk ' || n, 'test', now() FROM generate_series(1, 1000) n"
        ))
        .await
        .unwrap();
    let full = member_a
        .err("remember", json!({ "content": "one more" }))
        .await;
    assert_eq!(full["code"], "conflict");

    // Another workspace sees none of it and cannot forget it.
    let (_, other_owner) = env.workspace("Elsewhere").await;
    let other = env.client(CONCIERGE, &other_owner).await;
    let theirs = other.ok("recall", json!({ "query": "Acme" })).await;
    assert!(theirs["memories"].as_array().unwrap().is_empty());
    let acme_note = about["memories"][0]["id"].clone();
    assert_eq!(
        other.err_code("forget", json!({ "id": acme_note })).await,
        "not_found"
    );
}

async fn support_and_crm(env: &TestEnv, name: &str) -> (uuid::Uuid, String) {
    let (ws, owner) = env.workspace(name).await;
    env.client(CONCIERGE, &owner)
        .await
        .ok("install_product", json!({ "product": "support" }))
        .await;
    (ws, owner)
}

fn labels(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn links_tie_a_ticket_to_crm_records_and_show_on_both_ends() {
    let env = TestEnv::start().await;
    let (ws, owner) = support_and_crm(&env, "Linked").await;
    let crm = env.client("/api/mcp/crm", &owner).await;
    let desk = env.client("/api/mcp/support", &owner).await;
    let concierge = env.client(CONCIERGE, &owner).await;
    let account = crm
        .ok("create_account", json!({ "name": "Acme Robotics" }))
        .await["account"]["id"]
        .clone();
    let contact = crm
        .ok(
            "create_contact",
            json!({ "first_name": "Ada", "last_name": "Lovelace" }),
        )
        .await["contact"]["id"]
        .clone();
    let ticket = desk
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "Robot arm stuck", "body": "Since Monday.",
                                "requester_email": "ada@acme.example" } }),
        )
        .await;
    let ticket_id = ticket["ticket"]["id"].clone();
    let requester = ticket["ticket"]["requester"]["id"].clone();

    let ticket_ref = json!({ "product": "support", "entity": "ticket", "id": ticket_id });
    let linked = concierge
        .ok(
            "link_records",
            json!({ "from": ticket_ref, "to": { "product": "crm", "entity": "account", "id": account },
                    "relation": "about_account" }),
        )
        .await;
    assert_eq!(linked["already_linked"], false);
    concierge
        .ok(
            "link_records",
            json!({ "from": { "product": "crm", "entity": "contact", "id": contact }, "to": ticket_ref }),
        )
        .await;
    let again = concierge
        .ok(
            "link_records",
            json!({ "from": ticket_ref, "to": { "product": "crm", "entity": "account", "id": account },
                    "relation": "about_account" }),
        )
        .await;
    assert_eq!(again["already_linked"], true);
    assert_eq!(again["link"]["link_id"], linked["link"]["link_id"]);

    // Where it matters: the agent's ticket shows its CRM records, the account its tickets.
    let shown = desk.ok("get_ticket", json!({ "id": ticket_id })).await;
    let mut crm_labels = labels(&shown["linked_crm"]);
    crm_labels.sort();
    assert_eq!(crm_labels, ["Acme Robotics", "Ada Lovelace"]);
    let acct = crm.ok("get_account", json!({ "id": account })).await;
    assert_eq!(
        labels(&acct["account"]["linked_tickets"]),
        ["Robot arm stuck"]
    );
    let listed = concierge.ok("list_links", ticket_ref.clone()).await;
    assert_eq!(listed["links"].as_array().unwrap().len(), 2);

    // Refusals: a missing end, an unknown entity, a reader, a credential without the CRM.
    let missing = concierge
        .err(
            "link_records",
            json!({ "from": ticket_ref, "to": { "product": "crm", "entity": "deal", "id": uuid::Uuid::now_v7() } }),
        )
        .await;
    assert_eq!(missing["code"], "not_found");
    let bad = concierge
        .err(
            "link_records",
            json!({ "from": ticket_ref, "to": { "product": "crm", "entity": "pipeline", "id": account } }),
        )
        .await;
    assert_eq!(
        (bad["code"].as_str(), bad["path"].as_str()),
        (Some("invalid_input"), Some("to.entity"))
    );
    let reader = env
        .client(CONCIERGE, &env.key(ws, Role::Reader).await)
        .await;
    assert_eq!(
        reader
            .err_code(
                "link_records",
                json!({ "from": ticket_ref, "to": ticket_ref })
            )
            .await,
        "forbidden"
    );
    assert_eq!(
        reader.ok("list_links", ticket_ref.clone()).await["links"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let support_only = concierge
        .ok(
            "mint_api_key",
            json!({ "role": "member", "products": ["support"] }),
        )
        .await;
    let narrow = env
        .client(CONCIERGE, support_only["key"].as_str().unwrap())
        .await;
    let unseen = narrow
        .err(
            "link_records",
            json!({ "from": ticket_ref, "to": { "product": "crm", "entity": "contact", "id": contact } }),
        )
        .await;
    assert_eq!(unseen["code"], "not_found");
    assert!(
        narrow.ok("list_links", ticket_ref.clone()).await["links"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Customers never see links: their get_ticket has none, and the tables refuse them.
    let key = desk
        .ok("mint_customer_key", json!({ "requester_id": requester }))
        .await;
    let customer = env
        .client("/api/mcp/support", key["key"].as_str().unwrap())
        .await;
    let theirs = customer.ok("get_ticket", json!({ "id": ticket_id })).await;
    assert!(theirs.get("linked_crm").is_none(), "{theirs}");
    assert!(!theirs.to_string().contains("Acme Robotics"));
    let rt = env.db.connect_as(RUNTIME_ROLE).await;
    rt.batch_execute(&format!(
        "SET hdls.workspace_id = '{ws}'; SET hdls.persona = 'customer'; SET hdls.principal_id = '{}'",
        requester.as_str().unwrap()
    ))
    .await
    .unwrap();
    let seen: i64 = rt
        .query_one(
            "SELECT (SELECT count(*) FROM hdls.links) + (SELECT count(*) FROM hdls.memories)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    assert_refused(
        rt.batch_execute(
            "INSERT INTO hdls.memories (id, content, author, created_at) VALUES (gen_random_uuid(), 'x', 'c', now())",
        )
        .await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "row-level security",
        "a customer writing memory",
    );

    // Another workspace cannot see or remove them.
    let (_, other_owner) = env.workspace("Elsewhere").await;
    let other = env.client(CONCIERGE, &other_owner).await;
    assert_eq!(
        other.err_code("list_links", ticket_ref.clone()).await,
        "not_found"
    );
    assert_eq!(
        other
            .err_code("unlink_records", json!({ "id": linked["link"]["link_id"] }))
            .await,
        "not_found"
    );

    // A deleted end disappears from every answer; unlinking removes the other.
    crm.ok("delete_account", json!({ "id": account })).await;
    let shown = desk.ok("get_ticket", json!({ "id": ticket_id })).await;
    assert_eq!(labels(&shown["linked_crm"]), ["Ada Lovelace"]);
    let remaining = concierge.ok("list_links", ticket_ref.clone()).await;
    assert_eq!(remaining["links"].as_array().unwrap().len(), 1);
    let contact_link = remaining["links"][0]["link_id"].clone();
    concierge
        .ok("unlink_records", json!({ "id": contact_link }))
        .await;
    assert!(
        concierge.ok("list_links", ticket_ref).await["links"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
