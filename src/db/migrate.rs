//! `hdls migrate`: applies the embedded migrations as the owner role.

use anyhow::Context;

use super::{DbTarget, OWNER_ROLE, connect};

refinery::embed_migrations!("migrations");

/// Arbitrary but fixed: serialises concurrent `migrate` runs against one database.
const MIGRATION_LOCK: i64 = 0x6864_6c73_6d69_6772; // "hdlsmigr"

/// Applies every pending migration, holding an advisory lock so two processes cannot race.
pub async fn run(target: &DbTarget) -> anyhow::Result<usize> {
    let mut client = connect(&target.for_role(OWNER_ROLE))
        .await
        .context("connecting as hdls_owner (has `hdls setup` run on this database?)")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // No per-statement limit for migrations: one statement may build an index over a large
    // table, or (on Citus, V20) copy every table into its shards.
    client.batch_execute("SET statement_timeout = 0").await?;
    let report = migrations::runner()
        .set_migration_table_name("hdls_meta.schema_history")
        .run_async(&mut client)
        .await
        .context("applying migrations");
    let report = report?;
    // The server checks the schema version at start as the runtime role.
    client
        .batch_execute(
            "GRANT USAGE ON SCHEMA hdls_meta TO hdls_runtime;
             GRANT SELECT ON hdls_meta.schema_history TO hdls_runtime;
             NOTIFY hdls_catalog;",
        )
        .await?;
    // On Citus, the shards' restrictive row policies as the schema has them (a Citus defect
    // re-creates them permissive whenever it makes shards; see migration V20). After the
    // migrations committed: the repair runs on the workers over connections of their own.
    super::citus::repair_policies(&client).await?;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(report.applied_migrations().len())
}

/// Whether the database has every migration this binary knows (serve refuses otherwise).
pub async fn is_current(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    let latest = migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0);
    // A database that `hdls setup` and `hdls migrate` never touched has no hdls_meta schema,
    // or one the runtime role may not use: not current, rather than an error.
    let readable: Option<bool> = client
        .query_opt(
            "SELECT has_schema_privilege(n.oid, 'USAGE')
                    AND has_table_privilege(format('%I.%I', n.nspname, 'schema_history'), 'SELECT')
             FROM pg_namespace n
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'schema_history'
             WHERE n.nspname = 'hdls_meta'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    if readable != Some(true) {
        return Ok(false);
    }
    let applied: Option<i64> = client
        .query_one(
            "SELECT max(version)::int8 FROM hdls_meta.schema_history",
            &[],
        )
        .await?
        .get(0);
    Ok(applied.is_some_and(|v| v >= latest))
}

/// A digest of every embedded migration, so test templates are rebuilt when migrations change.
pub fn fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for m in migrations::runner().get_migrations() {
        hasher.update(m.name().as_bytes());
        hasher.update(m.sql().unwrap_or_default().as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}
