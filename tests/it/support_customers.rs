//! Support's customer persona through its tools: a customer key sees exactly the five
//! customer tools on /api/mcp/support and nothing anywhere else, only its own requester's
//! tickets (customer A never sees B's), never an internal note; it cannot forge a requester
//! or author; it rates a resolved ticket once; it stops when its requester is disabled or its
//! minter is revoked; `mint_customer_key` is bounded like every minted credential.

use hdls::identity::{Endpoint, Persona, Role};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv, no_args, on_citus, statements};

const SUPPORT: &str = "/api/mcp/support";
const CUSTOMER_TOOLS: [&str; 5] = [
    "create_ticket",
    "get_ticket",
    "list_my_tickets",
    "rate_ticket",
    "reply",
];

/// A workspace with support installed, an admin key, and requesters made by `requester`.
struct Desk {
    env: TestEnv,
    ws: Uuid,
    owner: String,
    admin: Mcp,
}

async fn desk_with(env: TestEnv) -> Desk {
    let (ws, owner) = env.workspace("Helpdesk").await;
    env.client("/api/mcp", &owner)
        .await
        .ok("install_product", json!({ "product": "support" }))
        .await;
    let admin_key = env.key(ws, Role::Admin).await;
    let admin = env.client(SUPPORT, &admin_key).await;
    Desk {
        env,
        ws,
        owner,
        admin,
    }
}

async fn desk() -> Desk {
    desk_with(TestEnv::start().await).await
}

impl Desk {
    /// Runs statements as the database superuser acting as an agent of this workspace (the
    /// agent desk's tools are another module's; this is what they do in SQL).
    async fn as_agent(&self, sql: &str) {
        let su = self.env.db.connect_superuser().await;
        // One statement per message, the settings forwarded (as the server's Scope does).
        let forward = if on_citus() {
            "SET LOCAL citus.propagate_set_commands = 'local';"
        } else {
            ""
        };
        statements(
            &su,
            &format!(
                "BEGIN; {forward} SET LOCAL hdls.workspace_id = '{}'; SET LOCAL hdls.persona = 'agent'; {sql}; COMMIT;",
                self.ws
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A new requester of this workspace.
    async fn requester(&self, email: &str) -> Uuid {
        let id = Uuid::now_v7();
        self.as_agent(&format!(
            "INSERT INTO support.requesters (id, email, name, created_at, updated_at)
             VALUES ('{id}', '{email}', 'Customer {email}', now(), now())"
        ))
        .await;
        id
    }

    /// A customer key for `requester`, minted by the admin key.
    async fn customer_key(&self, requester: Uuid) -> String {
        let minted = self
            .admin
            .ok("mint_customer_key", json!({ "requester_id": requester }))
            .await;
        assert_eq!(minted["persona"], "customer");
        assert_eq!(minted["role"], "reader");
        assert_eq!(minted["products"], json!(["support"]));
        assert_eq!(minted["requester_id"], json!(requester));
        minted["key"].as_str().unwrap().to_owned()
    }

    /// A requester and a client on /api/mcp/support with their customer key.
    async fn customer(&self, email: &str) -> (Uuid, Mcp) {
        let requester = self.requester(email).await;
        let key = self.customer_key(requester).await;
        (requester, self.env.client(SUPPORT, &key).await)
    }

    async fn count(&self, sql: &str) -> i64 {
        self.env
            .db
            .connect_superuser()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    async fn entries_on(&self, ticket: &str) -> i64 {
        self.count(&format!(
            "SELECT count(*) FROM support.ticket_entries WHERE ticket_id = '{ticket}'"
        ))
        .await
    }

    async fn set_status(&self, ticket: &str, status: &str) {
        self.as_agent(&format!(
            "UPDATE support.tickets SET status = '{status}' WHERE id = '{ticket}'"
        ))
        .await;
    }
}

async fn open_ticket(customer: &Mcp, subject: &str) -> String {
    let created = customer
        .ok(
            "create_ticket",
            json!({ "values": { "subject": subject, "body": format!("About {subject}.") } }),
        )
        .await;
    created["ticket"]["id"].as_str().unwrap().to_owned()
}

/// The properties of a tool's input schema, following a `$ref` into `$defs`.
fn properties(schema: &Map<String, Value>, at: &Value) -> Vec<String> {
    let at = match at.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            &schema["$defs"][name]
        }
        None => at,
    };
    let mut names: Vec<String> = at["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_customer_lists_exactly_the_five_customer_tools_with_their_narrow_schemas() {
    let d = desk().await;
    let (_, alice) = d.customer("alice@example.com").await;
    assert_eq!(alice.tool_names().await, CUSTOMER_TOOLS);
    let tools = alice.service.list_all_tools().await.unwrap();
    let schema = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .input_schema
            .as_ref()
            .clone()
    };
    let reply = schema("reply");
    assert_eq!(
        properties(&reply, &Value::Object(reply.clone())),
        ["body", "ticket_id"]
    );
    let create = schema("create_ticket");
    assert_eq!(
        properties(&create, &Value::Object(create.clone())),
        ["values"]
    );
    assert_eq!(
        properties(&create, &create["properties"]["values"]),
        ["body", "subject"]
    );
    let rate = schema("rate_ticket");
    assert_eq!(
        properties(&rate, &Value::Object(rate.clone())),
        ["comment", "id", "score"]
    );
    // The agent, on the same endpoint, sees neither list_my_tickets nor rate_ticket.
    let agent_names = d.admin.tool_names().await;
    assert!(!agent_names.contains(&"list_my_tickets".to_owned()));
    assert!(!agent_names.contains(&"rate_ticket".to_owned()));
    assert!(agent_names.contains(&"mint_customer_key".to_owned()));
}

#[tokio::test]
async fn every_other_tool_anywhere_is_hidden_from_and_refused_to_a_customer() {
    // Hundreds of refused calls: the per-minute limit is another test's subject.
    let env = TestEnv::start_with_app(|mut app| {
        app.enforce_limits = false;
        app
    })
    .await;
    let d = desk_with(env).await;
    d.env
        .client("/api/mcp", &d.owner)
        .await
        .ok("install_product", json!({ "product": "contacts" }))
        .await;
    let requester = d.requester("alice@example.com").await;
    let key = d.customer_key(requester).await;
    for endpoint in Endpoint::ALL {
        let client = d.env.client(endpoint.path(), &key).await;
        let names = client.tool_names().await;
        if endpoint == Endpoint::Product(hdls::identity::Product::Support) {
            assert_eq!(names, CUSTOMER_TOOLS);
        } else {
            assert!(names.is_empty(), "{}: {names:?}", endpoint.path());
        }
        // Every tool of the registry that is not a customer tool: agent named tools, power
        // tools, custom-field tools, the concierge, key minting.
        let mut refused = 0;
        for tool in d.env.app.registry.on(endpoint) {
            if tool.personas.contains(&Persona::Customer) {
                continue;
            }
            let name = tool.name;
            // A name the customer has too (create_ticket, get_ticket, reply) reaches the
            // customer's tool; the agent's is unreachable by construction.
            if CUSTOMER_TOOLS.contains(&name) {
                continue;
            }
            let error = client.err(name, no_args()).await;
            assert_eq!(
                error["code"],
                "forbidden",
                "{} {name}: {error}",
                endpoint.path()
            );
            refused += 1;
        }
        assert!(refused > 0, "{}", endpoint.path());
    }
}

#[tokio::test]
async fn customer_a_never_sees_or_touches_customer_b_tickets() {
    let d = desk().await;
    let (_, alice) = d.customer("alice@example.com").await;
    let (_, bob) = d.customer("bob@example.com").await;
    let a1 = open_ticket(&alice, "Login broken on mobile").await;
    let a2 = open_ticket(&alice, "Invoice missing").await;
    let b1 = open_ticket(&bob, "Bob's private problem").await;

    // list: only one's own, newest activity first.
    let listed = alice.ok("list_my_tickets", no_args()).await;
    let ids: Vec<&str> = listed["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a2.as_str(), a1.as_str()]);
    let bobs = bob.ok("list_my_tickets", no_args()).await;
    assert_eq!(bobs["tickets"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["tickets"][0]["id"], b1.as_str());
    // Paging.
    let first = alice.ok("list_my_tickets", json!({ "limit": 1 })).await;
    assert_eq!(first["has_more"], true);
    let second = alice
        .ok(
            "list_my_tickets",
            json!({ "limit": 1, "cursor": first["next_cursor"] }),
        )
        .await;
    assert_eq!(second["tickets"][0]["id"], a1.as_str());
    assert_eq!(second["has_more"], false);

    // get: B's ticket is answered exactly like one that does not exist.
    let hidden = alice.err("get_ticket", json!({ "id": b1 })).await;
    assert_eq!(hidden["code"], "not_found");
    let missing_id = Uuid::now_v7();
    let missing = alice.err("get_ticket", json!({ "id": missing_id })).await;
    assert_eq!(
        hidden["message"].as_str().unwrap().replace(&b1, "?"),
        missing["message"]
            .as_str()
            .unwrap()
            .replace(&missing_id.to_string(), "?")
    );

    // reply: not_found, and nothing written.
    assert_eq!(d.entries_on(&b1).await, 1);
    let refused = alice
        .err(
            "reply",
            json!({ "ticket_id": b1, "body": "I can write here?" }),
        )
        .await;
    assert_eq!(refused["code"], "not_found");
    assert_eq!(d.entries_on(&b1).await, 1);

    // rate: not_found even once B's ticket is resolved; B's rating slot stays empty.
    d.set_status(&b1, "resolved").await;
    assert_eq!(
        alice
            .err_code("rate_ticket", json!({ "id": b1, "score": 1 }))
            .await,
        "not_found"
    );
    assert_eq!(
        d.count(&format!(
            "SELECT count(*) FROM support.tickets WHERE id = '{b1}' AND csat_score IS NOT NULL"
        ))
        .await,
        0
    );
    // B still has their own ticket intact.
    let own = bob.ok("get_ticket", json!({ "id": b1 })).await;
    assert_eq!(own["thread"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_customer_cannot_forge_a_requester_an_author_or_an_internal_note() {
    let d = desk().await;
    let (alice_id, alice) = d.customer("alice@example.com").await;
    let (bob_id, _bob) = d.customer("bob@example.com").await;
    for args in [
        json!({ "values": { "subject": "x", "body": "y", "requester_id": bob_id } }),
        json!({ "values": { "subject": "x", "body": "y" }, "requester_id": bob_id }),
        json!({ "values": { "subject": "x", "body": "y", "priority": "urgent" } }),
        json!({ "values": { "subject": "x", "body": "y", "requester_email": "bob@example.com" } }),
    ] {
        let error = alice.err("create_ticket", args.clone()).await;
        assert_eq!(error["code"], "invalid_input", "{args}: {error}");
    }
    assert_eq!(d.count("SELECT count(*) FROM support.tickets").await, 0);

    let ticket = open_ticket(&alice, "Mine").await;
    for args in [
        json!({ "ticket_id": ticket, "body": "secret", "internal": true }),
        json!({ "ticket_id": ticket, "body": "hi", "author": "user:someone" }),
        json!({ "ticket_id": ticket, "body": "hi", "requester_id": bob_id }),
    ] {
        let error = alice.err("reply", args.clone()).await;
        assert_eq!(error["code"], "invalid_input", "{args}: {error}");
    }
    assert_eq!(d.entries_on(&ticket).await, 1);
    // The ticket and its opening entry are stamped with the credential's requester.
    assert_eq!(
        d.count(&format!(
            "SELECT count(*) FROM support.tickets t JOIN support.ticket_entries e
               ON e.workspace_id = t.workspace_id AND e.ticket_id = t.id
             WHERE t.id = '{ticket}' AND t.requester_id = '{alice_id}' AND e.requester_id = '{alice_id}'
               AND e.author_kind = 'customer' AND e.author = 'requester:{alice_id}' AND e.kind = 'opening'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn internal_notes_never_reach_the_customer_and_replies_reopen() {
    let d = desk().await;
    let (_, alice) = d.customer("alice@example.com").await;
    let ticket = open_ticket(&alice, "Login broken on mobile").await;
    d.as_agent(&format!(
        "INSERT INTO support.ticket_entries (id, ticket_id, kind, body, author)
         VALUES ('{}', '{ticket}', 'internal_note', 'Customer is on the legacy plan', 'key_agent'),
                ('{}', '{ticket}', 'reply', 'Could you try the latest build?', 'key_agent')",
        Uuid::now_v7(),
        Uuid::now_v7()
    ))
    .await;
    d.set_status(&ticket, "pending").await;
    let read = alice.ok("get_ticket", json!({ "id": ticket })).await;
    let thread = read["thread"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = thread
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["from"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("opening", "customer"), ("reply", "agent")]);
    assert!(!read.to_string().contains("legacy plan"));
    assert_eq!(read["ticket"]["status"], "pending");
    assert_eq!(read["ticket"]["rating"], Value::Null);

    // A reply reopens a pending ticket, and comes back with the ticket as it is now.
    let replied = alice
        .ok(
            "reply",
            json!({ "ticket_id": ticket, "body": "Still happening on the latest build." }),
        )
        .await;
    assert_eq!(replied["entry"]["kind"], "reply");
    assert_eq!(replied["entry"]["from"], "customer");
    assert_eq!(replied["ticket"]["status"], "open");
    let read = alice.ok("get_ticket", json!({ "id": ticket })).await;
    assert_eq!(read["thread"].as_array().unwrap().len(), 3);
    assert!(!read.to_string().contains("legacy plan"));

    // A closed ticket takes no reply: the customer is told to open a new one.
    d.set_status(&ticket, "closed").await;
    let closed = alice
        .err("reply", json!({ "ticket_id": ticket, "body": "Hello?" }))
        .await;
    assert_eq!(closed["code"], "conflict");
    assert_eq!(closed["reason"], "closed");
    assert!(
        closed["message"]
            .as_str()
            .unwrap()
            .contains("open a new ticket")
    );
    assert_eq!(d.entries_on(&ticket).await, 4);
    // Status filter.
    let closed_list = alice
        .ok("list_my_tickets", json!({ "status": "closed" }))
        .await;
    assert_eq!(closed_list["tickets"].as_array().unwrap().len(), 1);
    let open_list = alice
        .ok("list_my_tickets", json!({ "status": "open" }))
        .await;
    assert_eq!(open_list["tickets"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_resolved_ticket_is_rated_once() {
    let d = desk().await;
    let (_, alice) = d.customer("alice@example.com").await;
    let ticket = open_ticket(&alice, "Export fails").await;
    let early = alice
        .err("rate_ticket", json!({ "id": ticket, "score": 5 }))
        .await;
    assert_eq!(early["code"], "conflict");
    assert_eq!(early["reason"], "not_resolved");
    d.set_status(&ticket, "resolved").await;
    for score in [0, 6, -1] {
        let error = alice
            .err("rate_ticket", json!({ "id": ticket, "score": score }))
            .await;
        assert_eq!(error["code"], "invalid_input", "{score}");
        assert_eq!(error["path"], "score");
    }
    let rated = alice
        .ok(
            "rate_ticket",
            json!({ "id": ticket, "score": 4, "comment": "Quick and kind." }),
        )
        .await;
    assert_eq!(rated["ticket"]["rating"]["score"], 4);
    assert_eq!(rated["ticket"]["rating"]["comment"], "Quick and kind.");
    assert!(rated["ticket"]["rating"]["rated_at"].is_string());
    assert!(rated["ticket"]["resolved_at"].is_string());
    let again = alice
        .err("rate_ticket", json!({ "id": ticket, "score": 1 }))
        .await;
    assert_eq!(again["code"], "conflict");
    assert_eq!(again["reason"], "already_rated");
    assert_eq!(
        d.count(&format!(
            "SELECT csat_score::bigint FROM support.tickets WHERE id = '{ticket}'"
        ))
        .await,
        4
    );
}

#[tokio::test]
async fn a_disabled_requesters_key_stops_on_the_next_request() {
    let d = desk().await;
    let alice_id = d.requester("alice@example.com").await;
    let key = d.customer_key(alice_id).await;
    let alice = d.env.client(SUPPORT, &key).await;
    open_ticket(&alice, "Works").await;
    d.as_agent(&format!(
        "UPDATE support.requesters SET disabled_at = now() WHERE id = '{alice_id}'"
    ))
    .await;
    assert!(Mcp::try_connect(&d.env.url(SUPPORT), &key).await.is_err());
    let raw = reqwest::Client::new()
        .post(d.env.url(SUPPORT))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), reqwest::StatusCode::UNAUTHORIZED);
    // No new key for a disabled requester either.
    let refused = d
        .admin
        .err("mint_customer_key", json!({ "requester_id": alice_id }))
        .await;
    assert_eq!(refused["code"], "conflict");
    // Enabled again, the same key works: it is checked on every request.
    d.as_agent(&format!(
        "UPDATE support.requesters SET disabled_at = NULL WHERE id = '{alice_id}'"
    ))
    .await;
    let again = d.env.client(SUPPORT, &key).await;
    assert_eq!(
        again.ok("list_my_tickets", no_args()).await["tickets"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn customer_keys_are_listed_revocable_and_die_with_their_minter() {
    let d = desk().await;
    let alice_id = d.requester("alice@example.com").await;
    let concierge = d.env.client("/api/mcp", &d.owner).await;
    let minter = concierge
        .ok(
            "mint_api_key",
            json!({ "role": "admin", "products": ["support"], "label": "portal backend" }),
        )
        .await;
    let minter_key = minter["key"].as_str().unwrap();
    let backend = d.env.client(SUPPORT, minter_key).await;
    let minted = backend
        .ok(
            "mint_customer_key",
            json!({ "requester_id": alice_id, "label": "alice's session" }),
        )
        .await;
    let customer_key = minted["key"].as_str().unwrap();
    assert_eq!(minted["minted_by"], minter["key_id"]);
    let alice = d.env.client(SUPPORT, customer_key).await;
    open_ticket(&alice, "Hello").await;

    let listed = concierge.ok("list_api_keys", no_args()).await;
    let row = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == minted["key_id"])
        .unwrap()
        .clone();
    assert_eq!(row["persona"], "customer");
    assert_eq!(row["requester_id"], json!(alice_id));
    assert_eq!(row["role"], "reader");
    assert_eq!(row["products"], json!(["support"]));
    assert_eq!(row["status"], "active");
    let audited = concierge
        .ok("list_audit_events", json!({ "action": "api_key.mint" }))
        .await;
    assert!(
        audited["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"].as_str().unwrap().contains(&format!(
                "{} role=reader persona=customer requester_id={alice_id}",
                minted["key_id"].as_str().unwrap()
            ))),
        "{audited}"
    );

    // Revoking the minter revokes the customer key.
    concierge
        .ok("revoke_api_key", json!({ "key_id": minter["key_id"] }))
        .await;
    assert!(
        Mcp::try_connect(&d.env.url(SUPPORT), customer_key)
            .await
            .is_err()
    );
    let listed = concierge.ok("list_api_keys", no_args()).await;
    let row = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == minted["key_id"])
        .unwrap()
        .clone();
    assert_eq!(row["status"], "revoked");
    assert!(
        row["revoked_reason"]
            .as_str()
            .unwrap()
            .starts_with("minter revoked")
    );

    // And revoke_api_key revokes one customer key on its own.
    let other = d.customer_key(alice_id).await;
    let other_id = format!("key_{}", hdls::auth::api_key::parse_key_id(&other).unwrap());
    d.env.client(SUPPORT, &other).await;
    concierge
        .ok("revoke_api_key", json!({ "key_id": other_id }))
        .await;
    assert!(Mcp::try_connect(&d.env.url(SUPPORT), &other).await.is_err());
}

#[tokio::test]
async fn mint_customer_key_is_for_admins_and_bounded_by_the_minter() {
    let d = desk().await;
    let alice_id = d.requester("alice@example.com").await;
    // Below admin: not listed, refused.
    for role in [Role::Reader, Role::Member] {
        let key = d.env.key(d.ws, role).await;
        let client = d.env.client(SUPPORT, &key).await;
        assert!(
            !client
                .tool_names()
                .await
                .contains(&"mint_customer_key".to_owned())
        );
        assert_eq!(
            client
                .err_code("mint_customer_key", json!({ "requester_id": alice_id }))
                .await,
            "forbidden"
        );
    }
    // A customer key cannot mint one (for itself or anyone).
    let customer = d.customer_key(alice_id).await;
    let customer = d.env.client(SUPPORT, &customer).await;
    assert_eq!(
        customer
            .err_code("mint_customer_key", json!({ "requester_id": alice_id }))
            .await,
        "forbidden"
    );
    // An unknown requester.
    let unknown = d
        .admin
        .err(
            "mint_customer_key",
            json!({ "requester_id": Uuid::now_v7() }),
        )
        .await;
    assert_eq!(unknown["code"], "not_found");
    assert_eq!(unknown["path"], "requester_id");
    // Expiry: never later than the minter's; the minter's when none is asked.
    let concierge = d.env.client("/api/mcp", &d.owner).await;
    let short = concierge
        .ok(
            "mint_api_key",
            json!({ "role": "admin", "expires_in": "1h" }),
        )
        .await;
    let short_admin = d.env.client(SUPPORT, short["key"].as_str().unwrap()).await;
    let too_long = short_admin
        .err(
            "mint_customer_key",
            json!({ "requester_id": alice_id, "expires_in": "2h" }),
        )
        .await;
    assert_eq!(too_long["code"], "forbidden");
    assert_eq!(too_long["path"], "expires_in");
    let inherited = short_admin
        .ok("mint_customer_key", json!({ "requester_id": alice_id }))
        .await;
    // Stored to the microsecond, so compared as times.
    let at = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let gap = at(&short["expires_at"]) - at(&inherited["expires_at"]);
    assert!(gap.abs() < time::Duration::milliseconds(1), "{gap}");
    let shorter = short_admin
        .ok(
            "mint_customer_key",
            json!({ "requester_id": alice_id, "expires_in": "30m" }),
        )
        .await;
    let expiring = shorter["key"].as_str().unwrap().to_owned();
    d.env.client(SUPPORT, &expiring).await;
    d.env.clock.advance(time::Duration::minutes(31));
    assert!(
        Mcp::try_connect(&d.env.url(SUPPORT), &expiring)
            .await
            .is_err()
    );
    // A minter that does not reach support has no mint_customer_key at all.
    let crm_only = concierge
        .ok(
            "mint_api_key",
            json!({ "role": "admin", "products": ["crm"] }),
        )
        .await;
    let crm_only = d
        .env
        .client(SUPPORT, crm_only["key"].as_str().unwrap())
        .await;
    assert_eq!(
        crm_only
            .err_code("mint_customer_key", json!({ "requester_id": alice_id }))
            .await,
        "forbidden"
    );
    // Refusals of the privileged tool are audited.
    let audited = concierge
        .ok("list_audit_events", json!({ "action": "api_key.mint" }))
        .await;
    assert!(
        audited["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "refused"),
        "{audited}"
    );
}

/// One customer cannot use up the per-minute limit the team shares with every customer: past
/// their own bound they are `rate_limited`, while another customer and the team go on.
#[tokio::test]
async fn one_customer_cannot_use_up_the_workspaces_limit() {
    let desk = desk().await;
    let (_, a) = desk.customer("a@customer.example").await;
    let (_, b) = desk.customer("b@customer.example").await;
    desk.env.align_to_minute_start();
    let bound = hdls::limits::per_address::CUSTOMER_CALLS_PER_MINUTE;
    for _ in 0..bound {
        a.ok("list_my_tickets", json!({})).await;
    }
    let refused = a.err("list_my_tickets", json!({})).await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    assert_eq!(refused["limit"], json!(bound));
    assert_eq!(refused["window"], "minute");
    assert!(
        refused["retry_after_s"]
            .as_u64()
            .is_some_and(|s| (1..=60).contains(&s))
    );
    // Refused calls count too: hammering does not get them through.
    assert_eq!(
        a.err_code(
            "create_ticket",
            json!({ "values": { "subject": "s", "body": "b" } })
        )
        .await,
        "rate_limited"
    );
    assert_eq!(
        desk.count("SELECT count(*) FROM support.tickets").await,
        0,
        "a refused call wrote nothing"
    );
    b.ok("list_my_tickets", json!({})).await;
    desk.admin.ok("list_tickets", json!({})).await;
    desk.env.clock.advance(time::Duration::minutes(1));
    a.ok("list_my_tickets", json!({})).await;
}
