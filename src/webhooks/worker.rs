//! The delivery worker that runs in every `hdls serve` (and every in-process test server).
//!
//! Woken by the call path after every committed write on this process (which may have made
//! deliveries: the fan-out trigger of V14; wake-ups within [`CLAIM_COALESCE`] share one
//! claim) and by a timer, it claims due deliveries of every workspace through
//! `hdls.claim_webhook_deliveries` (FOR UPDATE SKIP LOCKED, with a lease: migration V14),
//! reads each one's event and subscription in a tenant Scope, signs and POSTs it through the
//! outbound guard, and records the outcome in another Scope. Nothing is marked delivered
//! before the receiver's 2xx; a process that dies mid-delivery leaves its claims to expire
//! and be claimed again, so delivery is at least once. Ordering is best effort: due
//! deliveries are claimed oldest first, then sent concurrently.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use super::{FAILING_FOR, MAX_ATTEMPTS, retry_delay, signing, worker_principal};
use crate::app::App;
use crate::db::Scope;
use crate::error::ToolError;
use crate::metrics::Delivery;
use crate::net::fetch::{self, FetchError};
use crate::tools::custom_fields;
use crate::tools::timestamp;

/// How often retention housekeeping runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(600);
/// Deliveries claimed at once, at most.
const BATCH: usize = 100;
/// Free slots worth a claim when nearly all are busy.
const MIN_CLAIM: usize = 16;
/// The least time between two claims started by wake-ups. Every committed write wakes the
/// worker, and most writes make no delivery (no subscription matches), so under a stream of
/// writes an immediate claim per wake-up cost one more transaction per write (measured: 2.7
/// database transactions per `create_account` instead of 2). Wake-ups that arrive within this
/// interval are served by one claim, which takes every delivery due by then; a delivery
/// waits at most this long more.
const CLAIM_COALESCE: Duration = Duration::from_millis(20);

/// Runs until `shutdown`.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    let in_flight = Arc::new(Semaphore::new(app.webhooks.settings.concurrency.max(1)));
    let hosts = Arc::new(Hosts::default());
    let (recorder, finished) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(record_all(app.clone(), finished));
    let mut housekept: Option<Instant> = None;
    loop {
        let claimed_at = Instant::now();
        // Claim as many as there are free slots, until nothing more is due.
        loop {
            let mut permits: Vec<OwnedSemaphorePermit> = Vec::new();
            while permits.len() < BATCH {
                match in_flight.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let enough = MIN_CLAIM.min(app.webhooks.settings.concurrency.max(1));
            if permits.len() < enough {
                // Nearly every slot is busy: wait until a useful batch is free, rather than
                // claiming (one round trip and one read each) a delivery at a time.
                let missing = u32::try_from(enough - permits.len()).unwrap_or(1);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    more = in_flight.clone().acquire_many_owned(missing) => match more {
                        Ok(mut more) => {
                            while more.num_permits() > 1 {
                                if let Some(one) = more.split(1) {
                                    permits.push(one);
                                }
                            }
                            permits.push(more);
                        }
                        Err(_) => return,
                    },
                }
            }
            let wanted = permits.len();
            let claimed = match claim(&app, wanted).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "claiming webhook deliveries failed");
                    break;
                }
            };
            let got = claimed.len();
            dispatch(&app, &hosts, &recorder, claimed, permits).await;
            if got < wanted {
                break;
            }
        }
        if housekept.is_none_or(|at| at.elapsed() >= HOUSEKEEPING_EVERY) {
            housekept = Some(Instant::now());
            if let Err(error) = housekeeping(&app, app.clock.now()).await {
                tracing::warn!(%error, "webhook retention housekeeping failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = app.webhooks.wake.notified() => {
                // Let the wake-ups of the next few milliseconds join this one.
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until((claimed_at + CLAIM_COALESCE).into()) => {}
                }
            }
            _ = tokio::time::sleep(app.webhooks.settings.tick) => {}
        }
    }
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Leases up to `max` due deliveries of any workspace.
async fn claim(app: &App, max: usize) -> Result<Vec<(Uuid, Uuid)>, ToolError> {
    let client = app
        .pools
        .runtime
        .get()
        .await
        .map_err(ToolError::from_pool)?;
    let now = app.clock.now();
    let lease_until = now + to_time(app.webhooks.settings.lease);
    let statement = client
        .prepare_cached(
            "SELECT workspace_id, delivery_id FROM hdls.claim_webhook_deliveries($1, $2, $3)",
        )
        .await?;
    let max = i32::try_from(max).unwrap_or(i32::MAX);
    let rows = client
        .query(&statement, &[&now, &lease_until, &max])
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// One claimed delivery, read under RLS.
struct Job {
    workspace_id: Uuid,
    id: Uuid,
    attempts: i32,
    claimed_at: OffsetDateTime,
    send: Result<Outgoing, String>,
}

/// What goes on the wire.
struct Outgoing {
    url: Url,
    secret: String,
    event_id: Uuid,
    body: Vec<u8>,
}

/// Reads each workspace's claimed deliveries and starts them, one slot each.
async fn dispatch(
    app: &Arc<App>,
    hosts: &Arc<Hosts>,
    recorder: &Recorder,
    claimed: Vec<(Uuid, Uuid)>,
    mut permits: Vec<OwnedSemaphorePermit>,
) {
    let mut by_workspace: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (workspace_id, id) in claimed {
        by_workspace.entry(workspace_id).or_default().push(id);
    }
    for (workspace_id, ids) in by_workspace {
        let jobs = match load(app, workspace_id, &ids).await {
            Ok(jobs) => jobs,
            Err(error) => {
                // Left leased: they are claimed again when the lease runs out.
                tracing::warn!(%error, %workspace_id, "reading webhook deliveries failed");
                continue;
            }
        };
        for job in jobs {
            let Some(permit) = permits.pop() else {
                // Cannot happen (one slot was taken per claimed row); left to the lease.
                break;
            };
            let app = app.clone();
            let hosts = hosts.clone();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                deliver(&app, &hosts, &recorder, job).await;
                drop(permit);
            });
        }
    }
}

const LOAD_SQL: &str = "SELECT d.id, d.subscription_id, d.event_id, d.attempts, d.claimed_at,
            s.target_url, s.secret_sealed, s.status, s.expires_at, s.author,
            e.schema_name, e.table_name, e.op, e.data, e.changed, e.occurred_at
     FROM hdls.webhook_deliveries d
     JOIN hdls.webhook_subscriptions s
       ON s.workspace_id = d.workspace_id AND s.id = d.subscription_id
     JOIN hdls.change_events e ON e.workspace_id = d.workspace_id AND e.event_id = d.event_id
     WHERE d.id = ANY ($1) AND d.status = 'pending'";

async fn load(app: &App, workspace_id: Uuid, ids: &[Uuid]) -> Result<Vec<Job>, ToolError> {
    let scope = Scope::begin(&app.pools.runtime, &worker_principal(workspace_id)).await?;
    let rows = scope.query(LOAD_SQL, &[&ids]).await?;
    let now = app.clock.now();
    // Custom fields each creator sees, per entity, loaded once per batch.
    let mut visible: HashMap<(&str, &str, String), HashSet<String>> = HashMap::new();
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        let subscription_id: Uuid = row.get("subscription_id");
        let status: &str = row.get("status");
        let expires_at: Option<OffsetDateTime> = row.get("expires_at");
        let send = if status != "active" {
            Err("the subscription is disabled".to_owned())
        } else if expires_at.is_some_and(|t| t <= now) {
            Err("the subscription expired with the credential that made it".to_owned())
        } else {
            let schema: String = row.get("schema_name");
            let table: String = row.get("table_name");
            let mut data: Value = row.get("data");
            let author: String = row.get("author");
            if let Some(custom) = data.get_mut("custom").and_then(Value::as_object_mut)
                && !custom.is_empty()
            {
                // Only the fields the subscription's creator sees: team fields and their
                // own personal ones, never another person's.
                let names = match custom_fields::entity_of_table(&schema, &table) {
                    Some(entity) => {
                        match visible.get(&(entity.product.slug(), entity.name, author.clone())) {
                            Some(names) => names.clone(),
                            None => {
                                let names: HashSet<String> =
                                    custom_fields::visible_to(&scope, entity, &author)
                                        .await?
                                        .into_iter()
                                        .map(|f| f.name)
                                        .collect();
                                visible.insert(
                                    (entity.product.slug(), entity.name, author.clone()),
                                    names.clone(),
                                );
                                names
                            }
                        }
                    }
                    None => HashSet::new(),
                };
                custom.retain(|k, _| names.contains(k));
            }
            let event_id: Uuid = row.get("event_id");
            let op: String = row.get("op");
            let mut body = json!({
                "id": event_id,
                "type": format!("{schema}.{table}.{op}"),
                "occurred_at": timestamp(Some(row.get("occurred_at"))),
                "workspace_id": workspace_id,
                "data": data,
            });
            if op == "update" {
                body["changed"] = json!(row.get::<_, Option<Vec<String>>>("changed"));
            }
            let sealed: Vec<u8> = row.get("secret_sealed");
            let url: String = row.get("target_url");
            match (
                signing::open(app.keys.master(), workspace_id, subscription_id, &sealed),
                Url::parse(&url),
                serde_json::to_vec(&body),
            ) {
                (Ok(secret), Ok(url), Ok(body)) => Ok(Outgoing {
                    url,
                    secret,
                    event_id,
                    body,
                }),
                (Err(error), _, _) => {
                    tracing::error!(%error, %subscription_id, "cannot open a webhook signing secret");
                    Err(
                        "the signing secret cannot be opened with this server's master key"
                            .to_owned(),
                    )
                }
                _ => Err("the delivery could not be prepared".to_owned()),
            }
        };
        jobs.push(Job {
            workspace_id,
            id: row.get("id"),
            attempts: row.get("attempts"),
            claimed_at: row
                .get::<_, Option<OffsetDateTime>>("claimed_at")
                .unwrap_or(now),
            send,
        });
    }
    scope.rollback().await;
    Ok(jobs)
}

/// Deliveries in flight per target host on this process.
#[derive(Default)]
struct Hosts(Mutex<HashMap<String, Arc<Semaphore>>>);

impl Hosts {
    fn slot(&self, host: &str, per_host: usize) -> Arc<Semaphore> {
        let mut hosts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget hosts nobody is sending to.
        if hosts.len() > 1000 {
            hosts.retain(|_, s| Arc::strong_count(s) > 1);
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(per_host.max(1))))
            .clone()
    }
}

/// How one attempt ended.
enum Outcome {
    Delivered {
        status: u16,
    },
    Failed {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
        /// How `/metrics` counts it: failed, gone, unreachable or refused.
        kind: Delivery,
    },
    /// Not sent: the subscription cannot be delivered to.
    Dropped(String),
    /// Not sent: the claim waited too long for a slot; due again at once.
    Released,
}

impl Outcome {
    fn metric(&self) -> Delivery {
        match self {
            Outcome::Delivered { .. } => Delivery::Delivered,
            Outcome::Failed { kind, .. } => *kind,
            Outcome::Dropped(_) => Delivery::Dropped,
            Outcome::Released => Delivery::Released,
        }
    }
}

/// One finished attempt (or a claim not attempted), for the recorder.
struct Attempted {
    workspace_id: Uuid,
    id: Uuid,
    attempts: i32,
    outcome: Outcome,
    elapsed: Duration,
}

type Recorder = tokio::sync::mpsc::UnboundedSender<Attempted>;

async fn deliver(app: &App, hosts: &Hosts, recorder: &Recorder, job: Job) {
    let settings = &app.webhooks.settings;
    let started = Instant::now();
    let outcome = match &job.send {
        Err(reason) => Outcome::Dropped(reason.clone()),
        Ok(send) => {
            let host = send.url.host_str().unwrap_or_default().to_owned();
            let slot = hosts.slot(&host, settings.per_host);
            let _permit = slot.acquire().await;
            // A request that could still be running when the lease ends might be sent twice;
            // hand the claim back instead.
            let now = app.clock.now();
            if now + to_time(settings.timeout) > job.claimed_at + to_time(settings.lease) {
                Outcome::Released
            } else {
                attempt(app, send, now).await
            }
        }
    };
    app.metrics.webhook_delivery(outcome.metric());
    // If the recorder is gone (shutdown), the claim stays leased and is claimed again.
    let _ = recorder.send(Attempted {
        workspace_id: job.workspace_id,
        id: job.id,
        attempts: job.attempts,
        outcome,
        elapsed: started.elapsed(),
    });
}

/// Records attempts in batches: one transaction per workspace for whatever has finished,
/// so a busy worker pays one commit for many deliveries, not one each.
async fn record_all(app: Arc<App>, mut finished: tokio::sync::mpsc::UnboundedReceiver<Attempted>) {
    while let Some(first) = finished.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match finished.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut by_workspace: HashMap<Uuid, Vec<Attempted>> = HashMap::new();
        for attempted in batch {
            by_workspace
                .entry(attempted.workspace_id)
                .or_default()
                .push(attempted);
        }
        for (workspace_id, attempts) in by_workspace {
            let count = attempts.len();
            if let Err(error) = record(&app, workspace_id, attempts).await {
                // Left leased: due again when the lease runs out (so at least once holds).
                tracing::warn!(%error, %workspace_id, count, "recording webhook attempts failed");
            }
        }
    }
}

/// Signs and POSTs once.
async fn attempt(app: &App, send: &Outgoing, now: OffsetDateTime) -> Outcome {
    let id = send.event_id.to_string();
    let ts = now.unix_timestamp();
    let headers = [
        (
            "x-hdls-signature",
            signing::hdls_signature(&send.secret, &send.body),
        ),
        ("x-hdls-event-id", id.clone()),
        ("webhook-id", id.clone()),
        ("webhook-timestamp", ts.to_string()),
        (
            "webhook-signature",
            signing::standard_signature(&send.secret, &id, ts, &send.body),
        ),
        (
            "user-agent",
            format!("hdls-webhooks/{}", env!("CARGO_PKG_VERSION")),
        ),
    ];
    let result = fetch::post(
        &app.outbound,
        &app.webhooks.clients,
        &send.url,
        &headers,
        send.body.clone(),
        app.webhooks.settings.timeout,
    )
    .await;
    match result {
        Ok(posted) if (200..300).contains(&posted.status) => Outcome::Delivered {
            status: posted.status,
        },
        Ok(posted) => Outcome::Failed {
            status: Some(posted.status),
            error: if (300..400).contains(&posted.status) {
                format!("HTTP {} (redirects are not followed)", posted.status)
            } else {
                format!("HTTP {}", posted.status)
            },
            retry_after: posted.retry_after,
            kind: if posted.status == 410 {
                Delivery::Gone
            } else {
                Delivery::Failed
            },
        },
        Err(error) => Outcome::Failed {
            status: None,
            kind: match error {
                FetchError::Refused(_) | FetchError::NotHttps | FetchError::BadUrl => {
                    Delivery::Refused
                }
                _ => Delivery::Unreachable,
            },
            error: describe(&error),
            retry_after: None,
        },
    }
}

/// Why an attempt failed, as the subscriber sees it (never a resolved address).
fn describe(error: &FetchError) -> String {
    let mut text = error.to_string();
    if text.len() > 300 {
        let mut end = 300;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

async fn record(app: &App, workspace_id: Uuid, batch: Vec<Attempted>) -> Result<(), ToolError> {
    let scope = Scope::begin(&app.pools.runtime, &worker_principal(workspace_id)).await?;
    let now = app.clock.now();
    let (mut ids, mut codes, mut millis) = (Vec::new(), Vec::new(), Vec::new());
    for attempted in batch {
        let ms = i32::try_from(attempted.elapsed.as_millis()).unwrap_or(i32::MAX);
        match attempted.outcome {
            Outcome::Delivered { status } => {
                ids.push(attempted.id);
                codes.push(i32::from(status));
                millis.push(ms);
            }
            other => record_one(&scope, &attempted.id, attempted.attempts, other, ms, now).await?,
        }
    }
    if !ids.is_empty() {
        scope
            .execute(
                "WITH o AS (SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[]) AS o (id, code, ms)),
                 d AS (
                    UPDATE hdls.webhook_deliveries w
                    SET status = 'delivered', attempts = w.attempts + 1, last_attempt_at = $4,
                        last_status_code = o.code, last_error = NULL, last_duration_ms = o.ms,
                        delivered_at = $4, next_attempt_at = $4
                    FROM o WHERE w.id = o.id AND w.status = 'pending'
                    RETURNING w.subscription_id)
                 UPDATE hdls.webhook_subscriptions s SET failing_since = NULL
                 WHERE s.id IN (SELECT subscription_id FROM d) AND s.failing_since IS NOT NULL",
                &[&ids, &codes, &millis, &now],
            )
            .await?;
    }
    scope.commit().await
}

/// Records one attempt that did not deliver.
async fn record_one(
    scope: &Scope,
    id: &Uuid,
    attempts: i32,
    outcome: Outcome,
    millis: i32,
    now: OffsetDateTime,
) -> Result<(), ToolError> {
    match outcome {
        Outcome::Delivered { .. } => {}
        Outcome::Released => {
            scope
                .execute(
                    "UPDATE hdls.webhook_deliveries SET next_attempt_at = $2
                     WHERE id = $1 AND status = 'pending'",
                    &[id, &now],
                )
                .await?;
        }
        Outcome::Dropped(reason) => {
            scope
                .execute(
                    "UPDATE hdls.webhook_deliveries
                     SET status = 'failed', last_error = $2, next_attempt_at = $3
                     WHERE id = $1 AND status = 'pending'",
                    &[id, &reason, &now],
                )
                .await?;
        }
        Outcome::Failed {
            status,
            error,
            retry_after,
            kind: _,
        } => {
            let attempts = attempts + 1;
            let gone = status == Some(410);
            let last = gone || attempts >= MAX_ATTEMPTS;
            let next = now + to_time(retry_delay(attempts, retry_after));
            let disable_reason = gone.then_some("the receiver answered 410 Gone");
            scope
                .execute(
                    "WITH d AS (
                        UPDATE hdls.webhook_deliveries
                        SET status = CASE WHEN $6 THEN 'failed' ELSE 'pending' END,
                            attempts = attempts + 1, last_attempt_at = $2, last_status_code = $3,
                            last_error = $4, last_duration_ms = $5, next_attempt_at = $7
                        WHERE id = $1 AND status = 'pending'
                        RETURNING subscription_id)
                     UPDATE hdls.webhook_subscriptions s
                     SET failing_since = coalesce(s.failing_since, $2),
                         status = CASE WHEN $8::text IS NOT NULL OR coalesce(s.failing_since, $2) <= $9
                                       THEN 'disabled' ELSE s.status END,
                         disabled_at = CASE WHEN s.status = 'active'
                                             AND ($8::text IS NOT NULL OR coalesce(s.failing_since, $2) <= $9)
                                            THEN $2 ELSE s.disabled_at END,
                         disabled_reason = CASE WHEN s.status = 'active' AND $8::text IS NOT NULL THEN $8
                                                WHEN s.status = 'active' AND coalesce(s.failing_since, $2) <= $9
                                                THEN 'every delivery failed for 5 days'
                                                ELSE s.disabled_reason END
                     FROM d WHERE s.id = d.subscription_id",
                    &[
                        id,
                        &now,
                        &status.map(i32::from),
                        &error,
                        &millis,
                        &last,
                        &next,
                        &disable_reason,
                        &(now - FAILING_FOR),
                    ],
                )
                .await?;
        }
    }
    Ok(())
}

/// Retention: in every workspace, change events older than the retention age (and their
/// deliveries) are removed, unless a delivery of theirs is still pending. Returns how many
/// events went.
pub async fn housekeeping(app: &App, now: OffsetDateTime) -> Result<u64, ToolError> {
    let before = now - app.webhooks.settings.retention;
    // The smallest v7 id of that millisecond: the key (workspace_id, event_id) then bounds
    // the scan.
    let millis = u64::try_from(before.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let before_id =
        Uuid::from_u128(u128::from(millis) << 80 | 0x7000_u128 << 64 | 0x8000_u128 << 48);
    // Workspace ids, through the credential role (the runtime role sees one workspace at a
    // time).
    let workspaces: Vec<Uuid> = {
        let auth = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
        auth.query("SELECT workspace_id FROM hdls.workspaces", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut removed = 0u64;
    for workspace_id in workspaces {
        let scope = Scope::begin(&app.pools.runtime, &worker_principal(workspace_id)).await?;
        let row = scope
            .query_one(
                "SELECT hdls.purge_change_events($1, $2)",
                &[&before, &before_id],
            )
            .await?;
        scope.commit().await?;
        removed += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    }
    Ok(removed)
}
