//! The audit log: every privileged or credential event, allowed or refused; append-only.

use hdls::db::{OWNER_ROLE, RUNTIME_ROLE};
use hdls::identity::Role;
use serde_json::{Value, json};
use tokio_postgres::error::SqlState;

use crate::harness::{TestEnv, assert_refused};

async fn events(client: &crate::harness::Mcp, action: &str) -> Vec<Value> {
    client
        .ok("list_audit_events", json!({ "action": action }))
        .await["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn privileged_actions_and_refused_attempts_are_recorded() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("audited").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let admin_key = env.key(ws, Role::Admin).await;
    let admin = env.client("/api/mcp", &admin_key).await;
    let member = env
        .client("/api/mcp", &env.key(ws, Role::Member).await)
        .await;

    // Allowed.
    owner
        .ok("install_product", json!({ "product": "support" }))
        .await;
    owner
        .ok("uninstall_product", json!({ "product": "support" }))
        .await;
    let minted = owner
        .ok(
            "mint_api_key",
            json!({ "role": "reader", "label": "audit me" }),
        )
        .await;
    owner
        .ok("revoke_api_key", json!({ "key_id": minted["key_id"] }))
        .await;
    let owner_pool = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner_pool, ws, None, 60, None, env.clock_now())
        .await
        .unwrap();

    // Refused: below the role (never reaches the handler) and above the ceiling (refused inside it).
    assert_eq!(
        member
            .err_code("install_product", json!({ "product": "contacts" }))
            .await,
        "forbidden"
    );
    assert_eq!(
        admin
            .err_code("uninstall_product", json!({ "product": "crm" }))
            .await,
        "forbidden"
    );
    assert_eq!(
        admin
            .err_code("mint_api_key", json!({ "role": "owner" }))
            .await,
        "forbidden"
    );

    let install = events(&owner, "product.install").await;
    let allowed: Vec<_> = install
        .iter()
        .filter(|e| e["outcome"] == "allowed")
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["target"], "support");
    assert_eq!(allowed[0]["actor"]["kind"], "api_key");
    assert!(
        allowed[0]["actor"]["id"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    let refused: Vec<_> = install
        .iter()
        .filter(|e| e["outcome"] == "refused")
        .collect();
    assert_eq!(refused.len(), 1, "{install:?}");
    assert!(refused[0]["target"].as_str().unwrap().contains("contacts"));
    assert!(refused[0]["reason"].as_str().unwrap().contains("admin"));

    let uninstall = events(&owner, "product.uninstall").await;
    assert!(
        uninstall
            .iter()
            .any(|e| e["outcome"] == "allowed" && e["target"] == "support")
    );
    assert!(uninstall.iter().any(|e| e["outcome"] == "refused"));

    let mints = events(&owner, "api_key.mint").await;
    assert!(mints.iter().any(|e| {
        e["outcome"] == "allowed"
            && e["target"]
                .as_str()
                .unwrap()
                .starts_with(minted["key_id"].as_str().unwrap())
    }));
    assert!(mints.iter().any(
        |e| e["outcome"] == "refused" && e["reason"].as_str().unwrap().contains("cannot mint")
    ));
    // The workspace's own owner key was minted by the operator.
    assert!(mints.iter().any(|e| e["actor"]["kind"] == "cli"));

    let revokes = events(&owner, "api_key.revoke").await;
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0]["target"], minted["key_id"]);

    let plans = events(&owner, "plan.set").await;
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0]["actor"]["kind"], "cli");
    assert_eq!(events(&owner, "workspace.create").await.len(), 1);

    // Nothing secret in the log.
    let all = owner
        .ok("list_audit_events", json!({ "limit": 200 }))
        .await
        .to_string();
    assert!(!all.contains(minted["key"].as_str().unwrap()));
    assert!(!all.contains(&owner_key));
}

#[tokio::test]
async fn the_log_is_newest_first_and_pages() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("paging").await;
    let owner = env.client("/api/mcp", &key).await;
    for _ in 0..5 {
        env.clock.advance(time::Duration::seconds(1));
        owner.ok("mint_api_key", json!({ "role": "reader" })).await;
    }
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({ "action": "api_key.mint", "limit": 2 });
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = owner.ok("list_audit_events", args).await;
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["at"].as_str().unwrap().to_owned()),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen.len(), 6, "five mints plus the workspace's owner key");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "not newest first");
    assert_eq!(
        owner
            .err_code("list_audit_events", json!({ "cursor": "garbage" }))
            .await,
        "invalid_input"
    );
    assert_eq!(
        owner
            .err_code("list_audit_events", json!({ "limit": 500 }))
            .await,
        "invalid_input"
    );
}

#[tokio::test]
async fn the_runtime_role_cannot_update_or_delete_audit_rows() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("append-only").await;
    env.client("/api/mcp", &key)
        .await
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await;
    let rt = env.db.connect_as(RUNTIME_ROLE).await;
    // The runtime role holds no UPDATE, DELETE or TRUNCATE privilege on the log at all.
    for statement in [
        "UPDATE hdls.audit_events SET outcome = 'refused'",
        "DELETE FROM hdls.audit_events",
        "TRUNCATE hdls.audit_events",
    ] {
        rt.batch_execute(&format!("BEGIN; SET LOCAL hdls.workspace_id = '{ws}';"))
            .await
            .unwrap();
        let result = rt.batch_execute(statement).await;
        rt.batch_execute("ROLLBACK").await.unwrap();
        assert_refused(
            result,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            "permission denied for table audit_events",
            &format!("runtime role running {statement}"),
        );
    }
    // Not even the owner role, which owns the table and so has every privilege on it,
    // rewrites history: the append-only triggers refuse it. (The row trigger fires only on
    // rows that exist: the workspace's creation and the mint above are there.)
    let owner = env.db.connect_as(OWNER_ROLE).await;
    for statement in [
        "UPDATE hdls.audit_events SET outcome = 'refused'",
        "DELETE FROM hdls.audit_events",
        "TRUNCATE hdls.audit_events",
    ] {
        owner
            .batch_execute(&format!("BEGIN; SET LOCAL hdls.workspace_id = '{ws}';"))
            .await
            .unwrap();
        let result = owner.batch_execute(statement).await;
        owner.batch_execute("ROLLBACK").await.unwrap();
        assert_refused(
            result,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            "the audit log is append-only",
            &format!("owner role running {statement}"),
        );
    }
    let count: i64 = env
        .db
        .connect_superuser()
        .await
        .query_one(
            "SELECT count(*) FROM hdls.audit_events WHERE workspace_id = $1",
            &[&ws],
        )
        .await
        .unwrap()
        .get(0);
    assert!(count >= 3);
}
