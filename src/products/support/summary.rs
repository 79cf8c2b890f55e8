//! The desk at a glance: tickets by status and priority, how many are past an SLA due time
//! now (the server clock's), and customer satisfaction over the last 30 days.

use serde_json::{Map, Value, json};
use time::Duration;

use super::tickets::{Priority, Status};
use crate::identity::{Endpoint, Product, Role};
use crate::tools::named::NoArgs;
use crate::tools::{Cx, Effect, ToolDef, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);

/// The window satisfaction is averaged over.
const CSAT_WINDOW: Duration = Duration::days(30);

/// The summary tool.
pub fn tools() -> Vec<ToolDef> {
    vec![ToolDef::new(
        "support_summary",
        "Summarise the support desk: ticket counts by status and by priority, how many open or pending \
         tickets are past an SLA due time now (in total, for first response, for resolution), and the average \
         satisfaction rating (1 to 5) and number of ratings given in the last 30 days.",
        HERE,
        Role::Reader,
        Effect::Read,
        support_summary,
    )]
}

async fn support_summary(cx: &Cx<'_>, _args: NoArgs) -> ToolResult {
    let now = cx.app.clock.now();
    let since = now - CSAT_WINDOW;
    let counts = cx
        .scope
        .query(
            "SELECT status, priority, count(*) AS n FROM support.tickets GROUP BY status, priority",
            &[],
        )
        .await?;
    // The same rule as support.sla_breached, split by which clock ran out (by columns, not
    // the ticket's row: on Citus the row type is the shard's own, see migration V20).
    let breached = cx
        .scope
        .query_one(
            "SELECT count(*) FILTER (WHERE support.sla_breached(t.status, t.first_responded_at,
                        t.first_response_due_at, t.resolution_due_at, t.resolution_paused_at, $1))
                        AS total,
                    count(*) FILTER (WHERE t.first_responded_at IS NULL AND t.first_response_due_at < $1)
                        AS first_response,
                    count(*) FILTER (WHERE t.resolution_due_at < coalesce(t.resolution_paused_at, $1))
                        AS resolution
             FROM support.tickets t WHERE t.status IN ('open', 'pending')",
            &[&now],
        )
        .await?;
    let csat = cx
        .scope
        .query_one(
            "SELECT round(avg(csat_score), 2)::float8 AS average, count(*) AS ratings
             FROM support.tickets WHERE csat_at >= $1",
            &[&since],
        )
        .await?;
    let tally = |column: &str, names: &[&str]| -> Value {
        let mut by: Map<String, Value> = names.iter().map(|n| ((*n).into(), json!(0))).collect();
        for row in &counts {
            let name: &str = row.get(column);
            let n: i64 = row.get("n");
            let total = by.get(name).and_then(Value::as_i64).unwrap_or(0) + n;
            by.insert(name.into(), json!(total));
        }
        Value::Object(by)
    };
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    let priorities: Vec<&str> = Priority::ALL.iter().map(|p| p.as_str()).collect();
    let total: i64 = counts.iter().map(|r| r.get::<_, i64>("n")).sum();
    Ok(json!({
        "total": total,
        "by_status": tally("status", &statuses),
        "by_priority": tally("priority", &priorities),
        "breached": {
            "total": breached.get::<_, i64>("total"),
            "first_response": breached.get::<_, i64>("first_response"),
            "resolution": breached.get::<_, i64>("resolution"),
        },
        "csat": {
            "average": csat.get::<_, Option<f64>>("average"),
            "ratings": csat.get::<_, i64>("ratings"),
            "since": timestamp(Some(since)),
        },
        "at": timestamp(Some(now)),
    }))
}
