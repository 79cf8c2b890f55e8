//! The call path every tool goes through: permit, admit, run in a Scope, audit; counted and
//! timed for `/metrics`.

use std::time::Instant;

use serde_json::Value;

use super::{Cx, Effect, ErrorCode, ToolDef, ToolError};
use crate::app::App;
use crate::audit;
use crate::db::Scope;
use crate::identity::{Endpoint, Persona, Principal};
use crate::limits::batch::{Lead, Turn};

/// Runs one tool for one principal: the role/persona/product rule, then rate limit and
/// budget, then the handler in its Scope (commit on success, roll back otherwise).
/// Refused attempts at privileged tools are written to the audit log. Every call, refused
/// ones included, is counted by endpoint, tool and outcome, and timed.
pub async fn call(
    app: &App,
    tool: &ToolDef,
    principal: &Principal,
    args: Value,
) -> Result<Value, ToolError> {
    let started = Instant::now();
    let result = run(app, tool, principal, args).await;
    if result
        .as_ref()
        .is_err_and(|e| e.code == ErrorCode::Unauthenticated)
    {
        // A cached credential found out of date: the request runs again and counts then.
        return result;
    }
    app.metrics.tool_call(
        tool.endpoint.name(),
        tool.name,
        result.as_ref().err(),
        started.elapsed(),
    );
    result
}

async fn run(
    app: &App,
    tool: &ToolDef,
    principal: &Principal,
    args: Value,
) -> Result<Value, ToolError> {
    customer_share(app, principal)?;
    // Every call that will use a database connection, refused ones included, takes a slot
    // first: otherwise a flood of refusals could hold the whole runtime pool.
    let _slot = app.workspace_gate.enter(principal.workspace_id).await?;
    if let Err(refusal) = tool.permits(principal) {
        return Err(refuse_unpermitted(app, tool, principal, &args, refusal).await);
    }
    let now = app.clock.now();
    if app.enforce_limits
        && let Some(refusal) = app.recent_refusals.check(principal.workspace_id, now)
    {
        return Err(refusal);
    }
    // Every call is admitted before it runs, in the round trip that opens its transaction,
    // except a read that finds a lease of its workspace on this process, or another admission
    // of its workspace on its way: it is admitted from the lease, or with the reads queued
    // behind that admission, in a batch (crate::limits::batch, crate::limits::lease).
    let batched = app.enforce_limits
        && matches!(tool.effect, Effect::Read)
        && tool.endpoint != Endpoint::DataSource;
    let turn = if batched {
        let turn = app
            .admissions
            .admit(
                &app.pools.runtime,
                principal.workspace_id,
                principal.credential_epoch,
                now,
            )
            .await
            .map_err(|error| remember_refusal(app, principal, error, now))?;
        Some(turn)
    } else {
        None
    };
    let admitted_by = match &turn {
        Some(Turn::Leased(_)) => "lease",
        Some(Turn::Batched) => "batch",
        Some(Turn::Lead(_)) | None => "database",
    };
    let opened = match turn {
        _ if tool.endpoint == Endpoint::DataSource => linked_scope(app, principal, now).await,
        Some(Turn::Lead(lead)) => {
            // The reads that queue while this one admits itself go on in batches once the
            // lead is dropped, here.
            admit_with_followers(app, principal, &lead, now).await
        }
        Some(Turn::Batched) => Scope::begin_read(&app.pools.runtime, principal).await,
        Some(Turn::Leased(leased)) => {
            // Refused because its credential changed, it did not run: given back to the
            // lease. Any other outcome counts, as a read that fails does. Known when the
            // transaction opens, with the tool's first statement.
            Scope::begin_leased_read(
                &app.pools.runtime,
                principal,
                Box::new(move |ran| leased.opened(ran)),
            )
            .await
        }
        None if app.enforce_limits => {
            Scope::begin_admitted(&app.pools.runtime, principal, now).await
        }
        None if matches!(tool.effect, Effect::Read) => {
            Scope::begin_unmetered_read(&app.pools.runtime, principal).await
        }
        None => Scope::begin_at(&app.pools.runtime, principal, now).await,
    };
    let scope = opened.map_err(|error| remember_refusal(app, principal, error, now))?;
    if app.enforce_limits {
        app.metrics.admission(admitted_by);
    }
    let cx = Cx {
        principal,
        scope: &scope,
        app,
        action: tool.audit_action,
        endpoint: tool.endpoint,
    };
    // Arguments are kept only where a refusal would be audited; elsewhere they move.
    let kept_args = tool.audit_action.map(|_| args.clone());
    let outcome = match tool.invoke(&cx, args).await {
        Ok(value) => scope.commit().await.map(|()| value),
        Err(error) => {
            scope.rollback().await;
            Err(error)
        }
    };
    match outcome {
        Ok(value) => {
            if !matches!(tool.effect, Effect::Read) {
                // A write may have made webhook deliveries (the fan-out trigger, V14): this
                // process's worker sends them now. Other processes' workers find due
                // deliveries on their timer; no NOTIFY, which would serialise every writing
                // transaction's commit on PostgreSQL's notification queue lock.
                app.webhooks.wake();
            }
            Ok(value)
        }
        Err(error) => {
            if let (ErrorCode::Forbidden, Some(args), Some(action)) =
                (error.code, &kept_args, tool.audit_action)
            {
                // Admitted already, so only the record is left to write.
                audit::record_refusal(
                    &app.pools.runtime,
                    principal,
                    action,
                    Some(&audit::target_of(args)),
                    &error.message,
                    app.clock.now(),
                )
                .await;
            }
            Err(error)
        }
    }
}

/// Times a lead lets the runtime's other ready tasks run before it admits itself: under
/// load, the reads of its workspace that are already on their way reach its queue and are
/// admitted with it, by one statement, instead of by another after it; a lone read loses
/// nothing, since with no other task ready a yield returns at once. Two yields, because a
/// request's task may first hand its call on once (measured with `cargo bench --bench mcp`
/// before leases: PostgreSQL transactions per search call at 16 / 64 connections fell from
/// 1.3 / 1.5 to 1.2 / 1.3).
const LEAD_YIELDS: usize = 2;

/// A lead admits itself and the reads that queued behind it meanwhile, in the round trip
/// that opens its own transaction (see `crate::limits::batch`).
async fn admit_with_followers(
    app: &App,
    principal: &Principal,
    lead: &Lead,
    now: time::OffsetDateTime,
) -> Result<Scope, ToolError> {
    for _ in 0..LEAD_YIELDS {
        tokio::task::yield_now().await;
    }
    let followers = lead.take_followers();
    let opened = Scope::begin_admitted_with(
        &app.pools.runtime,
        principal,
        now,
        followers.len(),
        lead.ask(),
    )
    .await;
    match &opened {
        Ok((_, admitted)) => {
            lead.granted(admitted, now);
            followers.answer(Ok(admitted));
        }
        Err(error) => followers.answer(Err(error)),
    }
    opened.map(|(scope, _)| scope)
}

/// A call on a linked database is admitted against the workspace's limits in hdls's own
/// database (committed on its own, like every admission), then runs in a transaction on the
/// linked database.
async fn linked_scope(
    app: &App,
    principal: &Principal,
    now: time::OffsetDateTime,
) -> Result<Scope, ToolError> {
    if app.enforce_limits {
        Scope::begin_admitted(&app.pools.runtime, principal, now)
            .await?
            .rollback()
            .await;
    }
    app.data_sources
        .scope(
            &app.pools.runtime,
            &app.outbound,
            app.keys.master(),
            principal,
        )
        .await
}

/// Passes an error on, first remembering a refusal for being over a limit, so that the
/// workspace's next calls on this process are refused without the database until the window
/// ends (crate::limits::refused).
fn remember_refusal(
    app: &App,
    principal: &Principal,
    error: ToolError,
    now: time::OffsetDateTime,
) -> ToolError {
    app.recent_refusals
        .record(principal.workspace_id, &error, now);
    error
}

/// A customer's calls count against the workspace's limits like any call, and also against a
/// bound of their own on this node, so that one customer (someone outside the team) cannot
/// use up the per-minute limit the team shares with every customer. Counted before anything
/// else, refused calls included, and without a database round trip.
fn customer_share(app: &App, principal: &Principal) -> Result<(), ToolError> {
    if principal.persona != Persona::Customer || !app.enforce_limits {
        return Ok(());
    }
    // A customer credential always has a principal; without one the database shows nothing,
    // and they share one counter here.
    let customer = principal.principal_id.unwrap_or_default();
    let now = app.clock.now();
    if let Some(retry_after_s) = app.customer_calls.blocked(customer, now) {
        let limit = app.customer_calls.limit();
        return Err(ToolError::new(
            ErrorCode::RateLimited,
            format!(
                "a customer may make {limit} tool calls per minute; retry in {retry_after_s} s"
            ),
        )
        .with("limit", serde_json::json!(limit))
        .with("window", serde_json::json!("minute"))
        .with("retry_after_s", serde_json::json!(retry_after_s)));
    }
    app.customer_calls.record(customer, now);
    Ok(())
}

/// A call the permit rule refused costs the caller like any call: it counts against the
/// workspace's per-minute window (never the monthly ledger, which bills calls that ran), and
/// past the limit it is `rate_limited` and not audited, so refusals cannot flood the audit log.
/// Otherwise a privileged tool's refusal is audited, in the same transaction as its count.
async fn refuse_unpermitted(
    app: &App,
    tool: &ToolDef,
    principal: &Principal,
    args: &Value,
    refusal: ToolError,
) -> ToolError {
    if !app.enforce_limits && tool.audit_action.is_none() {
        return refusal;
    }
    let now = app.clock.now();
    let outcome = async {
        let scope = Scope::begin(&app.pools.runtime, principal).await?;
        if app.enforce_limits {
            let row = scope
                .query_one(
                    crate::limits::COUNT_REFUSAL_SQL,
                    &[&principal.workspace_id, &now],
                )
                .await?;
            if let Err(limited) = crate::limits::decide(&row) {
                scope.rollback().await;
                return Ok(Some(limited));
            }
        }
        if let Some(action) = tool.audit_action {
            audit::record(
                &scope,
                principal,
                action,
                Some(&audit::target_of(args)),
                audit::Outcome::Refused(&refusal.message),
                now,
            )
            .await?;
        }
        scope.commit().await?;
        Ok::<_, ToolError>(None)
    }
    .await;
    match outcome {
        Ok(Some(limited)) => limited,
        Ok(None) => refusal,
        // A cached credential found out of date: resolved again and the call retried.
        Err(error) if error.code == ErrorCode::Unauthenticated => error,
        Err(error) => {
            tracing::error!(%error, tool = tool.name, "could not count or record a refused call");
            refusal
        }
    }
}
