//! Browser sessions and CSRF protection for the pages.
//!
//! * `hdls_session`: an opaque random token; the server keeps only its SHA-256. 12 hours.
//! * CSRF: forms shown to a signed-in person carry a token derived from the session token
//!   (unforgeable without the cookie); forms shown before sign-in use a double-submit cookie
//!   `hdls_csrf`. Both cookies are HttpOnly and SameSite=Lax, and every POST from a browser must
//!   also pass the Origin check in `crate::http`.

use axum::http::{HeaderMap, HeaderValue, header};
use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ToolError;
use crate::secret;

pub const SESSION_COOKIE: &str = "hdls_session";
pub const CSRF_COOKIE: &str = "hdls_csrf";
/// How long a sign-in lasts.
pub const SESSION_VALID: time::Duration = time::Duration::hours(12);
const SESSION_PREFIX: &str = "ses_";

/// One cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

/// A `Set-Cookie` value with the attributes every hdls cookie has.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// Starts a session for a person; returns the cookie token (shown to the browser only).
pub async fn create(auth: &Pool, user_id: Uuid, now: OffsetDateTime) -> Result<String, ToolError> {
    let session = secret::generate(SESSION_PREFIX);
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    client
        .execute(
            "INSERT INTO hdls_identity.web_sessions (token_hash, user_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[
                &session.hash.as_slice(),
                &user_id,
                &now,
                &(now + SESSION_VALID),
            ],
        )
        .await?;
    Ok(session.token)
}

/// The signed-in person and their session token, if the request carries a live session.
pub async fn current(
    auth: &Pool,
    headers: &HeaderMap,
    now: OffsetDateTime,
) -> Result<Option<(Uuid, String)>, ToolError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let row = client
        .query_opt(
            "SELECT user_id FROM hdls_identity.web_sessions WHERE token_hash = $1 AND expires_at > $2",
            &[&secret::hash(&token).as_slice(), &now],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), token)))
}

/// Ends a session (sign-out).
pub async fn end(auth: &Pool, session_token: &str) -> Result<(), ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    client
        .execute(
            "DELETE FROM hdls_identity.web_sessions WHERE token_hash = $1",
            &[&secret::hash(session_token).as_slice()],
        )
        .await?;
    Ok(())
}

/// The CSRF token for forms shown inside a session.
pub fn session_csrf(session_token: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"hdls csrf v1\0")
        .chain_update(session_token.as_bytes())
        .finalize();
    secret::b64url(&digest)
}

/// Checks a submitted session CSRF token.
pub fn session_csrf_ok(session_token: &str, submitted: Option<&str>) -> bool {
    submitted.is_some_and(|s| secret::equal(s.as_bytes(), session_csrf(session_token).as_bytes()))
}

/// The double-submit token for a form shown before sign-in: the browser's existing one, or a
/// new one with the `Set-Cookie` that stores it.
pub fn pre_session_csrf(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(v) if v.len() == 43 => (v, None),
        _ => {
            let mut bytes = [0u8; 32];
            rand::fill(&mut bytes);
            let value = secret::b64url(&bytes);
            let set = set_cookie(CSRF_COOKIE, &value, SESSION_VALID.whole_seconds(), secure);
            (value, set)
        }
    }
}

/// Checks a submitted double-submit token against the cookie.
pub fn pre_session_csrf_ok(headers: &HeaderMap, submitted: Option<&str>) -> bool {
    match (cookie(headers, CSRF_COOKIE), submitted) {
        (Some(c), Some(s)) => c.len() == 43 && secret::equal(c.as_bytes(), s.as_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_parse_and_csrf_binds_to_session() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; hdls_session=ses_x; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("ses_x"));
        assert_eq!(cookie(&h, "c"), None);
        let t = session_csrf("ses_x");
        assert!(session_csrf_ok("ses_x", Some(&t)));
        assert!(!session_csrf_ok("ses_y", Some(&t)));
        assert!(!session_csrf_ok("ses_x", None));
    }
}
