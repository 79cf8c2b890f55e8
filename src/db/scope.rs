//! The tenant Scope: the only way tool code reaches tenant data.
//!
//! A Scope is one transaction on the runtime pool with the caller's identity stamped by
//! `SET LOCAL`, so the settings die with the transaction and nothing survives on a pooled
//! connection. `SET LOCAL` (not `set_config`) because Citus forwards it to workers; each
//! statement goes as its own message, pipelined, for the same reason (see DESIGN §3).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use deadpool_postgres::{ClientWrapper, Object, Pool};
use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};
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
    /// A read's opening statements, not sent yet: they go in the round trip of the first
    /// statement the tool runs, or of the commit if it runs none (see [`Opening`]).
    opening: Mutex<Option<Opening>>,
    /// What a read's opening found ([`OPENED`], [`REFUSED`] or [`BROKEN`]): after a refusal
    /// or a failure, every later statement and the commit fail too, whatever the tool made
    /// of the first error, as they would never have run had the opening been awaited.
    opened: AtomicU8,
}

/// The transaction opened (or opens with the next statement).
const OPENED: u8 = 0;
/// The opening's check found the credential changed.
const REFUSED: u8 = 1;
/// An opening statement failed: the transaction may not be open at all.
const BROKEN: u8 = 2;

/// What opens a read's transaction (`BEGIN` and the identity stamps), and the check of a
/// cached credential's epoch, held back so they share a round trip with the read's first
/// statement instead of taking one of their own (measured: a search call made three round
/// trips to PostgreSQL, each a wake-up of its backend and of the call's task). Only for
/// reads: the first statement runs before the epoch check is seen, and nothing it does may
/// outlive the transaction, which is rolled back if the check fails.
struct Opening {
    statements: Vec<String>,
    check: Option<EpochCheck>,
    /// Told whether the call ran (false: refused by the check), once that is known.
    on_opened: Option<OnOpened>,
}

/// Told whether a read ran or was refused by its opening's check (see [`Opening`]).
pub type OnOpened = Box<dyn FnOnce(bool) + Send + Sync>;

/// A cached credential's epoch, checked against its workspace's inside the transaction.
struct EpochCheck {
    statement: Statement,
    workspace: Uuid,
    expected: Option<i64>,
}

impl Opening {
    /// Sends the statements and the check (the first poll puts them all on the wire, in
    /// order) and says whether the credential still holds.
    async fn run(&self, c: &ClientWrapper) -> Result<bool, ToolError> {
        let stamp = join_all(self.statements.iter().map(|s| c.batch_execute(s)));
        let check = async {
            match &self.check {
                Some(check) => c
                    .query_opt(&check.statement, &[&check.workspace])
                    .await
                    .map(|row| row.map(|r| r.get::<_, i64>(0)) == check.expected),
                None => Ok(true),
            }
        };
        let (stamped, holds) = futures_util::join!(stamp, check);
        for result in stamped {
            result?;
        }
        Ok(holds?)
    }

    fn opened(mut self, ran: bool) {
        if let Some(on_opened) = self.on_opened.take() {
            on_opened(ran);
        }
    }
}

/// When a call is admitted against the workspace's limits.
#[derive(Clone, Copy)]
enum Admission {
    None,
    /// In a transaction of its own, committed before the tool's transaction begins: this
    /// call and the `followers` admitted with it (see `limits::batch`), at that time, with
    /// what `ask` adds (`limits::lease`).
    Before {
        at: OffsetDateTime,
        followers: usize,
        ask: limits::Ask,
    },
    /// From a lease this process holds (`limits::lease`), or not at all for a read when
    /// limits are off: the transaction checks a cached credential's epoch itself, as one
    /// without admission does, and stamps what a read does.
    Leased,
    /// By the caller, who also checks a cached credential's epoch (`limits::batch`).
    Elsewhere,
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
        Self::begin_admitted_with(pool, principal, now, 0, limits::Ask::default())
            .await
            .map(|(scope, _)| scope)
    }

    /// Like [`Scope::begin_admitted`], also admitting `followers` calls of the same workspace
    /// after this one, in the same statement, with what `ask` adds (see `limits::batch`). `Ok`
    /// when this call was admitted, with what the database said of the followers and the
    /// lease; `Err` when it was refused (and then every follower is too).
    pub async fn begin_admitted_with(
        pool: &Pool,
        principal: &Principal,
        now: OffsetDateTime,
        followers: usize,
        ask: limits::Ask,
    ) -> Result<(Scope, limits::Admitted), ToolError> {
        let admission = Admission::Before {
            at: now,
            followers,
            ask,
        };
        let (scope, admitted) =
            Self::open_admitted(pool, principal, admission, Some(now), None).await?;
        let admitted = admitted.ok_or_else(|| ToolError::internal("no admission was made"))?;
        Ok((scope, admitted))
    }

    /// For a tool that only reads, admitted in a batch by the caller just before
    /// (`limits::batch`, which also checks a cached credential's epoch, so this transaction
    /// reads none). Nothing is stamped for change events or authorship (`hdls.call`), which
    /// only writes read: a read-only tool that wrote would fail rather than record an
    /// anonymous change.
    ///
    /// The transaction opens with the tool's first statement (see [`Opening`]).
    pub async fn begin_read(pool: &Pool, principal: &Principal) -> Result<Scope, ToolError> {
        Self::open(pool, principal, Admission::Elsewhere, None).await
    }

    /// Admits `wanted` calls of `workspace` at `at` in a transaction of its own (see
    /// `limits::batch`), checking `epoch` (see [`limits::ADMIT_CALLS_SQL`]), with what `ask`
    /// adds; with none wanted and nothing to lease, only settles `ask`'s lease
    /// (`limits::lease`). Stamped with the workspace by `SET LOCAL`, each statement its own
    /// message, like every Scope (DESIGN §3).
    pub async fn admit_calls(
        pool: &Pool,
        workspace: Uuid,
        epoch: Option<i64>,
        at: OffsetDateTime,
        wanted: usize,
        ask: limits::Ask,
    ) -> Result<limits::Admitted, ToolError> {
        let client = pool.get().await.map_err(ToolError::from_pool)?;
        let statement = client.prepare_cached(limits::ADMIT_CALLS_SQL).await?;
        let args = limits::AdmitArgs::new(workspace, at, epoch, wanted, ask);
        // A value the server made, written as a literal because SET takes no parameters.
        let stamp = format!("SET LOCAL hdls.workspace_id = '{workspace}'");
        let params = args.params();
        // One round trip; join! polls in argument order, which fixes the order on the wire.
        // Counters are not worth a WAL flush per call (see crate::limits).
        let (begun, stamped, unflushed, admitted, committed) = futures_util::join!(
            client.batch_execute("BEGIN"),
            client.batch_execute(&stamp),
            client.batch_execute("SET LOCAL synchronous_commit = off"),
            client.query_one(&statement, &params),
            client.batch_execute("COMMIT"),
        );
        if committed.is_err() || begun.is_err() {
            // The connection's state is unknown: close it rather than pool it.
            drop(Object::take(client));
        }
        begun?;
        stamped?;
        unflushed?;
        let row = admitted?;
        committed?;
        Ok(limits::Admitted::from_row(&row))
    }

    /// For a read admitted from a lease this process holds (`limits::lease`): like
    /// [`Scope::begin_read`], but the transaction checks a cached credential's epoch itself,
    /// since no admission statement did.
    ///
    /// The transaction opens, and the epoch is checked, with the tool's first statement (see
    /// [`Opening`]); `on_opened` is told then whether the call ran or was refused by the
    /// check (if the tool runs no statement, by its commit; if it fails first, it ran).
    pub async fn begin_leased_read(
        pool: &Pool,
        principal: &Principal,
        on_opened: OnOpened,
    ) -> Result<Scope, ToolError> {
        Self::open_admitted(pool, principal, Admission::Leased, None, Some(on_opened))
            .await
            .map(|(scope, _)| scope)
    }

    /// For a read when limits are off (`App::enforce_limits`): no admission at all, so the
    /// transaction checks a cached credential's epoch itself, as a leased read's does, and
    /// opens, like every read's, with the tool's first statement (see [`Opening`]).
    pub async fn begin_unmetered_read(
        pool: &Pool,
        principal: &Principal,
    ) -> Result<Scope, ToolError> {
        Self::open(pool, principal, Admission::Leased, None).await
    }

    async fn open(
        pool: &Pool,
        principal: &Principal,
        admission: Admission,
        call_at: Option<OffsetDateTime>,
    ) -> Result<Scope, ToolError> {
        Self::open_admitted(pool, principal, admission, call_at, None)
            .await
            .map(|(scope, _)| scope)
    }

    async fn open_admitted(
        pool: &Pool,
        principal: &Principal,
        admission: Admission,
        call_at: Option<OffsetDateTime>,
        on_opened: Option<OnOpened>,
    ) -> Result<(Scope, Option<limits::Admitted>), ToolError> {
        let admit_args = match admission {
            Admission::Before { at, followers, ask } => Some(limits::AdmitArgs::new(
                principal.workspace_id,
                at,
                principal.credential_epoch,
                followers.saturating_add(1),
                ask,
            )),
            Admission::None | Admission::Elsewhere | Admission::Leased => None,
        };
        let client = pool.get().await.map_err(ToolError::from_pool)?;
        let admit = match admit_args {
            Some(_) => Some(client.prepare_cached(limits::ADMIT_CALLS_SQL).await?),
            None => None,
        };
        // A cached credential is checked against its workspace's epoch by the admission when
        // there is one (here, or the caller's for a read). Without an admission, by a lookup
        // inside the tool's own transaction.
        let check = match (admission, principal.credential_epoch) {
            (Admission::None | Admission::Leased, Some(_)) => {
                Some(client.prepare_cached(EPOCH_SQL).await?)
            }
            _ => None,
        };
        // Values are server-made uuids and enum names, written as literals because SET
        // takes no bind parameters; nothing here comes from a client string.
        let workspace = format!("SET LOCAL hdls.workspace_id = '{}'", principal.workspace_id);
        // The admission is a transaction of its own, committed before the tool's begins, so
        // the counters' row locks last microseconds rather than the length of the call.
        // Counters are not worth a WAL flush per call (see crate::limits).
        let admission_statements: Vec<&str> = match admit_args {
            Some(_) => vec!["BEGIN", &workspace, "SET LOCAL synchronous_commit = off"],
            None => Vec::new(),
        };
        let mut statements = vec![
            "BEGIN".to_owned(),
            workspace.clone(),
            format!("SET LOCAL hdls.persona = '{}'", principal.persona.as_str()),
        ];
        match admission {
            Admission::Before { .. } => statements.insert(0, "COMMIT".to_owned()),
            Admission::None | Admission::Elsewhere | Admission::Leased => {}
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
        if matches!(admission, Admission::Leased | Admission::Elsewhere) {
            // A read: opened with its first statement.
            let check = check.map(|statement| EpochCheck {
                statement,
                workspace: principal.workspace_id,
                expected: principal.credential_epoch,
            });
            let scope = Scope {
                client: Some(Conn::Runtime(client)),
                workspace: Some(principal.workspace_id),
                opening: Mutex::new(Some(Opening {
                    statements,
                    check,
                    on_opened,
                })),
                opened: AtomicU8::new(OPENED),
            };
            return Ok((scope, None));
        }
        let scope = Scope {
            client: Some(Conn::Runtime(client)),
            workspace: Some(principal.workspace_id),
            opening: Mutex::new(None),
            opened: AtomicU8::new(OPENED),
        };
        let (admitted, epoch) = {
            let c = scope.client()?;
            // One round trip: the admission transaction, then the statements opening the
            // tool's transaction, then the epoch check. join! and join_all poll in argument
            // order, which fixes the order on the wire.
            let admit = async {
                match (&admit, &admit_args) {
                    (Some(statement), Some(args)) => {
                        c.query_one(statement, &args.params()).await.map(Some)
                    }
                    _ => Ok(None),
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
        let admitted = admitted.map(|row| limits::Admitted::from_row(&row));
        if let Some(refused) = admitted.as_ref().filter(|a| a.admitted == 0) {
            scope.rollback().await;
            return Err(refused.refusal());
        }
        if let Some(live) = epoch
            && live.map(|row| row.get::<_, i64>(0)) != principal.credential_epoch
        {
            scope.rollback().await;
            return Err(ToolError::credential_changed());
        }
        Ok((scope, admitted))
    }

    /// A transaction on a linked database's connection. Nothing is stamped: no policy of
    /// hdls exists there, and the connection's role is the whole of what it may do.
    pub async fn over(lease: Box<dyn Lease>) -> Result<Scope, ToolError> {
        let scope = Scope {
            client: Some(Conn::Leased(lease)),
            workspace: None,
            opening: Mutex::new(None),
            opened: AtomicU8::new(OPENED),
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

    /// Runs `statement` (its first poll puts it on the wire), after a read's opening if it
    /// has not been sent yet, in the same round trip. Refused if the opening, now or before,
    /// found the credential changed: the statement's result is then dropped, and the
    /// transaction, which it ran in, is rolled back by the call path.
    async fn run<T>(
        &self,
        c: &ClientWrapper,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ToolError> {
        self.still_holds()?;
        let opening = self.opening.lock().ok().and_then(|mut o| o.take());
        let Some(opening) = opening else {
            return Ok(statement.await?);
        };
        // join! polls in argument order, which fixes the order on the wire.
        let (opened, result) = futures_util::join!(opening.run(c), statement);
        self.settle(opening, opened)?;
        Ok(result?)
    }

    /// Records what a read's opening said; a refusal is the call's error from then on.
    fn settle(&self, opening: Opening, opened: Result<bool, ToolError>) -> Result<(), ToolError> {
        match opened {
            Ok(true) => {
                opening.opened(true);
                Ok(())
            }
            Ok(false) => {
                self.opened.store(REFUSED, Ordering::SeqCst);
                opening.opened(false);
                Err(ToolError::credential_changed())
            }
            Err(error) => {
                // It ran, and failed as a read can.
                self.opened.store(BROKEN, Ordering::SeqCst);
                opening.opened(true);
                Err(error)
            }
        }
    }

    fn still_holds(&self) -> Result<(), ToolError> {
        match self.opened.load(Ordering::SeqCst) {
            REFUSED => Err(ToolError::credential_changed()),
            BROKEN => Err(ToolError::internal("the transaction did not open")),
            _ => Ok(()),
        }
    }

    /// Runs a query (statement prepared once per connection and cached).
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        self.run(c, c.query(&statement, params)).await
    }

    /// Runs a query on PostgreSQL's generic plan for it, planned once on this connection and
    /// reused, for a statement whose best plan does not depend on its parameters but whose
    /// custom plans PostgreSQL would otherwise keep choosing (and paying to make) on every
    /// call. The rest of the transaction plans as it would have: the mode is set for this
    /// statement only, all three messages in one round trip.
    pub async fn query_generic(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        self.run(c, async {
            // join! polls in argument order, which fixes the order on the wire.
            let (generic, rows, restored) = futures_util::join!(
                c.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan"),
                c.query(&statement, params),
                c.batch_execute("SET LOCAL plan_cache_mode TO DEFAULT"),
            );
            generic?;
            let rows = rows?;
            restored?;
            Ok(rows)
        })
        .await
    }

    /// Runs a query expected to return at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        self.run(c, c.query_opt(&statement, params)).await
    }

    /// Runs a query expected to return exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        self.run(c, c.query_one(&statement, params)).await
    }

    /// Runs a statement and returns the number of rows it touched.
    pub async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, ToolError> {
        let c = self.client()?;
        let statement = c.prepare_cached(sql).await?;
        self.run(c, c.execute(&statement, params)).await
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
        self.run(c, c.query(&statement, &params)).await
    }

    /// Commits and returns the connection to the pool.
    pub async fn commit(mut self) -> Result<(), ToolError> {
        // A read that ran no statement still has its credential checked, with the commit.
        let committed = match self.client.as_ref() {
            Some(client) => {
                self.run(client.client(), client.client().batch_execute("COMMIT"))
                    .await
            }
            None => return Err(ToolError::internal("scope already ended")),
        };
        let client = self
            .client
            .take()
            .ok_or_else(|| ToolError::internal("scope already ended"))?;
        match committed {
            Ok(()) => Ok(()),
            Err(error) if self.opened.load(Ordering::SeqCst) == REFUSED => {
                // Refused by the check: the transaction it ran in ended with the commit
                // (a read's, which changed nothing), or is rolled back here.
                if client.client().batch_execute("ROLLBACK").await.is_err() {
                    client.detach();
                }
                Err(error)
            }
            Err(error) => {
                // The connection's state is unknown: close it rather than pool it.
                client.detach();
                Err(error)
            }
        }
    }

    /// Rolls back and returns the connection to the pool.
    pub async fn rollback(mut self) {
        if self.unopened() {
            // Nothing was sent: the connection is as the pool gave it.
            return;
        }
        if let Some(client) = self.client.take()
            && client.client().batch_execute("ROLLBACK").await.is_err()
        {
            client.detach();
        }
    }

    /// Whether this is a read whose opening was never sent (it ran no statement); takes
    /// the opening, which, dropped, counts the call as having run.
    fn unopened(&self) -> bool {
        self.opening
            .lock()
            .is_ok_and(|mut opening| opening.take().is_some())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Ended without commit or rollback (a cancelled request, a panic): the
        // connection may be mid-transaction with identity set, so it must never go
        // back to the pool. Detaching it closes it. (Unless nothing was ever sent.)
        if self.unopened() {
            return;
        }
        if let Some(client) = self.client.take() {
            client.detach();
        }
    }
}
