//! Argument parsing shared by every tool: serde errors become `invalid_input` with the JSON path.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ToolError;

/// Deserialises tool arguments, naming the offending path on failure (e.g. `filter.and[1].column`).
pub fn parse<A: DeserializeOwned>(raw: Value) -> Result<A, ToolError> {
    // A call with no arguments is the same as `{}`.
    let raw = if raw.is_null() {
        Value::Object(Default::default())
    } else {
        raw
    };
    serde_path_to_error::deserialize::<_, A>(raw).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        // serde's message names the expected shape, never a value we would rather not echo.
        let inner = e.into_inner().to_string();
        ToolError::invalid_input(
            &path,
            format!(
                "invalid arguments{}: {inner}",
                if path.is_empty() {
                    String::new()
                } else {
                    format!(" at {path}")
                }
            ),
        )
    })
}

/// Parses a duration like `30d`, `12h`, `45m` (used for key expiry).
pub fn parse_duration(path: &str, text: &str) -> Result<time::Duration, ToolError> {
    let bad = || ToolError::invalid_input(path, "expected a duration like 30d, 12h or 45m");
    let text = text.trim();
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    if n <= 0 || n > 3650 * 24 * 60 {
        return Err(ToolError::invalid_input(
            path,
            "duration must be positive and at most 10 years",
        ));
    }
    let d = match unit {
        "d" => time::Duration::days(n),
        "h" => time::Duration::hours(n),
        "m" => time::Duration::minutes(n),
        _ => return Err(bad()),
    };
    if d > time::Duration::days(3650) {
        return Err(ToolError::invalid_input(
            path,
            "duration must be at most 10 years",
        ));
    }
    Ok(d)
}
