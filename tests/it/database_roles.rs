//! The database itself enforces the promises: the runtime role is powerless outside RLS.

use hdls::db::{AUTH_ROLE, RUNTIME_ROLE};
use tokio_postgres::error::SqlState;

use crate::harness::{TestDb, assert_refused, on_citus, statements};

/// The message of a refusal by row-level security's WITH CHECK.
const RLS_CHECK: &str = "violates row-level security policy";

const TENANT_SCHEMAS: [&str; 4] = ["hdls", "crm", "support", "contacts"];

async fn tenant_tables(db: &TestDb) -> Vec<(String, String, bool, bool)> {
    let su = db.connect_superuser().await;
    su.query(
        "SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p')
         ORDER BY 1, 2",
        &[&TENANT_SCHEMAS.to_vec()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[tokio::test]
async fn runtime_role_is_not_superuser_and_cannot_bypass_rls() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    let row = rt
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, current_user::text
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "runtime role is a superuser");
    assert!(!row.get::<_, bool>(1), "runtime role bypasses RLS");
    assert!(!row.get::<_, bool>(2));
    assert!(!row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), RUNTIME_ROLE);
}

#[tokio::test]
async fn runtime_role_cannot_run_ddl_or_become_the_owner() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    // Each refused for want of the privilege (42501), with the privilege named: a statement
    // that failed for any other reason (a typo, a missing object) proves nothing.
    for (statement, reason) in [
        (
            "CREATE TABLE crm.evil (id int)",
            "permission denied for schema crm",
        ),
        (
            "CREATE TABLE public.evil (id int)",
            "permission denied for schema public",
        ),
        ("CREATE TABLE evil (id int)", "permission denied for schema"),
        (
            "CREATE TEMP TABLE evil (id int)",
            "permission denied to create temporary tables",
        ),
        (
            "ALTER TABLE crm.accounts ADD COLUMN evil int",
            "must be owner of table accounts",
        ),
        (
            "ALTER TABLE crm.accounts DISABLE ROW LEVEL SECURITY",
            "must be owner of table accounts",
        ),
        ("DROP TABLE crm.accounts", "must be owner of table accounts"),
        (
            "DROP POLICY tenant ON crm.accounts",
            "must be owner of relation accounts",
        ),
        (
            "SET ROLE hdls_owner",
            "permission denied to set role \"hdls_owner\"",
        ),
        (
            "SET ROLE postgres",
            "permission denied to set role \"postgres\"",
        ),
        ("CREATE SCHEMA evil", "permission denied for database"),
        (
            "TRUNCATE crm.accounts",
            "permission denied for table accounts",
        ),
    ] {
        assert_refused(
            rt.batch_execute(statement).await,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            reason,
            &format!("runtime role running {statement}"),
        );
    }
}

#[tokio::test]
async fn every_tenant_table_has_rls_enabled_forced_and_a_workspace_policy() {
    let db = TestDb::create().await;
    let tables = tenant_tables(&db).await;
    assert!(
        tables.len() >= 4,
        "expected the foundation tables, found {tables:?}"
    );
    let su = db.connect_superuser().await;
    for (schema, table, enabled, forced) in &tables {
        assert!(
            enabled,
            "{schema}.{table} does not have row level security enabled"
        );
        assert!(forced, "{schema}.{table} does not FORCE row level security");
        let column = su
            .query_opt(
                "SELECT a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
                 FROM pg_attribute a
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attrelid = format('%I.%I', $1::text, $2::text)::regclass
                   AND a.attname = 'workspace_id' AND NOT a.attisdropped",
                &[schema, table],
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{schema}.{table} has no workspace_id column"));
        assert!(
            column.get::<_, bool>(0),
            "{schema}.{table}.workspace_id is nullable"
        );
        let default: Option<String> = column.get(1);
        assert_eq!(
            default.as_deref(),
            Some("hdls.current_workspace()"),
            "{schema}.{table}.workspace_id default"
        );
        let policy = su
            .query_opt(
                "SELECT 1 FROM pg_policies WHERE schemaname = $1 AND tablename = $2 AND policyname = 'tenant'
                   AND cmd = 'ALL' AND roles = '{public}'
                   AND qual = '(workspace_id = hdls.current_workspace())'
                   AND with_check = '(workspace_id = hdls.current_workspace())'",
                &[schema, table],
            )
            .await
            .unwrap();
        assert!(
            policy.is_some(),
            "{schema}.{table} lacks the tenant policy (USING and WITH CHECK)"
        );
    }
    // Keys Citus can keep (every key includes workspace_id): no SET NULL / SET DEFAULT on
    // delete (hdls.clear_on_delete instead, migration V20), none on update.
    let actions = su
        .query(
            "SELECT c.conrelid::regclass::text, c.conname::text FROM pg_constraint c
             JOIN pg_namespace n ON n.oid = c.connamespace
             WHERE c.contype = 'f' AND n.nspname = ANY($1)
               AND (c.confdeltype IN ('n', 'd') OR c.confupdtype IN ('n', 'd', 'c'))",
            &[&TENANT_SCHEMAS.to_vec()],
        )
        .await
        .unwrap();
    let actions: Vec<(String, String)> = actions.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        actions.is_empty(),
        "keys with SET NULL/DEFAULT or ON UPDATE actions: {actions:?}"
    );
    // Triggers name their table by argument: on Citus TG_TABLE_NAME is the shard's name.
    let by_name = su
        .query(
            "SELECT DISTINCT p.oid::regprocedure::text FROM pg_trigger t
             JOIN pg_proc p ON p.oid = t.tgfoid
             JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = ANY($1) AND NOT t.tgisinternal AND p.prosrc LIKE '%TG_TABLE_NAME%'",
            &[&TENANT_SCHEMAS.to_vec()],
        )
        .await
        .unwrap();
    let by_name: Vec<String> = by_name.iter().map(|r| r.get(0)).collect();
    assert!(
        by_name.is_empty(),
        "trigger functions reading TG_TABLE_NAME: {by_name:?}"
    );

    if !on_citus() {
        return;
    }
    // On Citus: every tenant table distributed by workspace_id in hdls.workspaces's colocation
    // group (one workspace's rows on one worker), every other table of hdls's schemas a
    // reference table, the per-call functions delegated to the workspace's shard.
    let colocation = "(SELECT colocationid FROM pg_dist_partition
                       WHERE logicalrelid = 'hdls.workspaces'::regclass)";
    for (schema, table, _, _) in &tables {
        let placed = su
            .query_opt(
                &format!(
                    "SELECT 1 FROM pg_dist_partition
                     WHERE logicalrelid = format('%I.%I', $1::text, $2::text)::regclass
                       AND partmethod = 'h'
                       AND column_to_column_name(logicalrelid, partkey) = 'workspace_id'
                       AND colocationid = {colocation}"
                ),
                &[schema, table],
            )
            .await
            .unwrap();
        assert!(
            placed.is_some(),
            "{schema}.{table} is not distributed by workspace_id with hdls.workspaces"
        );
    }
    let misplaced = su
        .query(
            "SELECT tbl::text, wanted, placement FROM hdls.citus_tables()
             WHERE placement IS DISTINCT FROM wanted",
            &[],
        )
        .await
        .unwrap();
    let misplaced: Vec<(String, String, Option<String>)> = misplaced
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        misplaced.is_empty(),
        "not placed as they should be: {misplaced:?}"
    );
    // Every shard enforces the restrictive policies as restrictive (Citus 13.2.2 re-creates
    // them permissive; `hdls migrate` repairs them, see migration V20).
    assert_eq!(
        hdls::db::citus::broken_policies(&su).await.unwrap(),
        0,
        "shard placements with a restrictive policy missing or permissive"
    );
    let reference: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('hdls_identity', 'hdls_catalog') AND c.relkind = 'r'
               AND hdls.citus_placement(c.oid) IS DISTINCT FROM 'reference'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        reference, 0,
        "identity and catalog tables are reference tables"
    );
    let delegated = su
        .query(
            &format!(
                "SELECT f::text, o.distribution_argument_index, o.force_delegation,
                        o.colocationid = {colocation}
                 FROM hdls.delegated_functions() f
                 LEFT JOIN pg_dist_object o
                   ON o.classid = 'pg_proc'::regclass AND o.objid = f::oid"
            ),
            &[],
        )
        .await
        .unwrap();
    for row in delegated {
        let name: String = row.get(0);
        assert_eq!(
            row.get::<_, Option<i32>>(1),
            Some(0),
            "{name} delegated by its workspace"
        );
        assert_eq!(
            row.get::<_, Option<bool>>(2),
            Some(true),
            "{name} force_delegation"
        );
        assert_eq!(
            row.get::<_, Option<bool>>(3),
            Some(true),
            "{name} with hdls.workspaces"
        );
    }
}

#[tokio::test]
async fn no_workspace_setting_sees_zero_rows_everywhere() {
    let db = TestDb::create().await;
    let tables = tenant_tables(&db).await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    // Put a row in every table through a real workspace first.
    let env_ws = uuid::Uuid::new_v4();
    statements(&rt, &format!(
        "BEGIN; SET LOCAL hdls.workspace_id = '{env_ws}';
         INSERT INTO hdls.workspaces (name) VALUES ('w');
         INSERT INTO hdls.installed_products (product) VALUES ('crm');
         INSERT INTO hdls.api_keys (key_id, secret_hash, role, created_by) VALUES ('0123456789abcdef', decode(repeat('00', 32), 'hex'), 'owner', 'test');
         INSERT INTO crm.accounts (name) VALUES ('x');
         COMMIT;"
    ))
    .await
    .unwrap();
    // A fresh connection never had the setting; after a transaction that set it, it reads
    // as '' rather than NULL. Both must see nothing.
    let rt = db.connect_as(RUNTIME_ROLE).await;
    for phase in ["never set", "after a transaction"] {
        for (schema, table, _, _) in &tables {
            // A table the runtime role cannot read at all (e.g. hdls.oauth_codes) is closed
            // more tightly still.
            let readable: bool = rt
                .query_one(
                    "SELECT has_table_privilege(current_user, format('%I.%I', $1::text, $2::text), 'SELECT')",
                    &[schema, table],
                )
                .await
                .unwrap()
                .get(0);
            if !readable {
                continue;
            }
            let count: i64 = rt
                .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                count, 0,
                "{schema}.{table} returned rows with no workspace ({phase})"
            );
        }
        statements(
            &rt,
            &format!(
                "BEGIN; SET LOCAL hdls.workspace_id = '{}'; COMMIT;",
                uuid::Uuid::new_v4()
            ),
        )
        .await
        .unwrap();
    }
    // And inserting without a workspace fails closed: the NULL workspace_id fails the policy
    // (on Citus, Citus refuses a row without a distribution value before any shard sees it).
    let (code, reason) = if on_citus() {
        (
            &SqlState::NULL_VALUE_NOT_ALLOWED,
            "cannot perform an INSERT with NULL in the partition column",
        )
    } else {
        (&SqlState::INSUFFICIENT_PRIVILEGE, RLS_CHECK)
    };
    assert_refused(
        rt.batch_execute("INSERT INTO crm.accounts (name) VALUES ('orphan')")
            .await,
        code,
        reason,
        "inserting with no workspace",
    );
}

#[tokio::test]
async fn a_forged_workspace_id_is_refused() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    let (mine, theirs) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for ws in [mine, theirs] {
        statements(&rt, &format!(
            "BEGIN; SET LOCAL hdls.workspace_id = '{ws}'; INSERT INTO hdls.workspaces (name) VALUES ('w'); COMMIT;"
        ))
        .await
        .unwrap();
    }
    statements(
        &rt,
        &format!("BEGIN; SET LOCAL hdls.workspace_id = '{mine}';"),
    )
    .await
    .unwrap();
    let forged = rt
        .execute(
            "INSERT INTO crm.accounts (workspace_id, name) VALUES ($1, 'forged')",
            &[&theirs],
        )
        .await;
    assert_refused(
        forged,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        RLS_CHECK,
        "inserting a row for another workspace",
    );
    rt.batch_execute("ROLLBACK").await.unwrap();
    // Moving an own row to another workspace is refused too.
    statements(&rt, &format!(
        "BEGIN; SET LOCAL hdls.workspace_id = '{mine}'; INSERT INTO crm.accounts (name) VALUES ('mine');"
    ))
    .await
    .unwrap();
    let moved = rt
        .execute("UPDATE crm.accounts SET workspace_id = $1", &[&theirs])
        .await;
    // On Citus the distribution column cannot change at all, whoever asks.
    let (code, reason) = if on_citus() {
        (
            &SqlState::FEATURE_NOT_SUPPORTED,
            "modifying the partition value of rows is not allowed",
        )
    } else {
        (&SqlState::INSUFFICIENT_PRIVILEGE, RLS_CHECK)
    };
    assert_refused(moved, code, reason, "moving a row into another workspace");
    rt.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn auth_role_reads_credentials_but_no_product_data() {
    let db = TestDb::create().await;
    let auth = db.connect_as(AUTH_ROLE).await;
    assert_refused(
        auth.query("SELECT * FROM crm.accounts", &[]).await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "permission denied for schema crm",
        "auth role reading product data",
    );
    // In support it reads only what a customer credential's check needs: whether its
    // requester still exists and is enabled (migration V13). No ticket, no other column.
    for (statement, reason) in [
        (
            "SELECT * FROM support.tickets",
            "permission denied for table tickets",
        ),
        (
            "SELECT * FROM support.ticket_entries",
            "permission denied for table ticket_entries",
        ),
        (
            "SELECT custom FROM support.requesters",
            "permission denied for table requesters",
        ),
        (
            "UPDATE support.requesters SET disabled_at = NULL",
            "permission denied for table requesters",
        ),
    ] {
        assert_refused(
            auth.batch_execute(statement).await,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            reason,
            &format!("auth role running {statement}"),
        );
    }
    auth.batch_execute("SELECT id, disabled_at FROM support.requesters")
        .await
        .expect("the credential path checks a customer's requester");
    for (statement, reason) in [
        (
            "INSERT INTO hdls.workspaces (name) VALUES ('x')",
            "permission denied for table workspaces",
        ),
        (
            "UPDATE hdls.api_keys SET role = 'owner'",
            "permission denied for table api_keys",
        ),
        (
            "DELETE FROM hdls.api_keys",
            "permission denied for table api_keys",
        ),
    ] {
        assert_refused(
            auth.batch_execute(statement).await,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            reason,
            &format!("auth role running {statement}"),
        );
    }
    // The auth role may revoke keys (a revoked connection revokes the keys minted through
    // it, migration V6), never un-revoke one.
    let ws = uuid::Uuid::new_v4();
    db.connect_superuser()
        .await
        .batch_execute(&format!(
            "INSERT INTO hdls.workspaces (workspace_id, name) VALUES ('{ws}', 'w');
             INSERT INTO hdls.api_keys (workspace_id, key_id, secret_hash, role, created_by, revoked_at)
               VALUES ('{ws}', '0123456789abcdef', decode(repeat('00', 32), 'hex'), 'owner', 'test', now());"
        ))
        .await
        .unwrap();
    assert_refused(
        auth.batch_execute("UPDATE hdls.api_keys SET revoked_at = NULL")
            .await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "stays revoked",
        "auth role un-revoking a key",
    );
    let row = auth
        .query_one(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0) && !row.get::<_, bool>(1));
}

#[tokio::test]
async fn the_runtime_role_cannot_change_plans_unrevoke_keys_or_shrink_the_ledger() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    let ws = uuid::Uuid::new_v4();
    statements(&rt, &format!(
        "BEGIN; SET LOCAL hdls.workspace_id = '{ws}';
         INSERT INTO hdls.workspaces (name) VALUES ('w');
         INSERT INTO hdls.api_keys (key_id, secret_hash, role, created_by)
           VALUES ('0123456789abcdef', decode(repeat('00', 32), 'hex'), 'owner', 'test');
         UPDATE hdls.api_keys SET revoked_at = now();
         INSERT INTO hdls.usage_ledger (period, calls) VALUES (date_trunc('month', now())::date, 10);
         COMMIT;"
    ))
    .await
    .unwrap();
    // Privileges refuse some; the rest are refused by the triggers that keep revocation final
    // and the ledger growing, each with its own reason.
    for (statement, reason) in [
        (
            "UPDATE hdls.workspaces SET plan = NULL",
            "permission denied for table workspaces",
        ),
        (
            "UPDATE hdls.workspaces SET name = 'renamed'",
            "permission denied for table workspaces",
        ),
        (
            "UPDATE hdls.api_keys SET revoked_at = NULL",
            "a revoked API key stays revoked",
        ),
        (
            "UPDATE hdls.api_keys SET revoked_at = now() + interval '1 year'",
            "a revoked API key stays revoked",
        ),
        (
            "INSERT INTO hdls_catalog.plans (name, per_minute) VALUES ('free-for-all', 1000000)",
            "permission denied for table plans",
        ),
        (
            "UPDATE hdls.usage_ledger SET calls = 0",
            "the usage ledger only grows",
        ),
        (
            "DELETE FROM hdls.usage_ledger",
            "permission denied for table usage_ledger",
        ),
    ] {
        statements(
            &rt,
            &format!("BEGIN; SET LOCAL hdls.workspace_id = '{ws}';"),
        )
        .await
        .unwrap();
        let result = rt.batch_execute(statement).await;
        rt.batch_execute("ROLLBACK").await.unwrap();
        assert_refused(
            result,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            reason,
            &format!("runtime role running {statement}"),
        );
    }
}

#[tokio::test]
async fn the_runtime_role_cannot_reach_people_or_oauth_secrets() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    // Password hashes, sessions, signing keys and clients live where the runtime role has no
    // USAGE at all; codes and refresh tokens are tenant tables it has no privilege on.
    for (table, reason) in [
        ("hdls_identity.users", "permission denied for schema"),
        ("hdls_identity.user_links", "permission denied for schema"),
        ("hdls_identity.web_sessions", "permission denied for schema"),
        (
            "hdls_identity.sign_in_failures",
            "permission denied for schema",
        ),
        (
            "hdls_identity.oauth_clients",
            "permission denied for schema",
        ),
        ("hdls_identity.signing_keys", "permission denied for schema"),
        ("hdls.oauth_codes", "permission denied for table"),
        ("hdls.oauth_refresh_tokens", "permission denied for table"),
    ] {
        assert_refused(
            rt.query(&format!("SELECT * FROM {table}"), &[]).await,
            &SqlState::INSUFFICIENT_PRIVILEGE,
            reason,
            &format!("runtime role reading {table}"),
        );
    }
    // The auth role can read credentials but never product data.
    let auth = db.connect_as(hdls::db::AUTH_ROLE).await;
    assert_refused(
        auth.query("SELECT * FROM crm.accounts", &[]).await,
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "permission denied for schema crm",
        "auth role reading product data",
    );
}
