//! The one error type tool code returns, with the codes in DESIGN §4.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The stable error codes a client can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    InvalidInput,
    Conflict,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// A refusal or failure, returned to the client as a tool result with `isError: true`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ToolError {
    pub code: ErrorCode,
    /// Safe to show: never a secret, a raw driver message, or another tenant's value.
    pub message: String,
    /// Extra machine-readable fields (`path`, `limit`, …) merged into the error object.
    pub details: Map<String, Value>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ToolError {
    /// An error with a code and a safe message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ToolError {
        ToolError {
            code,
            message: message.into(),
            details: Map::new(),
            source: None,
        }
    }

    /// Adds a machine-readable field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ToolError {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A cached credential whose workspace's credentials changed since it was resolved
    /// (`crate::auth::cache`): authentication resolves it again and the request runs again,
    /// so a client sees this only if that cannot happen.
    pub fn credential_changed() -> ToolError {
        ToolError::new(
            ErrorCode::Unauthenticated,
            "this credential changed since it was checked; present it again",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorCode::NotFound, message)
    }

    pub fn invalid_input(path: &str, message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorCode::InvalidInput, message).with("path", path)
    }

    pub fn conflict(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorCode::Conflict, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ToolError {
        ToolError::new(ErrorCode::Unavailable, message)
    }

    /// An internal failure: logged here with the caller's location, shown to the client without detail.
    #[track_caller]
    pub fn internal(detail: impl std::fmt::Display) -> ToolError {
        let location = std::panic::Location::caller();
        tracing::error!(%location, %detail, "internal error");
        ToolError::new(ErrorCode::Internal, "internal error; it has been logged")
    }

    /// Maps a pool failure: the database being unreachable or saturated is `unavailable`.
    #[track_caller]
    pub fn from_pool(error: deadpool_postgres::PoolError) -> ToolError {
        let location = std::panic::Location::caller();
        tracing::warn!(%location, %error, "database pool unavailable");
        let mut e = ToolError::unavailable("the database is unavailable; retry shortly");
        e.source = Some(Box::new(error));
        e
    }

    /// The database's report behind this error, if it came from one (for callers that can
    /// name the offending field from its column or constraint).
    pub fn db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        self.source
            .as_deref()
            .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
            .and_then(tokio_postgres::Error::as_db_error)
    }

    /// The constraint a database refusal names. On Citus the refusal happens on the worker
    /// holding the shard and the coordinator raises it again with its message but without
    /// its fields, and a shard's constraints carry the shard id (`contacts_tags_check_102008`):
    /// then the name is read from the message and the suffix taken off.
    pub fn db_constraint(&self) -> Option<String> {
        let db = self.db_error()?;
        match db.constraint() {
            Some(name) => Some(name.to_owned()),
            None if from_a_worker(db) => quoted_after(db.message(), "constraint \"")
                .map(|name| without_shard_id(name).to_owned()),
            None => None,
        }
    }

    /// The column a database refusal names (a NOT NULL violation), as [`Self::db_constraint`]
    /// reads it on Citus.
    pub fn db_column(&self) -> Option<String> {
        let db = self.db_error()?;
        match db.column() {
            Some(name) => Some(name.to_owned()),
            None if from_a_worker(db) => quoted_after(db.message(), "column \"").map(str::to_owned),
            None => None,
        }
    }

    /// The structured body: `{"error": {"code", "message", …details}}`.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), json!(self.code.as_str()));
        body.insert("message".into(), json!(self.message));
        for (k, v) in &self.details {
            body.insert(k.clone(), v.clone());
        }
        json!({ "error": body })
    }
}

/// Whether a database error is a PL/pgSQL RAISE of hdls's own schema (see below). On Citus a
/// trigger runs on the worker holding the shard, and the coordinator raises the worker's
/// error again from `ReportResultError`, keeping its SQLSTATE, message and context: the
/// innermost context line is then the RAISE ("PL/pgSQL function … line N at RAISE").
fn raised_by_the_schema(db: &tokio_postgres::error::DbError) -> bool {
    match db.routine() {
        Some("exec_stmt_raise") => true,
        Some("ReportResultError") => db
            .where_()
            .and_then(|context| context.lines().next())
            .is_some_and(|innermost| {
                innermost.starts_with("PL/pgSQL function ") && innermost.ends_with(" at RAISE")
            }),
        _ => false,
    }
}

/// Whether the coordinator of a Citus cluster raised this again from a worker's report.
fn from_a_worker(db: &tokio_postgres::error::DbError) -> bool {
    db.routine() == Some("ReportResultError")
}

/// The text between `marker` (ending in a double quote) and the next double quote.
fn quoted_after<'m>(message: &'m str, marker: &str) -> Option<&'m str> {
    let start = message.find(marker)? + marker.len();
    let end = message[start..].find('"')?;
    Some(&message[start..start + end])
}

/// A shard's name for a table's object: the object's name and `_<shard id>`.
fn without_shard_id(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, id))
            if !base.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    }
}

impl From<tokio_postgres::Error> for ToolError {
    /// Central mapping of driver errors: never echo the server's message, which can carry row
    /// values. Whole SQLSTATE classes are mapped, not single codes: every data exception
    /// (class 22) and integrity violation (class 23) comes from a value a client sent, so a
    /// code no one listed yet is still the client's `invalid_input` or `conflict`, never
    /// `internal`.
    #[track_caller]
    fn from(error: tokio_postgres::Error) -> ToolError {
        use tokio_postgres::error::SqlState;
        let location = std::panic::Location::caller();
        let code = error.code().map(|c| c.code());
        let class = code.and_then(|c| c.get(..2));
        // A rule the schema enforces by name (a PL/pgSQL RAISE in hdls's own triggers: "the
        // audit log is append-only", "this ticket has been rated already"). Its message is a
        // constant written in a migration, never a row value, so the caller gets it as the
        // reason; and it is a refusal, not a fault, so it is not logged as an error.
        if let Some(db) = error.as_db_error()
            && raised_by_the_schema(db)
        {
            let code = match class {
                Some("42") => ErrorCode::Forbidden,
                Some("23") => ErrorCode::Conflict,
                _ => ErrorCode::InvalidInput,
            };
            tracing::debug!(%location, sqlstate = db.code().code(), "a schema rule refused the change");
            return ToolError::new(code, db.message().to_owned());
        }
        let mapped = match error.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::EXCLUSION_VIOLATION => {
                ToolError::conflict("a record with the same unique value already exists")
            }
            Some(c)
                if *c == SqlState::FOREIGN_KEY_VIOLATION || *c == SqlState::RESTRICT_VIOLATION =>
            {
                ToolError::conflict("the change refers to, or is referred to by, another record")
            }
            Some(c) if *c == SqlState::NOT_NULL_VIOLATION => ToolError::new(
                ErrorCode::InvalidInput,
                "a required value is missing (null)",
            ),
            Some(c) if *c == SqlState::CHECK_VIOLATION => ToolError::new(
                ErrorCode::InvalidInput,
                "a value is outside what this field accepts",
            ),
            // Any other integrity violation: the change clashes with what is stored.
            _ if class == Some("23") => {
                ToolError::conflict("the change conflicts with the stored records")
            }
            _ if class == Some("22") => data_exception(error.code()),
            // Limits of the statement the client's input shaped (too many parameters, too
            // deep an expression): the input's size, never a server fault.
            Some(c)
                if *c == SqlState::STATEMENT_TOO_COMPLEX
                    || *c == SqlState::PROGRAM_LIMIT_EXCEEDED =>
            {
                ToolError::new(
                    ErrorCode::InvalidInput,
                    "the request is too large or too complex; make it smaller",
                )
            }
            Some(c) if *c == SqlState::QUERY_CANCELED => {
                ToolError::unavailable("the operation took too long and was cancelled")
            }
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                let (code, message) = loggable(&error);
                tracing::error!(%location, %code, %message, "runtime role lacks a privilege");
                ToolError::forbidden("the operation is not permitted")
            }
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                ToolError::unavailable("the operation conflicted with another; retry it")
            }
            _ if error.is_closed() => {
                ToolError::unavailable("the database connection was lost; retry")
            }
            _ => {
                let (code, message) = loggable(&error);
                tracing::error!(%location, %code, %message, "database error");
                ToolError::new(ErrorCode::Internal, "internal error; it has been logged")
            }
        };
        if mapped.code != ErrorCode::Internal {
            // Only the SQLSTATE: a data exception's message quotes the refused value.
            tracing::debug!(
                %location,
                sqlstate = code.unwrap_or(""),
                answered = mapped.code.as_str(),
                "database error answered to the caller"
            );
        }
        ToolError {
            source: Some(Box::new(error)),
            ..mapped
        }
    }
}

/// A data exception (SQLSTATE class 22): a value PostgreSQL's input functions or operators
/// refused. The message names the kind of problem, never the value.
fn data_exception(code: Option<&tokio_postgres::error::SqlState>) -> ToolError {
    use tokio_postgres::error::SqlState;
    let message = match code {
        Some(c) if *c == SqlState::STRING_DATA_RIGHT_TRUNCATION => "a value is too long",
        Some(c)
            if *c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                || *c == SqlState::INTERVAL_FIELD_OVERFLOW =>
        {
            "a number is out of range for its column's type"
        }
        Some(c) if *c == SqlState::DATETIME_FIELD_OVERFLOW => "a date or time is out of range",
        Some(c) if *c == SqlState::INVALID_TIME_ZONE_DISPLACEMENT_VALUE => {
            "a timestamp's UTC offset is out of range (at most ±15:59)"
        }
        Some(c) if *c == SqlState::INVALID_DATETIME_FORMAT => "a date or time is not well-formed",
        Some(c)
            if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            "a text value contains a character the database cannot store"
        }
        Some(c)
            if *c == SqlState::INVALID_ESCAPE_SEQUENCE
                || *c == SqlState::INVALID_REGULAR_EXPRESSION
                || *c == SqlState::INVALID_ESCAPE_CHARACTER =>
        {
            "a pattern is not well-formed"
        }
        Some(c) if *c == SqlState::DIVISION_BY_ZERO => "the operation divides by zero",
        _ => "a value does not fit its column's type or the operation",
    };
    ToolError::new(ErrorCode::InvalidInput, message)
}

/// What may be logged of a driver error: the SQLSTATE and the server's message. Its DETAIL
/// can quote row values (another tenant's included), so it never is.
fn loggable(error: &tokio_postgres::Error) -> (String, String) {
    error
        .as_db_error()
        .map(|db| (db.code().code().to_owned(), db.message().to_owned()))
        .unwrap_or_else(|| (String::new(), error.to_string()))
}
