//! The tenant Scope: the only way tool code reaches tenant data.
//!
//! A Scope is one transaction on the runtime pool with the caller's identity stamped by
//! `SET LOCAL`, so the settings die with the transaction and nothing survives on a pooled
//! connection. `SET LOCAL` (not `set_config`) because Citus forwards it to workers; each
//! statement goes as its own message, pipelined, for the same reason (see DESIGN §3).

use deadpool_postgres::{Object, Pool};
use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::engine::sql::Sql;
use crate::identity::Principal;
use crate::limits;
use crate::tools::ToolError;

/// Prepared statements kept per pooled connection before the cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 256;

/// An open, identity-stamped transaction.
pub struct Scope {
    client: Option<Object>,
}

impl Scope {
    /// Takes a connection and opens the transaction stamped with `principal`'s identity.
    pub async fn begin(pool: &Pool, principal: &Principal) -> Result<Scope, ToolError> {
        let client = pool.get().await.map_err(ToolError::from_pool)?;
        // Values are server-made uuids and enum names, written as literals because SET
        // takes no bind parameters; nothing here comes from a client string.
        let workspace = format!("SET LOCAL hdls.workspace_id = '{}'", principal.workspace_id);
        let persona = format!("SET LOCAL hdls.persona = '{}'", principal.persona.as_str());
        let set_principal = principal
            .principal_id
            .map(|id| format!("SET LOCAL hdls.principal_id = '{id}'"));
        let scope = Scope {
            client: Some(client),
        };
        {
            let c = scope.client()?;
            // join_all polls in order, so the messages leave in this order on the one
            // connection and travel as a single pipelined round trip.
            let mut statements = vec![
                c.batch_execute("BEGIN"),
                c.batch_execute(&workspace),
                c.batch_execute(&persona),
            ];
            // An agent has no principal: leaving hdls.principal_id unset reads as NULL, which
            // matches no customer row (fail closed), and saves a statement per call.
            if let Some(set_principal) = &set_principal {
                statements.push(c.batch_execute(set_principal));
            }
            for result in join_all(statements).await {
                result?;
            }
        }
        Ok(scope)
    }

    /// Like [`Scope::begin`], but first admits the call against the workspace's rate limit
    /// and monthly budget (see `crate::limits`), pipelined into the same round trip.
    pub async fn begin_admitted(
        pool: &Pool,
        principal: &Principal,
        now: OffsetDateTime,
    ) -> Result<Scope, ToolError> {
        let client = pool.get().await.map_err(ToolError::from_pool)?;
        let admit = client.prepare_cached(limits::ADMIT_SQL).await?;
        let workspace = format!("SET LOCAL hdls.workspace_id = '{}'", principal.workspace_id);
        let persona = format!("SET LOCAL hdls.persona = '{}'", principal.persona.as_str());
        let set_principal = principal
            .principal_id
            .map(|id| format!("SET LOCAL hdls.principal_id = '{id}'"));
        let scope = Scope {
            client: Some(client),
        };
        let admitted = {
            let c = scope.client()?;
            // One round trip: the admission statement (committed on its own, see
            // crate::limits), then the tool's transaction. futures' join! polls in
            // argument order, which fixes the order on the wire.
            let set_principal = async {
                match &set_principal {
                    Some(statement) => c.batch_execute(statement).await,
                    None => Ok(()),
                }
            };
            let admit_params: [&(dyn ToSql + Sync); 2] = [&principal.workspace_id, &now];
            let (row, b, s1, s2, s3) = futures_util::join!(
                c.query_one(&admit, &admit_params),
                c.batch_execute("BEGIN"),
                c.batch_execute(&workspace),
                c.batch_execute(&persona),
                set_principal,
            );
            let row = row?;
            b?;
            s1?;
            s2?;
            s3?;
            limits::decide(&row)
        };
        match admitted {
            Ok(()) => Ok(scope),
            Err(refusal) => {
                scope.rollback().await;
                Err(refusal)
            }
        }
    }

    fn client(&self) -> Result<&Object, ToolError> {
        self.client
            .as_ref()
            .ok_or_else(|| ToolError::internal("scope used after it ended"))
    }

    /// Runs a query (statement prepared once per connection and cached).
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        Ok(c.query(&statement, params).await?)
    }

    /// Runs a query expected to return at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        Ok(c.query_opt(&statement, params).await?)
    }

    /// Runs a query expected to return exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        Ok(c.query_one(&statement, params).await?)
    }

    /// Runs a statement and returns the number of rows it touched.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        Ok(c.execute(&statement, params).await?)
    }

    /// Runs SQL the engine built from the catalog. Statements are prepared and cached per
    /// connection, since one query shape repeats with different values; the cache is
    /// bounded, so arbitrary shapes from clients cannot grow it without limit.
    pub async fn query_sql(&self, sql: &Sql) -> Result<Vec<Row>, ToolError> {
        let c = self.client()?;
        if c.statement_cache.size() >= MAX_CACHED_STATEMENTS {
            c.statement_cache.clear();
        }
        let (params, types): (Vec<_>, Vec<_>) = sql.typed_params().into_iter().unzip();
        let statement = c.prepare_typed_cached(&sql.text, &types).await?;
        Ok(c.query(&statement, &params).await?)
    }

    /// Commits and returns the connection to the pool.
    pub async fn commit(mut self) -> Result<(), ToolError> {
        let client = self
            .client
            .take()
            .ok_or_else(|| ToolError::internal("scope already ended"))?;
        match client.batch_execute("COMMIT").await {
            Ok(()) => Ok(()),
            Err(error) => {
                // The connection's state is unknown: close it rather than pool it.
                drop(Object::take(client));
                Err(error.into())
            }
        }
    }

    /// Rolls back and returns the connection to the pool.
    pub async fn rollback(mut self) {
        if let Some(client) = self.client.take()
            && client.batch_execute("ROLLBACK").await.is_err()
        {
            drop(Object::take(client));
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Ended without commit or rollback (a cancelled request, a panic): the
        // connection may be mid-transaction with identity set, so it must never go
        // back to the pool. Detaching it closes it.
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}
