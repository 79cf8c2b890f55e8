//! Admission leases (migration V22): far from a workspace's limits, the admission a process
//! makes anyway also takes [`LEASE_CALLS`] calls of the current minute in advance, and the
//! process admits its next reads of that workspace from them, without a write, for at most
//! [`LEASE_TTL`]; then the lease is settled: the database bills the calls that ran and gives
//! the others back to their minute.
//!
//! Why: every admission writes the workspace's one counter row, and even in batches
//! ([`super::batch`]) that write cost reads a third of their throughput against no limits at
//! all (`cargo bench --bench mcp`, 2 cores). A lease is one write for up to 64 calls
//! (32 left limits on/off at 0.89-0.91 in one run: the lead, settlement and batches between
//! leases; 64 halves them).
//!
//! What stays exact (the database decides, see V22): the per-minute limit and the monthly
//! budget are never passed, since leased calls count in their minute at once and as spent in
//! the budget until settled; the month's ledger bills only calls that ran; near a limit no
//! lease is granted (8 leases' worth of room must remain), so small plans admit every call
//! in the database as before. What a lease costs: while one process holds unused leased
//! calls, another near the minute's limit may be refused calls the lease will give back
//! within [`LEASE_TTL`]; and calls admitted from a lease show in `get_usage`'s month once it
//! is settled.
//!
//! Credentials: a call admitted from a lease is checked against its credential's epoch by
//! its own transaction (`Scope::begin_leased_read`), so a revoked key is refused on its next
//! call, on every process, as with any admission. A call refused there did not run and is
//! given back to the lease; so that no settlement can bill it first, a lease is settled only
//! once none of its calls is still opening its transaction.

use std::time::Duration;

use time::{OffsetDateTime, UtcOffset};
use tokio::time::Instant;

/// Calls a process asks to lease with each admission of a workspace's reads.
pub const LEASE_CALLS: usize = 64;

/// How long a lease may be used; it also ends with its minute, or when its calls are used up.
pub const LEASE_TTL: Duration = Duration::from_millis(100);

/// What settling a lease tells the database: of the `leased` calls of the minute starting at
/// `window`, `used` ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub window: OffsetDateTime,
    pub leased: usize,
    pub used: usize,
}

/// The minute a call made at `at` counts in, as the database truncates it (UTC).
pub fn minute(at: OffsetDateTime) -> OffsetDateTime {
    let utc = at.to_offset(UtcOffset::UTC);
    utc.replace_nanosecond(0)
        .and_then(|t| t.replace_second(0))
        .unwrap_or(utc)
}

/// Calls of one minute this process took in advance for one workspace.
#[derive(Debug)]
pub struct Lease {
    pub id: u64,
    window: OffsetDateTime,
    leased: usize,
    /// Calls admitted from it, including those still opening their transactions.
    used: usize,
    /// Calls admitted from it whose transactions have not opened yet: the lease is settled
    /// only once there are none, so that one refused there can still be given back.
    opening: usize,
    /// The time of the latest call admitted from it (or of its grant).
    last_at: OffsetDateTime,
    expires: Instant,
}

impl Lease {
    /// `leased` calls granted to an admission made at `at`, usable for `ttl`.
    pub fn new(id: u64, at: OffsetDateTime, leased: usize, ttl: Duration) -> Lease {
        Lease {
            id,
            window: minute(at),
            leased,
            used: 0,
            opening: 0,
            last_at: at,
            expires: Instant::now() + ttl,
        }
    }

    pub fn expires(&self) -> Instant {
        self.expires
    }

    /// Admits a call made at `at` from it, if it can: it has calls left, `at` is in its
    /// minute and it has not expired.
    pub fn take(&mut self, at: OffsetDateTime) -> bool {
        let usable =
            self.used < self.leased && minute(at) == self.window && Instant::now() < self.expires;
        if usable {
            self.used += 1;
            self.opening += 1;
            self.last_at = self.last_at.max(at);
        }
        usable
    }

    /// Whether no call can be admitted from it any more, whatever the time.
    pub fn used_up(&self) -> bool {
        self.used >= self.leased
    }

    /// A call admitted from it has opened its transaction (`ran`), or was refused there and
    /// is given back.
    pub fn opened(&mut self, ran: bool) {
        self.opening = self.opening.saturating_sub(1);
        if !ran {
            self.used = self.used.saturating_sub(1);
        }
    }

    /// Whether it can be settled now (see [`Lease::opening`]).
    pub fn settleable(&self) -> bool {
        self.opening == 0
    }

    pub fn settlement(&self) -> Settlement {
        Settlement {
            window: self.window,
            leased: self.leased,
            used: self.used,
        }
    }

    /// The time to settle it at (the latest call's).
    pub fn last_at(&self) -> OffsetDateTime {
        self.last_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_minute_is_truncated_in_utc() {
        assert_eq!(
            minute(datetime!(2026-12-02 18:45:59.999 +01:00)),
            datetime!(2026-12-02 17:45:00 UTC)
        );
    }

    #[tokio::test]
    async fn a_lease_admits_its_calls_in_its_minute_and_gives_back_refused_ones() {
        let at = datetime!(2026-12-02 17:45:10 UTC);
        let mut lease = Lease::new(1, at, 2, LEASE_TTL);
        assert!(
            !lease.take(datetime!(2026-12-02 17:46:00 UTC)),
            "the next minute"
        );
        assert!(lease.take(at));
        assert!(!lease.settleable());
        lease.opened(false);
        assert!(lease.settleable());
        assert!(lease.take(at) && lease.take(at));
        assert!(lease.used_up() && !lease.take(at));
        lease.opened(true);
        lease.opened(true);
        assert_eq!(
            lease.settlement(),
            Settlement {
                window: datetime!(2026-12-02 17:45:00 UTC),
                leased: 2,
                used: 2
            }
        );
    }
}
