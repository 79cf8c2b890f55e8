//! Per-workspace rate limits and monthly budgets, counted in PostgreSQL so they hold
//! exactly across any number of hdls processes.
//!
//! Admission is one statement in a transaction of its own, so its row lock is held for
//! microseconds, not for the length of the tool call. It writes one row: the workspace's
//! usage-ledger row for the month, which also holds the current minute's window.
//! One function counts every admission, `hdls.admit_calls` (migrations V21, V22):
//! - a call is a batch of one, pipelined ahead of the tool's own transaction on the same
//!   connection: no extra round trip;
//! - except a read-only call that finds another admission of its workspace on its way on this
//!   process: it is admitted with the reads queued behind that one ([`batch`]), one
//!   statement for the batch;
//! - or one that finds calls of its workspace this process leased in advance, far from the
//!   limits ([`lease`], migration V22): no statement at all.
//!
//! Durability: the admission commits with `synchronous_commit = off`. With asynchronous
//! commit a crash can lose at most the last few hundred milliseconds of increments, and
//! only for read-only calls: a call that writes commits synchronously afterwards on the same
//! WAL stream, which flushes the ledger increment before it. The error is an under-count, in
//! the customer's favour, and never an over-count; a minute window that restarts from a
//! lower count after a crash is as harmless.

pub mod batch;
pub mod concurrency;
pub mod lease;
pub mod per_address;
pub mod refused;

use serde_json::json;
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{ErrorCode, ToolError};

/// Counts a refused call in the per-minute window, inside the caller's tenant transaction
/// (`$1` the workspace, `$2` the time of the call): `allowed`, then the refusal's columns as
/// in [`ADMIT_CALLS_SQL`].
pub const COUNT_REFUSAL_SQL: &str =
    "SELECT allowed, refused_window, call_limit, retry_after_s FROM hdls.count_refusal($1, $2)";

/// The caller's default when the plan sets no per-minute limit.
pub const DEFAULT_PER_MINUTE: i64 = 120;

/// The admission statement (migration V22): `$1` the workspace, `$2` the time, `$3` the
/// credential epoch a cached credential was resolved at (NULL for one resolved for this
/// request; another epoch refuses every call, counting none), `$4` how many calls: one for
/// a call that may write, a batch of reads (see [`batch`]); `$5` how many calls to lease
/// besides, far from the limits ([`lease`]); `$6`-`$8` a lease to settle (its minute, how
/// many it leased, how many of them ran).
pub const ADMIT_CALLS_SQL: &str = "SELECT admitted, leased, refused_window, call_limit, retry_after_s \
     FROM hdls.admit_calls($1, $2, $3, $4, $5, $6, $7, $8)";

/// What one admission asks of the database besides its calls: calls to lease, and a lease
/// taken earlier to settle.
#[derive(Default, Clone, Copy)]
pub struct Ask {
    pub lease: usize,
    pub settle: Option<lease::Settlement>,
}

/// The arguments of one [`ADMIT_CALLS_SQL`], owned so that its parameters can borrow them.
pub struct AdmitArgs {
    workspace: Uuid,
    at: OffsetDateTime,
    epoch: Option<i64>,
    wanted: i32,
    lease: i32,
    settle_window: Option<OffsetDateTime>,
    settle_leased: i32,
    settle_used: i32,
}

impl AdmitArgs {
    /// `wanted` calls of `workspace` at `at`, checking `epoch`, with what `ask` adds.
    pub fn new(
        workspace: Uuid,
        at: OffsetDateTime,
        epoch: Option<i64>,
        wanted: usize,
        ask: Ask,
    ) -> AdmitArgs {
        let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        AdmitArgs {
            workspace,
            at,
            epoch,
            wanted: int(wanted),
            lease: int(ask.lease),
            settle_window: ask.settle.map(|s| s.window),
            settle_leased: ask.settle.map_or(0, |s| int(s.leased)),
            settle_used: ask.settle.map_or(0, |s| int(s.used)),
        }
    }

    pub fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.workspace,
            &self.at,
            &self.epoch,
            &self.wanted,
            &self.lease,
            &self.settle_window,
            &self.settle_leased,
            &self.settle_used,
        ]
    }
}

/// What the database said of a batch: the first `admitted` calls are admitted, the others
/// refused; `leased` more were leased.
pub struct Admitted {
    pub admitted: usize,
    pub leased: usize,
    window: Option<String>,
    limit: Option<i64>,
    retry_after_s: Option<i32>,
}

impl Admitted {
    /// Reads an [`ADMIT_CALLS_SQL`] row.
    pub fn from_row(row: &Row) -> Admitted {
        let admitted: i32 = row.get("admitted");
        let leased: i32 = row.get("leased");
        Admitted {
            admitted: usize::try_from(admitted).unwrap_or(0),
            leased: usize::try_from(leased).unwrap_or(0),
            window: row.get("refused_window"),
            limit: row.get("call_limit"),
            retry_after_s: row.get("retry_after_s"),
        }
    }

    /// The error each refused call of the batch gets.
    pub fn refusal(&self) -> ToolError {
        refusal(
            self.window.as_deref(),
            self.limit.unwrap_or(0),
            self.retry_after_s.unwrap_or(1),
        )
    }
}

/// Turns a [`COUNT_REFUSAL_SQL`] row into Ok (room left) or a `rate_limited` error.
pub fn decide(row: &Row) -> Result<(), ToolError> {
    let allowed: bool = row.get("allowed");
    if allowed {
        return Ok(());
    }
    Err(refusal(
        row.get::<_, Option<&str>>("refused_window"),
        row.get::<_, Option<i64>>("call_limit").unwrap_or(0),
        row.get::<_, Option<i32>>("retry_after_s").unwrap_or(1),
    ))
}

/// A refusal for `window` (`minute`, `month`, or `credential`: the caller's credential changed
/// and nothing was counted).
fn refusal(window: Option<&str>, limit: i64, retry_after_s: i32) -> ToolError {
    let window = window.unwrap_or("minute");
    if window == "credential" {
        // Nothing was counted: the credential is resolved again and the call retried.
        return ToolError::credential_changed();
    }
    let message = match window {
        "month" => format!(
            "this workspace has used its monthly budget of {limit} tool calls; it resets in {retry_after_s} s"
        ),
        _ => format!(
            "this workspace is limited to {limit} tool calls per minute; retry in {retry_after_s} s"
        ),
    };
    ToolError::new(ErrorCode::RateLimited, message)
        .with("limit", json!(limit))
        .with("window", json!(window))
        .with("retry_after_s", json!(retry_after_s))
}

/// The start of the fixed one-minute window containing `at`.
pub fn minute_start(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0)
        .and_then(|t| t.replace_nanosecond(0))
        .unwrap_or(at)
}

/// The first instant of the calendar month (UTC) containing `at`.
pub fn month_start(at: OffsetDateTime) -> time::Date {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.date().replace_day(1).unwrap_or(at.date())
}

/// The first instant of the next calendar month (UTC).
pub fn next_month_start(at: OffsetDateTime) -> OffsetDateTime {
    let start = month_start(at);
    let (year, month) = if start.month() == time::Month::December {
        (start.year() + 1, time::Month::January)
    } else {
        (start.year(), start.month().next())
    };
    time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(at)
}
