//! Deletes credentials that can never be used again, so the tables do not grow without end:
//! expired or spent codes, sessions and one-time links, stale throttle counters, and refresh
//! tokens past the idle limit or of revoked connections, and OAuth clients (registered or
//! fetched metadata documents) never used for a connection within a day.
//!
//! A used refresh token is kept while it could still be presented (within the idle limit of its
//! issue): reuse detection needs it. Grants are kept as the record of each connection.

use std::time::Duration;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::grants::{CODE_TTL, REFRESH_IDLE};
use crate::clock::Clock;
use crate::error::ToolError;

/// How often housekeeping runs.
pub const EVERY: Duration = Duration::from_secs(600);
/// Extra time an expired credential is kept (so a late presentation reads as "expired", and
/// for anyone investigating).
const KEEP: time::Duration = time::Duration::days(1);

/// A client with no connection this long after registration (or its last fetch) is deleted.
pub const UNUSED_CLIENT: time::Duration = time::Duration::hours(24);

/// Rows deleted by one pass, per kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub codes: u64,
    pub refresh_tokens: u64,
    pub sessions: u64,
    pub links: u64,
    pub throttle_counters: u64,
    pub clients: u64,
}

/// One pass at `now`.
pub async fn purge(auth: &Pool, now: OffsetDateTime) -> Result<Purged, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let before = now - KEEP;
    let codes = client
        .execute(
            "DELETE FROM hdls.oauth_codes WHERE expires_at < $1",
            &[&(before - CODE_TTL)],
        )
        .await?;
    let refresh_tokens = client
        .execute(
            "DELETE FROM hdls.oauth_refresh_tokens r
             WHERE r.issued_at < $1
                OR EXISTS (SELECT 1 FROM hdls.oauth_grants g
                           WHERE g.workspace_id = r.workspace_id AND g.grant_id = r.grant_id
                             AND g.revoked_at < $2)",
            &[&(before - REFRESH_IDLE), &before],
        )
        .await?;
    let sessions = client
        .execute(
            "DELETE FROM hdls_identity.web_sessions WHERE expires_at < $1",
            &[&before],
        )
        .await?
        + client
            .execute(
                "DELETE FROM hdls_identity.portal_sessions WHERE expires_at < $1",
                &[&before],
            )
            .await?;
    let links = client
        .execute(
            "DELETE FROM hdls_identity.user_links WHERE expires_at < $1 OR used_at < $1",
            &[&before],
        )
        .await?;
    let throttle_counters = client
        .execute(
            "DELETE FROM hdls_identity.sign_in_failures WHERE window_start < $1",
            &[&(before - super::super::people::throttle::WINDOW)],
        )
        .await?;
    // Anonymous registration must not grow the table without end: a client nobody connected
    // within a day is forgotten (a metadata-document client is simply fetched again).
    // In two statements: the clients some connection uses (grants of every workspace), then
    // the others removed. Citus cannot delete from a reference table (the clients) by a
    // condition on a distributed one (the grants); a grant made in between is no different
    // from one made just after the single statement's snapshot.
    let in_use: Vec<String> = client
        .query(
            "SELECT DISTINCT g.client_id FROM hdls.oauth_grants g
             WHERE g.client_id IN (SELECT c.client_id FROM hdls_identity.oauth_clients c
                                   WHERE coalesce(c.fetched_at, c.created_at) < $1)",
            &[&(now - UNUSED_CLIENT)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let clients = client
        .execute(
            "DELETE FROM hdls_identity.oauth_clients c
             WHERE coalesce(c.fetched_at, c.created_at) < $1 AND c.client_id <> ALL ($2)",
            &[&(now - UNUSED_CLIENT), &in_use],
        )
        .await?;
    Ok(Purged {
        clients,
        codes,
        refresh_tokens,
        sessions,
        links,
        throttle_counters,
    })
}

/// Runs [`purge`] every [`EVERY`] until `stop`. Failures are logged and retried next time.
pub async fn run(auth: Pool, clock: std::sync::Arc<dyn Clock>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        match purge(&auth, clock.now()).await {
            Ok(purged) if purged != Purged::default() => tracing::info!(?purged, "housekeeping"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "housekeeping failed"),
        }
    }
}
