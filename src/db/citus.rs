//! Citus (distributed PostgreSQL): what `hdls setup` does on a coordinator, and the
//! whole-schema conversion behind `hdls admin citus distribute`.
//!
//! The schema side lives in migration V20 (`hdls.distribute`, `hdls.distribute_all`): every
//! tenant table distributed by `workspace_id` and co-located with `hdls.workspaces`, the
//! catalog and identity tables reference tables, the per-call functions delegated to the
//! workspace's shard. Everything here is a no-op on a server without Citus.

use anyhow::Context;
use tokio_postgres::Client;

use super::{OWNER_ROLE, RUNTIME_ROLE};

/// What the target server offers: the extension's files installed, the library preloaded
/// (Citus works only from `shared_preload_libraries`), the extension created in this database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detected {
    pub available: bool,
    pub preloaded: bool,
    pub installed: bool,
}

impl Detected {
    /// Whether setup makes (or keeps) this database a Citus coordinator.
    pub fn usable(self) -> bool {
        self.installed || (self.available && self.preloaded)
    }
}

/// Reads what the server offers.
pub async fn detect(client: &Client) -> anyhow::Result<Detected> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citus'),
                    'citus' = ANY (string_to_array(
                        replace(current_setting('shared_preload_libraries'), ' ', ''), ',')),
                    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )
        .await
        .context("looking for the citus extension")?;
    Ok(Detected {
        available: row.get(0),
        preloaded: row.get(1),
        installed: row.get(2),
    })
}

/// Creates the extension in this database (as a superuser, before the roles: a role created
/// while connected to a database with Citus is created on the workers too).
pub async fn create_extension(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE EXTENSION IF NOT EXISTS citus;
             RESET client_min_messages;",
        )
        .await
        .context("CREATE EXTENSION citus")
}

/// Role settings hdls needs on Citus, set once with `ALTER ROLE … SET` (Citus carries them to
/// the workers):
/// - `hdls_runtime` and `hdls_owner`: `citus.propagate_set_commands = 'local'`, so a Scope's
///   `SET LOCAL hdls.workspace_id` (and persona, principal, call) reaches the workers'
///   sessions, where the row policies are evaluated on the shards; without it every tenant
///   query on a shard runs with no workspace and sees zero rows. The owner is bound by the
///   forced policies too and opens Scopes for operator commands (`hdls admin plan set`).
/// - `hdls_owner`: `citus.enable_unsafe_triggers = on`, so migrations may add triggers to
///   distributed tables. Citus calls them unsafe because a trigger on a shard could write
///   rows on another node; hdls's triggers only raise errors or write rows of the same
///   workspace, which live in the same shard group (DESIGN §3).
pub const ROLE_SETTINGS: [(&str, &str, &str); 3] = [
    (RUNTIME_ROLE, "citus.propagate_set_commands", "local"),
    (OWNER_ROLE, "citus.propagate_set_commands", "local"),
    (OWNER_ROLE, "citus.enable_unsafe_triggers", "on"),
];

/// Applies [`ROLE_SETTINGS`], each only when it differs (two concurrent `ALTER ROLE`s of one
/// role fail with "tuple concurrently updated").
pub async fn set_role_settings(client: &Client) -> anyhow::Result<()> {
    for (role, name, value) in ROLE_SETTINGS {
        let wanted = format!("{name}={value}");
        let present: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                                WHERE r.rolname = $1 AND s.setdatabase = 0
                                  AND $2 = ANY (s.setconfig))",
                &[&role, &wanted],
            )
            .await?
            .get(0);
        if !present {
            client
                .batch_execute(&format!("ALTER ROLE {role} SET {name} = '{value}'"))
                .await
                .with_context(|| format!("ALTER ROLE {role} SET {name}"))?;
        }
    }
    Ok(())
}

/// Runs `statement` in this database on every worker, through the coordinator
/// (`run_command_on_workers`, as the connected superuser), with Citus's own DDL propagation
/// off there: it is for what Citus does not carry to the workers by itself (a role that
/// existed before the extension, database-level grants, catalog marks).
pub async fn on_workers(client: &Client, statement: &str) -> anyhow::Result<()> {
    let command = format!("SET citus.enable_ddl_propagation TO off; {statement}");
    let rows = client
        .query(
            "SELECT nodename, nodeport, success, result FROM run_command_on_workers($1)",
            &[&command],
        )
        .await
        .context("run_command_on_workers")?;
    for row in rows {
        let success: bool = row.get(2);
        if !success {
            let node: String = row.get(0);
            let port: i32 = row.get(1);
            let result: String = row.get(3);
            anyhow::bail!("on Citus worker {node}:{port}: {result}");
        }
    }
    Ok(())
}

/// The workers registered in this database (host, port), for messages and tests.
pub async fn workers(client: &Client) -> anyhow::Result<Vec<(String, i32)>> {
    let rows = client
        .query(
            "SELECT nodename, nodeport FROM pg_dist_node
             WHERE groupid <> 0 AND noderole = 'primary' AND isactive ORDER BY nodeid",
            &[],
        )
        .await
        .context("reading pg_dist_node")?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// How many of hdls's tables are distributed, reference tables, or not yet converted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    pub distributed: i64,
    pub reference: i64,
    pub pending: i64,
}

/// Converts an existing database (migrated before it had Citus) in place: `hdls.distribute_all()`
/// as the owner role, then the shards' restrictive row policies repaired (which is also what
/// to run after moving or copying shards). Idempotent; an error on a database without Citus.
pub async fn distribute(owner: &Client) -> anyhow::Result<Placement> {
    let enabled: bool = owner
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        enabled,
        "this database has no citus extension: install Citus on the coordinator and every \
         worker, preload it (shared_preload_libraries = 'citus'), create the extension in this \
         database on each worker, register the workers (citus_add_node), then run `hdls setup`"
    );
    let migrated: bool = owner
        .query_one(
            "SELECT to_regprocedure('hdls.distribute_all()') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        migrated,
        "this database is not migrated: run `hdls migrate` first"
    );
    // A conversion copies every row into the shards: no statement timeout.
    owner
        .batch_execute("SET statement_timeout = 0; SELECT hdls.distribute_all();")
        .await
        .context("converting the schema (hdls.distribute_all)")?;
    repair_policies(owner).await?;
    placement(owner).await
}

/// Counts what [`distribute`] reports.
pub async fn placement(client: &Client) -> anyhow::Result<Placement> {
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE placement = 'distributed' AND wanted = 'distributed'),
                    count(*) FILTER (WHERE placement = 'reference' AND wanted = 'reference'),
                    count(*) FILTER (WHERE placement IS DISTINCT FROM wanted)
             FROM hdls.citus_tables()",
            &[],
        )
        .await?;
    Ok(Placement {
        distributed: row.get(0),
        reference: row.get(1),
        pending: row.get(2),
    })
}

/// Repairs the restrictive row policies Citus 13.2.2 re-creates as permissive on shards (see
/// migration V20, `hdls.citus_policy_repair`): one statement per node, run through the
/// coordinator after the shards exist (committed). Returns how many nodes were repaired.
pub async fn repair_policies(client: &Client) -> anyhow::Result<usize> {
    if !distributed(client).await? {
        return Ok(0);
    }
    let repair: String = client
        .query_one("SELECT hdls.citus_policy_repair()", &[])
        .await?
        .get(0);
    on_workers(client, &repair)
        .await
        .context("repairing restrictive row policies on the workers")?;
    // Shards the coordinator itself holds (a coordinator that takes shards).
    client
        .batch_execute(&format!(
            "SET citus.enable_ddl_propagation TO off; {repair}; RESET citus.enable_ddl_propagation"
        ))
        .await
        .context("repairing restrictive row policies on the coordinator")?;
    Ok(workers(client).await?.len() + 1)
}

/// How many placements (and workers' copies of tables) have a restrictive row policy of hdls
/// missing or permissive; 0 when every shard enforces what the schema says.
pub async fn broken_policies(client: &Client) -> anyhow::Result<i64> {
    if !distributed(client).await? {
        return Ok(0);
    }
    let check: String = client
        .query_one("SELECT hdls.citus_policy_check()", &[])
        .await?
        .get(0);
    let mut broken: i64 = client.query_one(&check, &[]).await?.get(0);
    let rows = client
        .query(
            "SELECT nodename, nodeport, success, result FROM run_command_on_workers($1)",
            &[&check],
        )
        .await?;
    for row in rows {
        let result: String = row.get(3);
        anyhow::ensure!(
            row.get::<_, bool>(2),
            "checking row policies on Citus worker {}:{}: {result}",
            row.get::<_, String>(0),
            row.get::<_, i32>(1)
        );
        broken += result.parse::<i64>().unwrap_or(1);
    }
    Ok(broken)
}

/// Whether this database has Citus and hdls's schema is distributed.
async fn distributed(client: &Client) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')
                    AND to_regprocedure('hdls.citus_policy_check()') IS NOT NULL
                    AND hdls.citus_placement('hdls.workspaces') = 'distributed'",
            &[],
        )
        .await?
        .get(0))
}
