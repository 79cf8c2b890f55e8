//! Scale-out on Citus (HDLS_TEST_CITUS_URL): where a workspace's rows physically are. Only
//! meaningful against a Citus coordinator with workers; reported as skipped otherwise.

use std::collections::{BTreeMap, BTreeSet};

use hdls::identity::Role;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{TestEnv, on_citus};
use crate::power_tools::crm_as;

fn skipped() -> bool {
    if on_citus() {
        return false;
    }
    eprintln!(
        "skipping: HDLS_TEST_CITUS_URL is not set (placement is only meaningful on a Citus \
         coordinator with workers; see the README, \"Scaling out\")"
    );
    true
}

/// The worker ("host:port") holding each placement with rows of `workspace` in `table`,
/// with their counts, read from the shards themselves (`run_command_on_placements`).
async fn rows_by_node(
    su: &tokio_postgres::Client,
    table: &str,
    workspace: Uuid,
) -> BTreeMap<String, i64> {
    let rows = su
        .query(
            "SELECT nodename || ':' || nodeport, success, result
             FROM run_command_on_placements($1::text::regclass,
                 format('SELECT count(*) FROM %%s WHERE workspace_id = %L', $2::uuid))",
            &[&table, &workspace],
        )
        .await
        .unwrap();
    let mut by_node = BTreeMap::new();
    for row in rows {
        let (node, success, result): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
        assert!(success, "counting {table} on {node}: {result}");
        let count: i64 = result.parse().unwrap();
        if count > 0 {
            *by_node.entry(node).or_insert(0) += count;
        }
    }
    by_node
}

/// Every row of one workspace, in every tenant table it has rows in, lives on one worker (its
/// shard group); workspaces spread over the workers; and a workspace's statement reaches one
/// shard only.
#[tokio::test]
async fn a_workspaces_rows_live_on_one_worker_and_workspaces_spread_over_both() {
    if skipped() {
        return;
    }
    let env = TestEnv::start().await;
    let su = env.db.connect_superuser().await;
    let workers: BTreeSet<String> = su
        .query(
            "SELECT nodename || ':' || nodeport FROM pg_dist_node
             WHERE groupid <> 0 AND noderole = 'primary' AND shouldhaveshards",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        workers.len() >= 2,
        "the test needs two workers: {workers:?}"
    );

    // Workspaces until every worker holds at least one (each lands by the hash of its id).
    let mut homes: BTreeMap<Uuid, String> = BTreeMap::new();
    for n in 0..40 {
        if homes.values().collect::<BTreeSet<_>>().len() == workers.len() {
            break;
        }
        let (ws, crm) = crm_as(&env, &format!("placed-{n}"), Role::Member).await;
        for i in 0..3 {
            let created = crm
                .ok(
                    "create_account",
                    json!({ "name": format!("Account {i} of {n}") }),
                )
                .await;
            crm.ok(
                "add_note",
                json!({ "record_type": "account", "record_id": created["account"]["id"], "body": "placed" }),
            )
            .await;
        }
        let shard_node: String = su
            .query_one(
                "SELECT n.nodename || ':' || n.nodeport
                 FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
                 WHERE p.shardid = get_shard_id_for_distribution_column('hdls.workspaces', $1::uuid)",
                &[&ws],
            )
            .await
            .unwrap()
            .get(0);

        // Every table with rows of this workspace holds them on that one node, all of them.
        let tables: Vec<String> = su
            .query(
                "SELECT tbl::text FROM hdls.citus_tables() WHERE wanted = 'distributed' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut seen = 0;
        for table in &tables {
            let by_node = rows_by_node(&su, table, ws).await;
            if by_node.is_empty() {
                continue;
            }
            seen += 1;
            assert_eq!(
                by_node.keys().collect::<Vec<_>>(),
                vec![&shard_node],
                "{table}: the rows of workspace {ws} are not all on its shard's node"
            );
        }
        // At least the workspace, its key, products, accounts, notes, change events, audit.
        assert!(seen >= 6, "rows of {ws} found in only {seen} tables");
        let accounts = rows_by_node(&su, "crm.accounts", ws).await;
        assert_eq!(accounts.get(&shard_node), Some(&3), "{accounts:?}");
        homes.insert(ws, shard_node);
    }
    assert_eq!(
        homes.values().cloned().collect::<BTreeSet<_>>(),
        workers,
        "40 workspaces did not spread over every worker: {homes:?}"
    );

    // A workspace's own statement goes to one shard: the engine names the workspace.
    let (ws, _) = homes.iter().next().unwrap();
    let runtime = env.db.connect_as(hdls::db::RUNTIME_ROLE).await;
    for statement in [
        "BEGIN".to_owned(),
        format!("SET LOCAL hdls.workspace_id = '{ws}'"),
        "SET LOCAL hdls.persona = 'agent'".to_owned(),
    ] {
        runtime.batch_execute(&statement).await.unwrap();
    }
    let plan: String = runtime
        .query(
            "EXPLAIN SELECT count(*) FROM crm.accounts t WHERE t.workspace_id = $1 AND true",
            &[ws],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("Task Count: 1"), "{plan}");
    runtime.batch_execute("ROLLBACK").await.unwrap();
}

/// `hdls admin citus distribute` on a database that is already distributed changes nothing
/// and says so; the conversion is idempotent.
#[tokio::test]
async fn distributing_again_is_a_no_op() {
    if skipped() {
        return;
    }
    let db = crate::harness::TestDb::create().await;
    let owner = db.connect_as(hdls::db::OWNER_ROLE).await;
    let before = hdls::db::citus::placement(&owner).await.unwrap();
    assert_eq!(before.pending, 0, "{before:?}");
    let again = hdls::db::citus::distribute(&owner).await.unwrap();
    assert_eq!(again, before);
}

/// A database migrated before it had Citus, with data, converted in place by `hdls admin citus
/// distribute` after the operator's steps (extension, nodes, `hdls setup`): every tenant table
/// distributed with its rows moved to the shards, the audit log included, and every row still
/// there for its workspace and no other.
#[tokio::test]
async fn an_existing_database_is_distributed_in_place_with_its_rows() {
    if skipped() {
        return;
    }
    let db = crate::harness::TestDb::create_before_citus().await;
    let owner = db.connect_as(hdls::db::OWNER_ROLE).await;
    assert_eq!(
        hdls::db::citus::distribute(&owner)
            .await
            .unwrap_err()
            .to_string()
            .split(':')
            .next(),
        Some("this database has no citus extension"),
    );
    // Two workspaces with rows, as a server would have left them.
    let pools = hdls::db::Pools::open(&db.target).unwrap();
    let now = hdls::clock::Clock::now(&hdls::clock::SystemClock);
    let mut workspaces = Vec::new();
    for name in ["before-a", "before-b"] {
        let created = hdls::workspaces::create(&pools.runtime, name, now)
            .await
            .unwrap();
        let runtime = db.connect_as(hdls::db::RUNTIME_ROLE).await;
        for statement in [
            "BEGIN".to_owned(),
            format!("SET LOCAL hdls.workspace_id = '{}'", created.workspace_id),
            "INSERT INTO crm.accounts (name) VALUES ('one'), ('two')".to_owned(),
            "COMMIT".to_owned(),
        ] {
            runtime.batch_execute(&statement).await.unwrap();
        }
        workspaces.push(created.workspace_id);
    }
    drop(pools);

    db.register_citus_nodes().await;
    let report = hdls::db::setup::run(&db.target).await.unwrap();
    assert!(report.citus, "setup did not see Citus");
    assert_eq!(report.citus_workers.len(), db.citus_workers().await.len());
    let placement = hdls::db::citus::distribute(&owner).await.unwrap();
    assert_eq!(placement.pending, 0, "{placement:?}");
    assert!(
        placement.distributed >= 20 && placement.reference >= 5,
        "{placement:?}"
    );

    let su = db.connect_superuser().await;
    for ws in &workspaces {
        let accounts = rows_by_node(&su, "crm.accounts", *ws).await;
        assert_eq!(accounts.values().sum::<i64>(), 2, "{accounts:?}");
        assert_eq!(accounts.len(), 1, "{accounts:?}");
        let audit = rows_by_node(&su, "hdls.audit_events", *ws).await;
        assert_eq!(
            audit.keys().collect::<Vec<_>>(),
            accounts.keys().collect::<Vec<_>>()
        );
        // Read back through the runtime role: its own two rows, no other workspace's.
        let runtime = db.connect_as(hdls::db::RUNTIME_ROLE).await;
        for statement in [
            "BEGIN".to_owned(),
            format!("SET LOCAL hdls.workspace_id = '{ws}'"),
        ] {
            runtime.batch_execute(&statement).await.unwrap();
        }
        let seen: i64 = runtime
            .query_one("SELECT count(*) FROM crm.accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 2);
        runtime.batch_execute("COMMIT").await.unwrap();
    }
    // The coordinator keeps no copy of the rows it moved into the shards.
    for table in ["crm.accounts", "hdls.audit_events", "hdls.workspaces"] {
        let local: i64 = su
            .query_one("SELECT pg_relation_size($1::text::regclass)", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(local, 0, "{table} kept its rows on the coordinator");
    }
}
