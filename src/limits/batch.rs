//! Admission of a workspace's read-only calls in batches (`hdls.admit_calls`, migration V21).
//!
//! Every admission writes the workspace's one counter row, so concurrent calls of one
//! workspace queue on that row's lock inside PostgreSQL, each with a lock wait, a wake-up and
//! a commit of its own (measured: the admission cost more database CPU than the search it
//! admitted). Here a process keeps at most one admission per workspace (and credential epoch)
//! on its way to the database; the calls that arrive meanwhile wait for the next one, which
//! admits them all with one statement. It is group commit for the counter: under load the
//! batches grow by themselves, and a lone call waits for nobody: it admits itself in the
//! round trip that opens its transaction ([`Lead`]).
//!
//! Exactness is kept: the batch is counted by one upsert on the same row as every other
//! admission, on any process; when not all of a batch fits, the database admits exactly as
//! many as fit (the first to arrive) and refuses the rest, which are counted nowhere.
//!
//! A read runs once admitted (see `tools::call`), so a refused one costs no query and a read
//! that fails counts like any call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::db::Scope;
use crate::error::ToolError;

/// Calls admitted by one statement, at most; more wait for the next.
const MAX_BATCH: usize = 256;

/// Which calls may share a batch: one workspace, and the same credential epoch to check
/// (`None`: credentials resolved for their own request, nothing to check).
type Key = (Uuid, Option<i64>);

struct Waiter {
    at: OffsetDateTime,
    answer: oneshot::Sender<Result<(), ToolError>>,
}

/// The batches of this process. An entry exists while a task admits that key's calls; calls
/// that find one join its queue.
#[derive(Default)]
pub struct Admissions {
    queues: Mutex<HashMap<Key, Vec<Waiter>>>,
}

/// A call that found no admission of its workspace on its way: it admits itself, in the round
/// trip that opens its own transaction (`Scope::begin_admitted`), as a call that writes does,
/// so a lone call pays no round trip more than that. The calls that queue meanwhile are
/// admitted in batches once this is dropped, whether the call was admitted, refused or
/// abandoned.
pub struct Lead {
    admissions: Arc<Admissions>,
    pool: Pool,
    key: Key,
}

impl Drop for Lead {
    fn drop(&mut self) {
        let mut queues = self
            .admissions
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if queues.get(&self.key).is_some_and(Vec::is_empty) {
            // Under the same lock a newcomer would push under: none is lost.
            queues.remove(&self.key);
        } else if queues.contains_key(&self.key) {
            // A task of its own, so that no caller's request (which may go away) carries the
            // calls queued behind it.
            tokio::spawn(self.admissions.clone().drain(self.pool.clone(), self.key));
        }
    }
}

impl Admissions {
    /// Admits one call of `workspace` made at `at` with the calls of the same workspace that
    /// wait with it, or, if none is on its way, returns the [`Lead`]: the caller then admits
    /// itself. `Err` is `rate_limited`, a changed credential (see
    /// `ToolError::credential_changed`), or the database's own error.
    pub async fn admit(
        self: &Arc<Self>,
        pool: &Pool,
        workspace: Uuid,
        epoch: Option<i64>,
        at: OffsetDateTime,
    ) -> Result<Option<Lead>, ToolError> {
        let key = (workspace, epoch);
        let answered = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            match queues.get_mut(&key) {
                Some(queue) => {
                    let (answer, answered) = oneshot::channel();
                    queue.push(Waiter { at, answer });
                    answered
                }
                None => {
                    queues.insert(key, Vec::new());
                    return Ok(Some(Lead {
                        admissions: self.clone(),
                        pool: pool.clone(),
                        key,
                    }));
                }
            }
        };
        answered
            .await
            .unwrap_or_else(|_| Err(ToolError::internal("the admission was abandoned")))
            .map(|()| None)
    }

    /// Admits the key's queued calls, batch after batch, until none are left.
    async fn drain(self: Arc<Self>, pool: Pool, key: Key) {
        loop {
            let batch = {
                let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
                let Some(queue) = queues.get_mut(&key) else {
                    return;
                };
                if queue.is_empty() {
                    // Under the same lock a newcomer would push under: none is lost.
                    queues.remove(&key);
                    return;
                }
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect::<Vec<_>>()
            };
            // Counted at the latest of the calls' times (a batch is never empty).
            let Some(at) = batch.iter().map(|w| w.at).max() else {
                continue;
            };
            let wanted = batch.len();
            let outcome = Scope::admit_calls(&pool, key.0, key.1, at, wanted).await;
            for (i, waiter) in batch.into_iter().enumerate() {
                let answer = match &outcome {
                    Ok(admitted) if admitted.admitted > i => Ok(()),
                    Ok(admitted) => Err(admitted.refusal()),
                    Err(error) => Err(alike(error)),
                };
                let _ = waiter.answer.send(answer);
            }
        }
    }
}

/// The same error for each call of a failed batch.
fn alike(error: &ToolError) -> ToolError {
    let mut each = ToolError::new(error.code, error.message.clone());
    each.details = error.details.clone();
    each
}
