//! CRM pipeline stages: the workspace's ordered stages a deal moves through (seeded with
//! defaults when the CRM is installed), and the pipeline summary over them.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_postgres::Row;

use crate::identity::{Endpoint, Product, Role};
use crate::tools::named::NoArgs;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult};

const HERE: Endpoint = Endpoint::Product(Product::Crm);

/// Most stages a pipeline has.
const MAX_STAGES: usize = 30;

/// The pipeline tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "list_pipeline_stages",
            "List the deal pipeline's stages in order: name, win probability (percent), kind (open, won or \
             lost) and how many deals are in each.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_pipeline_stages,
        ),
        ToolDef::new(
            "set_pipeline_stages",
            "Replace the pipeline's stages with this ordered list (1 to 30; names are lowercase letters, digits \
             and underscores; at least one open stage). Stages not in the list are removed, which is refused \
             while deals are in them: move those deals first (move_deal_stage). To rename a stage, add the new \
             name, move its deals, then remove the old one. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Destructive,
            set_pipeline_stages,
        ),
        ToolDef::new(
            "pipeline_summary",
            "Summarise the pipeline per stage, in order: the number of deals, the sum of their amounts per \
             currency, and that sum weighted by the stage's win probability.",
            HERE,
            Role::Reader,
            Effect::Read,
            pipeline_summary,
        ),
    ]
}

/// A stage's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// Deals still being worked.
    Open,
    /// Deals closed won.
    Won,
    /// Deals closed lost.
    Lost,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Won => "won",
            Kind::Lost => "lost",
        }
    }
}

/// Checks a stage name's shape (the same rule as the table's CHECK, answered at `path`).
fn check_name(path: &str, name: &str) -> Result<(), ToolError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 40
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ToolError::invalid_input(
            path,
            "a stage name is a lowercase letter, then up to 39 lowercase letters, digits or underscores",
        ))
    }
}

/// Checks that `stage` is one of the workspace's stages, else `invalid_input` at `path` naming
/// them. The stage row is locked against removal until the call commits.
pub(super) async fn check_stage(cx: &Cx<'_>, path: &str, stage: &str) -> Result<(), ToolError> {
    check_name(path, stage)?;
    let found = cx
        .scope
        .query_opt(
            "SELECT 1 FROM crm.pipeline_stages WHERE workspace_id = $2 AND name = $1 FOR KEY SHARE",
            &[&stage, &cx.scope.workspace()],
        )
        .await?;
    if found.is_some() {
        return Ok(());
    }
    let names: Vec<String> = cx
        .scope
        .query(
            "SELECT name FROM crm.pipeline_stages WHERE workspace_id = $1 ORDER BY sort_order, name",
            &[&cx.scope.workspace()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Err(ToolError::invalid_input(
        path,
        format!(
            "no stage {stage:?} in this pipeline; its stages are {}",
            names.join(", ")
        ),
    ))
}

/// The stage a new deal starts in: the first open one.
pub(super) async fn first_open_stage(cx: &Cx<'_>) -> Result<String, ToolError> {
    cx.scope
        .query_opt(
            "SELECT name FROM crm.pipeline_stages WHERE workspace_id = $1 AND kind = 'open'
             ORDER BY sort_order, name LIMIT 1 FOR KEY SHARE",
            &[&cx.scope.workspace()],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            ToolError::conflict(
                "the pipeline has no open stage; an admin can add one with set_pipeline_stages",
            )
        })
}

fn stage_json(row: &Row) -> Value {
    json!({
        "name": row.get::<_, &str>("name"),
        "probability": row.get::<_, i32>("probability"),
        "kind": row.get::<_, &str>("kind"),
        "deals": row.get::<_, i64>("deals"),
    })
}

const LIST_SQL: &str = "SELECT s.name, s.probability, s.kind,
            (SELECT count(*) FROM crm.deals d WHERE d.workspace_id = s.workspace_id AND d.stage = s.name) AS deals
     FROM crm.pipeline_stages s
     WHERE s.workspace_id = $1
     ORDER BY s.sort_order, s.name";

async fn list_pipeline_stages(cx: &Cx<'_>, _args: NoArgs) -> ToolResult {
    let rows = cx.scope.query(LIST_SQL, &[&cx.scope.workspace()]).await?;
    Ok(json!({ "stages": rows.iter().map(stage_json).collect::<Vec<_>>() }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StageArg {
    /// The stage's name, e.g. "demo_scheduled".
    name: String,
    /// The chance (percent, 0 to 100) that a deal in this stage is won; weights pipeline_summary.
    probability: i64,
    /// open (still being worked), won or lost.
    kind: Kind,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SetStages {
    /// The whole pipeline, first stage first.
    stages: Vec<StageArg>,
}

async fn set_pipeline_stages(cx: &Cx<'_>, args: SetStages) -> ToolResult {
    if !(1..=MAX_STAGES).contains(&args.stages.len()) {
        return Err(ToolError::invalid_input(
            "stages",
            format!("a pipeline has 1 to {MAX_STAGES} stages"),
        ));
    }
    let mut seen = HashSet::new();
    let (mut names, mut orders, mut probabilities, mut kinds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, stage) in args.stages.iter().enumerate() {
        let at = |field: &str| format!("stages[{i}].{field}");
        check_name(&at("name"), &stage.name)?;
        if !seen.insert(stage.name.as_str()) {
            return Err(ToolError::invalid_input(
                &at("name"),
                format!("stage {:?} is listed twice", stage.name),
            ));
        }
        let probability = i32::try_from(stage.probability)
            .ok()
            .filter(|p| (0..=100).contains(p))
            .ok_or_else(|| {
                ToolError::invalid_input(&at("probability"), "probability is 0 to 100 (percent)")
            })?;
        names.push(stage.name.clone());
        // At most MAX_STAGES, so the index always fits (and the table's 0..=99 range).
        orders.push(i32::try_from(i).unwrap_or(i32::MAX));
        probabilities.push(probability);
        kinds.push(stage.kind.as_str());
    }
    if !args.stages.iter().any(|s| s.kind == Kind::Open) {
        return Err(ToolError::invalid_input(
            "stages",
            "at least one stage must be open (new deals start in the first open one)",
        ));
    }
    // Lock every stage first: a deal being moved into one that is about to go waits for this
    // call (its foreign key takes a share lock), and this call sees every committed deal.
    let existing = cx
        .scope
        .query(
            "SELECT name FROM crm.pipeline_stages WHERE workspace_id = $1 ORDER BY name FOR UPDATE",
            &[&cx.scope.workspace()],
        )
        .await?;
    let removed: Vec<String> = existing
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|n| !names.contains(n))
        .collect();
    if !removed.is_empty() {
        let in_use = cx
            .scope
            .query(
                "SELECT stage, count(*) AS deals FROM crm.deals
                 WHERE workspace_id = $2 AND stage = ANY($1)
                 GROUP BY stage ORDER BY stage",
                &[&removed, &cx.scope.workspace()],
            )
            .await?;
        if let Some(first) = in_use.first() {
            let stage: &str = first.get("stage");
            let deals: i64 = first.get("deals");
            return Err(ToolError::conflict(format!(
                "stage {stage:?} is still used by {deals} deal(s); move them to another stage \
                 (move_deal_stage) before removing it"
            ))
            .with("stage", stage)
            .with("deals", deals)
            .with(
                "in_use",
                in_use
                    .iter()
                    .map(|r| {
                        json!({ "stage": r.get::<_, &str>("stage"), "deals": r.get::<_, i64>("deals") })
                    })
                    .collect::<Vec<_>>(),
            ));
        }
        cx.scope
            .execute(
                "DELETE FROM crm.pipeline_stages WHERE workspace_id = $2 AND name = ANY($1)",
                &[&removed, &cx.scope.workspace()],
            )
            .await?;
    }
    // Existing stages are updated in place (only when something changed, so the change feed
    // carries real changes), new ones inserted.
    cx.scope
        .execute(
            "INSERT INTO crm.pipeline_stages (name, sort_order, probability, kind)
             SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[], $4::text[])
             ON CONFLICT (workspace_id, name) DO UPDATE
                SET sort_order = EXCLUDED.sort_order, probability = EXCLUDED.probability, kind = EXCLUDED.kind
                WHERE (pipeline_stages.sort_order, pipeline_stages.probability, pipeline_stages.kind)
                      IS DISTINCT FROM (EXCLUDED.sort_order, EXCLUDED.probability, EXCLUDED.kind)",
            &[&names, &orders, &probabilities, &kinds],
        )
        .await?;
    let rows = cx.scope.query(LIST_SQL, &[&cx.scope.workspace()]).await?;
    Ok(json!({
        "stages": rows.iter().map(stage_json).collect::<Vec<_>>(),
        "removed": removed,
    }))
}

async fn pipeline_summary(cx: &Cx<'_>, _args: NoArgs) -> ToolResult {
    let stages = cx
        .scope
        .query(
            "SELECT name, probability, kind FROM crm.pipeline_stages
             WHERE workspace_id = $1 ORDER BY sort_order, name",
            &[&cx.scope.workspace()],
        )
        .await?;
    // Per stage and currency; numeric arithmetic in PostgreSQL, so nothing passes through a float.
    let totals = cx
        .scope
        .query(
            "SELECT d.stage, d.currency, count(*) AS deals,
                    sum(d.amount)::text AS amount,
                    round(sum(d.amount) * s.probability / 100, 2)::text AS weighted
             FROM crm.deals d JOIN crm.pipeline_stages s
               ON s.workspace_id = d.workspace_id AND s.name = d.stage
             WHERE d.workspace_id = $1
             GROUP BY d.stage, d.currency, s.probability
             ORDER BY d.stage, d.currency",
            &[&cx.scope.workspace()],
        )
        .await?;
    let summary: Vec<Value> = stages
        .iter()
        .map(|stage| {
            let name: &str = stage.get("name");
            let mut count = 0_i64;
            let (mut amount, mut weighted) = (Map::new(), Map::new());
            for t in totals.iter().filter(|t| t.get::<_, &str>("stage") == name) {
                count += t.get::<_, i64>("deals");
                let currency: &str = t.get("currency");
                // Deals without an amount are counted but add to no currency.
                if let Some(sum) = t.get::<_, Option<&str>>("amount") {
                    amount.insert(currency.to_owned(), json!(sum));
                }
                if let Some(w) = t.get::<_, Option<&str>>("weighted") {
                    weighted.insert(currency.to_owned(), json!(w));
                }
            }
            json!({
                "stage": name,
                "kind": stage.get::<_, &str>("kind"),
                "probability": stage.get::<_, i32>("probability"),
                "count": count,
                "amount": amount,
                "weighted_amount": weighted,
            })
        })
        .collect();
    Ok(json!({ "stages": summary }))
}
