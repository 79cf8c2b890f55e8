//! Bring your own PostgreSQL: linked data sources.
//!
//! A workspace links a database by connection string; the string is checked strictly
//! ([`target`]), every connection to it goes through the outbound guard and is pinned to the
//! checked address ([`connect`]), and it is stored only sealed under the master key. The
//! power tools then run over the linked schema with exactly the privileges of the role in the
//! connection string: no row-level security of hdls applies there, the user's database
//! boundary is the isolation.
//!
//! Pools are per source, small, with short waits, and evicted when idle, so a linked
//! database that is slow or down answers `unavailable` quickly and never holds anything
//! another workspace needs.

pub mod connect;
pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool::managed::{Pool, PoolError, Timeouts};
use uuid::Uuid;

use crate::db::Scope;
use crate::engine::catalog::Catalog;
use crate::error::ToolError;
use crate::identity::{DataSourceBinding, Principal};
use crate::master_key::MasterKey;
use crate::net::guard::Guard;
use connect::{DialLog, LinkError, LinkedManager};
use target::Target;

/// Connections per linked source on one server.
pub const POOL_SIZE: usize = 4;
/// How long a call waits for one of its source's connections before `unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(2);
/// A source's pool unused this long is closed.
const IDLE_EVICTION: Duration = Duration::from_secs(300);
/// A source's catalog snapshot is read again after this long (or when a table is missing).
const CATALOG_TTL: Duration = Duration::from_secs(60);

/// The associated data a source's connection string is sealed with: a sealed value copied
/// to another row or workspace does not open.
pub fn seal_context(workspace_id: Uuid, id: Uuid) -> Vec<u8> {
    format!("hdls data source {workspace_id} {id}").into_bytes()
}

/// Seals a connection string for storage.
pub fn seal(
    master: &MasterKey,
    workspace_id: Uuid,
    id: Uuid,
    connection_string: &str,
) -> Result<Vec<u8>, ToolError> {
    master
        .seal(
            connection_string.as_bytes(),
            &seal_context(workspace_id, id),
        )
        .map_err(ToolError::internal)
}

/// Opens a stored connection string. A wrong master key (or a row moved elsewhere) is an
/// `unavailable` that says so, without the string.
pub fn open(
    master: &MasterKey,
    workspace_id: Uuid,
    id: Uuid,
    sealed: &[u8],
) -> Result<Target, ToolError> {
    let plain = master
        .open(sealed, &seal_context(workspace_id, id))
        .map_err(|_| {
            tracing::warn!(data_source = %id, "a linked database's connection string cannot be opened with this server's master key");
            ToolError::unavailable(
                "the stored connection string cannot be opened with this server's master key \
                 (the key changed, or the data was altered); link the database again",
            )
        })?;
    let text = String::from_utf8(plain)
        .map_err(|_| ToolError::internal("sealed connection string is not UTF-8"))?;
    Target::parse(&text)
}

struct Linked {
    pool: Pool<LinkedManager>,
    schema: String,
    catalog: Mutex<Option<(Instant, Arc<Catalog>)>>,
    last_used: Mutex<Instant>,
}

/// Every linked source this server has a pool for, keyed by workspace and source.
#[derive(Default)]
pub struct DataSources {
    linked: Mutex<HashMap<(Uuid, Uuid), Arc<Linked>>>,
    dials: Arc<DialLog>,
}

impl DataSources {
    /// Where recent connections were dialed (host name and checked address).
    pub fn recent_dials(&self) -> Vec<connect::Dial> {
        self.dials.recent()
    }

    /// One connection made now through the guard, outside any pool (linking and
    /// `test_database`): the host is resolved and checked again, then dialed pinned.
    pub async fn probe(&self, guard: &Guard, target: &Target) -> Result<Scope, LinkError> {
        let client = connect::connect(guard, target, &self.dials).await?;
        let lease: Box<dyn crate::db::scope::Lease> = Box::new(client);
        Scope::over(lease).await.map_err(|_| LinkError::Connect {
            host: target.host.clone(),
        })
    }

    /// How many linked pools this process holds, and their states added up (for `/metrics`,
    /// which never names a source).
    pub fn pool_totals(&self) -> (usize, crate::metrics::PoolState) {
        let linked = self.lock();
        let total = linked
            .values()
            .map(|l| crate::metrics::PoolState::from(l.pool.status()))
            .fold(crate::metrics::PoolState::default(), |a, b| a + b);
        (linked.len(), total)
    }

    /// Closes a source's pool (unlinking).
    pub fn close(&self, workspace_id: Uuid, id: Uuid) {
        if let Some(linked) = self.lock().remove(&(workspace_id, id)) {
            linked.pool.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, Uuid), Arc<Linked>>> {
        self.linked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes pools nobody used for a while.
    fn evict_idle(&self) {
        let now = Instant::now();
        self.lock().retain(|_, linked| {
            let idle =
                now.duration_since(*linked.last_used.lock().unwrap_or_else(|p| p.into_inner()));
            let keep = idle < IDLE_EVICTION;
            if !keep {
                linked.pool.close();
            }
            keep
        });
    }

    /// The pool of the source `principal`'s key is bound to, created on first use from the
    /// stored (sealed) connection string, read in the principal's own workspace.
    async fn linked(
        &self,
        runtime: &deadpool_postgres::Pool,
        guard: &Guard,
        master: &MasterKey,
        principal: &Principal,
        binding: &DataSourceBinding,
    ) -> Result<Arc<Linked>, ToolError> {
        self.evict_idle();
        let key = (principal.workspace_id, binding.id);
        if let Some(linked) = self.lock().get(&key).cloned() {
            *linked.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            return Ok(linked);
        }
        let scope = Scope::begin(runtime, principal).await?;
        let row = scope
            .query_opt(
                "SELECT sealed_connection, schema_name FROM hdls.data_sources
                 WHERE id = $1 AND unlinked_at IS NULL",
                &[&binding.id],
            )
            .await?;
        scope.rollback().await;
        let row =
            row.ok_or_else(|| ToolError::not_found("this data source is no longer linked"))?;
        let sealed: Vec<u8> = row.get(0);
        let schema: String = row.get(1);
        let target = open(master, principal.workspace_id, binding.id, &sealed)?;
        let manager = LinkedManager {
            guard: guard.clone(),
            target,
            dials: self.dials.clone(),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .timeouts(Timeouts {
                wait: Some(POOL_WAIT),
                create: Some(connect::CONNECT_TIMEOUT + Duration::from_secs(1)),
                recycle: Some(Duration::from_secs(2)),
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(ToolError::internal)?;
        let linked = Arc::new(Linked {
            pool,
            schema,
            catalog: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        Ok(self.lock().entry(key).or_insert(linked).clone())
    }

    /// A transaction on the linked database of `principal`'s data-source key, as the role
    /// its connection string names (no identity of hdls is stamped: nothing of ours is there).
    pub async fn scope(
        &self,
        runtime: &deadpool_postgres::Pool,
        guard: &Guard,
        master: &MasterKey,
        principal: &Principal,
    ) -> Result<Scope, ToolError> {
        let binding = principal
            .data_source
            .as_ref()
            .ok_or_else(|| ToolError::forbidden("this credential is not bound to a data source"))?;
        let linked = self
            .linked(runtime, guard, master, principal, binding)
            .await?;
        if linked.schema != binding.schema {
            return Err(ToolError::forbidden(
                "this key is bound to a schema the data source no longer serves",
            ));
        }
        let object = linked.pool.get().await.map_err(|error| match error {
            PoolError::Backend(link) => {
                tracing::warn!(data_source = %binding.id, error = %link, "linked database connection failed");
                link.to_tool_error()
            }
            PoolError::Timeout(_) => ToolError::unavailable(
                "the linked database did not answer in time or all its connections are busy; retry shortly",
            ),
            other => {
                tracing::warn!(data_source = %binding.id, error = %other, "linked database pool");
                ToolError::unavailable("the linked database is unavailable; retry shortly")
            }
        })?;
        let lease: Box<dyn crate::db::scope::Lease> = Box::new(object);
        Scope::over(lease).await
    }

    /// The catalog of the principal's bound schema: cached per source, read again after
    /// [`CATALOG_TTL`], or now when `fresh` (a table the caller named is not in the snapshot,
    /// or the caller lists the tables).
    pub async fn catalog(
        &self,
        principal: &Principal,
        scope: &Scope,
        fresh: bool,
    ) -> Result<Arc<Catalog>, ToolError> {
        let binding = principal
            .data_source
            .as_ref()
            .ok_or_else(|| ToolError::forbidden("this credential is not bound to a data source"))?;
        let linked = self
            .lock()
            .get(&(principal.workspace_id, binding.id))
            .cloned();
        if let Some(linked) = &linked
            && !fresh
            && let Some((at, catalog)) = &*linked.catalog.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < CATALOG_TTL
        {
            return Ok(catalog.clone());
        }
        let catalog = Arc::new(Catalog::load(scope, &binding.schema, &[]).await?);
        if let Some(linked) = linked {
            *linked.catalog.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), catalog.clone()));
        }
        Ok(catalog)
    }
}
