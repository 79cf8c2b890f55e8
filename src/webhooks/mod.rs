//! Signed webhooks: the signing secret and signatures (`signing`), and the delivery worker
//! every `hdls serve` runs (`worker`). Subscriptions are managed by the concierge's tools
//! (`crate::concierge`); deliveries are made by a trigger in the writer's transaction
//! (migration V14).

pub mod signing;
pub mod worker;

use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::identity::{CredentialKind, CredentialRef, Persona, Principal, Role};
use crate::net::fetch::Clients;

/// Attempts per delivery: the first, then one after each delay of [`RETRY_DELAYS`].
pub const MAX_ATTEMPTS: i32 = 8;

/// Waits before attempts 2 to 8 (±20 % jitter): about 3 days from first to last attempt.
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(10 * 60),
    Duration::from_secs(60 * 60),
    Duration::from_secs(6 * 60 * 60),
    Duration::from_secs(24 * 60 * 60),
    Duration::from_secs(40 * 60 * 60),
];

/// The longest wait a receiver's `Retry-After` may ask for (a longer one is cut to this).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A subscription whose deliveries have failed without a success for this long is disabled.
pub const FAILING_FOR: time::Duration = time::Duration::days(5);

/// Subscriptions one workspace may have.
pub const MAX_SUBSCRIPTIONS: i64 = 50;

/// How the worker behaves; `serve` reads it from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-attempt timeout (15 s).
    pub timeout: Duration,
    /// How long a claim holds a delivery: a process that dies mid-delivery leaves it to be
    /// claimed again after this (4 × the timeout: 60 s by default).
    pub lease: Duration,
    /// Deliveries in flight on this process, and to one target host.
    pub concurrency: usize,
    pub per_host: usize,
    /// How often the worker looks for due deliveries without being notified.
    pub tick: Duration,
    /// Change events (and their deliveries) older than this are removed by housekeeping.
    pub retention: time::Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::with_timeout(Duration::from_secs(15))
    }
}

impl Settings {
    /// The defaults with another per-attempt timeout (and the lease that follows from it).
    pub fn with_timeout(timeout: Duration) -> Settings {
        Settings {
            timeout,
            lease: timeout * 4,
            concurrency: 64,
            per_host: 16,
            tick: Duration::from_secs(1),
            retention: time::Duration::days(30),
        }
    }

    /// `HDLS_WEBHOOK_TIMEOUT` (seconds, 1 to 15; the lease is 4 × it) and
    /// `HDLS_EVENT_RETENTION_DAYS` (default 30).
    pub fn from_env() -> Settings {
        let timeout = std::env::var("HDLS_WEBHOOK_TIMEOUT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| (1..=15).contains(s))
            .unwrap_or(15);
        let mut settings = Settings::with_timeout(Duration::from_secs(timeout));
        if let Some(days) = std::env::var("HDLS_EVENT_RETENTION_DAYS")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|d| (1..=3650).contains(d))
        {
            settings.retention = time::Duration::days(days);
        }
        settings
    }
}

/// The webhook state an App holds: settings, the worker's wake-up, pinned HTTP clients.
#[derive(Default)]
pub struct Webhooks {
    pub settings: Settings,
    pub wake: Notify,
    pub clients: Clients,
}

impl Webhooks {
    /// Webhooks with these settings.
    pub fn new(settings: Settings) -> Webhooks {
        Webhooks {
            settings,
            wake: Notify::new(),
            clients: Clients::default(),
        }
    }

    /// Makes this process's worker look for due deliveries now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The identity the worker reads and records a workspace's deliveries with: an agent (the
/// outbox admits agents only), no role beyond reading, no credential of anyone's.
pub fn worker_principal(workspace_id: Uuid) -> Principal {
    Principal {
        workspace_id,
        workspace_name: String::new(),
        role: Role::Reader,
        persona: Persona::Agent,
        principal_id: None,
        user_id: None,
        products: Vec::new(),
        all_products: false,
        data_source: None,
        credential: CredentialRef {
            kind: CredentialKind::Cli,
            id: "webhooks".to_owned(),
        },
        expires_at: None,
        credential_epoch: None,
    }
}

/// The wait before the next attempt after `attempts` failed ones: the schedule with ±20 %
/// jitter, or the receiver's `Retry-After` when that is longer (at most a day).
pub fn retry_delay(attempts: i32, retry_after: Option<Duration>) -> Duration {
    let index = usize::try_from(attempts.max(1) - 1)
        .unwrap_or(0)
        .min(RETRY_DELAYS.len() - 1);
    let base = RETRY_DELAYS[index];
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    let scheduled = base.mul_f64(jitter);
    match retry_after {
        Some(asked) => scheduled.max(asked.min(MAX_RETRY_AFTER)),
        None => scheduled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spans_about_three_days_and_honours_retry_after_within_bounds() {
        let total: Duration = RETRY_DELAYS.iter().sum();
        assert!(total > Duration::from_secs(2 * 86400) && total < Duration::from_secs(4 * 86400));
        assert_eq!(RETRY_DELAYS.len() + 1, MAX_ATTEMPTS as usize);
        for attempts in 1..MAX_ATTEMPTS {
            let d = retry_delay(attempts, None);
            let base = RETRY_DELAYS[(attempts - 1) as usize];
            assert!(d >= base.mul_f64(0.79) && d <= base.mul_f64(1.21));
        }
        let long = retry_delay(1, Some(Duration::from_secs(3600)));
        assert_eq!(long, Duration::from_secs(3600));
        let huge = retry_delay(1, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(huge, MAX_RETRY_AFTER);
        // Asking for less than the schedule does not hurry it.
        assert!(retry_delay(1, Some(Duration::from_secs(1))) >= Duration::from_secs(8));
    }
}
