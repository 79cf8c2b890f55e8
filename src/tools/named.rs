//! The repetitive parts of every product's named tools, written once: page sizes and keyset
//! cursors, search patterns, id arguments, text, email and tag checks, and "absent vs null"
//! in updates. A new entity's tools are mostly declarations over these.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Cx, ToolError, cursor};
use crate::identity::Product;

/// An entity of a product that carries custom fields: its product, its name in tools (as in
/// `add_custom_field {entity}`), its table in the product's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entity {
    pub product: Product,
    pub name: &'static str,
    pub table: &'static str,
}

/// Largest page a list or search returns.
pub const MAX_LIMIT: i64 = 200;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: i64 = 50;
/// Longest search text.
pub const MAX_QUERY: usize = 200;

/// No arguments at all.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// One record by id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArg {
    /// The record's id.
    pub id: Uuid,
}

/// The page size asked for, checked (default 50, at most 200).
pub fn limit(asked: Option<i64>) -> Result<i64, ToolError> {
    let limit = asked.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ToolError::invalid_input(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ))
    }
}

/// The (text, id) keyset position a search starts after: the cursor's, or for a first page
/// ('', the nil uuid), which is before every row, since the keyset's text is never NULL (the
/// column is NOT NULL, and '' sorts first in every collation) and a row's id, a generated
/// uuid, is never nil. A position is always given so that the statements test it as
/// `(name, id) > ($n, $m)`, which an index scan starts at in every plan, generic ones
/// included, rather than `$n IS NULL OR …`, which a generic plan can only filter row by row
/// from the workspace's first (see [`search_rows`]).
pub fn after_or_start(cursor: Option<&str>) -> Result<(String, Uuid), ToolError> {
    Ok(after::<(String, Uuid)>(cursor)?.unwrap_or_default())
}

/// The keyset position a cursor carries, if one was passed.
pub fn after<K: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<K>, ToolError> {
    cursor.map(|c| cursor::decode::<K>("cursor", c)).transpose()
}

/// The rows of a named search page, found in at most two statements taking the same
/// parameters: `head`, which filters only the first rows of the workspace in the page's order
/// after the cursor (128: a `LIMIT` in each head statement), then, if that did not fill the page (`wanted` rows),
/// `whole`, the search over every row.
///
/// Why: PostgreSQL's statistics are per table, not per workspace. A pattern common in a small
/// workspace but rare in the table (another workspace holds most rows) makes it choose a
/// trigram bitmap scan and a sort of every match over the ordered index scan that stops
/// after a page (measured: 1.7 ms instead of 0.1 ms for "Acme" among 2,000 accounts beside
/// 40,000 others). The head's plan does not depend on the pattern, so it is planned once;
/// a rare pattern costs the head's short scan more, and then gets the trigram index.
///
/// The head runs on its generic plan ([`crate::db::Scope::query_generic`]), made once per
/// connection: left to choose, PostgreSQL re-plans it on every call, because the pattern's
/// estimated selectivity (read from the column's statistics on each planning) makes a custom
/// plan look cheaper than the generic one, though both are the same scan. Measured with
/// `cargo bench --bench mcp`: PostgreSQL's CPU per `search_accounts` call was 0.27 ms
/// re-planning (profiled: `iclikesel` lowercasing the statistics' histogram for each
/// call) against 0.15 ms on one plan.
pub async fn search_rows(
    cx: &Cx<'_>,
    head: &str,
    whole: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    wanted: i64,
) -> Result<Vec<Row>, ToolError> {
    let rows = cx.scope.query_generic(head, params).await?;
    if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= wanted {
        return Ok(rows);
    }
    cx.scope.query(whole, params).await
}

/// One page of rows fetched with `LIMIT limit + 1`: the rows to show, and the cursor for the
/// next page when the extra row says there is one (`key` is the row's keyset position).
pub fn page<K: Serialize>(
    rows: &[Row],
    limit: i64,
    key: impl Fn(&Row) -> K,
) -> (&[Row], Option<String>) {
    let shown = usize::try_from(limit).unwrap_or(usize::MAX).min(rows.len());
    let page = rows.get(..shown).unwrap_or(rows);
    let next = (rows.len() > shown)
        .then(|| page.last().map(|r| cursor::encode(&key(r))))
        .flatten();
    (page, next)
}

/// A listing's output: the page's items under `key`, whether there are more, and the cursor
/// for the next page (the shape every list and search tool returns).
pub fn page_result(key: &str, items: impl Into<Value>, next_cursor: Option<String>) -> Value {
    serde_json::json!({
        key: items.into(),
        "has_more": next_cursor.is_some(),
        "next_cursor": next_cursor,
    })
}

/// A case-insensitive substring pattern for `ILIKE` from a search text (trimmed; empty means
/// no filter), with LIKE's metacharacters escaped so the text matches literally.
pub fn search_pattern(query: Option<&str>) -> Result<Option<String>, ToolError> {
    let Some(query) = query.map(str::trim).filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    if query.chars().count() > MAX_QUERY {
        return Err(ToolError::invalid_input(
            "query",
            format!("query must be at most {MAX_QUERY} characters"),
        ));
    }
    let mut escaped = String::with_capacity(query.len() + 2);
    escaped.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    Ok(Some(escaped))
}

/// A trimmed text of `min..=max` characters.
pub fn text(path: &str, value: &str, min: usize, max: usize) -> Result<String, ToolError> {
    let trimmed = value.trim();
    let n = trimmed.chars().count();
    if n < min
        || n > max
        || trimmed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ToolError::invalid_input(
            path,
            format!("{path} must be {min} to {max} characters of text"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// [`text`] for an optional value.
pub fn opt_text(path: &str, value: Option<&str>, max: usize) -> Result<Option<String>, ToolError> {
    value.map(|v| text(path, v, 1, max)).transpose()
}

/// An email address, trimmed and lowercased.
pub fn email(path: &str, value: &str) -> Result<String, ToolError> {
    let email = value.trim().to_lowercase();
    let ok = (3..=254).contains(&email.len())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(email)
    } else {
        Err(ToolError::invalid_input(
            path,
            "expected an email address like ann@example.com",
        ))
    }
}

/// A web domain like `acme.example`.
pub fn domain(path: &str, value: &str) -> Result<String, ToolError> {
    let domain = value.trim().to_lowercase();
    let ok = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'));
    if ok {
        Ok(domain)
    } else {
        Err(ToolError::invalid_input(
            path,
            "domain must look like example.com (at most 253 characters)",
        ))
    }
}

/// Tags: at most 50, each 1 to 50 characters, trimmed, duplicates dropped, order kept.
pub fn tags(path: &str, values: &[String]) -> Result<Vec<String>, ToolError> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for (i, tag) in values.iter().enumerate() {
        let tag = text(&format!("{path}[{i}]"), tag, 1, 50)?;
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    if out.len() > 50 {
        return Err(ToolError::invalid_input(path, "at most 50 tags"));
    }
    Ok(out)
}

/// For update arguments: distinguishes absent (`None`) from null (`Some(None)`). Use with
/// `#[serde(default, deserialize_with = "named::double_option")]`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `not_found` for a record of kind `what` (e.g. "account") the workspace does not have.
/// `statement` (an INSERT, UPDATE or DELETE written without RETURNING) returning `columns`
/// of the rows it wrote. The rows go through a CTE and `columns` is evaluated on them: Citus
/// refuses a RETURNING clause with a function that is not IMMUTABLE (such as `date::text`,
/// which depends on DateStyle) on a distributed table.
pub fn returning(statement: &str, columns: &str) -> String {
    format!("WITH changed AS ({statement} RETURNING *) SELECT {columns} FROM changed")
}

pub fn not_found(what: &str, id: Uuid) -> ToolError {
    ToolError::not_found(format!("no {what} {id} in this workspace"))
}

/// Deletes one record by id from `table` (a schema-qualified name written in code, never from
/// a client); `not_found` when the workspace has no such record.
pub async fn delete_by_id(
    cx: &Cx<'_>,
    table: &'static str,
    what: &str,
    id: Uuid,
) -> Result<Value, ToolError> {
    let deleted = cx
        .scope
        .execute(
            &format!("DELETE FROM {table} WHERE workspace_id = $2 AND id = $1"),
            &[&id, &cx.scope.workspace()],
        )
        .await?;
    if deleted == 0 {
        return Err(not_found(what, id));
    }
    Ok(serde_json::json!({ "id": id, "deleted": true }))
}

/// The conflict for an email another record of kind `what` already has (emails are unique per
/// workspace whatever their case), naming that record so the caller can use it.
pub fn email_taken(what: &str, existing: Uuid) -> ToolError {
    ToolError::conflict(format!(
        "{what} {existing} already has this email (emails are unique in a workspace, whatever their case)"
    ))
    .with("path", "email")
    .with("existing_id", existing.to_string())
}

/// The record of `table` (a schema-qualified name written in code, never from a client) other
/// than `except` whose email is `email` (already lowercased), if any.
pub async fn email_holder(
    cx: &Cx<'_>,
    table: &'static str,
    email: &str,
    except: Option<Uuid>,
) -> Result<Option<Uuid>, ToolError> {
    Ok(cx
        .scope
        .query_opt(
            &format!(
                "SELECT id FROM {table}
                 WHERE workspace_id = $3 AND lower(email) = $1 AND ($2::uuid IS NULL OR id <> $2)
                 LIMIT 1"
            ),
            &[&email, &except, &cx.scope.workspace()],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Checks that `user_id` is a member of the caller's workspace (owners, assignees).
pub async fn member(cx: &Cx<'_>, path: &str, user_id: Uuid) -> Result<(), ToolError> {
    let found = cx
        .scope
        .query_opt(
            "SELECT 1 FROM hdls.members WHERE workspace_id = $2 AND user_id = $1",
            &[&user_id, &cx.scope.workspace()],
        )
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(ToolError::invalid_input(
            path,
            format!("{user_id} is not a member of this workspace (see list_members)"),
        )),
    }
}

/// Checks the new value of an update's clearable field: absent stays absent, null stays null
/// (clear it), a value goes through `check`.
pub fn change<T, U>(
    field: &Option<Option<T>>,
    check: impl FnOnce(&T) -> Result<U, ToolError>,
) -> Result<Option<Option<U>>, ToolError> {
    match field {
        Some(Some(value)) => Ok(Some(Some(check(value)?))),
        Some(None) => Ok(Some(None)),
        None => Ok(None),
    }
}

/// Splits custom values of an update into the ones to set (a JSON object) and the names to
/// clear (given as null).
pub fn custom_changes(values: serde_json::Map<String, Value>) -> (Value, Vec<String>) {
    let (clear, set): (Vec<_>, Vec<_>) = values.into_iter().partition(|(_, v)| v.is_null());
    (
        Value::Object(set.into_iter().collect()),
        clear.into_iter().map(|(k, _)| k).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_check_and_normalise() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert!(limit(Some(0)).is_err() && limit(Some(201)).is_err());
        assert_eq!(
            search_pattern(Some(" 50%_x ")).unwrap().unwrap(),
            "%50\\%\\_x%"
        );
        assert_eq!(search_pattern(Some("  ")).unwrap(), None);
        assert_eq!(email("e", " Ann@Example.COM ").unwrap(), "ann@example.com");
        assert!(email("e", "ann@localhost").is_err());
        assert_eq!(
            tags("t", &["a".into(), " a ".into(), "b".into()]).unwrap(),
            ["a", "b"]
        );
        assert!(text("n", "", 1, 5).is_err() && text("n", "abcdef", 1, 5).is_err());
    }
}
