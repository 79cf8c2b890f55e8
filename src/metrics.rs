//! What `/metrics` exports, in the Prometheus text format (prometheus-client's encoder; no
//! hand-written format, no global registry: each App owns one).
//!
//! Cardinality is bounded by construction: every label value is a `&'static str` (an
//! endpoint name, a registered tool name, an error code, a window or outcome from a fixed
//! list), so no workspace id, source id, URL or message can become a label.
//!
//! Ground floor: imports only `error`; the call path, the webhook worker and the scrape
//! handler (src/server.rs) report into it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The response's `Content-Type` (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    endpoint: &'static str,
    tool: &'static str,
    /// `ok` or an error code's wire name.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    endpoint: &'static str,
    tool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    window: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// A connection pool's state at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolState {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

/// Adds another pool's numbers (the linked databases' pools are reported as one).
impl std::ops::Add for PoolState {
    type Output = PoolState;

    fn add(self, other: PoolState) -> PoolState {
        PoolState {
            max_size: self.max_size + other.max_size,
            size: self.size + other.size,
            available: self.available + other.available,
            waiting: self.waiting + other.waiting,
        }
    }
}

impl From<deadpool::Status> for PoolState {
    fn from(s: deadpool::Status) -> PoolState {
        PoolState {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }
}

/// How a webhook delivery attempt ended, as a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered,
    /// The receiver answered something else (3xx included); retried later.
    Failed,
    /// The receiver answered 410 Gone: the subscription is disabled.
    Gone,
    /// No answer: connection failed or timed out.
    Unreachable,
    /// The outbound guard refused the address (or the URL), nothing was sent.
    Refused,
    /// The subscription cannot be delivered to (e.g. deleted); not sent.
    Dropped,
    /// The claim waited too long for a slot and was handed back; not sent.
    Released,
}

impl Delivery {
    fn label(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Gone => "gone",
            Delivery::Unreachable => "unreachable",
            Delivery::Refused => "refused",
            Delivery::Dropped => "dropped",
            Delivery::Released => "released",
        }
    }
}

/// The windows an admission refusal can name; anything else is `other`.
const WINDOWS: [&str; 3] = ["minute", "month", "concurrency"];

/// This process's metrics.
pub struct Metrics {
    registry: Registry,
    tool_calls: Family<CallLabels, Counter>,
    call_seconds: Family<ToolLabels, Histogram, fn() -> Histogram>,
    admission_refusals: Family<WindowLabels, Counter>,
    pool_max: Family<PoolLabels, Gauge>,
    pool_size: Family<PoolLabels, Gauge>,
    pool_in_use: Family<PoolLabels, Gauge>,
    pool_waiting: Family<PoolLabels, Gauge>,
    linked_pools: Gauge,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    credential_lookups: Family<OutcomeLabels, Counter>,
    admissions: Family<OutcomeLabels, Counter>,
}

fn call_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("hdls");
        let tool_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by endpoint, tool and outcome (ok or the error code)",
            tool_calls.clone(),
        );
        let call_seconds = Family::<ToolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            call_histogram,
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency, from the call path's start to commit or rollback",
            call_seconds.clone(),
        );
        let admission_refusals = Family::<WindowLabels, Counter>::default();
        registry.register(
            "admission_refusals",
            "Tool calls refused as rate_limited, by the window that refused them",
            admission_refusals.clone(),
        );
        let pool_max = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_max_size",
            "Most connections the pool may hold",
            pool_max.clone(),
        );
        let pool_size = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_size",
            "Connections the pool holds now",
            pool_size.clone(),
        );
        let pool_in_use = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_in_use",
            "Connections lent out now",
            pool_in_use.clone(),
        );
        let pool_waiting = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_waiting",
            "Callers waiting for a connection now",
            pool_waiting.clone(),
        );
        let linked_pools = Gauge::default();
        registry.register(
            "db_linked_pools",
            "Linked databases this process has a pool for (their pools are summed as pool=\"linked\")",
            linked_pools.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            webhook_deliveries.clone(),
        );
        let credential_lookups = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "credential_lookups",
            "Presented credentials by how they were resolved: hit (this process's cache), miss (the database), stale (cached, but the workspace's credentials changed: resolved again)",
            credential_lookups.clone(),
        );
        let admissions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admissions",
            "Tool calls admitted against the workspace's limits, by how: database (their own statement, pipelined with their transaction), batch (with other reads of the workspace in one statement), lease (from calls this process leased in advance, no statement)",
            admissions.clone(),
        );
        Metrics {
            registry,
            credential_lookups,
            admissions,
            tool_calls,
            call_seconds,
            admission_refusals,
            pool_max,
            pool_size,
            pool_in_use,
            pool_waiting,
            linked_pools,
            webhook_deliveries,
        }
    }
}

impl Metrics {
    /// Counts one tool call and its latency. `error` is `None` for a call that succeeded;
    /// a `rate_limited` one also counts an admission refusal by its `window` detail.
    pub fn tool_call(
        &self,
        endpoint: &'static str,
        tool: &'static str,
        error: Option<&crate::error::ToolError>,
        elapsed: Duration,
    ) {
        let outcome = error.map_or("ok", |e| e.code.as_str());
        self.tool_calls
            .get_or_create(&CallLabels {
                endpoint,
                tool,
                outcome,
            })
            .inc();
        self.call_seconds
            .get_or_create(&ToolLabels { endpoint, tool })
            .observe(elapsed.as_secs_f64());
        if let Some(e) = error
            && e.code == crate::error::ErrorCode::RateLimited
        {
            let named = e.details.get("window").and_then(|w| w.as_str());
            let window = WINDOWS
                .iter()
                .find(|w| Some(**w) == named)
                .copied()
                .unwrap_or("other");
            self.admission_refusals
                .get_or_create(&WindowLabels { window })
                .inc();
        }
    }

    /// Counts one credential lookup: `hit`, `miss` or `stale` (see `crate::auth::cache`).
    pub fn credential_lookup(&self, outcome: &'static str) {
        self.credential_lookups
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one admitted call: `database`, `batch` or `lease` (see `crate::limits`).
    pub fn admission(&self, outcome: &'static str) {
        self.admissions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one webhook delivery attempt.
    pub fn webhook_delivery(&self, outcome: Delivery) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// Records a pool's state (called at scrape time).
    pub fn pool(&self, pool: &'static str, state: PoolState) {
        let labels = PoolLabels { pool };
        let set = |family: &Family<PoolLabels, Gauge>, value: usize| {
            family
                .get_or_create(&labels)
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set(&self.pool_max, state.max_size);
        set(&self.pool_size, state.size);
        set(
            &self.pool_in_use,
            state.size.saturating_sub(state.available),
        );
        set(&self.pool_waiting, state.waiting);
    }

    /// Records how many linked-database pools exist (called at scrape time).
    pub fn linked_pools(&self, count: usize) {
        self.linked_pools
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}
