//! (being written)

use crate::tools::ToolDef;

/// This module's tools.
pub fn tools() -> Vec<ToolDef> {
    Vec::new()
}
