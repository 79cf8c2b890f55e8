//! Counters on this node, in a fixed window, per client address: failed bearer
//! authentications (past the bound an address gets 429 before its credential is even looked
//! up, so a flood of random keys cannot keep the credential pool busy for valid callers) and
//! anonymous client registrations; and per customer: a customer's tool calls (one customer
//! must not use up the workspace's per-minute limit that the team shares with them).
//!
//! In memory and per node on purpose: they protect this process, cost no database work (the
//! point of them), and the bounded map forgets subjects whose window has ended.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use time::OffsetDateTime;
use uuid::Uuid;

/// Failed bearer authentications allowed per address per minute.
pub const BEARER_FAILURES_PER_MINUTE: u32 = 30;
/// Dynamic client registrations allowed per address per hour.
pub const REGISTRATIONS_PER_HOUR: u32 = 20;
/// Tool calls one customer (one requester) may make per minute on this node.
pub const CUSTOMER_CALLS_PER_MINUTE: u32 = 60;
/// Subjects tracked at most; past it, entries whose window ended are swept.
const MAX_TRACKED: usize = 100_000;

/// What a window counts: an address, a customer.
pub trait Subject: Copy + Eq + Hash {
    /// The key this subject is counted under.
    fn counted_as(self) -> Self;
}

impl Subject for Uuid {
    fn counted_as(self) -> Uuid {
        self
    }
}

/// At most `limit` events per subject in each fixed window.
pub struct Window<K> {
    limit: u32,
    window: time::Duration,
    counters: Mutex<HashMap<K, (OffsetDateTime, u32)>>,
    /// Set while the table is full of live windows: untracked subjects are refused until then.
    saturated_until: Mutex<Option<OffsetDateTime>>,
}

/// A window per client address.
pub type AddressWindow = Window<IpAddr>;
/// A window per customer (their requester id).
pub type CustomerWindow = Window<Uuid>;

/// What an address is counted as: an IPv6 address by its /64 (one subscriber usually holds a
/// whole /64, so counting single addresses would give them 2^64 fresh counters), an IPv4
/// address (or an IPv4-mapped IPv6 one) as itself.
impl Subject for IpAddr {
    fn counted_as(self) -> IpAddr {
        subject(self)
    }
}

fn subject(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                for s in segments.iter_mut().skip(4) {
                    *s = 0;
                }
                IpAddr::V6(std::net::Ipv6Addr::from(segments))
            }
        },
        v4 => v4,
    }
}

impl<K: Subject> Window<K> {
    /// A counter of `limit` per `window`.
    pub fn new(limit: u32, window: time::Duration) -> Window<K> {
        Window {
            limit,
            window,
            counters: Mutex::new(HashMap::new()),
            saturated_until: Mutex::new(None),
        }
    }

    /// The bound per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Seconds until `address` may try again, if it is over the bound now.
    pub fn blocked(&self, address: K, now: OffsetDateTime) -> Option<u64> {
        let address = address.counted_as();
        let counters = self.counters.lock().ok()?;
        let Some((start, failures)) = counters.get(&address) else {
            // An address we could not start counting while the table was full waits too.
            let until = (*self.saturated_until.lock().ok()?)?;
            return (until > now).then(|| {
                u64::try_from((until - now).whole_seconds())
                    .unwrap_or(0)
                    .max(1)
            });
        };
        let ends = *start + self.window;
        (*failures >= self.limit && ends > now).then(|| {
            u64::try_from((ends - now).whole_seconds())
                .unwrap_or(0)
                .max(1)
        })
    }

    /// Counts one event from `address`.
    pub fn record(&self, address: K, now: OffsetDateTime) {
        let Ok(mut counters) = self.counters.lock() else {
            return;
        };
        let address = address.counted_as();
        if counters.len() >= MAX_TRACKED && !counters.contains_key(&address) {
            let window = self.window;
            counters.retain(|_, (start, _)| *start + window > now);
            if counters.len() >= MAX_TRACKED {
                // Still full of live windows: a flood from more addresses than we track. Fail
                // closed for newcomers (see `blocked`) rather than forget anyone's count.
                self.saturated_until
                    .lock()
                    .map(|mut until| *until = Some(now + window))
                    .ok();
                return;
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

    #[test]
    fn an_ipv6_subscriber_is_counted_by_its_slash_64() {
        let throttle = AddressWindow::new(2, time::Duration::minutes(1));
        let now = OffsetDateTime::UNIX_EPOCH;
        throttle.record("2001:db8:1:2::1".parse().unwrap(), now);
        throttle.record("2001:db8:1:2:ffff::9".parse().unwrap(), now);
        assert!(
            throttle
                .blocked("2001:db8:1:2::77".parse().unwrap(), now)
                .is_some()
        );
        assert!(
            throttle
                .blocked("2001:db8:1:3::1".parse().unwrap(), now)
                .is_none()
        );
    }
}
