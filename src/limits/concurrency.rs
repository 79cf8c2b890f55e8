//! A per-workspace bound on concurrent tool calls on this node, so one busy (or hostile)
//! workspace cannot hold every connection of the runtime pool while others wait.
//!
//! Per node on purpose: what it protects is this process's pool. The per-minute window and
//! the monthly budget (PostgreSQL, see the parent module) are the cross-node limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::error::{ErrorCode, ToolError};

/// How long a call waits for a slot by default before it is refused.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(2);

/// The bound, and the slots each workspace holds right now.
pub struct WorkspaceGate {
    per_workspace: usize,
    wait: Duration,
    slots: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

/// A call's slot; released when dropped.
pub struct Slot<'a> {
    gate: &'a WorkspaceGate,
    workspace: Uuid,
    permit: Option<OwnedSemaphorePermit>,
}

impl WorkspaceGate {
    /// At most `per_workspace` concurrent calls per workspace (at least 1), each waiting at
    /// most `wait` for a slot.
    pub fn new(per_workspace: usize, wait: Duration) -> WorkspaceGate {
        WorkspaceGate {
            per_workspace: per_workspace.max(1),
            wait,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The configured bound.
    pub fn per_workspace(&self) -> usize {
        self.per_workspace
    }

    /// Takes a slot for one call, or `rate_limited` (window `concurrency`) after the wait.
    pub async fn enter(&self, workspace: Uuid) -> Result<Slot<'_>, ToolError> {
        let semaphore = {
            let mut slots = self.slots.lock().map_err(ToolError::internal)?;
            slots
                .entry(workspace)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_workspace)))
                .clone()
        };
        let permit = match tokio::time::timeout(self.wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => return Err(ToolError::internal(closed)),
            Err(_) => {
                let limit = self.per_workspace;
                return Err(ToolError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "this workspace already has {limit} tool calls running on this server; retry in a moment"
                    ),
                )
                .with("limit", json!(limit))
                .with("window", json!("concurrency"))
                .with("retry_after_s", json!(1)));
            }
        };
        Ok(Slot {
            gate: self,
            workspace,
            permit: Some(permit),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        // Forget idle workspaces so the map holds only the ones with calls in flight.
        if let Ok(mut slots) = self.gate.slots.lock()
            && let Some(semaphore) = slots.get(&self.workspace)
            && Arc::strong_count(semaphore) == 1
            && semaphore.available_permits() == self.gate.per_workspace
        {
            slots.remove(&self.workspace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_workspace_waits_then_is_refused_while_others_go_on() {
        let gate = WorkspaceGate::new(1, Duration::from_millis(20));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let held = gate.enter(a).await.unwrap();
        let refused = gate.enter(a).await.err().unwrap();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert_eq!(refused.details["window"], "concurrency");
        assert!(gate.enter(b).await.is_ok());
        drop(held);
        assert!(gate.enter(a).await.is_ok());
        assert!(gate.slots.lock().unwrap().is_empty());
    }
}
