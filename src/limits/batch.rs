//! Admission of a workspace's read-only calls in batches and from leases (`hdls.admit_calls`,
//! migrations V21 and V22).
//!
//! Every admission writes the workspace's one counter row, so concurrent calls of one
//! workspace queue on that row's lock inside PostgreSQL, each with a lock wait, a wake-up and
//! a commit of its own (measured: the admission cost more database CPU than the search it
//! admitted). Here a process keeps at most one admission per workspace (and credential epoch)
//! on its way to the database; the calls that arrive meanwhile wait for the next one, which
//! admits them all with one statement. It is group commit for the counter: under load the
//! batches grow by themselves, and a lone call waits for nobody: it admits itself in the
//! round trip that opens its transaction ([`Lead`]), with the calls queued by then.
//!
//! Each of these admissions also asks for a lease ([`super::lease`]); while this process
//! holds one, its reads of that workspace are admitted from it without the database.
//!
//! Exactness is kept: the batch is counted by one upsert on the same row as every other
//! admission, on any process; when not all of a batch fits, the database admits exactly as
//! many as fit (the first to arrive) and refuses the rest, which are counted nowhere.
//!
//! A read runs once admitted (see `tools::call`), so a refused one costs no query and a read
//! that fails counts like any call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::lease::{LEASE_CALLS, LEASE_TTL, Lease};
use super::{Admitted, Ask};
use crate::db::Scope;
use crate::error::ToolError;

/// Calls admitted by one statement, at most; more wait for the next.
const MAX_BATCH: usize = 256;

/// Times a settlement is tried before its calls are given up (logged).
const SETTLE_ATTEMPTS: u32 = 3;

/// Which calls may share a batch: one workspace, and the same credential epoch to check
/// (`None`: credentials resolved for their own request, nothing to check). A lease is the
/// workspace's, whatever the epoch: each call from it checks its own credential.
type Key = (Uuid, Option<i64>);

struct Waiter {
    at: OffsetDateTime,
    answer: oneshot::Sender<Result<(), ToolError>>,
}

/// One key's batches on this process.
#[derive(Default)]
struct Batch {
    /// An admission of this key is on its way to the database (a lead's or the drain's).
    in_flight: bool,
    /// The calls waiting for the next admission.
    queue: Vec<Waiter>,
}

/// One workspace's leases on this process.
#[derive(Default)]
struct Leases {
    /// The lease calls are admitted from while it lasts.
    current: Option<Lease>,
    /// Ended leases with calls still opening their transactions, settled when those have.
    ending: Vec<Lease>,
}

impl Leases {
    fn idle(&self) -> bool {
        self.current.is_none() && self.ending.is_empty()
    }
}

#[derive(Default)]
struct State {
    batches: HashMap<Key, Batch>,
    leases: HashMap<Uuid, Leases>,
}

/// The batches and leases of this process.
pub struct Admissions {
    state: Mutex<State>,
    next_lease: AtomicU64,
    lease_ttl: Duration,
}

impl Default for Admissions {
    fn default() -> Admissions {
        Admissions::with_lease_ttl(LEASE_TTL)
    }
}

/// How a read was admitted.
pub enum Turn {
    /// No admission of its workspace was on its way: it admits itself (see [`Lead`]).
    Lead(Lead),
    /// With others, by an admission on its way when it came.
    Batched,
    /// From this process's lease: its transaction must check the credential (see
    /// `Scope::begin_leased_read`), then say whether it ran ([`LeasedCall::opened`]).
    Leased(LeasedCall),
}

/// A call that found no admission of its workspace on its way: it admits itself, in the round
/// trip that opens its own transaction (`Scope::begin_admitted_with`), as a call that writes
/// does, so a lone call pays no round trip more than that, and takes the calls queued by then
/// along ([`Lead::take_followers`]). The calls that queue later are admitted in batches once
/// this is dropped, whether the call was admitted, refused or abandoned.
pub struct Lead {
    admissions: Arc<Admissions>,
    pool: Pool,
    key: Key,
}

/// A call admitted from a lease, until its transaction has opened. Dropped without
/// [`LeasedCall::opened`], it counts as having run.
pub struct LeasedCall {
    admissions: Arc<Admissions>,
    pool: Pool,
    workspace: Uuid,
    lease: u64,
    done: bool,
}

impl LeasedCall {
    /// Its transaction opened and it runs (`ran`), or it was refused there (a changed
    /// credential) and did not: then it is given back to the lease.
    pub fn opened(mut self, ran: bool) {
        self.done = true;
        self.admissions
            .opened(&self.pool, self.workspace, self.lease, ran);
    }
}

impl Drop for LeasedCall {
    fn drop(&mut self) {
        if !self.done {
            self.admissions
                .opened(&self.pool, self.workspace, self.lease, true);
        }
    }
}

impl Lead {
    /// The calls queued behind this one so far (at most a batch's worth): the caller admits
    /// them with itself, in the same statement, and answers them with [`Followers::answer`].
    pub fn take_followers(&self) -> Followers {
        let mut state = self.admissions.lock();
        let waiters = match state.batches.get_mut(&self.key) {
            Some(batch) => {
                let take = batch.queue.len().min(MAX_BATCH - 1);
                batch.queue.drain(..take).collect()
            }
            None => Vec::new(),
        };
        Followers(waiters)
    }

    /// What the lead's admission asks besides its calls: a lease.
    pub fn ask(&self) -> Ask {
        Ask {
            lease: LEASE_CALLS,
            settle: None,
        }
    }

    /// Keeps the lease the lead's admission (made at `at`) was granted, if any.
    pub fn granted(&self, admitted: &Admitted, at: OffsetDateTime) {
        self.admissions
            .install(&self.pool, self.key.0, admitted.leased, at);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut state = self.admissions.lock();
        let Some(batch) = state.batches.get_mut(&self.key) else {
            return;
        };
        if batch.queue.is_empty() {
            // Under the same lock a newcomer would queue under: none is lost.
            state.batches.remove(&self.key);
        } else {
            // A task of its own, so that no caller's request (which may go away) carries the
            // calls queued behind it.
            tokio::spawn(self.admissions.clone().drain(self.pool.clone(), self.key));
        }
    }
}

/// Calls admitted with a [`Lead`], after it, in their order of arrival.
pub struct Followers(Vec<Waiter>);

impl Followers {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tells each follower what the lead's admission said: admitted as far as it fit (the
    /// lead first), refused with the lead's refusal, or the database's error.
    pub fn answer(self, lead: Result<&Admitted, &ToolError>) {
        answer(self.0, lead, 1);
    }
}

impl Admissions {
    /// Leases used for at most `ttl` ([`LEASE_TTL`] by default; tests hold them longer).
    pub fn with_lease_ttl(ttl: Duration) -> Admissions {
        Admissions {
            state: Mutex::default(),
            next_lease: AtomicU64::default(),
            lease_ttl: ttl,
        }
    }

    /// Ends and settles every lease this process holds, and waits for that: when the server
    /// stops (its requests have finished), so that their calls are billed rather than lost.
    pub async fn settle_all(&self, pool: &Pool) {
        let leases: Vec<(Uuid, Lease)> = {
            let mut state = self.lock();
            let mut leases = Vec::new();
            for (workspace, held) in state.leases.drain() {
                leases.extend(held.current.map(|l| (workspace, l)));
                leases.extend(held.ending.into_iter().map(|l| (workspace, l)));
            }
            leases
        };
        for (workspace, lease) in leases {
            settle(pool.clone(), workspace, lease).await;
        }
    }

    /// Whether this process holds a lease of `workspace` that may still admit calls.
    fn holds_lease(&self, workspace: Uuid) -> bool {
        self.lock()
            .leases
            .get(&workspace)
            .and_then(|held| held.current.as_ref())
            .is_some_and(|lease| !lease.used_up())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one read of `workspace` made at `at`: from this process's lease of it, or with
    /// the reads of the same workspace that wait for an admission on its way, or, if none is,
    /// returns the [`Lead`]: the caller then admits itself. `Err` is `rate_limited`, a changed
    /// credential (see `ToolError::credential_changed`), or the database's own error.
    pub async fn admit(
        self: &Arc<Self>,
        pool: &Pool,
        workspace: Uuid,
        epoch: Option<i64>,
        at: OffsetDateTime,
    ) -> Result<Turn, ToolError> {
        let key = (workspace, epoch);
        let answered = {
            let mut state = self.lock();
            if let Some(lease) = self.take_leased(&mut state, pool, workspace, at) {
                return Ok(Turn::Leased(LeasedCall {
                    admissions: self.clone(),
                    pool: pool.clone(),
                    workspace,
                    lease,
                    done: false,
                }));
            }
            let batch = state.batches.entry(key).or_default();
            if !batch.in_flight {
                batch.in_flight = true;
                return Ok(Turn::Lead(Lead {
                    admissions: self.clone(),
                    pool: pool.clone(),
                    key,
                }));
            }
            let (answer, answered) = oneshot::channel();
            batch.queue.push(Waiter { at, answer });
            answered
        };
        answered
            .await
            .unwrap_or_else(|_| Err(ToolError::internal("the admission was abandoned")))
            .map(|()| Turn::Batched)
    }

    /// Admits a call made at `at` from the workspace's lease, if it can; ends a lease that can
    /// admit no more. The lease's id when admitted.
    fn take_leased(
        &self,
        state: &mut State,
        pool: &Pool,
        workspace: Uuid,
        at: OffsetDateTime,
    ) -> Option<u64> {
        let held = state.leases.get_mut(&workspace)?;
        let lease = held.current.as_mut()?;
        let taken = lease.take(at);
        let id = lease.id;
        if (!taken || lease.used_up())
            && let Some(ended) = held.current.take()
        {
            end(pool, workspace, held, ended);
        }
        if held.idle() {
            state.leases.remove(&workspace);
        }
        taken.then_some(id)
    }

    /// A call admitted from lease `id` has opened its transaction (see [`LeasedCall`]).
    fn opened(&self, pool: &Pool, workspace: Uuid, id: u64, ran: bool) {
        let mut state = self.lock();
        let Some(held) = state.leases.get_mut(&workspace) else {
            return;
        };
        if let Some(lease) = held.current.as_mut().filter(|l| l.id == id) {
            lease.opened(ran);
        } else if let Some(i) = held.ending.iter().position(|l| l.id == id) {
            held.ending[i].opened(ran);
            if held.ending[i].settleable() {
                let lease = held.ending.swap_remove(i);
                tokio::spawn(settle(pool.clone(), workspace, lease));
            }
        }
        if held.idle() {
            state.leases.remove(&workspace);
        }
    }

    /// Keeps `leased` calls granted to an admission of `workspace` made at `at` as its lease,
    /// ending the one before, and ends it when it expires.
    fn install(self: &Arc<Self>, pool: &Pool, workspace: Uuid, leased: usize, at: OffsetDateTime) {
        if leased == 0 {
            return;
        }
        let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
        let lease = Lease::new(id, at, leased, self.lease_ttl);
        let expires = lease.expires();
        {
            let mut state = self.lock();
            let held = state.leases.entry(workspace).or_default();
            if let Some(before) = held.current.replace(lease) {
                end(pool, workspace, held, before);
            }
        }
        let admissions = self.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(expires).await;
            let mut state = admissions.lock();
            let Some(held) = state.leases.get_mut(&workspace) else {
                return;
            };
            if held.current.as_ref().is_some_and(|l| l.id == id)
                && let Some(expired) = held.current.take()
            {
                end(&pool, workspace, held, expired);
            }
            if held.idle() {
                state.leases.remove(&workspace);
            }
        });
    }

    /// Admits the key's queued calls, batch after batch, until none are left.
    async fn drain(self: Arc<Self>, pool: Pool, key: Key) {
        loop {
            let batch = {
                let mut state = self.lock();
                let Some(batch) = state.batches.get_mut(&key) else {
                    return;
                };
                if batch.queue.is_empty() {
                    // Under the same lock a newcomer would queue under: none is lost.
                    state.batches.remove(&key);
                    return;
                }
                let take = batch.queue.len().min(MAX_BATCH);
                batch.queue.drain(..take).collect::<Vec<_>>()
            };
            // Counted at the latest of the calls' times (a batch is never empty).
            let Some(at) = batch.iter().map(|w| w.at).max() else {
                continue;
            };
            let wanted = batch.len();
            // A lead's admission may have brought a lease meanwhile: no second one.
            let ask = Ask {
                lease: if self.holds_lease(key.0) {
                    0
                } else {
                    LEASE_CALLS
                },
                settle: None,
            };
            let outcome = Scope::admit_calls(&pool, key.0, key.1, at, wanted, ask).await;
            if let Ok(admitted) = &outcome {
                self.install(&pool, key.0, admitted.leased, at);
            }
            answer(batch, outcome.as_ref(), 0);
        }
    }
}

/// Tells each waiter what the admission that counted it and `ahead` calls before it said:
/// admitted as far as the calls fit, in order, refused with its refusal, or the database's
/// error.
fn answer(waiters: Vec<Waiter>, outcome: Result<&Admitted, &ToolError>, ahead: usize) {
    for (i, waiter) in waiters.into_iter().enumerate() {
        let answer = match outcome {
            Ok(admitted) if admitted.admitted > ahead + i => Ok(()),
            Ok(admitted) => Err(admitted.refusal()),
            Err(error) => Err(alike(error)),
        };
        let _ = waiter.answer.send(answer);
    }
}

/// A lease admits no more calls: settled now, or once its calls have opened.
fn end(pool: &Pool, workspace: Uuid, held: &mut Leases, lease: Lease) {
    if lease.settleable() {
        tokio::spawn(settle(pool.clone(), workspace, lease));
    } else {
        held.ending.push(lease);
    }
}

/// Settles an ended lease of `workspace` in a transaction of its own: its used calls are
/// billed, the others given back to their minute. Tried a few times; a settlement that never
/// lands leaves its calls unbilled (an under-count) and is logged.
async fn settle(pool: Pool, workspace: Uuid, lease: Lease) {
    let settlement = lease.settlement();
    let ask = Ask {
        lease: 0,
        settle: Some(settlement),
    };
    let mut error = None;
    for attempt in 0..SETTLE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(LEASE_TTL * attempt).await;
        }
        match Scope::admit_calls(&pool, workspace, None, lease.last_at(), 0, ask).await {
            Ok(_) => return,
            Err(e) => error = Some(e),
        }
    }
    if let Some(error) = error {
        tracing::error!(
            %error,
            %workspace,
            leased = settlement.leased,
            used = settlement.used,
            "a lease of admitted calls could not be settled; its calls are not billed"
        );
    }
}

/// The same error for each call of a failed batch.
fn alike(error: &ToolError) -> ToolError {
    let mut each = ToolError::new(error.code, error.message.clone());
    each.details = error.details.clone();
    each
}
