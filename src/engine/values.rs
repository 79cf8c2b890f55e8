//! Client JSON values to the text form of a column's real type, validated first so a bad
//! value is `invalid_input` at its exact path rather than a database error.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::catalog::{Column, Kind};
use crate::tools::ToolError;

/// Longest text value accepted in a filter or a write.
const MAX_TEXT: usize = 100_000;
/// Most elements accepted in an array value (`in`, array columns).
pub const MAX_ARRAY: usize = 1000;

/// Converts a JSON value for `column` to its text form (`None` is SQL NULL).
pub fn to_text(column: &Column, value: &Value, path: &str) -> Result<Option<String>, ToolError> {
    if value.is_null() {
        return Ok(None);
    }
    scalar(&column.kind, &column.name, value, path).map(Some)
}

/// Converts a JSON array for an array-typed `column` (or for `in`) to text elements.
pub fn to_text_array(
    kind: &Kind,
    name: &str,
    value: &Value,
    path: &str,
) -> Result<Vec<Option<String>>, ToolError> {
    let items = value
        .as_array()
        .ok_or_else(|| ToolError::invalid_input(path, format!("{name} needs a JSON array here")))?;
    if items.len() > MAX_ARRAY {
        return Err(ToolError::invalid_input(
            path,
            format!("at most {MAX_ARRAY} elements"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if item.is_null() {
                Ok(None)
            } else {
                scalar(kind, name, item, &format!("{path}[{i}]")).map(Some)
            }
        })
        .collect()
}

fn scalar(kind: &Kind, name: &str, value: &Value, path: &str) -> Result<String, ToolError> {
    let wrong =
        |expected: &str| ToolError::invalid_input(path, format!("{name} expects {expected}"));
    let text = || -> Result<&str, ToolError> {
        let s = value.as_str().ok_or_else(|| wrong("a string"))?;
        if s.len() > MAX_TEXT {
            return Err(ToolError::invalid_input(
                path,
                format!("at most {MAX_TEXT} bytes"),
            ));
        }
        if s.contains('\0') {
            return Err(ToolError::invalid_input(
                path,
                "text cannot contain NUL characters",
            ));
        }
        Ok(s)
    };
    match kind {
        Kind::Bool => value
            .as_bool()
            .map(|b| b.to_string())
            .ok_or_else(|| wrong("true or false")),
        Kind::Int { min, max } => {
            let n = match value {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or_else(|| wrong("an integer"))?;
            if n < *min || n > *max {
                return Err(ToolError::invalid_input(
                    path,
                    format!("{name} must be between {min} and {max}"),
                ));
            }
            Ok(n.to_string())
        }
        Kind::Float => match value {
            Value::Number(n) => n
                .as_f64()
                .map(|f| f.to_string())
                .ok_or_else(|| wrong("a number")),
            Value::String(s) if s.trim().parse::<f64>().is_ok() => Ok(s.trim().to_owned()),
            _ => Err(wrong("a number")),
        },
        Kind::Numeric => match value {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) if is_decimal(s.trim()) => Ok(s.trim().to_owned()),
            _ => Err(wrong("a decimal number")),
        },
        Kind::Text | Kind::Other => text().map(str::to_owned),
        Kind::Uuid => {
            let s = text()?;
            uuid::Uuid::parse_str(s)
                .map(|u| u.to_string())
                .map_err(|_| wrong("a UUID"))
        }
        Kind::Json | Kind::Jsonb => {
            let encoded = value.to_string();
            if encoded.len() > MAX_TEXT {
                return Err(ToolError::invalid_input(
                    path,
                    format!("at most {MAX_TEXT} bytes of JSON"),
                ));
            }
            if encoded.contains("\\u0000") {
                return Err(ToolError::invalid_input(
                    path,
                    "JSON text cannot contain NUL characters",
                ));
            }
            Ok(encoded)
        }
        Kind::Timestamptz => {
            let s = text()?;
            time::OffsetDateTime::parse(s, &Rfc3339)
                .map(|_| s.to_owned())
                .map_err(|_| wrong("an RFC 3339 timestamp like 2026-01-31T09:30:00Z"))
        }
        Kind::Timestamp => {
            let s = text()?;
            // `get`, not slicing: byte 19 may fall inside a multi-byte character.
            let ok = s.len() <= 32
                && s.get(..19).is_some_and(|head| {
                    time::PrimitiveDateTime::parse(
                        &head.replace('T', " "),
                        &time::macros::format_description!(
                            "[year]-[month]-[day] [hour]:[minute]:[second]"
                        ),
                    )
                    .is_ok()
                });
            if ok {
                Ok(s.to_owned())
            } else {
                Err(wrong("a timestamp like 2026-01-31T09:30:00"))
            }
        }
        Kind::Date => {
            let s = text()?;
            time::Date::parse(
                s,
                &time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map(|_| s.to_owned())
            .map_err(|_| wrong("a date like 2026-01-31"))
        }
        Kind::Enum(labels) => {
            let s = text()?;
            if labels.iter().any(|l| l == s) {
                Ok(s.to_owned())
            } else {
                Err(ToolError::invalid_input(
                    path,
                    format!("{name} must be one of: {}", labels.join(", ")),
                ))
            }
        }
        Kind::TsVector => Err(ToolError::invalid_input(
            path,
            format!("{name} is a search vector; use the search operator"),
        )),
        Kind::Array(_) => Err(wrong("a scalar here, not an array")),
    }
}

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        !(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac) && s.len() <= 200;
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 4 && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_without_zone_never_panic_on_multibyte_text() {
        let kind = Kind::Timestamp;
        for bad in [
            "2026-01-01T00:00:0é",
            "é".repeat(10).as_str(),
            "2026-01-01 00:00",
        ] {
            assert!(
                scalar(&kind, "at", &Value::String(bad.to_owned()), "p").is_err(),
                "{bad}"
            );
        }
        assert!(
            scalar(
                &kind,
                "at",
                &Value::String("2026-01-31T09:30:00.5".into()),
                "p"
            )
            .is_ok()
        );
    }

    #[test]
    fn decimals() {
        for ok in ["1", "-1.5", "0.25", "1e10", "3.14E-2", ".5", "5."] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", "1.2.3", "1e", "abc", "1; DROP", "NaN"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}
