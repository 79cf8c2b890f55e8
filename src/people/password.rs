//! Password hashing with argon2id (the crate's defaults follow OWASP: 19 MiB, 2 passes).
//! Hashing is CPU-heavy by design, so it runs on the blocking pool, off the async workers,
//! and at most one hash per core runs at a time: a flood of sign-ins waits briefly, then gets
//! `unavailable` (503), instead of queueing unbounded memory on the blocking pool.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::error::ToolError;

/// One concurrent hash per core.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
});
/// How long a request waits for a hashing slot before it is refused.
const HASHING_WAIT: Duration = Duration::from_secs(2);

/// Runs one argon2 computation under the bound.
async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ToolError> {
    bounded_by(&HASHING, HASHING_WAIT, work).await
}

async fn bounded_by<T: Send + 'static>(
    slots: &Semaphore,
    wait: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ToolError> {
    let _permit = tokio::time::timeout(wait, slots.acquire())
        .await
        .map_err(|_| {
            ToolError::unavailable("the server is busy checking passwords; retry shortly")
        })?
        .map_err(ToolError::internal)?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ToolError::internal)
}

/// Shortest password accepted; long passphrases are welcome up to [`MAX_LEN`].
pub const MIN_LEN: usize = 10;
/// Longest password accepted (bounds the hashing work an anonymous request can ask for).
pub const MAX_LEN: usize = 1024;

/// Checks the length rules, with a message for the person typing it.
pub fn check_rules(password: &str) -> Result<(), ToolError> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(ToolError::invalid_input(
            "password",
            format!("use at least {MIN_LEN} characters"),
        ));
    }
    if password.len() > MAX_LEN {
        return Err(ToolError::invalid_input(
            "password",
            format!("use at most {MAX_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Hashes a new password (after checking the rules) into a PHC string.
pub async fn hash(password: &str) -> Result<String, ToolError> {
    check_rules(password)?;
    let password = password.to_owned();
    bounded(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(ToolError::internal)
    })
    .await?
}

/// Verifies a password against a stored hash. With no stored hash (unknown person, or no
/// password set yet) a fixed dummy hash is checked instead, so both cases take the same time
/// and the answer cannot tell whether an account exists.
pub async fn verify(password: &str, stored: Option<String>) -> Result<bool, ToolError> {
    if password.len() > MAX_LEN {
        return Ok(false);
    }
    let password = password.to_owned();
    let exists = stored.is_some();
    let stored = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
    let matched = bounded(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), stored.as_str())
            .is_ok()
    })
    .await?;
    Ok(exists && matched)
}

/// argon2id of a random string nobody knows, with the default parameters.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$HuGkR3DzUqQRvFjR0c2bfHmS8wRK3b6RpyRJzZbs8YQ";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse battery").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery", Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery!", Some(h)).await.unwrap());
        assert!(!verify("correct horse battery", None).await.unwrap());
        assert!(hash("short").await.is_err());
    }

    #[tokio::test]
    async fn hashing_past_the_bound_is_refused_not_queued() {
        let slots = Semaphore::new(1);
        let held = slots.acquire().await.unwrap();
        let refused = bounded_by(&slots, Duration::from_millis(10), || ())
            .await
            .unwrap_err();
        assert_eq!(refused.code, crate::error::ErrorCode::Unavailable);
        drop(held);
        assert!(
            bounded_by(&slots, Duration::from_millis(10), || ())
                .await
                .is_ok()
        );
    }
}
