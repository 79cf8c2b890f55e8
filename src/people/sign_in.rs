//! Checking an email and password, under the throttle.

use std::net::IpAddr;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{normalize_email, password, throttle};
use crate::error::ToolError;

/// Why a sign-in did not succeed. `Invalid` never says which of email or password was wrong.
#[derive(Debug)]
pub enum Refused {
    Invalid,
    /// Too many failures; try again in this many minutes.
    Throttled(i64),
}

/// Signs a person in: the user id, or why not.
pub async fn sign_in(
    auth: &Pool,
    email: &str,
    password_text: &str,
    address: Option<IpAddr>,
    now: OffsetDateTime,
) -> Result<Result<Uuid, Refused>, ToolError> {
    let Ok(email) = normalize_email(email) else {
        return Ok(Err(Refused::Invalid));
    };
    let subjects = throttle::Subjects::new(&email, address);
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    if let Err(minutes) = throttle::attempt(&client, &subjects, now).await? {
        return Ok(Err(Refused::Throttled(minutes)));
    }
    let row = client
        .query_opt(
            "SELECT user_id, password_hash FROM hdls_identity.users WHERE email = $1",
            &[&email],
        )
        .await?;
    let (user_id, stored) = match &row {
        Some(r) => (Some(r.get::<_, Uuid>(0)), r.get::<_, Option<String>>(1)),
        None => (None, None),
    };
    // The connection goes back to the pool while the hash runs (or waits for a hashing
    // slot): a sign-in flood must not starve credential lookups that share this pool.
    drop(client);
    if password::verify(password_text, stored).await?
        && let Some(user_id) = user_id
    {
        let client = auth.get().await.map_err(ToolError::from_pool)?;
        throttle::clear_account(&client, &subjects).await?;
        return Ok(Ok(user_id));
    }
    Ok(Err(Refused::Invalid))
}
