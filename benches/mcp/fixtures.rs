//! The data the runs work on, made with the library directly (setup is not measured): a
//! workspace of 2,000 accounts to search, a neighbour of the same size (so row-level
//! security has rows to keep out), a workspace to write into, a person who can sign in for
//! OAuth, and optionally the large data set of benches/accounts_at_scale.sql.

use hdls::clock::{Clock, SystemClock};
use hdls::db::{AUTH_ROLE, DbTarget, OWNER_ROLE, RUNTIME_ROLE, connect};
use hdls::identity::Role;
use uuid::Uuid;

/// 1,000,009 accounts across 100 workspaces, 100,000 in the one named by `$WS$`.
const AT_SCALE: &str = include_str!("../accounts_at_scale.sql");

/// Accounts in the searched workspace and in its neighbour.
pub const ACCOUNTS: usize = 2_000;

pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "bench password 123";

/// A workspace and its owner API key.
pub struct Workspace {
    pub id: Uuid,
    pub key: String,
    /// The key's credential id (`key_<hex>`), as the Scope stamps it.
    pub credential: String,
}

fn fail(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A workspace with the CRM installed, its per-minute limit far out of reach (limits stay
/// on, so their cost is measured, not their refusals), and `accounts` accounts: half named
/// "Acme 0002", "Acme 0004", …, half "Other 0001", ….
pub async fn workspace(
    target: &DbTarget,
    name: &str,
    accounts: usize,
) -> anyhow::Result<Workspace> {
    let now = SystemClock.now();
    let runtime = target.pool(RUNTIME_ROLE, 1)?;
    let created = hdls::workspaces::create(&runtime, name, now)
        .await
        .map_err(fail)?;
    let owner = target.pool(OWNER_ROLE, 1)?;
    hdls::workspaces::set_plan(&owner, created.workspace_id, None, 1_000_000_000, None, now)
        .await
        .map_err(fail)?;
    if accounts > 0 {
        runtime
            .get()
            .await?
            .batch_execute(&format!(
                "BEGIN; SET LOCAL hdls.workspace_id = '{}';
                 INSERT INTO crm.accounts (name, domain)
                   SELECT CASE WHEN i % 2 = 0 THEN 'Acme ' ELSE 'Other ' END || lpad(i::text, 4, '0'),
                          'd' || i || '.example'
                   FROM generate_series(1, {accounts}) AS i;
                 COMMIT;",
                created.workspace_id
            ))
            .await?;
    }
    let credential = hdls::auth::api_key::parse_key_id(&created.owner_key)
        .map(hdls::auth::api_key::display_id)
        .ok_or_else(|| anyhow::anyhow!("unexpected key shape"))?;
    Ok(Workspace {
        id: created.workspace_id,
        key: created.owner_key,
        credential,
    })
}

/// An owner of `workspace` who signs in with [`EMAIL`] and [`PASSWORD`].
pub async fn person(target: &DbTarget, workspace: Uuid) -> anyhow::Result<()> {
    let auth = target.pool(AUTH_ROLE, 1)?;
    hdls::people::provision(
        &auth,
        workspace,
        EMAIL,
        Some(PASSWORD),
        Role::Owner,
        SystemClock.now(),
    )
    .await
    .map_err(fail)?;
    Ok(())
}

/// Between phases: fresh statistics and no dead rows (so plans do not depend on when
/// autovacuum last ran), and a checkpoint, so the next runs do not share the disk with
/// flushing what the last phase wrote. With limits on, every call commits an admission whose
/// row lock is held until its WAL flush, so a busy disk shows directly in the call rate.
pub async fn settle(target: &DbTarget) -> anyhow::Result<()> {
    let superuser = connect(&target.as_given()).await?;
    // Two messages: VACUUM cannot run inside the implicit transaction of a multi-statement one.
    // The whole database: the create_account runs also fill hdls.change_events, whose
    // autovacuum would otherwise land in the next measured run.
    superuser.batch_execute("VACUUM ANALYZE").await?;
    superuser.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// Loads benches/accounts_at_scale.sql with `workspace` as the one of 100,000 accounts.
pub async fn at_scale(target: &DbTarget, workspace: Uuid) -> anyhow::Result<()> {
    connect(&target.as_given())
        .await?
        .batch_execute(&AT_SCALE.replace("$WS$", &format!("'{workspace}'")))
        .await?;
    settle(target).await
}

/// A libpq connection string (`key=value …`) for `target` as `user`, which both `hdls serve
/// --database-url` and pgbench take.
pub fn conninfo(target: &DbTarget, user: Option<&str>) -> String {
    let config = target.as_given();
    let mut parts = Vec::new();
    for host in config.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(name) => parts.push(format!("host={name}")),
            tokio_postgres::config::Host::Unix(path) => {
                parts.push(format!("host={}", path.display()));
            }
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = user.or(config.get_user()) {
        parts.push(format!("user={user}"));
    }
    if user.is_none()
        && let Some(password) = config.get_password()
    {
        parts.push(format!("password={}", String::from_utf8_lossy(password)));
    }
    parts.push(format!("dbname={}", target.dbname()));
    parts.join(" ")
}
