//! Rows are stamped with the injected clock, never with SQL `now()`: a test that moves the
//! ManualClock sees its time in what the tools write.

use hdls::db::OWNER_ROLE;
use hdls::identity::Role;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::harness::TestEnv;

/// Asserts `stored` is the clock's `expected` time (to PostgreSQL's microsecond).
fn same_instant(stored: OffsetDateTime, expected: OffsetDateTime, what: &str) {
    let gap = (stored - expected).abs();
    assert!(
        gap < time::Duration::milliseconds(1),
        "{what}: stored {stored}, the clock said {expected}"
    );
}

fn parse(value: &serde_json::Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339")
}

#[tokio::test]
async fn tools_and_operator_commands_stamp_rows_with_the_injected_clock() {
    let env = TestEnv::start().await;
    // Far from the wall clock, so SQL now() could never pass for it.
    env.clock.advance(time::Duration::days(1000));
    let created = env.clock_now();
    let (ws, _) = env.workspace("clocked").await;
    let su = env.db.connect_superuser().await;
    let row = su
        .query_one(
            "SELECT w.created_at, p.installed_at FROM hdls.workspaces w
             JOIN hdls.installed_products p USING (workspace_id)
             WHERE w.workspace_id = $1 AND p.product = 'crm'",
            &[&ws],
        )
        .await
        .unwrap();
    same_instant(row.get(0), created, "workspace created_at");
    same_instant(row.get(1), created, "crm installed_at");

    // A plan: inserted, then changed through ON CONFLICT … DO UPDATE.
    let owner = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    for step in 0..2 {
        env.clock.advance(time::Duration::hours(5));
        let at = env.clock_now();
        hdls::workspaces::set_plan(&owner, ws, Some("clocked"), 100 + step, None, at)
            .await
            .unwrap();
        let updated: OffsetDateTime = su
            .query_one(
                "SELECT updated_at FROM hdls_catalog.plans WHERE name = 'clocked'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        same_instant(updated, at, &format!("plan updated_at, step {step}"));
    }

    let crm = env
        .client("/api/mcp/crm", &env.key(ws, Role::Member).await)
        .await;
    env.clock.advance(time::Duration::days(3));
    let created = env.clock_now();
    let account = crm
        .ok("create_account", json!({ "name": "Clockwork Ltd" }))
        .await["account"]
        .clone();
    same_instant(parse(&account["created_at"]), created, "account created_at");
    same_instant(parse(&account["updated_at"]), created, "account updated_at");

    env.clock.advance(time::Duration::hours(1));
    let updated = env.clock_now();
    let account = crm
        .ok(
            "update_account",
            json!({ "id": account["id"], "name": "Clockwork Group" }),
        )
        .await["account"]
        .clone();
    same_instant(parse(&account["updated_at"]), updated, "account updated_at");
    same_instant(
        parse(&account["created_at"]),
        created,
        "created_at is unchanged",
    );
}
