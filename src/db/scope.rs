//! The tenant Scope: the only way tool code reaches tenant data.
//!
//! A Scope is one transaction on the runtime pool with the caller's identity stamped by
//! `SET LOCAL`, so the settings die with the transaction and nothing survives on a pooled
//! connection. `SET LOCAL` (not `set_config`) because Citus forwards it to workers; each
//! statement goes as its own message, pipelined, for the same reason (see DESIGN §3).

use deadpool_postgres::{ClientWrapper, Object, Pool};
use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::engine::sql::Sql;
use crate::error::ToolError;
use crate::identity::Principal;
use crate::limits;

/// The workspace's credential epoch (migration V19), read inside the tool's transaction. The
/// workspace is named as well as stamped, so Citus routes the lookup to one shard.
const EPOCH_SQL: &str = "SELECT epoch FROM hdls.credential_epochs WHERE workspace_id = $1";

/// Prepared statements kept per pooled connection before the cache is emptied.
const MAX_CACHED_STATEMENTS: usize = 256;

/// A connection leased from a pool other than the runtime pool (a linked database's):
/// what a Scope needs of it, whatever manages it.
pub trait Lease: Send + Sync {
    /// The connection.
    fn client(&self) -> &ClientWrapper;
    /// Closes the connection instead of returning it to its pool.
    fn detach(self: Box<Self>);
}

impl<M> Lease for deadpool::managed::Object<M>
where
    M: deadpool::managed::Manager<Type = ClientWrapper>,
{
    fn client(&self) -> &ClientWrapper {
        self
    }

    fn detach(self: Box<Self>) {
        drop(deadpool::managed::Object::take(*self));
    }
}

/// A connection made outside any pool (a probe): dropping it closes it.
impl Lease for ClientWrapper {
    fn client(&self) -> &ClientWrapper {
        self
    }

    fn detach(self: Box<Self>) {}
}

// The runtime connection stays unboxed: it is every managed call's hot path, and a Scope
// held it inline before linked databases existed.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Runtime(Object),
    Leased(Box<dyn Lease>),
}

impl Conn {
    fn client(&self) -> &ClientWrapper {
        match self {
            Conn::Runtime(object) => object,
            Conn::Leased(lease) => lease.client(),
        }
    }

    /// Closes the connection rather than pooling it (its state is unknown).
    fn detach(self) {
        match self {
            Conn::Runtime(object) => drop(Object::take(object)),
            Conn::Leased(lease) => lease.detach(),
        }
    }
}

/// An open, identity-stamped transaction.
pub struct Scope {
    client: Option<Conn>,
    /// The workspace stamped (None on a linked database's connection), for statements that
    /// name it so Citus routes them to its shard (see [`Scope::workspace`]).
    workspace: Option<Uuid>,
    /// A read-only call admitted by its own commit (see [`Scope::begin_read_admitted`]): the
    /// workspace, the time of the call, and the epoch a cached credential was resolved at.
    admit_on_commit: Option<(Uuid, OffsetDateTime, Option<i64>)>,
}

/// When a call is admitted against the workspace's limits.
#[derive(Clone, Copy)]
enum Admission {
    None,
    /// In a transaction of its own, committed before the tool's transaction begins.
    Before(OffsetDateTime),
    /// Inside the tool's transaction, just before its commit.
    OnCommit,
}

impl Scope {
    /// Takes a connection and opens the transaction stamped with `principal`'s identity.
    pub async fn begin(pool: &Pool, principal: &Principal) -> Result<Scope, ToolError> {
        Self::open(pool, principal, Admission::None, None).await
    }

    /// Like [`Scope::begin`], also stamping the call's time (the server clock's) for the
    /// change events the transaction's writes record.
    pub async fn begin_at(
        pool: &Pool,
        principal: &Principal,
        now: OffsetDateTime,
    ) -> Result<Scope, ToolError> {
        Self::open(pool, principal, Admission::None, Some(now)).await
    }

    /// Like [`Scope::begin`], but first admits the call against the workspace's rate limit
    /// and monthly budget (see `crate::limits`), pipelined into the same round trip.
    pub async fn begin_admitted(
        pool: &Pool,
        principal: &Principal,
        now: OffsetDateTime,
    ) -> Result<Scope, ToolError> {
        Self::open(pool, principal, Admission::Before(now), Some(now)).await
    }

    /// For a tool that only reads: the admission runs inside the tool's own transaction, just
    /// before [`Scope::commit`], pipelined with the COMMIT, so the call is one transaction
    /// instead of two (the admission's upsert is the only write, so the transaction commits
    /// asynchronously, like every admission; see crate::limits). The counter's row lock is held
    /// from that upsert to the COMMIT right behind it, never while the tool runs. `commit`
    /// returns `rate_limited` if the call was over a limit: then nothing was counted and the
    /// rows read are never shown. The same admission checks a cached credential's epoch, so a
    /// credential changed meanwhile is refused there too, before anything it read is shown,
    /// and the read needs no epoch lookup of its own. A rolled-back scope admits nothing (the caller counts a
    /// failed call with [`Scope::begin_admitted`]). Nothing is stamped for change events or
    /// authorship (`hdls.call`), which only writes read: a read-only tool that wrote would
    /// fail rather than record an anonymous change.
    pub async fn begin_read_admitted(
        pool: &Pool,
        principal: &Principal,
        now: OffsetDateTime,
    ) -> Result<Scope, ToolError> {
        let mut scope = Self::open(pool, principal, Admission::OnCommit, None).await?;
        scope.admit_on_commit = Some((principal.workspace_id, now, principal.credential_epoch));
        Ok(scope)
    }

    async fn open(
        pool: &Pool,
        principal: &Principal,
        admission: Admission,
        call_at: Option<OffsetDateTime>,
    ) -> Result<Scope, ToolError> {
        let admit_at = match admission {
            Admission::Before(at) => Some(at),
            Admission::None | Admission::OnCommit => None,
        };
        let client = pool.get().await.map_err(ToolError::from_pool)?;
        let admit = match admit_at {
            Some(_) => Some(client.prepare_cached(limits::ADMIT_SQL).await?),
            None => None,
        };
        // A cached credential is checked against its workspace's epoch by the admission when
        // there is one: before the tool runs, or at the commit of a read, which shows nothing
        // until then (a read that fails is admitted on its own, with the same check, before
        // its error is told). Without an admission, by a lookup inside the tool's own
        // transaction.
        let check = match (admission, principal.credential_epoch) {
            (Admission::None, Some(_)) => Some(client.prepare_cached(EPOCH_SQL).await?),
            _ => None,
        };
        // Values are server-made uuids and enum names, written as literals because SET
        // takes no bind parameters; nothing here comes from a client string.
        let workspace = format!("SET LOCAL hdls.workspace_id = '{}'", principal.workspace_id);
        // The admission is a transaction of its own, committed before the tool's begins, so
        // the counters' row locks last microseconds rather than the length of the call.
        // Counters are not worth a WAL flush per call (see crate::limits).
        let admission_statements: Vec<&str> = match admit_at {
            Some(_) => vec!["BEGIN", &workspace, "SET LOCAL synchronous_commit = off"],
            None => Vec::new(),
        };
        let mut statements = vec![
            "BEGIN".to_owned(),
            workspace.clone(),
            format!("SET LOCAL hdls.persona = '{}'", principal.persona.as_str()),
        ];
        match admission {
            Admission::Before(_) => statements.insert(0, "COMMIT".to_owned()),
            // The tool only reads; the admission's upsert will be the transaction's one write.
            Admission::OnCommit => {
                statements.push("SET LOCAL synchronous_commit = off".to_owned());
            }
            Admission::None => {}
        }
        // An agent has no principal: leaving hdls.principal_id unset reads as NULL, which
        // matches no customer row (fail closed), and saves a statement per call.
        if let Some(id) = principal.principal_id {
            statements.push(format!("SET LOCAL hdls.principal_id = '{id}'"));
        }
        // Who and when, for change events (migration V7), the "who" columns the database
        // stamps (V12) and the rules that depend on who acts (V16): the credential, the time,
        // the author, the role. All server-made (`key_<hex>`,
        // `grant_<uuid>`, `user:<uuid>`, `cli`), checked here anyway since they become a literal.
        let author = principal.author_id();
        let safe = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
        };
        if let Some(at) = call_at
            && safe(&principal.credential.id)
            && safe(&author)
        {
            let millis = at.unix_timestamp_nanos() / 1_000_000;
            statements.push(format!(
                "SET LOCAL hdls.call = '{} {millis} {author} {}'",
                principal.credential.id,
                principal.role.as_str()
            ));
        }
        let scope = Scope {
            client: Some(Conn::Runtime(client)),
            workspace: Some(principal.workspace_id),
            admit_on_commit: None,
        };
        let (admitted, epoch) = {
            let c = scope.client()?;
            // One round trip: the admission transaction, then the statements opening the
            // tool's transaction, then the epoch check. join! and join_all poll in argument
            // order, which fixes the order on the wire.
            let at = admit_at.unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let admit_params: [&(dyn ToSql + Sync); 3] =
                [&principal.workspace_id, &at, &principal.credential_epoch];
            let admit = async {
                match &admit {
                    Some(statement) => c.query_one(statement, &admit_params).await.map(Some),
                    None => Ok(None),
                }
            };
            let check_params: [&(dyn ToSql + Sync); 1] = [&principal.workspace_id];
            let check = async {
                match &check {
                    Some(statement) => c.query_opt(statement, &check_params).await.map(Some),
                    None => Ok(None),
                }
            };
            let begin_admission = join_all(admission_statements.iter().map(|s| c.batch_execute(s)));
            let stamp = join_all(statements.iter().map(|s| c.batch_execute(s)));
            let (begun, admission, stamped, epoch) =
                futures_util::join!(begin_admission, admit, stamp, check);
            for result in begun.into_iter().chain(stamped) {
                result?;
            }
            (admission?, epoch?)
        };
        if let Some(row) = admitted
            && let Err(refusal) = limits::decide(&row)
        {
            scope.rollback().await;
            return Err(refusal);
        }
        if let Some(live) = epoch
            && live.map(|row| row.get::<_, i64>(0)) != principal.credential_epoch
        {
            scope.rollback().await;
            return Err(ToolError::credential_changed());
        }
        Ok(scope)
    }

    /// A transaction on a linked database's connection. Nothing is stamped: no policy of
    /// hdls exists there, and the connection's role is the whole of what it may do.
    pub async fn over(lease: Box<dyn Lease>) -> Result<Scope, ToolError> {
        let scope = Scope {
            client: Some(Conn::Leased(lease)),
            workspace: None,
            admit_on_commit: None,
        };
        scope.client()?.batch_execute("BEGIN").await?;
        Ok(scope)
    }

    /// The workspace this transaction is stamped with; None on a linked database. Row-level
    /// security keeps the transaction to it whatever a statement says; a statement that also
    /// names it (`workspace_id = $n`) lets Citus route it to that workspace's shard instead of
    /// every shard (DESIGN §3).
    pub fn workspace(&self) -> Option<Uuid> {
        self.workspace
    }

    fn client(&self) -> Result<&ClientWrapper, ToolError> {
        self.client
            .as_ref()
            .map(Conn::client)
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

    /// Commits and returns the connection to the pool. A scope from
    /// [`Scope::begin_read_admitted`] is admitted here first, in the same round trip.
    pub async fn commit(mut self) -> Result<(), ToolError> {
        let admit = match self.admit_on_commit.take() {
            Some(call) => Some((
                self.client()?.prepare_cached(limits::ADMIT_SQL).await?,
                call,
            )),
            None => None,
        };
        let client = self
            .client
            .take()
            .ok_or_else(|| ToolError::internal("scope already ended"))?;
        let c = client.client();
        let (admitted, committed) = match &admit {
            Some((statement, (workspace, at, epoch))) => {
                // A cached credential's epoch is checked here, before anything is counted:
                // a moved epoch refuses the call and nothing read is shown.
                let params: [&(dyn ToSql + Sync); 3] = [workspace, at, epoch];
                let (admitted, committed) =
                    futures_util::join!(c.query_one(statement, &params), c.batch_execute("COMMIT"));
                (Some(admitted), committed)
            }
            None => (None, c.batch_execute("COMMIT").await),
        };
        if let Err(error) = committed {
            // The connection's state is unknown: close it rather than pool it.
            client.detach();
            return Err(error.into());
        }
        match admitted {
            // A failed admission aborted the transaction, so the COMMIT rolled it back.
            Some(Err(error)) => Err(error.into()),
            // Refused: the admission wrote nothing, so nothing was committed.
            Some(Ok(row)) => limits::decide(&row),
            None => Ok(()),
        }
    }

    /// Rolls back and returns the connection to the pool.
    pub async fn rollback(mut self) {
        if let Some(client) = self.client.take()
            && client.client().batch_execute("ROLLBACK").await.is_err()
        {
            client.detach();
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Ended without commit or rollback (a cancelled request, a panic): the
        // connection may be mid-transaction with identity set, so it must never go
        // back to the pool. Detaching it closes it.
        if let Some(client) = self.client.take() {
            client.detach();
        }
    }
}
