//! Counters per client address on this node, in a fixed window: failed bearer
//! authentications (past the bound an address gets 429 before its credential is even looked
//! up, so a flood of random keys cannot keep the credential pool busy for valid callers) and
//! anonymous client registrations.
//!
//! In memory and per node on purpose: they protect this process, cost no database work (the
//! point of them), and the bounded map forgets addresses whose window has ended.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use time::OffsetDateTime;

/// Failed bearer authentications allowed per address per minute.
pub const BEARER_FAILURES_PER_MINUTE: u32 = 30;
/// Dynamic client registrations allowed per address per hour.
pub const REGISTRATIONS_PER_HOUR: u32 = 20;
/// Addresses tracked at most; past it, entries whose window ended are swept.
const MAX_TRACKED: usize = 100_000;

/// At most `limit` events per address in each fixed window.
pub struct AddressWindow {
    limit: u32,
    window: time::Duration,
    counters: Mutex<HashMap<IpAddr, (OffsetDateTime, u32)>>,
}

impl AddressWindow {
    /// A counter of `limit` per `window`.
    pub fn new(limit: u32, window: time::Duration) -> AddressWindow {
        AddressWindow {
            limit,
            window,
            counters: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `address` may try again, if it is over the bound now.
    pub fn blocked(&self, address: IpAddr, now: OffsetDateTime) -> Option<u64> {
        let counters = self.counters.lock().ok()?;
        let (start, failures) = counters.get(&address)?;
        let ends = *start + self.window;
        (*failures >= self.limit && ends > now).then(|| {
            u64::try_from((ends - now).whole_seconds())
                .unwrap_or(0)
                .max(1)
        })
    }

    /// Counts one event from `address`.
    pub fn record(&self, address: IpAddr, now: OffsetDateTime) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        if counters.len() >= MAX_TRACKED {
            let window = self.window;
            counters.retain(|_, (start, _)| *start + window > now);
            if counters.len() >= MAX_TRACKED {
                // Still full of live windows: drop them all rather than grow without bound.
                counters.clear();
            }
        }
        let entry = counters.entry(address).or_insert((now, 0));
        if entry.0 + self.window <= now {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_the_bound_until_the_window_ends() {
        let throttle = AddressWindow::new(3, time::Duration::minutes(1));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let now = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..3 {
            assert!(throttle.blocked(a, now).is_none());
            throttle.record(a, now);
        }
        assert_eq!(throttle.blocked(a, now), Some(60));
        assert!(throttle.blocked(b, now).is_none());
        assert!(
            throttle
                .blocked(a, now + time::Duration::minutes(1))
                .is_none()
        );
    }
}
