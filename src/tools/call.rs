//! The call path every tool goes through: permit, admit, run in a Scope, audit.

use serde_json::Value;

use super::{Cx, ErrorCode, ToolDef, ToolError};
use crate::app::App;
use crate::audit;
use crate::db::Scope;
use crate::identity::Principal;

/// Runs one tool for one principal: the role/persona/product rule, then rate limit and
/// budget, then the handler in its Scope (commit on success, roll back otherwise).
/// Refused attempts at privileged tools are written to the audit log.
pub async fn call(
    app: &App,
    tool: &ToolDef,
    principal: &Principal,
    args: Value,
) -> Result<Value, ToolError> {
    if let Err(refusal) = tool.permits(principal) {
        audit_refusal(app, tool, principal, &args, &refusal).await;
        return Err(refusal);
    }
    let scope = if app.enforce_limits {
        Scope::begin_admitted(&app.pools.runtime, principal, app.clock.now()).await?
    } else {
        Scope::begin(&app.pools.runtime, principal).await?
    };
    let (outcome, kept_args) = {
        let cx = Cx {
            principal,
            scope: &scope,
            app,
            action: tool.audit_action,
            endpoint: tool.endpoint,
        };
        // Arguments are kept only where a refusal would be audited; elsewhere they move.
        let kept = tool.audit_action.map(|_| args.clone());
        let outcome = tool.invoke(&cx, args).await;
        (outcome, kept)
    };
    match outcome {
        Ok(value) => {
            scope.commit().await?;
            Ok(value)
        }
        Err(error) => {
            scope.rollback().await;
            if let (ErrorCode::Forbidden, Some(args)) = (error.code, &kept_args) {
                audit_refusal(app, tool, principal, args, &error).await;
            }
            Err(error)
        }
    }
}

async fn audit_refusal(
    app: &App,
    tool: &ToolDef,
    principal: &Principal,
    args: &Value,
    refusal: &ToolError,
) {
    let Some(action) = tool.audit_action else {
        return;
    };
    // The arguments of privileged tools name what was attempted; none carries a secret.
    let target = args.to_string();
    audit::record_refusal(
        &app.pools.runtime,
        principal,
        action,
        Some(&target),
        &refusal.message,
        app.clock.now(),
    )
    .await;
}
