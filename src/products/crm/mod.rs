//! The CRM (`/api/mcp/crm`): accounts, the people at them (contacts), deals in a pipeline of
//! stages, and notes on any of them. Tables in the `crm` schema (migrations V1, V8).

mod accounts;
mod contacts;
mod deals;
mod notes;
mod pipeline;

use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::tools::{Cx, ToolDef, ToolError};

/// The CRM's named tools (the power tools and custom-field tools are added by the registry).
pub fn tools() -> Vec<ToolDef> {
    let mut tools = accounts::tools();
    tools.extend(contacts::tools());
    tools.extend(deals::tools());
    tools.extend(pipeline::tools());
    tools.extend(notes::tools());
    tools
}

/// The statements `search_accounts` and `create_account` run (the benchmark issues the same
/// SQL directly).
pub use accounts::{INSERT_SQL, SEARCH_HEAD_SQL, SEARCH_SQL};

/// A kind of CRM record that notes hang off and that others link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Record {
    Account,
    Contact,
    Deal,
}

impl Record {
    /// The name in tools and in `crm.notes.record_type`.
    fn as_str(self) -> &'static str {
        match self {
            Record::Account => "account",
            Record::Contact => "contact",
            Record::Deal => "deal",
        }
    }

    /// Whether the record is in this workspace (RLS hides every other one). The row is locked
    /// against deletion until the call commits, so a note or link never points at a record
    /// deleted meanwhile.
    async fn exists(self, cx: &Cx<'_>, id: Uuid) -> Result<bool, ToolError> {
        let sql = match self {
            Record::Account => {
                "SELECT 1 FROM crm.accounts WHERE workspace_id = $2 AND id = $1 FOR KEY SHARE"
            }
            Record::Contact => {
                "SELECT 1 FROM crm.contacts WHERE workspace_id = $2 AND id = $1 FOR KEY SHARE"
            }
            Record::Deal => {
                "SELECT 1 FROM crm.deals WHERE workspace_id = $2 AND id = $1 FOR KEY SHARE"
            }
        };
        Ok(cx
            .scope
            .query_opt(sql, &[&id, &cx.scope.workspace()])
            .await?
            .is_some())
    }

    /// For a link argument (`account_id`, `contact_id`): the record must be in this workspace,
    /// else `invalid_input` at `path` (a foreign-key failure would only say `conflict`).
    async fn check_link(self, cx: &Cx<'_>, path: &str, id: Option<Uuid>) -> Result<(), ToolError> {
        match id {
            Some(id) if !self.exists(cx, id).await? => Err(ToolError::invalid_input(
                path,
                format!("no {} {id} in this workspace", self.as_str()),
            )),
            _ => Ok(()),
        }
    }
}
