//! `search_docs`: the documentation this server carries, searched in process.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use crate::docs;
use crate::identity::Product;
use crate::tools::{Cx, ToolError, ToolResult};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// What to look for, in words (e.g. "verify my security", "rate limit", "customer portal");
    /// prefix a word with - to exclude it.
    query: String,
    /// Only pages about this product.
    #[serde(default)]
    product: Option<Product>,
    /// How many sections, 1 to 20 (default 5).
    #[serde(default)]
    limit: Option<i64>,
}

pub async fn search_docs(_cx: &Cx<'_>, args: SearchArgs) -> ToolResult {
    let query = args.query.trim();
    if query.is_empty() || query.chars().count() > 200 {
        return Err(ToolError::invalid_input(
            "query",
            "query must be 1 to 200 characters",
        ));
    }
    let limit = args.limit.unwrap_or(5);
    if !(1..=20).contains(&limit) {
        return Err(ToolError::invalid_input(
            "limit",
            "limit must be between 1 and 20",
        ));
    }
    let hits = docs::search(query, args.product, limit as usize);
    let note = hits.is_empty().then_some(
        "No section matched. Try other words, or read a page whole as a resource (hdls://docs/<page>).",
    );
    // With nothing found, the page list helps the assistant pick one to read.
    let pages = hits.is_empty().then(|| {
        docs::PAGES
            .iter()
            .map(|p| json!({ "page": p.slug, "title": p.title(), "uri": p.uri(), "status": p.status.as_str() }))
            .collect::<Vec<_>>()
    });
    Ok(json!({
        "query": query,
        "pages": pages,
        "product": args.product,
        "results": hits,
        "note": note,
    }))
}
