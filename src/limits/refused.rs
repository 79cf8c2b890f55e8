//! Workspaces this process has just seen refused for being over a limit, so that a caller who
//! keeps calling past the limit costs no database work until the window ends.
//!
//! Every refusal the database gives costs an admission round trip; this saves it for the
//! calls that follow a refusal.
//! Only a refusal the database gave is remembered, and only until the refused window ends
//! (a minute at most; a month's refusal is re-asked every minute), so this can refuse a call
//! the database would have admitted only if the operator raised the plan in the meantime:
//! a plan change takes effect within a minute. Never the reverse: admissions always go to
//! the database.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::error::{ErrorCode, ToolError};

/// The longest a refusal is remembered.
const AT_MOST: Duration = Duration::minutes(1);
/// Workspaces remembered at most; past it, ended refusals are swept, then all are forgotten.
const CAPACITY: usize = 10_000;

struct Refusal {
    until: OffsetDateTime,
    window: Value,
    limit: Value,
    message: String,
}

#[derive(Default)]
pub struct RecentRefusals {
    workspaces: Mutex<HashMap<Uuid, Refusal>>,
}

impl RecentRefusals {
    /// The refusal to answer with now, if the workspace was refused and its window has not
    /// ended, with `retry_after_s` counted down.
    pub fn check(&self, workspace: Uuid, now: OffsetDateTime) -> Option<ToolError> {
        let mut workspaces = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        let refusal = workspaces.get(&workspace)?;
        if refusal.until <= now {
            workspaces.remove(&workspace);
            return None;
        }
        let retry_after_s = (refusal.until - now).whole_seconds().max(1);
        Some(
            ToolError::new(ErrorCode::RateLimited, refusal.message.clone())
                .with("limit", refusal.limit.clone())
                .with("window", refusal.window.clone())
                .with("retry_after_s", serde_json::json!(retry_after_s)),
        )
    }

    /// Remembers a `rate_limited` refusal the database gave at `now`.
    pub fn record(&self, workspace: Uuid, refusal: &ToolError, now: OffsetDateTime) {
        if refusal.code != ErrorCode::RateLimited {
            return;
        }
        let Some(retry_after_s) = refusal.details.get("retry_after_s").and_then(Value::as_i64)
        else {
            return;
        };
        let until = now + Duration::seconds(retry_after_s).min(AT_MOST);
        let mut workspaces = self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        if workspaces.len() >= CAPACITY {
            workspaces.retain(|_, r| r.until > now);
            if workspaces.len() >= CAPACITY {
                workspaces.clear();
            }
        }
        workspaces.insert(
            workspace,
            Refusal {
                until,
                window: refusal
                    .details
                    .get("window")
                    .cloned()
                    .unwrap_or(Value::Null),
                limit: refusal.details.get("limit").cloned().unwrap_or(Value::Null),
                message: refusal.message.clone(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_refusal_is_remembered_until_its_window_ends_and_a_minute_at_most() {
        let memo = RecentRefusals::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let ws = Uuid::from_u128(1);
        let minute = ToolError::new(ErrorCode::RateLimited, "limited")
            .with("limit", json!(5))
            .with("window", json!("minute"))
            .with("retry_after_s", json!(17));
        memo.record(ws, &minute, now);
        let again = memo
            .check(ws, now + Duration::seconds(7))
            .expect("remembered");
        assert_eq!(again.details["retry_after_s"], json!(10));
        assert_eq!(again.details["window"], json!("minute"));
        assert!(memo.check(ws, now + Duration::seconds(17)).is_none());
        assert!(memo.check(Uuid::from_u128(2), now).is_none());

        let month = ToolError::new(ErrorCode::RateLimited, "budget")
            .with("window", json!("month"))
            .with("retry_after_s", json!(86_400));
        memo.record(ws, &month, now);
        assert!(memo.check(ws, now + Duration::seconds(59)).is_some());
        assert!(
            memo.check(ws, now + Duration::seconds(60)).is_none(),
            "asked again"
        );

        memo.record(ws, &ToolError::forbidden("no"), now);
        assert!(memo.check(ws, now).is_none(), "only rate_limited refusals");
    }
}
