//! Client JSON values to the text form of a column's real type, validated first so a bad
//! value is `invalid_input` at its exact path rather than a database error.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;

use super::catalog::{Column, Kind, Limits};
use crate::error::ToolError;

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
        Kind::Float { single } => float(*single, value)
            .map_err(|problem| ToolError::invalid_input(path, format!("{name} {problem}"))),
        Kind::Numeric => {
            let s = match value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_owned(),
                _ => return Err(wrong("a decimal number")),
            };
            let decimal = Decimal::parse(&s).ok_or_else(|| wrong("a decimal number"))?;
            if decimal.exponent.abs() > MAX_NUMERIC_EXPONENT {
                return Err(ToolError::invalid_input(
                    path,
                    format!(
                        "{name}: exponents beyond ±{MAX_NUMERIC_EXPONENT} are out of range for numeric"
                    ),
                ));
            }
            Ok(s)
        }
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
            let example = "an RFC 3339 timestamp like 2026-01-31T09:30:00Z";
            let at = time::OffsetDateTime::parse(s, &Rfc3339).map_err(|_| wrong(example))?;
            let offset = at.offset().whole_seconds().unsigned_abs();
            if offset > MAX_UTC_OFFSET_SECONDS {
                return Err(ToolError::invalid_input(
                    path,
                    format!("{name}: a UTC offset must be within ±15:59"),
                ));
            }
            if at.year() < MIN_YEAR {
                return Err(ToolError::invalid_input(
                    path,
                    format!("{name}: the year must be 0001 to 9999"),
                ));
            }
            // The canonical form, so PostgreSQL reads exactly what was checked here.
            at.format(&Rfc3339).map_err(|_| wrong(example))
        }
        Kind::Timestamp => {
            let s = text()?;
            wall_clock(s)
                .ok_or_else(|| wrong("a timestamp like 2026-01-31T09:30:00 (years 0001 to 9999)"))
        }
        Kind::Date => {
            let s = text()?;
            date(s)
                .map(format_date)
                .ok_or_else(|| wrong("a date like 2026-01-31 (years 0001 to 9999)"))
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

/// Checks a value to be stored, already converted by [`to_text`], against what its column
/// declares beyond its type (see [`check_limits`]) and, for numeric, against what a JSON
/// reader can take back: a number of 1e308 or more overflows a double, which is what most
/// JSON parsers (this server's included) read numbers into, so the row could not be
/// returned. Writes only: a filter may compare with any value of the type.
pub fn check_write(
    kind: &Kind,
    limits: &Limits,
    name: &str,
    text: &str,
    path: &str,
) -> Result<(), ToolError> {
    if *kind == Kind::Numeric
        && let Some(decimal) = Decimal::parse(text)
        && !decimal.digits.is_empty()
        && decimal.digits.len() as i64 + decimal.exponent > MAX_JSON_DIGITS
    {
        return Err(ToolError::invalid_input(
            path,
            format!("{name}: numbers must be below 1e308 in magnitude to be returned as JSON"),
        ));
    }
    check_limits(limits, name, text, path)
}

/// Integer digits of the largest magnitude a double (and so a JSON reader) holds.
const MAX_JSON_DIGITS: i64 = 308;

/// Checks a value against what its column declares beyond its type (lengths,
/// `numeric(p, s)`).
pub fn check_limits(limits: &Limits, name: &str, text: &str, path: &str) -> Result<(), ToolError> {
    if limits.min_chars.is_some() || limits.max_chars.is_some() {
        let chars = text.chars().count() as u64;
        let min = limits.min_chars.unwrap_or(0);
        match limits.max_chars {
            Some(max) if chars > max || chars < min => {
                let range = if min > 0 {
                    format!("{min} to {max} characters")
                } else {
                    format!("at most {max} characters")
                };
                return Err(ToolError::invalid_input(
                    path,
                    format!("{name} must be {range}"),
                ));
            }
            None if chars < min => {
                return Err(ToolError::invalid_input(
                    path,
                    format!("{name} must be at least {min} characters"),
                ));
            }
            _ => {}
        }
    }
    if let Some((precision, scale)) = limits.numeric
        && let Some(decimal) = Decimal::parse(text)
        && !decimal.fits(precision, scale)
    {
        let digits = precision - scale;
        let message = if digits > 0 {
            format!(
                "{name} is numeric({precision},{scale}): its absolute value must round to less than 10^{digits}"
            )
        } else {
            format!("{name} is numeric({precision},{scale}): the value is out of its range")
        };
        return Err(ToolError::invalid_input(path, message));
    }
    Ok(())
}

/// PostgreSQL refuses UTC offsets of 16 hours or more (its limit is ±15:59:59).
const MAX_UTC_OFFSET_SECONDS: u32 = 15 * 3600 + 59 * 60 + 59;
/// PostgreSQL has no year 0 (1 BC precedes 1 AD), so `0000-…` is out of range.
const MIN_YEAR: i32 = 1;
/// The widest exponent every supported PostgreSQL accepts in numeric input.
const MAX_NUMERIC_EXPONENT: i64 = 1000;

/// A float column's value in a form float4in/float8in accept. NaN and ±Infinity are values
/// of the type and pass when spelled out; a finite number that overflows the type does not.
fn float(single: bool, value: &Value) -> Result<String, &'static str> {
    let expects = "expects a number";
    let (f, spelled_infinity) = match value {
        Value::Number(n) => (n.as_f64().ok_or(expects)?, false),
        Value::String(s) => {
            let s = s.trim();
            if s.len() > 400 {
                return Err(expects);
            }
            let f = s.parse::<f64>().map_err(|_| expects)?;
            let bare = s.trim_start_matches(['+', '-']).to_ascii_lowercase();
            (f, bare == "inf" || bare == "infinity")
        }
        _ => return Err(expects),
    };
    if f.is_nan() {
        return Ok("NaN".to_owned());
    }
    if f.is_infinite() {
        if !spelled_infinity {
            return Err("is out of range for a double precision number");
        }
        return Ok(if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned());
    }
    if single {
        let narrow = f as f32;
        if narrow.is_infinite() {
            return Err("is out of range for a real (float4) number");
        }
        // Exponent form: exact, short, and what float4in reads back to the same value.
        return Ok(format!("{narrow:e}"));
    }
    Ok(format!("{f:e}"))
}

/// A decimal number as digits × 10^exponent (digits without leading zeros; empty is zero).
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// Parses `[-+]digits[.digits][e[+-]digits]` as numeric_in does (no NaN or Infinity).
    fn parse(s: &str) -> Option<Decimal> {
        if s.len() > 200 {
            return None;
        }
        let s = s.strip_prefix(['-', '+']).unwrap_or(s);
        let (mantissa, exponent) = match s.split_once(['e', 'E']) {
            Some((m, e)) => {
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned.is_empty()
                    || unsigned.len() > 4
                    || !unsigned.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                (m, e.parse::<i64>().ok()?)
            }
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let mut exponent = exponent - frac.len() as i64;
        while digits.first() == Some(&0) {
            digits.remove(0);
        }
        // Trailing zeros only shift the exponent; dropping them keeps the arithmetic short.
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        Some(Decimal { digits, exponent })
    }

    /// Whether the value fits `numeric(precision, scale)`: rounded (half away from zero) to
    /// `scale` decimal places, its absolute value must be below 10^(precision - scale).
    fn fits(&self, precision: i32, scale: i32) -> bool {
        if self.digits.is_empty() {
            return true;
        }
        let mut digits = self.digits.clone();
        let mut exponent = self.exponent;
        let drop = -i64::from(scale) - exponent;
        if drop > 0 {
            let drop = drop as usize;
            if drop > digits.len() {
                return true; // rounds to zero
            }
            let round_up = digits.get(digits.len() - drop).is_some_and(|d| *d >= 5);
            digits.truncate(digits.len() - drop);
            exponent += drop as i64;
            if round_up {
                let mut i = digits.len();
                loop {
                    if i == 0 {
                        digits.insert(0, 1);
                        break;
                    }
                    i -= 1;
                    if digits[i] == 9 {
                        digits[i] = 0;
                    } else {
                        digits[i] += 1;
                        break;
                    }
                }
            }
            while digits.first() == Some(&0) {
                digits.remove(0);
            }
            if digits.is_empty() {
                return true;
            }
        }
        // digits × 10^exponent < 10^(precision - scale) ⟺ len + exponent ≤ precision - scale.
        digits.len() as i64 + exponent <= i64::from(precision) - i64::from(scale)
    }
}

/// `YYYY-MM-DD` with a year from 0001 to 9999, as a calendar date.
fn date(s: &str) -> Option<time::Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u16> {
        let part = s.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let year = i32::from(number(0..4)?);
    let month = time::Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?;
    let day = u8::try_from(number(8..10)?).ok()?;
    if year < MIN_YEAR {
        return None;
    }
    time::Date::from_calendar_date(year, month, day).ok()
}

fn format_date(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A timestamp without time zone: `YYYY-MM-DD[T ]HH:MM:SS[.fraction][zone]`. PostgreSQL
/// ignores a zone on this type but still refuses one out of range, so a zone is accepted
/// only within ±15:59 and then dropped; the canonical text is what is sent.
fn wall_clock(s: &str) -> Option<String> {
    let day = date(s.get(..10)?)?;
    let rest = s.get(10..)?;
    let rest = rest
        .strip_prefix(['T', 't', ' '])
        .filter(|r| r.len() >= 8)?;
    let clock = rest.get(..8)?;
    let b = clock.as_bytes();
    if b[2] != b':' || b[5] != b':' {
        return None;
    }
    let part = |range: std::ops::Range<usize>| -> Option<u8> {
        let p = clock.get(range)?;
        p.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| p.parse().ok())?
    };
    let time = time::Time::from_hms(part(0..2)?, part(3..5)?, part(6..8)?).ok()?;
    let mut rest = rest.get(8..)?;
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let n = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return None;
        }
        fraction = &after_dot[..n];
        rest = &after_dot[n..];
    }
    if !(rest.is_empty() || rest == "Z" || rest == "z") {
        let sign = rest.strip_prefix(['+', '-'])?;
        let (hours, minutes) = match sign.split_once(':') {
            Some((h, m)) => (h, m),
            // `get`, not slicing: byte 2 may fall inside a multi-byte character.
            None if sign.len() == 4 => (sign.get(..2)?, sign.get(2..)?),
            None => (sign, "00"),
        };
        let two = |t: &str| -> Option<u32> {
            (t.len() == 2 && t.bytes().all(|c| c.is_ascii_digit())).then(|| t.parse().ok())?
        };
        let (h, m) = (two(hours)?, two(minutes)?);
        if m > 59 || h * 3600 + m * 60 > MAX_UTC_OFFSET_SECONDS {
            return None;
        }
    }
    let mut out = format!(
        "{}T{:02}:{:02}:{:02}",
        format_date(day),
        time.hour(),
        time.minute(),
        time.second()
    );
    if !fraction.is_empty() {
        out.push('.');
        out.push_str(fraction);
    }
    Some(out)
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
        for ok in [
            "1", "-1.5", "0.25", "1e10", "3.14E-2", ".5", "5.", "+2", "1e-1000",
        ] {
            assert!(Decimal::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "-", "1.2.3", "1e", "abc", "1; DROP", "NaN", "Infinity", "1e12345",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn numeric_precision_and_scale_follow_postgres_rounding() {
        let fits = |s: &str, p: i32, sc: i32| Decimal::parse(s).unwrap().fits(p, sc);
        assert!(fits("9999999999.99", 12, 2));
        assert!(fits("9999999999.994", 12, 2));
        assert!(!fits("9999999999.995", 12, 2), "rounds up to 10^10");
        assert!(!fits("10000000000", 12, 2));
        assert!(!fits("1e20", 12, 2));
        assert!(fits("1e-20", 12, 2), "rounds to zero");
        assert!(fits("-0.005", 3, 2));
        assert!(!fits("9.995", 3, 2));
        assert!(fits("0", 1, 0));
        assert!(fits("12345", 3, -2), "12300 fits numeric(3,-2)");
        assert!(!fits("99950", 3, -2), "rounds to 100000");
        assert!(fits("0.00099", 2, 5), "scale beyond precision: below 10^-3");
        assert!(!fits("0.001", 2, 5));
        assert!(!fits("0.01", 2, 5));
    }

    #[test]
    fn out_of_range_values_are_refused_before_postgres_sees_them() {
        let s = |v: &str| Value::String(v.to_owned());
        for bad in [
            "2024-01-01T00:00:00+23:59",
            "2024-01-01T00:00:00-16:00",
            "0000-01-01T00:00:00Z",
            "2024-02-30T00:00:00Z",
        ] {
            let e = scalar(&Kind::Timestamptz, "at", &s(bad), "values.at").unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidInput, "{bad}");
            assert_eq!(e.details["path"], "values.at", "{bad}");
        }
        assert_eq!(
            scalar(
                &Kind::Timestamptz,
                "at",
                &s("2024-01-01t00:00:00+15:59"),
                "p"
            )
            .unwrap(),
            "2024-01-01T00:00:00+15:59"
        );
        assert!(
            scalar(
                &Kind::Timestamptz,
                "at",
                &s("9999-12-31T23:59:59-15:00"),
                "p"
            )
            .is_ok()
        );
        for bad in [
            "0000-01-01",
            "2026-13-01",
            "2026-1-01",
            "+2026-01-01",
            "２０２６-01-01",
        ] {
            assert!(scalar(&Kind::Date, "d", &s(bad), "p").is_err(), "{bad}");
        }
        for bad in [
            "2026-01-01T00:00:00+23:59",
            "2026-01-01T24:00:00",
            "2026-01-01T00:00:00 junk",
            "0000-01-01T00:00:00",
            "2026-01-01T00:00:00.1234567890",
            "2026-01-01T00:00:00+1é2",
            "2026-01-01T00:00:00+é",
        ] {
            assert!(
                scalar(&Kind::Timestamp, "t", &s(bad), "p").is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            scalar(
                &Kind::Timestamp,
                "t",
                &s("2026-01-31 09:30:00.25+02:00"),
                "p"
            )
            .unwrap(),
            "2026-01-31T09:30:00.25"
        );
        let double = Kind::Float { single: false };
        let real = Kind::Float { single: true };
        assert!(scalar(&double, "r", &s("1e999"), "p").is_err());
        assert!(scalar(&real, "r", &s("1e300"), "p").is_err());
        assert!(scalar(&real, "r", &serde_json::json!(1e300), "p").is_err());
        assert_eq!(scalar(&double, "r", &s("NaN"), "p").unwrap(), "NaN");
        assert_eq!(scalar(&double, "r", &s("-inf"), "p").unwrap(), "-Infinity");
        assert_eq!(
            scalar(&double, "r", &s("Infinity"), "p").unwrap(),
            "Infinity"
        );
        assert!(
            scalar(&double, "r", &s("1e-400"), "p").is_ok(),
            "underflow is zero"
        );
        assert!(scalar(&Kind::Numeric, "n", &s("1e1001"), "p").is_err());
        assert!(scalar(&Kind::Numeric, "n", &s("NaN"), "p").is_err());
    }

    #[test]
    fn write_limits() {
        let text = Limits {
            min_chars: Some(1),
            max_chars: Some(3),
            numeric: None,
        };
        assert!(check_limits(&text, "c", "abc", "p").is_ok());
        assert!(
            check_limits(&text, "c", "éé", "p").is_ok(),
            "characters, not bytes"
        );
        assert!(check_limits(&text, "c", "abcd", "p").is_err());
        assert!(check_limits(&text, "c", "", "p").is_err());
        let money = Limits {
            numeric: Some((12, 2)),
            ..Limits::default()
        };
        assert!(check_limits(&money, "m", "1e20", "p").is_err());
        assert!(check_limits(&money, "m", "-9999999999.99", "p").is_ok());
        let none = Limits::default();
        assert!(check_write(&Kind::Numeric, &none, "n", "1e1000", "p").is_err());
        assert!(check_write(&Kind::Numeric, &none, "n", "-1e308", "p").is_err());
        assert!(check_write(&Kind::Numeric, &none, "n", "9.99e307", "p").is_ok());
        assert!(check_write(&Kind::Numeric, &none, "n", "1e-1000", "p").is_ok());
    }
}
