//! Sign-in throttling: attempts are counted per account and per client address in a fixed
//! window (a success clears the account's count); past the limit, attempts are refused
//! (before any password is checked) until the window ends. Counting per address too stops
//! one client spraying many accounts.

use std::net::IpAddr;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;

use crate::error::ToolError;

/// Failed attempts allowed per account in one window.
pub const PER_ACCOUNT: i32 = 5;
/// Failed attempts allowed per client address in one window.
pub const PER_ADDRESS: i32 = 20;
/// The window.
pub const WINDOW: time::Duration = time::Duration::minutes(15);

/// The counters one attempt touches.
pub struct Subjects {
    account: String,
    address: Option<String>,
}

impl Subjects {
    pub fn new(email: &str, address: Option<IpAddr>) -> Subjects {
        Subjects {
            account: format!("account:{email}"),
            address: address.map(|a| format!("address:{a}")),
        }
    }

    fn all(&self) -> Vec<&str> {
        let mut v = vec![self.account.as_str()];
        if let Some(a) = &self.address {
            v.push(a.as_str());
        }
        v
    }
}

/// Counts this attempt against every subject and says whether it may proceed (if not, the
/// whole minutes until it may). One statement records and checks, before any password is
/// verified, so parallel attempts cannot all slip under the limit: each one's increment is
/// serialised on the counter row and sees the ones before it. A successful sign-in then
/// clears the account's counter ([`clear_account`]), so in effect failures are what count.
pub async fn attempt(
    client: &impl GenericClient,
    subjects: &Subjects,
    now: OffsetDateTime,
) -> Result<Result<(), i64>, ToolError> {
    // One row per subject as VALUES ($1 window start, $2 window end, then the subjects), not
    // unnest() of an array: on Citus this reference-table INSERT … SELECT is sent to a
    // worker, which cannot type an array parameter there.
    let subjects = subjects.all();
    let values: Vec<String> = (0..subjects.len())
        .map(|i| format!("(${}, $1, 1)", i + 3))
        .collect();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    let window_end = now - WINDOW;
    params.push(&now);
    params.push(&window_end);
    for subject in &subjects {
        params.push(subject);
    }
    let rows = client
        .query(
            &format!(
                "INSERT INTO hdls_identity.sign_in_failures AS f (subject, window_start, failures)
                 VALUES {}
                 ON CONFLICT (subject) DO UPDATE SET
                     failures = CASE WHEN f.window_start <= $2 THEN 1 ELSE f.failures + 1 END,
                     window_start = CASE WHEN f.window_start <= $2 THEN $1 ELSE f.window_start END
                 RETURNING subject, window_start, failures",
                values.join(", ")
            ),
            &params,
        )
        .await?;
    let mut wait = None;
    for row in rows {
        let subject: &str = row.get("subject");
        let start: OffsetDateTime = row.get("window_start");
        let attempts: i32 = row.get("failures");
        let limit = if subject.starts_with("account:") {
            PER_ACCOUNT
        } else {
            PER_ADDRESS
        };
        if attempts > limit {
            let ends = start + WINDOW;
            let minutes = ((ends - now).whole_seconds() + 59) / 60;
            wait = Some(wait.map_or(minutes, |w: i64| w.max(minutes)));
        }
    }
    Ok(wait.map_or(Ok(()), Err))
}

/// A successful sign-in clears the account's counter (not the address's).
pub async fn clear_account(
    client: &impl GenericClient,
    subjects: &Subjects,
) -> Result<(), ToolError> {
    client
        .execute(
            "DELETE FROM hdls_identity.sign_in_failures WHERE subject = $1",
            &[&subjects.account],
        )
        .await?;
    Ok(())
}
