//! The database itself enforces the promises: the runtime role is powerless outside RLS.

use hdls::db::{AUTH_ROLE, RUNTIME_ROLE};

use crate::harness::TestDb;

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
    for statement in [
        "CREATE TABLE crm.evil (id int)",
        "CREATE TABLE public.evil (id int)",
        "CREATE TABLE evil (id int)",
        "CREATE TEMP TABLE evil (id int)",
        "ALTER TABLE crm.accounts ADD COLUMN evil int",
        "ALTER TABLE crm.accounts DISABLE ROW LEVEL SECURITY",
        "DROP TABLE crm.accounts",
        "DROP POLICY tenant ON crm.accounts",
        "SET ROLE hdls_owner",
        "SET ROLE postgres",
        "CREATE SCHEMA evil",
        "TRUNCATE crm.accounts",
    ] {
        let result = rt.batch_execute(statement).await;
        assert!(
            result.is_err(),
            "runtime role was allowed to run: {statement}"
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
}

#[tokio::test]
async fn no_workspace_setting_sees_zero_rows_everywhere() {
    let db = TestDb::create().await;
    let tables = tenant_tables(&db).await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    // Put a row in every table through a real workspace first.
    let env_ws = uuid::Uuid::new_v4();
    rt.batch_execute(&format!(
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
        rt.batch_execute(&format!(
            "BEGIN; SET LOCAL hdls.workspace_id = '{}'; COMMIT;",
            uuid::Uuid::new_v4()
        ))
        .await
        .unwrap();
    }
    // And inserting without a workspace fails closed (NULL workspace_id).
    assert!(
        rt.batch_execute("INSERT INTO crm.accounts (name) VALUES ('orphan')")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_forged_workspace_id_is_refused() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    let (mine, theirs) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    for ws in [mine, theirs] {
        rt.batch_execute(&format!(
            "BEGIN; SET LOCAL hdls.workspace_id = '{ws}'; INSERT INTO hdls.workspaces (name) VALUES ('w'); COMMIT;"
        ))
        .await
        .unwrap();
    }
    rt.batch_execute(&format!("BEGIN; SET LOCAL hdls.workspace_id = '{mine}';"))
        .await
        .unwrap();
    let forged = rt
        .execute(
            "INSERT INTO crm.accounts (workspace_id, name) VALUES ($1, 'forged')",
            &[&theirs],
        )
        .await;
    assert!(forged.is_err(), "a row for another workspace was accepted");
    rt.batch_execute("ROLLBACK").await.unwrap();
    // Moving an own row to another workspace is refused too.
    rt.batch_execute(&format!(
        "BEGIN; SET LOCAL hdls.workspace_id = '{mine}'; INSERT INTO crm.accounts (name) VALUES ('mine');"
    ))
    .await
    .unwrap();
    let moved = rt
        .execute("UPDATE crm.accounts SET workspace_id = $1", &[&theirs])
        .await;
    assert!(moved.is_err(), "a row was moved into another workspace");
    rt.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn auth_role_reads_credentials_but_no_product_data() {
    let db = TestDb::create().await;
    let auth = db.connect_as(AUTH_ROLE).await;
    assert!(auth.query("SELECT * FROM crm.accounts", &[]).await.is_err());
    assert!(
        auth.batch_execute("INSERT INTO hdls.workspaces (name) VALUES ('x')")
            .await
            .is_err()
    );
    assert!(
        auth.batch_execute("UPDATE hdls.api_keys SET role = 'owner'")
            .await
            .is_err()
    );
    // The auth role may revoke keys (a revoked connection revokes the keys minted through
    // it), never un-revoke one.
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
    let unrevoke = auth
        .batch_execute("UPDATE hdls.api_keys SET revoked_at = NULL")
        .await
        .unwrap_err();
    assert_eq!(
        unrevoke.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{unrevoke:?}"
    );
    assert!(
        unrevoke
            .as_db_error()
            .is_some_and(|e| e.message().contains("stays revoked")),
        "{unrevoke:?}"
    );
    assert!(
        auth.batch_execute("DELETE FROM hdls.api_keys")
            .await
            .is_err()
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
    rt.batch_execute(&format!(
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
    for statement in [
        "UPDATE hdls.workspaces SET plan = NULL",
        "UPDATE hdls.workspaces SET name = 'renamed'",
        "UPDATE hdls.api_keys SET revoked_at = NULL",
        "UPDATE hdls.api_keys SET revoked_at = now() + interval '1 year'",
        "INSERT INTO hdls_catalog.plans (name, per_minute) VALUES ('free-for-all', 1000000)",
        "UPDATE hdls.usage_ledger SET calls = 0",
        "DELETE FROM hdls.usage_ledger",
    ] {
        rt.batch_execute(&format!("BEGIN; SET LOCAL hdls.workspace_id = '{ws}';"))
            .await
            .unwrap();
        let result = rt.batch_execute(statement).await;
        rt.batch_execute("ROLLBACK").await.unwrap();
        assert!(result.is_err(), "runtime role ran: {statement}");
    }
}

#[tokio::test]
async fn the_runtime_role_cannot_reach_people_or_oauth_secrets() {
    let db = TestDb::create().await;
    let rt = db.connect_as(RUNTIME_ROLE).await;
    // Password hashes, sessions, signing keys and clients live where the runtime role has no
    // USAGE at all; codes and refresh tokens are tenant tables it has no privilege on.
    for table in [
        "hdls_identity.users",
        "hdls_identity.user_links",
        "hdls_identity.web_sessions",
        "hdls_identity.sign_in_failures",
        "hdls_identity.oauth_clients",
        "hdls_identity.signing_keys",
        "hdls.oauth_codes",
        "hdls.oauth_refresh_tokens",
    ] {
        let error = rt
            .query(&format!("SELECT * FROM {table}"), &[])
            .await
            .expect_err(table);
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains("permission denied"), "{table}: {message}");
    }
    // The auth role can read credentials but never product data.
    let auth = db.connect_as(hdls::db::AUTH_ROLE).await;
    assert!(auth.query("SELECT * FROM crm.accounts", &[]).await.is_err());
}
