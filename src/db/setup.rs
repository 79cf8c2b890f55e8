//! `hdls setup`: the only step that needs a superuser. Creates the roles, the schemas
//! and the database-level grants; safe to run again. On a Citus coordinator it also creates
//! the extension, the roles on the workers and the roles' Citus settings (`super::citus`).

use anyhow::Context;

use super::{AUTH_ROLE, DbTarget, OWNER_ROLE, RUNTIME_ROLE, citus, connect, role_password};

/// The schemas hdls owns: the control plane, one per product, migration bookkeeping,
/// `hdls_identity` (people and OAuth state that belong to no single workspace; only the auth
/// role can reach it), and `hdls_ext` (the extensions below, kept out of `public`).
pub const SCHEMAS: [&str; 8] = [
    "hdls",
    "crm",
    "support",
    "contacts",
    "hdls_meta",
    "hdls_catalog",
    "hdls_identity",
    EXTENSION_SCHEMA,
];

/// Where setup installs the extensions hdls needs. Nobody but the owner may use it: the
/// runtime role needs none of its functions, because the indexes reach `pg_trgm`'s operator
/// class through the built-in `LIKE`/`ILIKE` operators.
pub const EXTENSION_SCHEMA: &str = "hdls_ext";

/// `pg_trgm` (trigram GIN indexes for substring search) and `btree_gin` (so those indexes can
/// lead with `workspace_id`). Migration V18 refuses to run without them.
pub const EXTENSIONS: [&str; 2] = ["pg_trgm", "btree_gin"];

/// The functions behind `LIKE` and `ILIKE` on text, marked LEAKPROOF in this database.
///
/// Why: under row-level security PostgreSQL only uses a query's condition inside an index scan
/// when the condition's function is leakproof (`restriction_is_securely_promotable`);
/// otherwise it must first apply the tenant policy, and a substring search becomes a scan of
/// the whole workspace however the columns are indexed (measured: 100,000 accounts, 68 ms
/// for a rare substring, 130 ms for one that matches nothing; ≈ 1–3 ms with this).
/// What it would leak: `textlike`/`texticlike` return a boolean and raise only for a pattern
/// that ends in a lone escape character (an error that can depend on how far the match got).
/// hdls never sends one: named tools escape the search text (`named::search_pattern`) and the
/// power tools refuse a trailing lone backslash; `hdls_runtime` runs no SQL from clients.
/// The mark lives in this database's catalog (setup re-applies it; a dump does not keep it,
/// and without it searches stay correct, only slower).
pub const LEAKPROOF_FUNCTIONS: [&str; 2] = [
    "pg_catalog.textlike(text, text)",
    "pg_catalog.texticlike(text, text)",
];

/// What setup found and did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The workers of a Citus coordinator (empty on plain PostgreSQL, or a coordinator
    /// without workers yet).
    pub citus_workers: Vec<(String, i32)>,
    /// Whether the database is a Citus coordinator.
    pub citus: bool,
}

/// Creates or corrects the roles (cluster-wide) and prepares the target database.
pub async fn run(target: &DbTarget) -> anyhow::Result<Report> {
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

    // Citus first: roles created while the database has the extension are created on the
    // workers too, and so are the schemas and extensions below.
    let detected = citus::detect(&client).await?;
    let on_citus = detected.usable();
    if on_citus && !detected.installed {
        citus::create_extension(&client).await?;
    }

    for role in [OWNER_ROLE, RUNTIME_ROLE, AUTH_ROLE] {
        // CREATE ROLE has no IF NOT EXISTS; the DO block keeps setup idempotent and safe
        // when several setups run at once (tests do), and the ALTER corrects a role someone
        // created by hand with too much power. It only runs when needed, because two
        // concurrent ALTERs of one role fail with "tuple concurrently updated".
        let ensure_role = format!(
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
            );
        client
            .batch_execute(&ensure_role)
            .await
            .with_context(|| format!("creating role {role}"))?;
        // A role that already existed when the extension was created (made for another
        // database of this server) is not on the workers: make it there too.
        if on_citus {
            citus::on_workers(&client, &ensure_role)
                .await
                .with_context(|| format!("creating role {role} on the Citus workers"))?;
        }
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
            if on_citus {
                citus::on_workers(&client, &statement).await?;
            }
        }
    }
    if on_citus {
        citus::set_role_settings(&client).await?;
    }

    let dbname = target.dbname().to_owned();
    let quoted_db: String = client
        .query_one("SELECT quote_ident($1)", &[&dbname])
        .await?
        .get(0);
    // Statements about this database on this node. On Citus they are run on every worker too,
    // since Citus does not carry them there: database-level grants, `public`'s hardening and
    // the LEAKPROOF marks (the shards' row policies are evaluated on the workers, so the marks
    // matter there).
    let mut node_statements = vec![
        format!(
            "GRANT CONNECT ON DATABASE {quoted_db} TO {OWNER_ROLE}, {RUNTIME_ROLE}, {AUTH_ROLE}"
        ),
        // Temporary tables are DDL by another name; nobody needs them at runtime.
        format!("REVOKE TEMPORARY ON DATABASE {quoted_db} FROM PUBLIC"),
        // Before PostgreSQL 15 every role could create objects in `public` (CVE-2018-1058).
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
    ];
    for function in LEAKPROOF_FUNCTIONS {
        node_statements.push(format!(
            "DO $$ BEGIN
                IF NOT (SELECT proleakproof FROM pg_proc WHERE oid = '{function}'::regprocedure) THEN
                    ALTER FUNCTION {function} LEAKPROOF;
                END IF;
             END $$"
        ));
    }
    // Objects in the database. On Citus the extension is there by now, and Citus creates
    // these on the workers itself.
    let mut object_statements = Vec::new();
    for schema in SCHEMAS {
        object_statements.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {OWNER_ROLE}"
        ));
        object_statements.push(format!("ALTER SCHEMA {schema} OWNER TO {OWNER_ROLE}"));
        object_statements.push(format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"));
    }
    for extension in EXTENSIONS {
        // IF NOT EXISTS keeps an installation that already has it (wherever it lives); the
        // handler covers two setups racing on one database.
        object_statements.push(format!(
            "DO $$ BEGIN
                CREATE EXTENSION IF NOT EXISTS {extension} SCHEMA {EXTENSION_SCHEMA};
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        ));
    }
    for statement in node_statements.iter().chain(&object_statements) {
        client
            .batch_execute(statement)
            .await
            .with_context(|| format!("setup step failed: {statement}"))?;
    }
    if !on_citus {
        return Ok(Report::default());
    }
    for statement in &node_statements {
        citus::on_workers(&client, statement)
            .await
            .with_context(|| format!("setup step failed on a Citus worker: {statement}"))?;
    }
    Ok(Report {
        citus_workers: citus::workers(&client).await?,
        citus: true,
    })
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
