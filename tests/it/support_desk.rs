//! Support, the agent side: requesters, tickets and their thread, the SLA clocks driven by the
//! test clock, SLA policies, the summary; each refusal with its reason.

use hdls::db::OWNER_ROLE;
use hdls::identity::Role;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv, assert_refused, no_args};

/// A workspace with support installed (new ones have only the CRM) and a per-minute limit
/// these tests cannot reach; returns its id and an owner's support client.
async fn desk(env: &TestEnv, name: &str) -> (Uuid, Mcp) {
    let (ws, owner_key) = env.workspace(name).await;
    let owner_pool = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner_pool, ws, None, 100_000, None, env.clock_now())
        .await
        .unwrap();
    env.client("/api/mcp", &owner_key)
        .await
        .ok("install_product", json!({ "product": "support" }))
        .await;
    (ws, env.client("/api/mcp/support", &owner_key).await)
}

/// A support client with a fresh key of `role`.
async fn as_role(env: &TestEnv, ws: Uuid, role: Role) -> Mcp {
    env.client("/api/mcp/support", &env.key(ws, role).await)
        .await
}

fn at(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        value.as_str().unwrap_or_else(|| panic!("{value}")),
        &Rfc3339,
    )
    .unwrap_or_else(|e| panic!("{value}: {e}"))
}

/// Asserts an `invalid_input` at `path`; returns the message.
async fn invalid_at(client: &Mcp, tool: &str, args: Value, path: &str) -> String {
    let error = client.err(tool, args.clone()).await;
    assert_eq!(error["code"], "invalid_input", "{tool} {args}: {error}");
    assert_eq!(error["path"], path, "{tool} {args}: {error}");
    error["message"].as_str().unwrap_or_default().to_owned()
}

fn ids(list: &Value, key: &str) -> Vec<Value> {
    list[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect()
}

/// Opens a ticket for `email` with `priority`; returns the ticket.
async fn open(desk: &Mcp, subject: &str, email: &str, priority: &str) -> Value {
    desk.ok(
        "create_ticket",
        json!({ "values": { "subject": subject, "body": "help", "requester_email": email,
                            "priority": priority } }),
    )
    .await["ticket"]
        .clone()
}

async fn ticket(desk: &Mcp, id: &Value) -> Value {
    desk.ok("get_ticket", json!({ "id": id })).await["ticket"].clone()
}

#[tokio::test]
async fn requesters_are_created_found_updated_and_disabled() {
    let env = TestEnv::start().await;
    let (ws, owner) = desk(&env, "requesters").await;
    let member = as_role(&env, ws, Role::Member).await;
    let reader = as_role(&env, ws, Role::Reader).await;

    let ann = member
        .ok(
            "create_requester",
            json!({ "email": " Ann@Acme.Example ", "name": "Ann Lee", "organisation": "Acme" }),
        )
        .await["requester"]
        .clone();
    assert_eq!(ann["email"], "ann@acme.example");
    assert_eq!(ann["disabled"], false);
    assert_eq!(ann["custom"], json!({}));
    // The same address in another case is the same requester: a conflict naming it.
    let taken = member
        .err("create_requester", json!({ "email": "ANN@acme.EXAMPLE" }))
        .await;
    assert_eq!(taken["code"], "conflict", "{taken}");
    assert_eq!(taken["existing_id"], ann["id"]);
    assert!(
        taken["message"]
            .as_str()
            .unwrap()
            .contains("already has this email"),
        "{taken}"
    );
    invalid_at(
        &member,
        "create_requester",
        json!({ "email": "not-an-email" }),
        "email",
    )
    .await;
    assert_eq!(
        reader
            .err_code("create_requester", json!({ "email": "x@y.example" }))
            .await,
        "forbidden"
    );
    let bob = member
        .ok("create_requester", json!({ "email": "bob@beta.example" }))
        .await["requester"]
        .clone();
    member
        .ok(
            "create_requester",
            json!({ "email": "cy@gamma.example", "organisation": "Acme Labs" }),
        )
        .await;

    let got = reader.ok("get_requester", json!({ "id": ann["id"] })).await["requester"].clone();
    assert_eq!(got["has_customer_account"], false);
    assert_eq!(got["disabled"], false);
    assert_eq!(
        got["tickets"],
        json!({ "open": 0, "pending": 0, "resolved": 0, "closed": 0, "total": 0 })
    );
    assert_eq!(
        reader
            .err_code("get_requester", json!({ "id": Uuid::new_v4() }))
            .await,
        "not_found"
    );

    // The query matches email, name and organisation, ignoring case.
    let acme = reader
        .ok("search_requesters", json!({ "query": "ACME" }))
        .await;
    assert_eq!(acme["requesters"].as_array().unwrap().len(), 2);
    let by_name = reader
        .ok("search_requesters", json!({ "query": "ann lee" }))
        .await;
    assert_eq!(ids(&by_name, "requesters"), [ann["id"].clone()]);
    // Pages of one through all three, by email.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({ "limit": 1 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = reader.ok("search_requesters", args).await;
        seen.extend(
            page["requesters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["email"].as_str().unwrap().to_owned()),
        );
        cursor = page["next_cursor"].clone();
        assert_eq!(page["has_more"], !cursor.is_null());
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(
        seen,
        ["ann@acme.example", "bob@beta.example", "cy@gamma.example"]
    );

    // Updates: null clears, an email another requester has is a conflict naming them.
    let updated = member
        .ok(
            "update_requester",
            json!({ "id": ann["id"], "name": null, "organisation": "Acme Inc" }),
        )
        .await["requester"]
        .clone();
    assert_eq!(updated["name"], Value::Null);
    assert_eq!(updated["organisation"], "Acme Inc");
    let clash = member
        .err(
            "update_requester",
            json!({ "id": ann["id"], "email": "Bob@Beta.example" }),
        )
        .await;
    assert_eq!(clash["code"], "conflict");
    assert_eq!(clash["existing_id"], bob["id"]);
    assert_eq!(
        member
            .err_code(
                "update_requester",
                json!({ "id": Uuid::new_v4(), "email": "bob@beta.example" })
            )
            .await,
        "not_found"
    );
    // Disabling stamps the server clock's time; disabling again keeps it; enabling clears it.
    let disabled_at = env.clock_now();
    let off = owner
        .ok(
            "update_requester",
            json!({ "id": ann["id"], "disabled": true }),
        )
        .await["requester"]
        .clone();
    assert_eq!(off["disabled"], true);
    assert_eq!(
        at(&off["disabled_at"]).unix_timestamp(),
        disabled_at.unix_timestamp()
    );
    env.clock.advance(Duration::hours(1));
    let again = owner
        .ok(
            "update_requester",
            json!({ "id": ann["id"], "disabled": true }),
        )
        .await["requester"]
        .clone();
    assert_eq!(again["disabled_at"], off["disabled_at"]);
    let only_disabled = reader
        .ok("search_requesters", json!({ "disabled": true }))
        .await;
    assert_eq!(ids(&only_disabled, "requesters"), [ann["id"].clone()]);
    let on = owner
        .ok(
            "update_requester",
            json!({ "id": ann["id"], "disabled": false }),
        )
        .await["requester"]
        .clone();
    assert_eq!(on["disabled"], false);
    assert_eq!(on["disabled_at"], Value::Null);
}

#[tokio::test]
async fn a_ticket_opens_with_its_thread_and_takes_replies_and_notes() {
    let env = TestEnv::start().await;
    let (ws, owner) = desk(&env, "tickets").await;
    let member = as_role(&env, ws, Role::Member).await;
    let reader = as_role(&env, ws, Role::Reader).await;

    // An unknown requester_email creates the requester.
    let created = member
        .ok(
            "create_ticket",
            json!({ "values": { "subject": " Login broken on mobile ", "body": "Can't sign in.",
                                "requester_email": "Dana@Delta.example", "tags": ["mobile", "login"] } }),
        )
        .await;
    assert_eq!(created["requester_created"], true);
    let t = created["ticket"].clone();
    assert_eq!(t["subject"], "Login broken on mobile");
    assert_eq!(t["status"], "open");
    assert_eq!(t["priority"], "normal");
    assert_eq!(t["tags"], json!(["mobile", "login"]));
    assert_eq!(t["assignee"], Value::Null);
    assert_eq!(t["requester"]["email"], "dana@delta.example");
    assert_eq!(t["rating"], Value::Null);
    assert_eq!(t["sla"]["breached"], false);
    assert_eq!(t["sla"]["paused"], false);
    let dana = t["requester"]["id"].clone();
    // The same address again, in another case, is the same requester.
    let second = member
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "Another", "body": "b", "requester_email": "DANA@delta.example" } }),
        )
        .await;
    assert_eq!(second["requester_created"], false);
    assert_eq!(second["ticket"]["requester"]["id"], dana);
    let by_id = member
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "Third", "body": "b", "requester_id": dana, "priority": "high" } }),
        )
        .await;
    assert_eq!(by_id["ticket"]["priority"], "high");

    // Exactly one of requester_id and requester_email; an unknown id is named.
    for values in [
        json!({ "subject": "s", "body": "b" }),
        json!({ "subject": "s", "body": "b", "requester_id": dana, "requester_email": "e@x.example" }),
    ] {
        invalid_at(
            &member,
            "create_ticket",
            json!({ "values": values }),
            "values",
        )
        .await;
    }
    invalid_at(
        &member,
        "create_ticket",
        json!({ "values": { "subject": "s", "body": "b", "requester_id": Uuid::new_v4() } }),
        "values.requester_id",
    )
    .await;
    invalid_at(
        &member,
        "create_ticket",
        json!({ "values": { "subject": "", "body": "b", "requester_id": dana } }),
        "values.subject",
    )
    .await;
    invalid_at(
        &member,
        "create_ticket",
        json!({ "values": { "subject": "s", "body": "b", "requester_id": dana, "priority": "asap" } }),
        "values.priority",
    )
    .await;
    assert_eq!(
        reader
            .err_code(
                "create_ticket",
                json!({ "values": { "subject": "s", "body": "b", "requester_id": dana } })
            )
            .await,
        "forbidden"
    );

    // A public reply and an internal note; the thread shows each entry's kind, oldest first.
    let replied = member
        .ok(
            "reply",
            json!({ "ticket_id": t["id"], "body": "Which phone do you use?" }),
        )
        .await;
    assert_eq!(replied["entry"]["kind"], "reply");
    assert_eq!(replied["entry"]["author_kind"], "agent");
    env.clock.advance(Duration::seconds(1));
    let noted = member
        .ok(
            "reply",
            json!({ "ticket_id": t["id"], "body": "Probably the new SSO build.", "internal": true }),
        )
        .await;
    assert_eq!(noted["entry"]["kind"], "internal_note");
    let got = reader.ok("get_ticket", json!({ "id": t["id"] })).await;
    let kinds: Vec<&str> = got["thread"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opening", "reply", "internal_note"]);
    assert_eq!(got["thread"][0]["body"], "Can't sign in.");
    assert_eq!(got["thread"][0]["author_kind"], "agent");
    assert_eq!(got["ticket"]["requester"]["id"], dana);
    assert_eq!(
        reader
            .err_code("reply", json!({ "ticket_id": t["id"], "body": "x" }))
            .await,
        "forbidden"
    );
    assert_eq!(
        member
            .err_code("reply", json!({ "ticket_id": Uuid::new_v4(), "body": "x" }))
            .await,
        "not_found"
    );
    assert_eq!(
        reader
            .err_code("get_ticket", json!({ "id": Uuid::new_v4() }))
            .await,
        "not_found"
    );

    // Closed is final for public replies; notes still go on; reopening allows replies again.
    owner
        .ok(
            "set_ticket_status",
            json!({ "id": t["id"], "status": "closed" }),
        )
        .await;
    let refused = member
        .err("reply", json!({ "ticket_id": t["id"], "body": "hello?" }))
        .await;
    assert_eq!(refused["code"], "conflict");
    assert!(
        refused["message"].as_str().unwrap().contains("closed"),
        "{refused}"
    );
    member
        .ok(
            "reply",
            json!({ "ticket_id": t["id"], "body": "closed; noting it", "internal": true }),
        )
        .await;
    member
        .ok(
            "set_ticket_status",
            json!({ "id": t["id"], "status": "open" }),
        )
        .await;
    member
        .ok("reply", json!({ "ticket_id": t["id"], "body": "reopened" }))
        .await;

    // Updates and the requester's counts.
    let changed = member
        .ok(
            "update_ticket",
            json!({ "id": t["id"], "subject": "Login broken on iOS", "tags": ["ios"] }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(changed["subject"], "Login broken on iOS");
    assert_eq!(changed["tags"], json!(["ios"]));
    assert_eq!(changed["priority"], "normal");
    assert_eq!(
        member
            .err_code(
                "update_ticket",
                json!({ "id": Uuid::new_v4(), "subject": "x" })
            )
            .await,
        "not_found"
    );
    let requester = reader.ok("get_requester", json!({ "id": dana })).await["requester"].clone();
    assert_eq!(requester["tickets"]["total"], 3);
    assert_eq!(requester["tickets"]["open"], 3);
}

#[tokio::test]
async fn tickets_are_assigned_to_members_and_listed_by_filter_newest_activity_first() {
    let env = TestEnv::start().await;
    let (ws, owner) = desk(&env, "lists").await;
    let reader = as_role(&env, ws, Role::Reader).await;
    let agent = env
        .person(ws, "agent@desk.example", "a long password 1", Role::Member)
        .await;
    let first = open(&owner, "Printer on fire", "p@x.example", "urgent").await;
    env.clock.advance(Duration::minutes(1));
    let second = open(&owner, "Invoice missing", "q@x.example", "low").await;
    env.clock.advance(Duration::minutes(1));
    let third = owner
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "Invoice wrong", "body": "b", "requester_email": "p@x.example",
                                "tags": ["billing"], "assignee": "Agent@Desk.example" } }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(third["assignee"], json!(agent));
    env.clock.advance(Duration::minutes(1));

    // assign_ticket: by user id or email; null unassigns; a non-member is named.
    let assigned = owner
        .ok(
            "assign_ticket",
            json!({ "id": first["id"], "assignee": agent }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(assigned["assignee"], json!(agent));
    env.clock.advance(Duration::minutes(1));
    owner
        .ok(
            "assign_ticket",
            json!({ "id": second["id"], "assignee": "agent@desk.example" }),
        )
        .await;
    let unassigned = owner
        .ok(
            "assign_ticket",
            json!({ "id": second["id"], "assignee": null }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(unassigned["assignee"], Value::Null);
    let message = invalid_at(
        &owner,
        "assign_ticket",
        json!({ "id": first["id"], "assignee": "stranger@x.example" }),
        "assignee",
    )
    .await;
    assert!(message.contains("not a member"), "{message}");
    invalid_at(
        &owner,
        "assign_ticket",
        json!({ "id": first["id"], "assignee": Uuid::new_v4() }),
        "assignee",
    )
    .await;
    // The argument is required: leaving it out does not unassign.
    invalid_at(&owner, "assign_ticket", json!({ "id": first["id"] }), "").await;
    assert_eq!(
        owner
            .err_code(
                "assign_ticket",
                json!({ "id": Uuid::new_v4(), "assignee": null })
            )
            .await,
        "not_found"
    );

    let list = |args: Value| {
        let reader = &reader;
        async move { ids(&reader.ok("list_tickets", args).await, "tickets") }
    };
    // Newest activity first: the assignments touched first and second after third was made.
    assert_eq!(
        list(json!({})).await,
        [
            second["id"].clone(),
            first["id"].clone(),
            third["id"].clone()
        ]
    );
    assert_eq!(
        list(json!({ "assignee": agent })).await,
        [first["id"].clone(), third["id"].clone()]
    );
    assert_eq!(
        list(json!({ "assignee": "AGENT@desk.example" })).await,
        [first["id"].clone(), third["id"].clone()]
    );
    assert_eq!(
        list(json!({ "priority": "urgent" })).await,
        [first["id"].clone()]
    );
    assert_eq!(
        list(json!({ "tag": "billing" })).await,
        [third["id"].clone()]
    );
    assert_eq!(
        list(json!({ "query": "INVOICE" })).await,
        [second["id"].clone(), third["id"].clone()]
    );
    assert_eq!(
        list(json!({ "requester_id": first["requester"]["id"] })).await,
        [first["id"].clone(), third["id"].clone()]
    );
    owner
        .ok(
            "set_ticket_status",
            json!({ "id": third["id"], "status": "pending" }),
        )
        .await;
    assert_eq!(
        list(json!({ "status": "pending" })).await,
        [third["id"].clone()]
    );
    // "me" names the person behind an OAuth connection; an API key has none.
    let message = invalid_at(
        &reader,
        "list_tickets",
        json!({ "assignee": "me" }),
        "assignee",
    )
    .await;
    assert!(message.contains("API key"), "{message}");
    invalid_at(
        &reader,
        "list_tickets",
        json!({ "status": "waiting" }),
        "status",
    )
    .await;

    // A reply is activity: the oldest ticket comes to the top.
    env.clock.advance(Duration::minutes(1));
    owner
        .ok(
            "reply",
            json!({ "ticket_id": second["id"], "body": "on it" }),
        )
        .await;
    env.clock.advance(Duration::minutes(1));
    owner
        .ok(
            "reply",
            json!({ "ticket_id": first["id"], "body": "on it" }),
        )
        .await;
    let all = list(json!({})).await;
    assert_eq!(all[0], first["id"]);
    // Pages of two through all three, in the same order.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({ "limit": 2 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = reader.ok("list_tickets", args).await;
        seen.extend(ids(&page, "tickets"));
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, all);
    invalid_at(
        &reader,
        "list_tickets",
        json!({ "cursor": "nope" }),
        "cursor",
    )
    .await;
}

#[tokio::test]
async fn sla_clocks_follow_the_server_clock() {
    let env = TestEnv::start().await;
    let (ws, owner) = desk(&env, "sla").await;
    let member = as_role(&env, ws, Role::Member).await;
    let reader = as_role(&env, ws, Role::Reader).await;

    // Default targets by priority, counted from creation.
    let mut opened = Vec::new();
    for (priority, first, resolution) in [
        ("urgent", 60, 240),
        ("high", 240, 1440),
        ("normal", 480, 4320),
        ("low", 1440, 10080),
    ] {
        let t = open(
            &member,
            priority,
            &format!("{priority}@x.example"),
            priority,
        )
        .await;
        let created = at(&t["created_at"]);
        assert_eq!(
            at(&t["sla"]["first_response_due_at"]) - created,
            Duration::minutes(first),
            "{priority}"
        );
        assert_eq!(
            at(&t["sla"]["resolution_due_at"]) - created,
            Duration::minutes(resolution),
            "{priority}"
        );
        assert_eq!(t["sla"]["first_responded_at"], Value::Null);
        opened.push(t);
    }
    let [urgent, high, normal, low] = <[Value; 4]>::try_from(opened).unwrap();
    let t0 = at(&urgent["created_at"]);

    // An internal note stops no clock; a public reply stops the first-response clock.
    env.clock.advance(Duration::minutes(10));
    member
        .ok(
            "reply",
            json!({ "ticket_id": urgent["id"], "body": "looking", "internal": true }),
        )
        .await;
    assert_eq!(
        ticket(&reader, &urgent["id"]).await["sla"]["first_responded_at"],
        Value::Null
    );
    let replied = member
        .ok("reply", json!({ "ticket_id": high["id"], "body": "on it" }))
        .await;
    let responded = at(&replied["ticket"]["sla"]["first_responded_at"]);
    assert_eq!(responded, at(&replied["entry"]["created_at"]));
    assert_eq!(responded - t0, Duration::minutes(10));
    member
        .ok(
            "reply",
            json!({ "ticket_id": normal["id"], "body": "on it" }),
        )
        .await;

    // Past the urgent first-response target: only the urgent ticket is breached.
    env.clock.advance(Duration::minutes(51));
    let u = ticket(&reader, &urgent["id"]).await;
    assert_eq!(u["sla"]["breached"], true);
    let breached = reader.ok("list_tickets", json!({ "breached": true })).await;
    assert_eq!(ids(&breached, "tickets"), [urgent["id"].clone()]);
    let fine = reader
        .ok("list_tickets", json!({ "breached": false }))
        .await;
    assert_eq!(fine["tickets"].as_array().unwrap().len(), 3);
    // Past the high first-response target too: it was answered, so it is not breached.
    env.clock.advance(Duration::minutes(240));
    assert_eq!(ticket(&reader, &high["id"]).await["sla"]["breached"], false);

    // Pending pauses the resolution clock: the due time moves by the time spent pending.
    let before = at(&ticket(&reader, &normal["id"]).await["sla"]["resolution_due_at"]);
    let paused = member
        .ok(
            "set_ticket_status",
            json!({ "id": normal["id"], "status": "pending" }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(paused["sla"]["paused"], true);
    env.clock.advance(Duration::days(4));
    // Past its original resolution due time, but paused before it: not breached.
    assert!(env.clock_now() > before);
    assert_eq!(
        ticket(&reader, &normal["id"]).await["sla"]["breached"],
        false
    );
    let resumed = member
        .ok(
            "set_ticket_status",
            json!({ "id": normal["id"], "status": "open" }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(resumed["sla"]["paused"], false);
    assert_eq!(
        at(&resumed["sla"]["resolution_due_at"]) - before,
        Duration::days(4)
    );
    assert_eq!(resumed["sla"]["breached"], false);

    // Now: urgent (no first response), high (resolution after 1 day) and low (first
    // response after 1 day) are past due; normal is not.
    let breached = reader.ok("list_tickets", json!({ "breached": true })).await;
    let mut got = ids(&breached, "tickets");
    got.sort_by_key(|v| v.to_string());
    let mut expected = vec![urgent["id"].clone(), high["id"].clone(), low["id"].clone()];
    expected.sort_by_key(|v| v.to_string());
    assert_eq!(got, expected);
    // A resolved ticket is not breached, whatever its clocks say.
    let resolved = owner
        .ok(
            "set_ticket_status",
            json!({ "id": low["id"], "status": "resolved" }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(resolved["sla"]["breached"], false);
    assert_eq!(
        at(&resolved["sla"]["resolved_at"]).unix_timestamp(),
        env.clock_now().unix_timestamp()
    );
}

#[tokio::test]
async fn sla_policies_apply_to_tickets_opened_afterwards_and_need_an_admin() {
    let env = TestEnv::start().await;
    let (ws, owner) = desk(&env, "policies").await;
    let member = as_role(&env, ws, Role::Member).await;
    let admin = as_role(&env, ws, Role::Admin).await;
    let reader = as_role(&env, ws, Role::Reader).await;

    let listed = reader.ok("list_sla_policies", no_args()).await;
    assert_eq!(
        listed["policies"],
        json!([
            { "priority": "urgent", "first_response_minutes": 60, "resolution_minutes": 240, "default": true, "updated_at": null },
            { "priority": "high", "first_response_minutes": 240, "resolution_minutes": 1440, "default": true, "updated_at": null },
            { "priority": "normal", "first_response_minutes": 480, "resolution_minutes": 4320, "default": true, "updated_at": null },
            { "priority": "low", "first_response_minutes": 1440, "resolution_minutes": 10080, "default": true, "updated_at": null },
        ])
    );
    let earlier = open(&member, "before", "a@x.example", "normal").await;
    // Priority change later is counted from creation with the then-current targets.
    let moving = open(&member, "moving", "b@x.example", "normal").await;

    let args =
        json!({ "priority": "normal", "first_response_minutes": 30, "resolution_minutes": 120 });
    let refused = member.err("set_sla_policy", args.clone()).await;
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(refused["required_role"], "admin");
    let set = admin.ok("set_sla_policy", args).await;
    assert_eq!(set["policy"]["default"], false);
    assert_eq!(set["policy"]["first_response_minutes"], 30);
    assert_eq!(set["policies"][2]["priority"], "normal");
    assert_eq!(set["policies"][0]["default"], true);
    invalid_at(
        &admin,
        "set_sla_policy",
        json!({ "priority": "high", "first_response_minutes": 100, "resolution_minutes": 50 }),
        "first_response_minutes",
    )
    .await;
    invalid_at(
        &admin,
        "set_sla_policy",
        json!({ "priority": "high", "first_response_minutes": 0, "resolution_minutes": 50 }),
        "first_response_minutes",
    )
    .await;
    invalid_at(
        &admin,
        "set_sla_policy",
        json!({ "priority": "high", "first_response_minutes": 10, "resolution_minutes": 525_601 }),
        "resolution_minutes",
    )
    .await;

    // The ticket opened before keeps its due times; a new one gets the new targets.
    let kept = ticket(&reader, &earlier["id"]).await;
    assert_eq!(kept["sla"], earlier["sla"]);
    env.clock.advance(Duration::minutes(5));
    let later = open(&member, "after", "c@x.example", "normal").await;
    let created = at(&later["created_at"]);
    assert_eq!(
        at(&later["sla"]["first_response_due_at"]) - created,
        Duration::minutes(30)
    );
    assert_eq!(
        at(&later["sla"]["resolution_due_at"]) - created,
        Duration::minutes(120)
    );

    // Moving a ticket to another priority takes that priority's targets from its creation.
    owner
        .ok(
            "set_sla_policy",
            json!({ "priority": "high", "first_response_minutes": 20, "resolution_minutes": 90 }),
        )
        .await;
    let moved = member
        .ok(
            "update_ticket",
            json!({ "id": moving["id"], "priority": "high" }),
        )
        .await["ticket"]
        .clone();
    let created = at(&moving["created_at"]);
    assert_eq!(moved["priority"], "high");
    assert_eq!(
        at(&moved["sla"]["first_response_due_at"]) - created,
        Duration::minutes(20)
    );
    assert_eq!(
        at(&moved["sla"]["resolution_due_at"]) - created,
        Duration::minutes(90)
    );
    let listed = reader.ok("list_sla_policies", no_args()).await;
    let defaults: Vec<bool> = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["default"].as_bool().unwrap())
        .collect();
    assert_eq!(defaults, [true, false, false, true]);
}

/// Rates a resolved ticket as the database would for its customer, at `when` (the customer
/// tools are another module's; this sets the same columns under the same trigger).
async fn rate(env: &TestEnv, ticket: &Value, score: i16, when: OffsetDateTime) {
    let db = env.db.connect_superuser().await;
    let millis = when.unix_timestamp_nanos() / 1_000_000;
    // SET LOCAL, forwarded to the shard's worker on Citus (where the trigger reads it).
    db.batch_execute("BEGIN").await.unwrap();
    if crate::harness::on_citus() {
        db.batch_execute("SET LOCAL citus.propagate_set_commands = 'local'")
            .await
            .unwrap();
    }
    db.batch_execute(&format!("SET LOCAL hdls.call = 'test {millis} test'"))
        .await
        .unwrap();
    let id: Uuid = ticket["id"].as_str().unwrap().parse().unwrap();
    let n = db
        .execute(
            "UPDATE support.tickets SET csat_score = $2 WHERE id = $1",
            &[&id, &score],
        )
        .await
        .unwrap();
    db.batch_execute("COMMIT").await.unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_summary_counts_tickets_breaches_and_recent_ratings() {
    let env = TestEnv::start().await;
    let (ws, owner) = desk(&env, "summary").await;
    let reader = as_role(&env, ws, Role::Reader).await;

    let empty = reader.ok("support_summary", no_args()).await;
    assert_eq!(empty["total"], 0);
    assert_eq!(
        empty["csat"],
        json!({ "average": null, "ratings": 0, "since": empty["csat"]["since"] })
    );

    let a = open(&owner, "a", "a@x.example", "urgent").await;
    let b = open(&owner, "b", "b@x.example", "urgent").await;
    let c = open(&owner, "c", "c@x.example", "low").await;
    let d = open(&owner, "d", "d@x.example", "normal").await;
    let e = open(&owner, "e", "e@x.example", "normal").await;
    owner
        .ok("reply", json!({ "ticket_id": b["id"], "body": "hi" }))
        .await;
    for (t, status) in [(&c, "pending"), (&d, "resolved"), (&e, "resolved")] {
        owner
            .ok(
                "set_ticket_status",
                json!({ "id": t["id"], "status": status }),
            )
            .await;
    }
    // The rating is the customer's: no agent tool writes it, the power tools included.
    let forged = owner
        .err(
            "update_record",
            json!({ "table": "tickets", "key": { "id": e["id"] }, "values": { "csat_score": 5 } }),
        )
        .await;
    assert_eq!(forged["code"], "forbidden", "{forged}");
    // The database's refusal (the ticket trigger), not a tool's, with the rule's reason.
    assert_eq!(
        forged["message"], "only the customer rates a ticket",
        "{forged}"
    );
    assert_eq!(ticket(&owner, &e["id"]).await["rating"], Value::Null);
    // Ratings (as the customer's would be written): one 40 days ago, outside the window, one now.
    rate(&env, &d, 1, env.clock_now() - Duration::days(40)).await;
    env.clock.advance(Duration::minutes(90));
    rate(&env, &e, 4, env.clock_now()).await;
    owner
        .ok(
            "set_ticket_status",
            json!({ "id": d["id"], "status": "closed" }),
        )
        .await;
    // A closed, rated ticket cannot be rated again.
    let again = env
        .db
        .connect_superuser()
        .await
        .execute(
            "UPDATE support.tickets SET csat_score = 5 WHERE id = $1",
            &[&d["id"].as_str().unwrap().parse::<Uuid>().unwrap()],
        )
        .await;
    assert_refused(
        again,
        &tokio_postgres::error::SqlState::CHECK_VIOLATION,
        "rated already",
        "a second rating",
    );

    let summary = reader.ok("support_summary", no_args()).await;
    assert_eq!(summary["total"], 5);
    assert_eq!(
        summary["by_status"],
        json!({ "open": 2, "pending": 1, "resolved": 1, "closed": 1 })
    );
    assert_eq!(
        summary["by_priority"],
        json!({ "urgent": 2, "high": 0, "normal": 2, "low": 1 })
    );
    // 90 minutes in: a is past its first response (60 min); b was answered but its 4 hours
    // to resolution are not up; c is pending long before its due times.
    assert_eq!(
        summary["breached"],
        json!({ "total": 1, "first_response": 1, "resolution": 0 })
    );
    assert_eq!(summary["csat"]["ratings"], 1);
    assert_eq!(summary["csat"]["average"], 4.0);
    env.clock.advance(Duration::minutes(200));
    let later = reader.ok("support_summary", no_args()).await;
    assert_eq!(
        later["breached"],
        json!({ "total": 2, "first_response": 1, "resolution": 2 })
    );
    let breached = reader.ok("list_tickets", json!({ "breached": true })).await;
    assert_eq!(
        ids(&breached, "tickets"),
        [b["id"].clone(), a["id"].clone()]
    );
}

#[tokio::test]
async fn support_needs_installing_and_readers_only_read() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("install").await;
    let reader_key = env.key(ws, Role::Reader).await;
    let before = env.client("/api/mcp/support", &owner_key).await;
    let refused = before.err("list_tickets", no_args()).await;
    assert_eq!(refused["code"], "forbidden");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not installed"),
        "{refused}"
    );
    env.client("/api/mcp", &owner_key)
        .await
        .ok("install_product", json!({ "product": "support" }))
        .await;
    let owner = env.client("/api/mcp/support", &owner_key).await;
    let t = open(&owner, "s", "r@x.example", "normal").await;
    let reader = env.client("/api/mcp/support", &reader_key).await;
    reader.ok("list_tickets", no_args()).await;
    reader.ok("support_summary", no_args()).await;
    reader.ok("list_sla_policies", no_args()).await;
    for (tool, args) in [
        ("update_ticket", json!({ "id": t["id"], "subject": "x" })),
        ("assign_ticket", json!({ "id": t["id"], "assignee": null })),
        (
            "set_ticket_status",
            json!({ "id": t["id"], "status": "closed" }),
        ),
        (
            "update_requester",
            json!({ "id": t["requester"]["id"], "disabled": true }),
        ),
        (
            "set_sla_policy",
            json!({ "priority": "low", "first_response_minutes": 1, "resolution_minutes": 2 }),
        ),
    ] {
        let error = reader.err(tool, args).await;
        assert_eq!(error["code"], "forbidden", "{tool}: {error}");
    }
    assert_eq!(ticket(&owner, &t["id"]).await["status"], "open");
}

#[tokio::test]
async fn ticket_custom_fields_are_typed_inside_values() {
    let env = TestEnv::start().await;
    let (_, owner) = desk(&env, "custom").await;
    owner
        .ok(
            "add_custom_field",
            json!({ "entity": "ticket", "name": "plan", "type": "select", "options": ["free", "pro"] }),
        )
        .await;
    let tools = owner.service.list_all_tools().await.unwrap();
    let create = tools.iter().find(|t| t.name == "create_ticket").unwrap();
    let schema = Value::Object((*create.input_schema).clone());
    assert_eq!(
        schema["properties"]["values"]["properties"]["custom"]["properties"]["plan"]["enum"],
        json!(["free", "pro"]),
        "{schema}"
    );
    assert_eq!(schema["properties"]["custom"], Value::Null);
    let t = owner
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "s", "body": "b", "requester_email": "r@x.example",
                                "custom": { "plan": "pro" } } }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(t["custom"], json!({ "plan": "pro" }));
    invalid_at(
        &owner,
        "create_ticket",
        json!({ "values": { "subject": "s", "body": "b", "requester_email": "r@x.example",
                            "custom": { "plan": "gold" } } }),
        "values.custom.plan",
    )
    .await;
    let cleared = owner
        .ok(
            "update_ticket",
            json!({ "id": t["id"], "custom": { "plan": null } }),
        )
        .await["ticket"]
        .clone();
    assert_eq!(cleared["custom"], json!({}));
    owner
        .ok(
            "add_custom_field",
            json!({ "entity": "requester", "name": "tier", "type": "text" }),
        )
        .await;
    let r = owner
        .ok(
            "create_requester",
            json!({ "email": "s@x.example", "custom": { "tier": "gold" } }),
        )
        .await["requester"]
        .clone();
    assert_eq!(r["custom"], json!({ "tier": "gold" }));
}

#[tokio::test]
async fn another_workspace_sees_none_of_the_desk() {
    let env = TestEnv::start().await;
    let (_, a) = desk(&env, "desk a").await;
    let (_, b) = desk(&env, "desk b").await;
    let t = open(&a, "private", "same@x.example", "urgent").await;
    let requester = t["requester"]["id"].clone();
    // The same address is a separate requester in each workspace: no conflict across them.
    let theirs = b
        .ok("create_requester", json!({ "email": "SAME@x.example" }))
        .await["requester"]
        .clone();
    assert_ne!(theirs["id"], requester);
    for (tool, args) in [
        ("get_ticket", json!({ "id": t["id"] })),
        ("update_ticket", json!({ "id": t["id"], "subject": "mine" })),
        ("assign_ticket", json!({ "id": t["id"], "assignee": null })),
        (
            "set_ticket_status",
            json!({ "id": t["id"], "status": "closed" }),
        ),
        (
            "reply",
            json!({ "ticket_id": t["id"], "body": "hi", "internal": true }),
        ),
        ("get_requester", json!({ "id": requester })),
        (
            "update_requester",
            json!({ "id": requester, "disabled": true }),
        ),
    ] {
        assert_eq!(b.err_code(tool, args).await, "not_found", "{tool}");
    }
    invalid_at(
        &b,
        "create_ticket",
        json!({ "values": { "subject": "s", "body": "b", "requester_id": requester } }),
        "values.requester_id",
    )
    .await;
    let listed = b.ok("list_tickets", no_args()).await;
    assert_eq!(listed["tickets"], json!([]));
    let summary = b.ok("support_summary", no_args()).await;
    assert_eq!(summary["total"], 0);
    assert_eq!(summary["breached"]["total"], 0);
    // A's ticket is as it was.
    let mine = ticket(&a, &t["id"]).await;
    assert_eq!(mine["subject"], "private");
    assert_eq!(mine["status"], "open");
    let thread = a.ok("get_ticket", json!({ "id": t["id"] })).await["thread"].clone();
    assert_eq!(thread.as_array().unwrap().len(), 1);
}
