//! SLA targets: per priority, the minutes to a ticket's first public reply and to its
//! resolution. A priority without the workspace's own row uses the defaults of V13
//! (`support.default_sla`). The due times themselves are set by the database when a ticket
//! opens or changes priority (V13 triggers).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_postgres::Row;

use super::tickets::Priority;
use crate::identity::{Endpoint, Product, Role};
use crate::tools::named::NoArgs;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Product(Product::Support);

/// Longest target: one year, in minutes (the table's CHECK).
const MAX_MINUTES: i64 = 525_600;

/// The SLA tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "list_sla_policies",
            "List the SLA targets for each priority (urgent, high, normal, low): minutes to the first public \
             reply and to resolution, and whether it is the default (`default: true`) or the workspace's own.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_sla_policies,
        ),
        ToolDef::new(
            "set_sla_policy",
            "Set the SLA targets for one priority: minutes to the first public reply and to resolution (1 to \
             525600, first response at most resolution). Tickets opened afterwards get the new targets, and so \
             do tickets moved to this priority later; tickets already at this priority keep their due times. \
             Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::IdempotentWrite,
            set_sla_policy,
        ),
    ]
}

/// Each priority's targets, most urgent first: the workspace's row, else the default. The
/// workspace's rows are read first, by name (on Citus: from its shard, as an intermediate
/// result), and joined to the defaults afterwards; Citus cannot plan a distributed table on
/// the inner side of an outer join with a function.
const LIST_SQL: &str = "WITH own AS MATERIALIZED (
         SELECT priority, first_response_minutes, resolution_minutes, updated_at
         FROM support.sla_policies WHERE workspace_id = $2
     )
     SELECT d.priority,
            coalesce(p.first_response_minutes, s.first_response_minutes) AS first_response_minutes,
            coalesce(p.resolution_minutes, s.resolution_minutes) AS resolution_minutes,
            p.priority IS NULL AS is_default, p.updated_at
     FROM unnest($1::text[]) WITH ORDINALITY AS d (priority, n)
     CROSS JOIN LATERAL support.default_sla(d.priority) s
     LEFT JOIN own p ON p.priority = d.priority
     ORDER BY d.n";

fn policy_json(row: &Row) -> Value {
    json!({
        "priority": row.get::<_, &str>("priority"),
        "first_response_minutes": row.get::<_, i32>("first_response_minutes"),
        "resolution_minutes": row.get::<_, i32>("resolution_minutes"),
        "default": row.get::<_, bool>("is_default"),
        "updated_at": timestamp(row.get::<_, Option<OffsetDateTime>>("updated_at")),
    })
}

async fn policies(cx: &Cx<'_>) -> Result<Vec<Value>, ToolError> {
    let priorities: Vec<&str> = Priority::ALL.iter().map(|p| p.as_str()).collect();
    let rows = cx
        .scope
        .query(LIST_SQL, &[&priorities, &cx.scope.workspace()])
        .await?;
    Ok(rows.iter().map(policy_json).collect())
}

async fn list_sla_policies(cx: &Cx<'_>, _args: NoArgs) -> ToolResult {
    Ok(json!({ "policies": policies(cx).await? }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetPolicy {
    /// The priority these targets are for: low, normal, high or urgent.
    priority: Priority,
    /// Minutes from opening to the first public reply (1 to 525600).
    first_response_minutes: i64,
    /// Minutes from opening to resolution, not counting time pending (1 to 525600, at least
    /// first_response_minutes).
    resolution_minutes: i64,
}

fn minutes(path: &str, value: i64) -> Result<i32, ToolError> {
    i32::try_from(value)
        .ok()
        .filter(|m| (1..=MAX_MINUTES).contains(&i64::from(*m)))
        .ok_or_else(|| {
            ToolError::invalid_input(
                path,
                format!("{path} must be 1 to {MAX_MINUTES} (one year)"),
            )
        })
}

async fn set_sla_policy(cx: &Cx<'_>, args: SetPolicy) -> ToolResult {
    let first = minutes("first_response_minutes", args.first_response_minutes)?;
    let resolution = minutes("resolution_minutes", args.resolution_minutes)?;
    if first > resolution {
        return Err(ToolError::invalid_input(
            "first_response_minutes",
            "first_response_minutes must not exceed resolution_minutes",
        ));
    }
    cx.scope
        .execute(
            "INSERT INTO support.sla_policies (priority, first_response_minutes, resolution_minutes, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (workspace_id, priority) DO UPDATE
                SET first_response_minutes = EXCLUDED.first_response_minutes,
                    resolution_minutes = EXCLUDED.resolution_minutes,
                    updated_at = EXCLUDED.updated_at
                WHERE (sla_policies.first_response_minutes, sla_policies.resolution_minutes)
                      IS DISTINCT FROM (EXCLUDED.first_response_minutes, EXCLUDED.resolution_minutes)",
            &[
                &args.priority.as_str(),
                &first,
                &resolution,
                &cx.app.clock.now(),
            ],
        )
        .await?;
    let all = policies(cx).await?;
    let policy = all
        .iter()
        .find(|p| p["priority"] == args.priority.as_str())
        .cloned()
        .ok_or_else(|| ToolError::internal("a priority is missing from the SLA policies"))?;
    Ok(json!({ "policy": policy, "policies": all }))
}
