//! `hdls setup`: the only step that needs a superuser. Creates the roles, the schemas
//! and the database-level grants; safe to run again.

use anyhow::Context;

use super::{AUTH_ROLE, DbTarget, OWNER_ROLE, RUNTIME_ROLE, connect, role_password};

/// The schemas hdls owns: the control plane, one per product, migration bookkeeping, and
/// `hdls_identity` (people and OAuth state that belong to no single workspace; only the auth
/// role can reach it).
pub const SCHEMAS: [&str; 7] = [
    "hdls",
    "crm",
    "support",
    "contacts",
    "hdls_meta",
    "hdls_catalog",
    "hdls_identity",
];

/// Creates or corrects the roles (cluster-wide) and prepares the target database.
pub async fn run(target: &DbTarget) -> anyhow::Result<()> {
    let client = connect(&target.as_given())
        .await
        .context("connecting for setup (this needs a superuser URL)")?;
    let is_super: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        is_super,
        "hdls setup must connect as a superuser: it creates roles and schemas"
    );

    for role in [OWNER_ROLE, RUNTIME_ROLE, AUTH_ROLE] {
        // CREATE ROLE has no IF NOT EXISTS; the DO block keeps setup idempotent and safe
        // when several setups run at once (tests do), and the ALTER corrects a role someone
        // created by hand with too much power. It only runs when needed, because two
        // concurrent ALTERs of one role fail with "tuple concurrently updated".
        client
            .batch_execute(&format!(
                "DO $$ BEGIN
                    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                        BEGIN
                            CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
                        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                        END;
                    END IF;
                    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}'
                               AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole
                                    OR rolreplication OR rolinherit OR NOT rolcanlogin)) THEN
                        ALTER ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
                    END IF;
                 END $$;"
            ))
            .await
            .with_context(|| format!("creating role {role}"))?;
        if let Some(password) = role_password(role) {
            // Quoting is done by the server's format(%L), not by us.
            let statement: String = client
                .query_one(
                    "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                    &[&role, &password],
                )
                .await?
                .get(0);
            client.batch_execute(&statement).await?;
        }
    }

    let dbname = target.dbname().to_owned();
    let quoted_db: String = client
        .query_one("SELECT quote_ident($1)", &[&dbname])
        .await?
        .get(0);
    let mut statements = vec![
        format!(
            "GRANT CONNECT ON DATABASE {quoted_db} TO {OWNER_ROLE}, {RUNTIME_ROLE}, {AUTH_ROLE}"
        ),
        // Temporary tables are DDL by another name; nobody needs them at runtime.
        format!("REVOKE TEMPORARY ON DATABASE {quoted_db} FROM PUBLIC"),
        // Before PostgreSQL 15 every role could create objects in `public` (CVE-2018-1058).
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
    ];
    for schema in SCHEMAS {
        statements.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {OWNER_ROLE}"
        ));
        statements.push(format!("ALTER SCHEMA {schema} OWNER TO {OWNER_ROLE}"));
        statements.push(format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"));
    }
    for statement in statements {
        client
            .batch_execute(&statement)
            .await
            .with_context(|| format!("setup step failed: {statement}"))?;
    }
    Ok(())
}

/// Creates the database if it does not exist yet (embedded default and tests).
pub async fn ensure_database(target: &DbTarget) -> anyhow::Result<()> {
    let admin = connect(&target.with_dbname("postgres").as_given()).await?;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1",
            &[&target.dbname()],
        )
        .await?
        .is_some();
    if !exists {
        let quoted: String = admin
            .query_one("SELECT quote_ident($1)", &[&target.dbname()])
            .await?
            .get(0);
        admin
            .batch_execute(&format!("CREATE DATABASE {quoted}"))
            .await?;
    }
    Ok(())
}
