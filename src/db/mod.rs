//! Everything that talks to PostgreSQL: where it is, the role connections, setup, migrations, the tenant Scope.

pub mod citus;
pub mod embedded;
pub mod location;
pub mod migrate;
pub mod scope;
pub mod setup;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

pub use scope::Scope;

/// The owner of schemas and tables; used only by `hdls migrate`.
pub const OWNER_ROLE: &str = "hdls_owner";
/// The role every tool call runs as: NOSUPERUSER, NOBYPASSRLS, no DDL.
pub const RUNTIME_ROLE: &str = "hdls_runtime";
/// The narrow role that resolves credentials before a tenant is known.
pub const AUTH_ROLE: &str = "hdls_auth";

/// Default upper bound on any one statement a tool runs; a runaway query gets `unavailable`.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A PostgreSQL server and database, plus how each hdls role logs in to it.
#[derive(Clone, Debug)]
pub struct DbTarget {
    base: tokio_postgres::Config,
    statement_timeout: Duration,
}

impl DbTarget {
    /// Parses a `postgres://` URL. The URL's user is only used by `setup`; the roles connect as themselves.
    pub fn from_url(url: &str) -> anyhow::Result<DbTarget> {
        let base: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid database URL: {e}"))?;
        Ok(DbTarget {
            base,
            statement_timeout: STATEMENT_TIMEOUT,
        })
    }

    /// Wraps an already-built configuration (the embedded cluster's socket settings).
    pub fn from_config(base: tokio_postgres::Config) -> DbTarget {
        DbTarget {
            base,
            statement_timeout: STATEMENT_TIMEOUT,
        }
    }

    /// The same target with another per-statement time limit for the roles' connections.
    pub fn with_statement_timeout(&self, timeout: Duration) -> DbTarget {
        DbTarget {
            base: self.base.clone(),
            statement_timeout: timeout,
        }
    }

    /// The database name, or `postgres` when the URL names none.
    pub fn dbname(&self) -> &str {
        self.base.get_dbname().unwrap_or("postgres")
    }

    /// Settings for the URL's own user (the superuser for `setup`).
    pub fn as_given(&self) -> tokio_postgres::Config {
        self.base.clone()
    }

    /// Settings for the same server and database under another database name.
    pub fn with_dbname(&self, dbname: &str) -> DbTarget {
        let mut base = self.base.clone();
        base.dbname(dbname);
        DbTarget {
            base,
            statement_timeout: self.statement_timeout,
        }
    }

    /// Settings for one of hdls's roles. Its password, if the server needs one, comes from
    /// `HDLS_OWNER_PASSWORD` / `HDLS_RUNTIME_PASSWORD` / `HDLS_AUTH_PASSWORD`.
    pub fn for_role(&self, role: &str) -> tokio_postgres::Config {
        let mut config = self.base.clone();
        config.user(role);
        if let Some(password) = role_password(role) {
            config.password(password);
        } else {
            config.password(Vec::<u8>::new());
        }
        config.application_name("hdls");
        config.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        ));
        config
    }

    /// A pool of connections as `role`.
    pub fn pool(&self, role: &str, max_size: usize) -> anyhow::Result<Pool> {
        let manager = Manager::from_config(
            self.for_role(role),
            NoTls,
            ManagerConfig {
                // Fast is safe because a Scope that ends without COMMIT/ROLLBACK detaches
                // and closes its connection instead of returning it mid-transaction.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Ok(Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?)
    }
}

/// The environment variable holding a role's password, if the operator set one.
pub fn role_password(role: &str) -> Option<String> {
    let var = match role {
        OWNER_ROLE => "HDLS_OWNER_PASSWORD",
        RUNTIME_ROLE => "HDLS_RUNTIME_PASSWORD",
        AUTH_ROLE => "HDLS_AUTH_PASSWORD",
        _ => return None,
    };
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The two pools the server uses: tool calls, and credential resolution.
#[derive(Clone)]
pub struct Pools {
    pub runtime: Pool,
    pub auth: Pool,
    /// Where they connect, for the few tasks that need a connection of their own.
    pub target: DbTarget,
}

impl Pools {
    /// Opens both pools against a migrated database, sized for this machine.
    pub fn open(target: &DbTarget) -> anyhow::Result<Pools> {
        let (runtime, auth) = pool_sizes();
        Ok(Pools {
            runtime: target.pool(RUNTIME_ROLE, runtime)?,
            auth: target.pool(AUTH_ROLE, auth)?,
            target: target.clone(),
        })
    }
}

/// Connections per pool: 8 per core, at least 16, for tool calls; half that for credential
/// lookups. `HDLS_DB_POOL_SIZE` overrides the runtime pool (the auth pool gets half).
///
/// More than PostgreSQL has cores, because a tool call's connection is mostly not busy in
/// PostgreSQL: its transaction also waits for the round trips that pipelining cannot fold
/// (the query's rows come back before the commit goes out) and for hdls building the answer
/// in between, on the same cores. Measured with `cargo bench --bench mcp` on 2 cores
/// (`search_accounts` on one workspace, limits on, 16 / 64 client connections): a pool of 8
/// (4 calls of one workspace at once) did 3,600 / 4,300 calls/s, 16 (8 at once) 5,600 /
/// 5,200, 32 (16 at once) 6,000 / 5,700; PostgreSQL's CPU per call fell as the pool grew,
/// since a workspace's reads that wait together are admitted together (crate::limits).
/// Not more: every process holds up to this many connections of the server's
/// `max_connections` (100 by default; 200 in the embedded cluster), the auth pool half again.
fn pool_sizes() -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = std::env::var("HDLS_DB_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or((cores * 8).max(16));
    (runtime, (runtime / 2).max(2))
}

/// Connects once, outside any pool, and drives the connection on a task.
pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
}
