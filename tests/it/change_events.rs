//! The change-event outbox: one event per write to a product table, in the same transaction
//! (none when it rolls back), with the op, the record, the actor and the server clock's time;
//! every product table has the trigger; nobody rewrites an event.

use hdls::db::RUNTIME_ROLE;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::harness::{TestDb, TestEnv, assert_refused};

async fn events(
    env: &TestEnv,
    ws: Uuid,
) -> Vec<(
    String,
    String,
    Option<Uuid>,
    Value,
    Option<Vec<String>>,
    Option<String>,
    time::OffsetDateTime,
)> {
    env.db
        .connect_superuser()
        .await
        .query(
            "SELECT table_name, op, record_id, data, changed, actor, occurred_at
             FROM hdls.change_events WHERE workspace_id = $1 AND table_name = 'accounts'
             ORDER BY event_id",
            &[&ws],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_write_records_one_event_with_its_actor_and_time() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("Events").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    let whoami = env
        .client("/api/mcp", &key)
        .await
        .ok("whoami", json!({}))
        .await;
    let key_id = whoami["credential"]["id"].as_str().unwrap().to_owned();
    let created = crm
        .ok(
            "create_account",
            json!({ "name": "Evented", "domain": "ev.example" }),
        )
        .await;
    let id: Uuid = created["account"]["id"].as_str().unwrap().parse().unwrap();
    env.clock.advance(time::Duration::seconds(5));
    crm.ok("update_account", json!({ "id": id, "name": "Evented Inc" }))
        .await;
    // Event ids are time-ordered to the millisecond of the server clock.
    env.clock.advance(time::Duration::milliseconds(1));
    crm.ok("delete_account", json!({ "id": id })).await;
    let events = events(&env, ws).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let ops: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(ops, ["insert", "update", "delete"]);
    for (table, _, record, data, _, actor, _) in &events {
        assert_eq!(table, "accounts");
        assert_eq!(*record, Some(id));
        assert_eq!(actor.as_deref(), Some(key_id.as_str()));
        assert!(data.get("workspace_id").is_none(), "{data}");
    }
    assert_eq!(events[0].3["name"], "Evented");
    assert_eq!(events[1].3["name"], "Evented Inc");
    let changed = events[1].4.clone().unwrap();
    assert!(changed.contains(&"name".to_owned()), "{changed:?}");
    assert!(!changed.contains(&"domain".to_owned()), "{changed:?}");
    assert_eq!(
        events[2].3["name"], "Evented Inc",
        "a delete carries the old row"
    );
    // The time is the server clock's (the test drives it), to the millisecond.
    let gap = events[1].6 - events[0].6;
    assert!(
        gap >= time::Duration::seconds(5) && gap < time::Duration::seconds(6),
        "{gap}"
    );
}

#[tokio::test]
async fn a_rolled_back_call_records_nothing() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("Rollback").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    // The second row breaks the name check, so the whole insert rolls back.
    let refused = crm
        .err(
            "insert_record",
            json!({ "table": "accounts", "rows": [{ "name": "fine" }, { "name": "" }] }),
        )
        .await;
    assert_eq!(refused["code"], "invalid_input", "{refused}");
    assert!(events(&env, ws).await.is_empty());
}

#[tokio::test]
async fn every_product_table_records_changes() {
    let db = TestDb::create().await;
    let missing: Vec<String> = db
        .connect_superuser()
        .await
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('crm', 'support', 'contacts') AND c.relkind IN ('r', 'p')
               AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                               WHERE t.tgrelid = c.oid AND t.tgname = 'record_change' AND t.tgenabled <> 'D')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        missing.is_empty(),
        "product tables without the outbox trigger: {missing:?}"
    );
}

#[tokio::test]
async fn the_runtime_role_can_neither_rewrite_nor_remove_an_event() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("Final").await;
    env.client("/api/mcp/crm", &key)
        .await
        .ok("create_account", json!({ "name": "Kept" }))
        .await;
    let rt = env.db.connect_as(RUNTIME_ROLE).await;
    for (statement, reason) in [
        (
            "UPDATE hdls.change_events SET op = 'delete'",
            "permission denied",
        ),
        ("DELETE FROM hdls.change_events", "permission denied"),
    ] {
        assert_refused(
            rt.batch_execute(&format!(
                "BEGIN; SET LOCAL hdls.workspace_id = '{ws}'; {statement}; COMMIT;"
            ))
            .await,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            reason,
            statement,
        );
        rt.batch_execute("ROLLBACK").await.unwrap();
    }
    assert_eq!(events(&env, ws).await.len(), 1);
}
