//! The Contacts product's named tools: people and organisations, duplicates by email, import,
//! merge and bulk tagging, with their refusals (role, tenant, conflict, bad input).

use hdls::identity::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv};
use crate::power_tools::unlimited;

/// A workspace with the Contacts product installed and the rate limit lifted; its id, owner
/// key, and a client on /api/mcp/contacts with that key.
async fn address_book(env: &TestEnv, name: &str) -> (Uuid, String, Mcp) {
    let (ws, key) = env.workspace(name).await;
    unlimited(env, ws).await;
    env.client("/api/mcp", &key)
        .await
        .ok("install_product", json!({ "product": "contacts" }))
        .await;
    let contacts = env.client("/api/mcp/contacts", &key).await;
    (ws, key, contacts)
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

async fn contact(c: &Mcp, id: &Value) -> Value {
    c.ok("get_contact", json!({ "id": id })).await["contact"].clone()
}

#[tokio::test]
async fn contacts_and_organisations_round_trip() {
    let env = TestEnv::start().await;
    let (_, _, c) = address_book(&env, "book").await;

    let org = c
        .ok(
            "create_organisation",
            json!({ "name": "Analytical Engines", "domain": "Engines.Example" }),
        )
        .await["organisation"]
        .clone();
    assert_eq!(org["domain"], "engines.example");
    let ada = c
        .ok(
            "create_contact",
            json!({
                "name": "Ada Lovelace", "email": " Ada@Engines.Example ", "phone": "+44 20 7946 0000",
                "organisation_id": org["id"], "tags": ["math", "math", "speaker"],
            }),
        )
        .await["contact"]
        .clone();
    assert_eq!(ada["email"], "ada@engines.example");
    assert_eq!(ada["tags"], json!(["math", "speaker"]));
    assert_eq!(ada["organisation_name"], "Analytical Engines");
    let got = contact(&c, &ada["id"]).await;
    assert_eq!(got["organisation_id"], org["id"]);
    assert_eq!(got["organisation_name"], "Analytical Engines");
    for name in ["Charles Babbage", "Mary Somerville", "Ada Byron"] {
        c.ok("create_contact", json!({ "name": name })).await;
    }

    // Name or email, whatever the case; tag and organisation filters.
    let found = c.ok("search_contacts", json!({ "query": "ADA" })).await;
    assert_eq!(names(&found["contacts"]), ["Ada Byron", "Ada Lovelace"]);
    let found = c
        .ok("search_contacts", json!({ "query": "engines.EXAMPLE" }))
        .await;
    assert_eq!(names(&found["contacts"]), ["Ada Lovelace"]);
    let found = c.ok("search_contacts", json!({ "tag": "speaker" })).await;
    assert_eq!(names(&found["contacts"]), ["Ada Lovelace"]);
    let found = c
        .ok("search_contacts", json!({ "organisation_id": org["id"] }))
        .await;
    assert_eq!(names(&found["contacts"]), ["Ada Lovelace"]);
    assert_eq!(
        c.err_code(
            "search_contacts",
            json!({ "organisation_id": Uuid::new_v4() })
        )
        .await,
        "not_found"
    );

    // Keyset pages of 3 cover the 4 contacts exactly once, in name order.
    let first = c.ok("search_contacts", json!({ "limit": 3 })).await;
    assert_eq!(first["has_more"], true);
    let rest = c
        .ok(
            "search_contacts",
            json!({ "limit": 3, "cursor": first["next_cursor"] }),
        )
        .await;
    assert_eq!(rest["has_more"], false);
    assert!(rest["next_cursor"].is_null());
    let mut all = names(&first["contacts"]);
    all.extend(names(&rest["contacts"]));
    assert_eq!(
        all,
        [
            "Ada Byron",
            "Ada Lovelace",
            "Charles Babbage",
            "Mary Somerville"
        ]
    );
    assert_eq!(
        c.err_code("search_contacts", json!({ "limit": 201 })).await,
        "invalid_input"
    );

    // Only the fields passed change; null clears.
    let updated = c
        .ok(
            "update_contact",
            json!({ "id": ada["id"], "phone": null, "organisation_id": null, "tags": ["pioneer"] }),
        )
        .await["contact"]
        .clone();
    assert_eq!(updated["name"], "Ada Lovelace");
    assert_eq!(updated["email"], "ada@engines.example");
    assert!(updated["phone"].is_null() && updated["organisation_id"].is_null());
    assert_eq!(updated["tags"], json!(["pioneer"]));
    c.ok(
        "update_contact",
        json!({ "id": ada["id"], "organisation_id": org["id"] }),
    )
    .await;

    let orgs = c
        .ok("search_organisations", json!({ "query": "analytical" }))
        .await;
    assert_eq!(orgs["organisations"][0]["contacts_count"], 1);
    // Pages of one through the organisations, in name order.
    c.ok("create_organisation", json!({ "name": "Zeta Works" }))
        .await;
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({ "limit": 1 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = c.ok("search_organisations", args).await;
        for o in page["organisations"].as_array().unwrap() {
            seen.push(o["name"].as_str().unwrap().to_owned());
        }
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert!(
        seen.len() >= 2 && seen.contains(&"Zeta Works".to_owned()),
        "{seen:?}"
    );
    let renamed = c
        .ok(
            "update_organisation",
            json!({ "id": org["id"], "name": "Engines Ltd", "domain": null }),
        )
        .await;
    assert!(renamed["organisation"]["domain"].is_null());

    // Deleting the organisation keeps its contacts, unlinked.
    let deleted = c
        .ok("delete_organisation", json!({ "id": org["id"] }))
        .await;
    assert_eq!(deleted["contacts_unlinked"], 1);
    let kept = contact(&c, &ada["id"]).await;
    assert!(kept["organisation_id"].is_null() && kept["organisation_name"].is_null());
    assert_eq!(
        c.err_code("delete_organisation", json!({ "id": org["id"] }))
            .await,
        "not_found"
    );

    c.ok("delete_contact", json!({ "id": ada["id"] })).await;
    assert_eq!(
        c.err_code("get_contact", json!({ "id": ada["id"] })).await,
        "not_found"
    );
    assert_eq!(
        c.err_code("delete_contact", json!({ "id": ada["id"] }))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn a_taken_email_is_a_conflict_naming_the_contact_that_has_it() {
    let env = TestEnv::start().await;
    let (_, _, c) = address_book(&env, "dupes").await;
    let ada = c
        .ok(
            "create_contact",
            json!({ "name": "Ada", "email": "ada@example.com" }),
        )
        .await["contact"]
        .clone();
    let e = c
        .err(
            "create_contact",
            json!({ "name": "Other Ada", "email": "ADA@Example.com" }),
        )
        .await;
    assert_eq!(e["code"], "conflict", "{e}");
    assert_eq!(e["existing_id"], ada["id"]);
    assert_eq!(e["path"], "email");

    let bob = c
        .ok(
            "create_contact",
            json!({ "name": "Bob", "email": "bob@example.com" }),
        )
        .await["contact"]
        .clone();
    let e = c
        .err(
            "update_contact",
            json!({ "id": bob["id"], "email": "Ada@example.com" }),
        )
        .await;
    assert_eq!(e["code"], "conflict", "{e}");
    assert_eq!(e["existing_id"], ada["id"]);
    assert_eq!(contact(&c, &bob["id"]).await["email"], "bob@example.com");
    // A contact keeping its own email is no conflict.
    c.ok(
        "update_contact",
        json!({ "id": ada["id"], "email": "ADA@example.com" }),
    )
    .await;
    let e = c
        .err("create_contact", json!({ "name": "X", "email": "nope" }))
        .await;
    assert_eq!(
        (e["code"].as_str(), e["path"].as_str()),
        (Some("invalid_input"), Some("email"))
    );
}

#[tokio::test]
async fn readers_read_and_cannot_write() {
    let env = TestEnv::start().await;
    let (ws, _, owner) = address_book(&env, "readers").await;
    let ada = owner.ok("create_contact", json!({ "name": "Ada" })).await["contact"].clone();
    let reader = env
        .client("/api/mcp/contacts", &env.key(ws, Role::Reader).await)
        .await;
    assert_eq!(contact(&reader, &ada["id"]).await["name"], "Ada");
    reader.ok("search_contacts", json!({})).await;
    reader.ok("search_organisations", json!({})).await;
    for (tool, args) in [
        ("create_contact", json!({ "name": "Eve" })),
        ("update_contact", json!({ "id": ada["id"], "name": "Eve" })),
        ("delete_contact", json!({ "id": ada["id"] })),
        ("create_organisation", json!({ "name": "Eve Corp" })),
        ("import_contacts", json!({ "rows": [{ "name": "Eve" }] })),
        (
            "merge_contacts",
            json!({ "keep_id": ada["id"], "merge_id": Uuid::new_v4() }),
        ),
        ("tag_contacts", json!({ "ids": [ada["id"]], "add": ["x"] })),
    ] {
        let e = reader.err(tool, args).await;
        assert_eq!(e["code"], "forbidden", "{tool}: {e}");
        assert_eq!(e["required_role"], "member", "{tool}");
    }
    let kept = contact(&owner, &ada["id"]).await;
    assert_eq!(
        (kept["name"].as_str(), kept["tags"].clone()),
        (Some("Ada"), json!([]))
    );
    let member = env
        .client("/api/mcp/contacts", &env.key(ws, Role::Member).await)
        .await;
    member
        .ok(
            "update_contact",
            json!({ "id": ada["id"], "name": "Ada L." }),
        )
        .await;
}

#[tokio::test]
async fn another_workspaces_ids_are_not_found_and_nothing_changes() {
    let env = TestEnv::start().await;
    let (_, _, a) = address_book(&env, "A").await;
    let (_, _, b) = address_book(&env, "B").await;
    let a_org = a
        .ok("create_organisation", json!({ "name": "A Corp" }))
        .await["organisation"]
        .clone();
    let a_row = a
        .ok(
            "create_contact",
            json!({ "name": "Alice", "email": "alice@a.example", "tags": ["a"] }),
        )
        .await["contact"]
        .clone();
    let b_row = b.ok("create_contact", json!({ "name": "Bob" })).await["contact"].clone();

    for (tool, args) in [
        ("get_contact", json!({ "id": a_row["id"] })),
        (
            "update_contact",
            json!({ "id": a_row["id"], "name": "Mallory" }),
        ),
        (
            "update_contact",
            json!({ "id": a_row["id"], "email": "m@b.example" }),
        ),
        ("delete_contact", json!({ "id": a_row["id"] })),
        (
            "merge_contacts",
            json!({ "keep_id": b_row["id"], "merge_id": a_row["id"] }),
        ),
        (
            "merge_contacts",
            json!({ "keep_id": a_row["id"], "merge_id": b_row["id"] }),
        ),
        (
            "tag_contacts",
            json!({ "ids": [b_row["id"], a_row["id"]], "add": ["b"] }),
        ),
        (
            "create_contact",
            json!({ "name": "Mallory", "organisation_id": a_org["id"] }),
        ),
        (
            "update_contact",
            json!({ "id": b_row["id"], "organisation_id": a_org["id"] }),
        ),
        (
            "update_organisation",
            json!({ "id": a_org["id"], "name": "Mine" }),
        ),
        ("delete_organisation", json!({ "id": a_org["id"] })),
    ] {
        let e = b.err(tool, args).await;
        assert_eq!(e["code"], "not_found", "{tool}: {e}");
    }
    // The same email is free in another workspace (the unique index is per workspace).
    b.ok(
        "create_contact",
        json!({ "name": "Other Alice", "email": "ALICE@a.example" }),
    )
    .await;
    let b_search = b.ok("search_contacts", json!({ "query": "alice" })).await;
    assert_eq!(names(&b_search["contacts"]), ["Other Alice"]);

    let kept = contact(&a, &a_row["id"]).await;
    assert_eq!(kept["name"], "Alice");
    assert_eq!(kept["email"], "alice@a.example");
    assert_eq!(kept["tags"], json!(["a"]));
    assert_eq!(
        a.ok("search_organisations", json!({})).await["organisations"][0]["name"],
        "A Corp"
    );
    let b_kept = contact(&b, &b_row["id"]).await;
    assert_eq!(b_kept["tags"], json!([]));
    assert!(b_kept["organisation_id"].is_null());
}

#[tokio::test]
async fn custom_values_are_checked_and_shown() {
    let env = TestEnv::start().await;
    let (ws, _, c) = address_book(&env, "custom").await;
    c.ok(
        "add_custom_field",
        json!({ "entity": "contact", "name": "tier", "type": "select", "options": ["gold", "silver"] }),
    )
    .await;
    c.ok(
        "add_custom_field",
        json!({ "entity": "organisation", "name": "employees", "type": "number" }),
    )
    .await;
    let e = c
        .err(
            "create_contact",
            json!({ "name": "Ada", "custom": { "tier": "bronze" } }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input", "{e}");
    assert_eq!(e["path"], "custom.tier");
    let e = c
        .err(
            "create_contact",
            json!({ "name": "Ada", "custom": { "unknown": 1 } }),
        )
        .await;
    assert_eq!(e["path"], "custom.unknown");
    let e = c
        .err(
            "create_organisation",
            json!({ "name": "Org", "custom": { "employees": "many" } }),
        )
        .await;
    assert_eq!(e["path"], "custom.employees");
    let ada = c
        .ok(
            "create_contact",
            json!({ "name": "Ada", "custom": { "tier": "gold" } }),
        )
        .await["contact"]
        .clone();
    assert_eq!(ada["custom"], json!({ "tier": "gold" }));
    let e = c
        .err(
            "update_contact",
            json!({ "id": ada["id"], "custom": { "tier": 3 } }),
        )
        .await;
    assert_eq!(e["path"], "custom.tier");
    let cleared = c
        .ok(
            "update_contact",
            json!({ "id": ada["id"], "custom": { "tier": null } }),
        )
        .await;
    assert_eq!(cleared["contact"]["custom"], json!({}));
    let org = c
        .ok(
            "create_organisation",
            json!({ "name": "Org", "custom": { "employees": 12 } }),
        )
        .await;
    assert_eq!(org["organisation"]["custom"], json!({ "employees": 12 }));

    // Fields are personal until promoted: another credential sees neither them nor their values.
    c.ok(
        "update_contact",
        json!({ "id": ada["id"], "custom": { "tier": "silver" } }),
    )
    .await;
    let other = env
        .client("/api/mcp/contacts", &env.key(ws, Role::Member).await)
        .await;
    assert_eq!(contact(&other, &ada["id"]).await["custom"], json!({}));
    let listed = other.ok("search_organisations", json!({})).await;
    assert_eq!(listed["organisations"][0]["custom"], json!({}));
    let e = other
        .err(
            "update_contact",
            json!({ "id": ada["id"], "custom": { "tier": "gold" } }),
        )
        .await;
    assert_eq!(e["path"], "custom.tier");
    assert_eq!(
        contact(&c, &ada["id"]).await["custom"],
        json!({ "tier": "silver" })
    );
}

#[tokio::test]
async fn import_dedupes_by_email_within_the_file_and_against_existing_contacts() {
    let env = TestEnv::start().await;
    let (_, _, c) = address_book(&env, "import").await;
    c.ok(
        "add_custom_field",
        json!({ "entity": "contact", "name": "source", "type": "text" }),
    )
    .await;
    let acme = c
        .ok("create_organisation", json!({ "name": "Acme Robotics" }))
        .await["organisation"]
        .clone();
    let existing = c
        .ok(
            "create_contact",
            json!({
                "name": "Ann Old", "email": "ann@acme.example", "phone": "111",
                "tags": ["customer"], "custom": { "source": "web" },
            }),
        )
        .await["contact"]
        .clone();

    let report = c
        .ok(
            "import_contacts",
            json!({ "rows": [
                // Updates the existing contact (email matched whatever its case).
                { "name": "Ann New", "email": "ANN@acme.example", "phone": "", "tags": ["vip", "customer"],
                  "organisation": "ACME robotics" },
                // New, at a new organisation.
                { "name": "Ben", "email": "ben@beta.example", "organisation": "Beta GmbH", "tags": ["lead"],
                  "custom": { "source": "fair" } },
                // The same person again later in the file: folded into the row above.
                { "name": "Ben Beta", "email": "Ben@Beta.example", "phone": "222", "tags": ["fair"],
                  "organisation": "beta gmbh" },
                // No email: always a new contact.
                { "name": "Cy" },
                { "name": "Cy" },
            ] }),
        )
        .await;
    assert_eq!(report["created"], 3, "{report}");
    assert_eq!(report["updated"], 2, "{report}");
    assert_eq!(report["skipped"], 0);
    assert_eq!(report["errors"], json!([]));
    assert_eq!(report["organisations_created"], 1);
    let outcomes: Vec<&str> = report["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["updated", "created", "updated", "created", "created"]
    );
    assert_eq!(report["contacts"][0]["id"], existing["id"]);
    assert_eq!(report["contacts"][1]["id"], report["contacts"][2]["id"]);

    let ann = contact(&c, &existing["id"]).await;
    assert_eq!(ann["name"], "Ann New");
    assert_eq!(ann["email"], "ann@acme.example");
    assert_eq!(ann["phone"], "111", "an empty cell keeps the stored value");
    assert_eq!(ann["tags"], json!(["customer", "vip"]));
    assert_eq!(ann["custom"], json!({ "source": "web" }));
    assert_eq!(
        ann["organisation_id"], acme["id"],
        "found whatever its case"
    );

    let ben = contact(&c, &report["contacts"][1]["id"]).await;
    assert_eq!(ben["name"], "Ben Beta");
    assert_eq!(ben["email"], "ben@beta.example");
    assert_eq!(ben["phone"], "222");
    assert_eq!(ben["tags"], json!(["lead", "fair"]));
    assert_eq!(ben["custom"], json!({ "source": "fair" }));
    assert_eq!(ben["organisation_name"], "Beta GmbH");
    let orgs = c.ok("search_organisations", json!({})).await;
    assert_eq!(
        names(&orgs["organisations"]),
        ["Acme Robotics", "Beta GmbH"]
    );
    let all = c.ok("search_contacts", json!({})).await;
    assert_eq!(names(&all["contacts"]), ["Ann New", "Ben Beta", "Cy", "Cy"]);

    // Importing the same file again creates nothing new but the email-less rows.
    let again = c
        .ok(
            "import_contacts",
            json!({ "rows": [{ "name": "Ben", "email": "ben@beta.example", "organisation": "Beta GmbH" }] }),
        )
        .await;
    assert_eq!(
        (again["created"].clone(), again["updated"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(again["organisations_created"], 0);
}

#[tokio::test]
async fn a_bad_row_fails_the_whole_import_unless_skip_invalid() {
    let env = TestEnv::start().await;
    let (_, _, c) = address_book(&env, "bad-import").await;
    c.ok(
        "add_custom_field",
        json!({ "entity": "contact", "name": "score", "type": "number" }),
    )
    .await;
    let rows = json!([
        { "name": "Good", "email": "good@example.com", "organisation": "New Org" },
        { "name": "Bad email", "email": "not-an-email" },
        { "name": "" },
        { "name": "Bad custom", "custom": { "score": "high" } },
        { "name": "Unknown field", "fax": "123" },
        17,
        { "name": "Also good", "tags": ["t"] },
    ]);
    let e = c
        .err("import_contacts", json!({ "rows": rows.clone() }))
        .await;
    assert_eq!(e["code"], "invalid_input", "{e}");
    assert_eq!(e["path"], "rows[1].email");
    let errors: Vec<(u64, &str)> = e["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [
            (1, "rows[1].email"),
            (2, "rows[2].name"),
            (3, "rows[3].custom.score"),
            (4, "rows[4].fax"),
            (5, "rows[5]"),
        ]
    );
    // Nothing was written: no contact, no organisation.
    assert_eq!(
        c.ok("search_contacts", json!({})).await["contacts"],
        json!([])
    );
    assert_eq!(
        c.ok("search_organisations", json!({})).await["organisations"],
        json!([])
    );

    let report = c
        .ok(
            "import_contacts",
            json!({ "rows": rows, "skip_invalid": true }),
        )
        .await;
    assert_eq!(report["created"], 2, "{report}");
    assert_eq!(report["updated"], 0);
    assert_eq!(report["skipped"], 5);
    assert_eq!(report["errors"].as_array().unwrap().len(), 5);
    assert_eq!(report["errors"][2]["path"], "rows[3].custom.score");
    let all = c.ok("search_contacts", json!({})).await;
    assert_eq!(names(&all["contacts"]), ["Also good", "Good"]);

    assert_eq!(
        c.err("import_contacts", json!({ "rows": [] })).await["path"],
        "rows"
    );
    let too_many: Vec<Value> = (0..501)
        .map(|i| json!({ "name": format!("P{i}") }))
        .collect();
    assert_eq!(
        c.err("import_contacts", json!({ "rows": too_many })).await["path"],
        "rows"
    );
}

#[tokio::test]
async fn merge_folds_a_duplicate_into_the_kept_contact() {
    let env = TestEnv::start().await;
    let (_, _, c) = address_book(&env, "merge").await;
    c.ok(
        "add_custom_field",
        json!({ "entity": "contact", "name": "tier", "type": "text" }),
    )
    .await;
    c.ok(
        "add_custom_field",
        json!({ "entity": "contact", "name": "source", "type": "text" }),
    )
    .await;
    let org = c.ok("create_organisation", json!({ "name": "Acme" })).await["organisation"].clone();
    let keep = c
        .ok(
            "create_contact",
            json!({ "name": "Ann", "phone": "111", "tags": ["a", "b"], "custom": { "tier": "gold" } }),
        )
        .await["contact"]
        .clone();
    let dupe = c
        .ok(
            "create_contact",
            json!({
                "name": "Ann B.", "email": "ann@example.com", "phone": "222", "organisation_id": org["id"],
                "tags": ["b", "c"], "custom": { "tier": "silver", "source": "fair" },
            }),
        )
        .await["contact"]
        .clone();

    let merged = c
        .ok(
            "merge_contacts",
            json!({ "keep_id": keep["id"], "merge_id": dupe["id"] }),
        )
        .await;
    let kept = &merged["contact"];
    assert_eq!(kept["id"], keep["id"]);
    assert_eq!(kept["name"], "Ann");
    assert_eq!(kept["email"], "ann@example.com", "the email moved over");
    assert_eq!(kept["phone"], "111", "the kept contact's own value stays");
    assert_eq!(kept["organisation_id"], org["id"]);
    assert_eq!(kept["organisation_name"], "Acme");
    assert_eq!(kept["tags"], json!(["a", "b", "c"]));
    assert_eq!(kept["custom"], json!({ "tier": "gold", "source": "fair" }));
    assert_eq!(merged["filled"], json!(["email", "organisation_id"]));
    assert_eq!(
        c.err_code("get_contact", json!({ "id": dupe["id"] })).await,
        "not_found"
    );
    // The email is the kept contact's now: a new contact cannot take it.
    let e = c
        .err(
            "create_contact",
            json!({ "name": "Z", "email": "ann@example.com" }),
        )
        .await;
    assert_eq!(e["existing_id"], keep["id"]);

    let e = c
        .err(
            "merge_contacts",
            json!({ "keep_id": keep["id"], "merge_id": keep["id"] }),
        )
        .await;
    assert_eq!(e["code"], "invalid_input");
    assert_eq!(e["path"], "merge_id");
    let e = c
        .err(
            "merge_contacts",
            json!({ "keep_id": keep["id"], "merge_id": dupe["id"] }),
        )
        .await;
    assert_eq!(e["code"], "not_found");
    assert_eq!(e["path"], "merge_id");
    let e = c
        .err(
            "merge_contacts",
            json!({ "keep_id": Uuid::new_v4(), "merge_id": keep["id"] }),
        )
        .await;
    assert_eq!(e["code"], "not_found");
    assert_eq!(
        contact(&c, &keep["id"]).await["tags"],
        json!(["a", "b", "c"])
    );
}

#[tokio::test]
async fn tag_contacts_changes_many_at_once_or_none() {
    let env = TestEnv::start().await;
    let (_, _, c) = address_book(&env, "tags").await;
    let mut ids = Vec::new();
    for (name, tags) in [
        ("A", json!(["old"])),
        ("B", json!(["old", "x"])),
        ("C", json!([])),
    ] {
        ids.push(
            c.ok("create_contact", json!({ "name": name, "tags": tags }))
                .await["contact"]["id"]
                .clone(),
        );
    }
    let done = c
        .ok(
            "tag_contacts",
            json!({ "ids": ids, "add": ["new", "x"], "remove": ["old"] }),
        )
        .await;
    assert_eq!(done["matched"], 3);
    assert_eq!(done["changed"], 3);
    assert_eq!(contact(&c, &ids[0]).await["tags"], json!(["new", "x"]));
    assert_eq!(contact(&c, &ids[1]).await["tags"], json!(["x", "new"]));
    assert_eq!(contact(&c, &ids[2]).await["tags"], json!(["new", "x"]));
    // Repeating it changes nothing.
    let again = c
        .ok(
            "tag_contacts",
            json!({ "ids": ids, "add": ["new"], "remove": ["old"] }),
        )
        .await;
    assert_eq!(again["changed"], 0);

    // An unknown id: not_found naming it, and no contact changed.
    let stranger = Uuid::new_v4();
    let e = c
        .err(
            "tag_contacts",
            json!({ "ids": [ids[0], stranger], "add": ["never"] }),
        )
        .await;
    assert_eq!(e["code"], "not_found", "{e}");
    assert_eq!(e["missing_ids"], json!([stranger]));
    assert_eq!(contact(&c, &ids[0]).await["tags"], json!(["new", "x"]));

    for args in [
        json!({ "ids": [], "add": ["a"] }),
        json!({ "ids": [ids[0]] }),
        json!({ "ids": [ids[0]], "add": ["a"], "remove": ["a"] }),
        json!({ "ids": [ids[0]], "add": [""] }),
    ] {
        assert_eq!(c.err_code("tag_contacts", args).await, "invalid_input");
    }
    let many: Vec<String> = (0..49).map(|i| format!("t{i}")).collect();
    let e = c
        .err("tag_contacts", json!({ "ids": [ids[0]], "add": many }))
        .await;
    assert_eq!(
        (e["code"].as_str(), e["path"].as_str()),
        (Some("invalid_input"), Some("add")),
        "{e}"
    );
    assert_eq!(contact(&c, &ids[0]).await["tags"], json!(["new", "x"]));
}
