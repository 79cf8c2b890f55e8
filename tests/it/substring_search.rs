//! Substring search at scale (migration V18): every column a named `search_*` tool matches
//! with ILIKE has a trigram GIN index leading with workspace_id, the planner uses it as the
//! runtime role under row-level security, and the searches still return the right rows.
//! No timings here: `benches/substring_search.sh` measures.

use std::collections::BTreeSet;

use hdls::db::RUNTIME_ROLE;
use hdls::identity::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestDb, TestEnv};

/// One `<operand> ILIKE $n` of a named tool's SQL, with the table it reads.
#[derive(Debug)]
struct Match {
    file: String,
    table: String,
    operand: String,
}

/// Every `… ILIKE $n` in the products' source, with its table: the nearest preceding
/// `FROM schema.table [alias]` whose alias is the operand's (or any, for a bare operand).
fn named_search_matches() -> Vec<Match> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/products");
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let bytes = text.as_bytes();
        for (at, _) in text.match_indices(" ILIKE $") {
            // The operand ends right before " ILIKE": an identifier (maybe alias.column) or a
            // parenthesised expression.
            let mut start = at;
            if bytes[at - 1] == b')' {
                let mut depth = 0;
                loop {
                    start -= 1;
                    match bytes[start] {
                        b')' => depth += 1,
                        b'(' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            } else {
                while start > 0
                    && (bytes[start - 1].is_ascii_alphanumeric()
                        || bytes[start - 1] == b'_'
                        || bytes[start - 1] == b'.')
                {
                    start -= 1;
                }
            }
            let operand = &text[start..at];
            let (alias, column) = match operand.split_once('.') {
                Some((a, c)) if !operand.starts_with('(') => (Some(a), c.to_owned()),
                _ => (None, operand.to_owned()),
            };
            let table = text[..start]
                .rmatch_indices("FROM ")
                .find_map(|(from, _)| {
                    let mut words = text[from + 5..].split_whitespace();
                    let table = words.next()?;
                    if !table.contains('.') {
                        return None;
                    }
                    let next = words.next().unwrap_or("");
                    match alias {
                        Some(a) if next != a => None,
                        _ => Some(table.to_owned()),
                    }
                })
                .unwrap_or_else(|| panic!("no FROM for {operand} in {}", path.display()));
            found.push(Match {
                file: path.display().to_string(),
                table,
                operand: column,
            });
        }
    }
    found
}

/// The column definitions of an index (`gin (workspace_id, name hdls_ext.gin_trgm_ops)`), as
/// PostgreSQL prints them, without the index name.
fn index_shape(indexdef: &str) -> String {
    indexdef
        .split_once(" USING ")
        .map(|(_, shape)| shape.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_named_search_column_has_a_workspace_trigram_index() {
    let matches = named_search_matches();
    // The tools known today, so the scan above cannot silently find nothing.
    let tables: BTreeSet<&str> = matches.iter().map(|m| m.table.as_str()).collect();
    for table in [
        "crm.accounts",
        "crm.contacts",
        "crm.deals",
        "contacts.contacts",
        "contacts.organisations",
        "support.requesters",
        "support.tickets",
    ] {
        assert!(
            tables.contains(table),
            "no ILIKE found on {table}: {matches:?}"
        );
    }
    let db = TestDb::create().await;
    let mut su = db.connect_superuser().await;
    for m in &matches {
        // PostgreSQL prints the index the tool's operand would need; an existing index of the
        // same shape on the same table must be there.
        let tx = su.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "CREATE INDEX trgm_probe ON {} USING gin (workspace_id, {} hdls_ext.gin_trgm_ops)",
            m.table, m.operand
        ))
        .await
        .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        let (schema, table) = m.table.split_once('.').unwrap();
        let rows = tx
            .query(
                "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
                &[&schema, &table],
            )
            .await
            .unwrap();
        let wanted = rows
            .iter()
            .find(|r| r.get::<_, String>(0) == "trgm_probe")
            .map(|r| index_shape(r.get(1)))
            .unwrap();
        assert!(
            rows.iter()
                .any(|r| r.get::<_, String>(0) != "trgm_probe" && index_shape(r.get(1)) == wanted),
            "{} matches {}.{} with ILIKE but no index {wanted} exists (add it in a migration)",
            m.file,
            m.table,
            m.operand
        );
        tx.rollback().await.unwrap();
    }
}

/// Loads `n` accounts named "<Word> <Word> <i>" into a workspace as the superuser (change
/// events off), then VACUUM ANALYZE (which also moves the GIN pending lists into the indexes).
async fn load_accounts(db: &TestDb, ws: Uuid, n: i32) {
    let su = db.connect_superuser().await;
    su.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    su.execute(
        "INSERT INTO crm.accounts (workspace_id, id, name, domain, custom, created_at, updated_at)
         SELECT $1, gen_random_uuid(),
                (ARRAY['Acme','Globex','Initech','Umbrella','Hooli','Stark','Wayne','Wonka'])[1 + i % 8]
                || ' ' ||
                (ARRAY['Robotics','Logistics','Systems','Foods','Pharma','Energy','Media','Labs'])[1 + (i / 8) % 8]
                || ' ' || i,
                'd' || i || '.example', '{}', now(), now()
         FROM generate_series(1, $2) i",
        &[&ws, &n],
    )
    .await
    .unwrap();
    su.batch_execute("VACUUM ANALYZE crm.accounts")
        .await
        .unwrap();
}

/// The plan of a statement as the runtime role in a workspace, as text. Sequential scans are
/// off: with one workspace in a small test table a scan is cheapest, and the question here is
/// whether the ILIKE reaches the trigram index under RLS at all (it does not when LIKE/ILIKE
/// are not leakproof: the plan is then a walk of the workspace's btree with a filter).
async fn plan(
    db: &TestDb,
    ws: Uuid,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    let mut rt = db.connect_as(RUNTIME_ROLE).await;
    let tx = rt.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL hdls.workspace_id = '{ws}'; SET LOCAL hdls.persona = 'agent';
         SET LOCAL enable_seqscan = off"
    ))
    .await
    .unwrap();
    let rows = tx.query(&format!("EXPLAIN {sql}"), params).await.unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A test database with one workspace of 20,000 accounts, its statistics up to date.
async fn workspace_of_20_000_accounts() -> (TestDb, Uuid) {
    let db = TestDb::create().await;
    let ws = Uuid::new_v4();
    db.connect_superuser()
        .await
        .execute(
            "INSERT INTO hdls.workspaces (workspace_id, name) VALUES ($1, 'plans')",
            &[&ws],
        )
        .await
        .unwrap();
    load_accounts(&db, ws, 20_000).await;
    (db, ws)
}

/// Whether the plan applies `column ~~* …` inside an index scan (not as a filter after one).
fn ilike_in_index_cond(plan: &str, column: &str) -> bool {
    plan.lines()
        .any(|l| l.contains("Index Cond:") && l.contains(&format!("{column} ~~* ")))
}

#[tokio::test]
async fn a_rare_substring_is_found_through_the_trigram_index_as_the_runtime_role() {
    let (db, ws) = workspace_of_20_000_accounts().await;
    // A first page starts after ('', the nil uuid), as the tool passes it (named::after_or_start).
    let (start, nil) = (String::new(), Uuid::nil());
    let pattern = Some("%zqxj%".to_owned());
    // search_accounts' own statement: the ILIKE is an index condition, not a filter over the
    // workspace (which it is when LIKE/ILIKE are not leakproof: RLS forbids pushing it down).
    let search = plan(
        &db,
        ws,
        hdls::products::crm::SEARCH_SQL,
        &[&pattern, &start, &nil, &51i64, &ws],
    )
    .await;
    assert!(
        search.contains("accounts_name_trgm") && search.contains("accounts_domain_trgm"),
        "{search}"
    );
    assert!(ilike_in_index_cond(&search, "name"), "{search}");
    assert!(ilike_in_index_cond(&search, "domain"), "{search}");
    // The shape query_records builds for {column: name, op: ilike}.
    let records = plan(
        &db,
        ws,
        "SELECT t.id FROM crm.accounts t WHERE t.workspace_id = $1 AND true
           AND t.name ILIKE $2::text::text
         ORDER BY t.id ASC NULLS LAST LIMIT 51",
        &[&ws, &"%zqxj%"],
    )
    .await;
    assert!(records.contains("accounts_name_trgm"), "{records}");
    assert!(ilike_in_index_cond(&records, "name"), "{records}");
}

async fn scan(su: &tokio_postgres::Client, ws: Uuid, needle: &str) -> Vec<String> {
    su.query(
        "SELECT name FROM crm.accounts
         WHERE workspace_id = $1
           AND (strpos(lower(name), lower($2)) > 0 OR strpos(lower(domain), lower($2)) > 0)
         ORDER BY name, id",
        &[&ws, &needle],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect()
}

fn account_names(page: &Value) -> Vec<String> {
    page["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn substring_searches_return_the_same_rows_with_the_indexes() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("substrings").await;
    let (other, _) = env.workspace("elsewhere").await;
    load_accounts(&env.db, ws, 5_000).await;
    load_accounts(&env.db, other, 5_000).await;
    let crm = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;

    // What a scan would find, computed without LIKE (strpos on lower case), in name order.
    let su = env.db.connect_superuser().await;
    for needle in ["cme Rob", "CME ROBOTICS 1", "s Lab", "d4999.exa", "zqxj"] {
        let want = scan(&su, ws, needle).await;
        // Every page, through the keyset cursor.
        let mut got = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let mut args = json!({ "query": needle, "limit": 37 });
            if !cursor.is_null() {
                args["cursor"] = cursor.clone();
            }
            let page = crm.ok("search_accounts", args).await;
            got.extend(account_names(&page));
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(got, want, "{needle}");
    }
    assert!(!scan(&su, ws, "cme Rob").await.is_empty());

    // LIKE's metacharacters in the search text match literally.
    crm.ok("search_accounts", json!({})).await;
    let writer = env
        .client("/api/mcp/crm", &env.key(ws, Role::Member).await)
        .await;
    writer
        .ok("create_account", json!({ "name": "100% Pure_Water" }))
        .await;
    let found = crm
        .ok("search_accounts", json!({ "query": "0% Pure_W" }))
        .await;
    assert_eq!(account_names(&found), ["100% Pure_Water"]);
    let none = crm
        .ok("search_accounts", json!({ "query": "0%_Pure" }))
        .await;
    assert_eq!(account_names(&none), Vec::<String>::new());

    // query_records with ilike: the same rows as the superuser's scan.
    let rows = crm
        .ok(
            "query_records",
            json!({ "table": "accounts", "select": ["name"], "limit": 200,
                    "filter": { "column": "name", "op": "ilike", "value": "%cme Rob%" } }),
        )
        .await;
    let mut got: Vec<String> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = su
        .query(
            "SELECT name FROM crm.accounts WHERE workspace_id = $1 AND strpos(lower(name), 'cme rob') > 0",
            &[&ws],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    want.sort();
    assert!(!want.is_empty() && want.len() < 200);
    assert_eq!(got, want);
}

/// A named search first filters the first rows of the workspace in the page's order, then,
/// if that did not fill the page, searches every row (`named::search_rows`). Pages filled
/// either way, and pages that cross from one to the other, return what a scan finds, also
/// when another workspace holds most of the table (which is what makes the planner's
/// table-wide statistics misjudge a small workspace).
#[tokio::test]
async fn searches_fill_pages_from_the_head_or_from_every_row_alike() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("small").await;
    let (big, _) = env.workspace("big").await;
    load_accounts(&env.db, big, 20_000).await;
    let su = env.db.connect_superuser().await;
    su.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    su.execute(
        "INSERT INTO crm.accounts (workspace_id, id, name, domain, custom, created_at, updated_at)
         SELECT $1, gen_random_uuid(),
                CASE WHEN i <= 300 THEN 'Alpha ' || lpad(i::text, 3, '0')
                     WHEN i <= 303 THEN 'Zulu Target ' || i
                     ELSE 'Other ' || i END,
                NULL, '{}', now(), now()
         FROM generate_series(1, 400) i",
        &[&ws],
    )
    .await
    .unwrap();
    su.batch_execute("VACUUM ANALYZE crm.accounts")
        .await
        .unwrap();
    let crm = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;
    for (needle, limit) in [
        // The head fills the first two pages; the third crosses into every row.
        ("Alpha", 100),
        // Rare in the workspace: every page from every row.
        ("Target", 2),
        ("lpha 29", 4),
        // No pattern: every row, through the head.
        ("", 150),
    ] {
        let want = scan(&su, ws, needle).await;
        let mut got = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let mut args = json!({ "limit": limit });
            if !needle.is_empty() {
                args["query"] = json!(needle);
            }
            if !cursor.is_null() {
                args["cursor"] = cursor.clone();
            }
            let page = crm.ok("search_accounts", args).await;
            got.extend(account_names(&page));
            cursor = page["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(got, want, "{needle:?}");
    }
    assert_eq!(scan(&su, ws, "Alpha").await.len(), 300);
    assert_eq!(scan(&su, ws, "Target").await.len(), 3);
}

/// `hdls setup` marks LIKE/ILIKE leakproof, so they may run on rows before the row policy
/// filters them. That is safe only because their one row-dependent error (a pattern ending in
/// a lone backslash) never reaches the database: the power tools refuse such a pattern, and
/// named searches escape theirs.
#[tokio::test]
async fn a_pattern_ending_in_a_lone_backslash_never_reaches_the_database() {
    let env = TestEnv::start().await;
    let (_, owner) = env.workspace("patterns").await;
    let crm = env.client("/api/mcp/crm", &owner).await;
    crm.ok("create_account", json!({ "name": "Back\\slash Ltd" }))
        .await;
    for op in ["like", "ilike"] {
        for pattern in ["%Back\\", "\\", "a\\\\\\"] {
            let refused = crm
                .err(
                    "query_records",
                    json!({ "table": "accounts",
                            "filter": { "column": "name", "op": op, "value": pattern } }),
                )
                .await;
            assert_eq!(
                refused["code"], "invalid_input",
                "{op} {pattern:?}: {refused}"
            );
            assert!(
                refused["message"]
                    .as_str()
                    .unwrap()
                    .contains("lone backslash"),
                "{op} {pattern:?}: {refused}"
            );
        }
    }
    // An escaped backslash is a literal one; a named search's text is escaped whole.
    let found = crm
        .ok(
            "query_records",
            json!({ "table": "accounts",
                    "filter": { "column": "name", "op": "like", "value": "%Back\\\\%" } }),
        )
        .await;
    assert_eq!(found["rows"].as_array().unwrap().len(), 1, "{found}");
    let searched = crm
        .ok("search_accounts", json!({ "query": "Back\\" }))
        .await;
    assert_eq!(
        searched["accounts"].as_array().unwrap().len(),
        1,
        "{searched}"
    );
}

/// The head of a named search runs on its generic plan (named::search_rows), planned once for
/// every pattern and position: that plan must still start its index scan at the cursor, or a
/// deep page would filter its way there from the workspace's first row.
#[tokio::test]
async fn a_search_heads_generic_plan_starts_at_the_cursor() {
    let (db, ws) = workspace_of_20_000_accounts().await;
    let mut rt = db.connect_as(RUNTIME_ROLE).await;
    let tx = rt.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL hdls.workspace_id = '{ws}'; SET LOCAL hdls.persona = 'agent';
         SET LOCAL plan_cache_mode = force_generic_plan;
         PREPARE head (text, text, uuid, bigint, uuid) AS {}",
        hdls::products::crm::SEARCH_HEAD_SQL
    ))
    .await
    .unwrap();
    let explained = tx
        .simple_query(&format!(
            "EXPLAIN EXECUTE head('%Robotics%', 'Stark', '{}', 21, '{ws}')",
            Uuid::nil()
        ))
        .await
        .unwrap();
    let plan: Vec<String> = explained
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    let plan = plan.join("\n");
    // A generic plan shows the parameters, not the values.
    assert!(plan.contains("$2"), "not the generic plan:\n{plan}");
    assert!(
        plan.lines().any(|l| l.contains("Index Cond:")
            && l.contains("workspace_id = $5")
            && l.contains("ROW(name, id) > ROW($2, $3)")),
        "{plan}"
    );
}
