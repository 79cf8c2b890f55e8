//! The audit log: privileged and credential events, allowed or refused, append-only.

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Scope;
use crate::error::ToolError;
use crate::identity::{CredentialKind, Principal};

/// Action names, one per privileged or credential event (`noun.verb`).
pub mod actions {
    pub const WORKSPACE_CREATE: &str = "workspace.create";
    pub const PRODUCT_INSTALL: &str = "product.install";
    pub const PRODUCT_UNINSTALL: &str = "product.uninstall";
    pub const API_KEY_MINT: &str = "api_key.mint";
    pub const API_KEY_REVOKE: &str = "api_key.revoke";
    pub const PLAN_SET: &str = "plan.set";
    pub const MEMBER_INVITE: &str = "member.invite";
    pub const MEMBER_JOIN: &str = "member.join";
    pub const MEMBER_ROLE_CHANGE: &str = "member.role_change";
    pub const MEMBER_REMOVE: &str = "member.remove";
    /// A support requester was invited to a customer account.
    pub const CUSTOMER_INVITE: &str = "customer.invite";
    /// A person accepted a customer invitation (a customer account, not a membership).
    pub const CUSTOMER_JOIN: &str = "customer.join";
    /// A person approved a connection on the consent page.
    pub const OAUTH_GRANT: &str = "oauth.grant";
    /// A used refresh token came back: the whole connection was revoked.
    pub const OAUTH_REFRESH_REUSE: &str = "oauth.refresh_reuse";
    /// A used authorization code came back: its connection was revoked.
    pub const OAUTH_CODE_REUSE: &str = "oauth.code_reuse";
    /// A connection was revoked (revocation endpoint, `revoke_connection`, member removal).
    pub const OAUTH_REVOKE: &str = "oauth.revoke";
    pub const WEBHOOK_SUBSCRIBE: &str = "webhook.subscribe";
    pub const WEBHOOK_ROTATE: &str = "webhook.rotate_secret";
    pub const WEBHOOK_UNSUBSCRIBE: &str = "webhook.unsubscribe";
    pub const WEBHOOK_ENABLE: &str = "webhook.enable";
    /// A database was linked as a data source (never with its connection string).
    pub const DATA_SOURCE_LINK: &str = "data_source.link";
    /// A data source was unlinked (its keys revoked with it).
    pub const DATA_SOURCE_UNLINK: &str = "data_source.unlink";
}

/// Whether the action happened.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    Allowed,
    Refused(&'a str),
}

/// The stored name of a credential kind.
pub fn actor_kind(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::ApiKey => "api_key",
        CredentialKind::OauthToken => "oauth_token",
        CredentialKind::Cli => "cli",
        CredentialKind::User => "user",
    }
}

/// Appends an event in the caller's transaction, so it commits (or not) with the action itself.
pub async fn record(
    scope: &Scope,
    actor: &Principal,
    action: &str,
    target: Option<&str>,
    outcome: Outcome<'_>,
    at: OffsetDateTime,
) -> Result<(), ToolError> {
    let (outcome, reason) = match outcome {
        Outcome::Allowed => ("allowed", None),
        Outcome::Refused(reason) => ("refused", Some(truncate(reason))),
    };
    // The workspace named rather than left to the column default (the policy checks it is
    // the stamped one): Citus routes an INSERT by a value it can see, which also keeps a
    // refusal counted by the delegated hdls.count_refusal on that workspace's shard.
    scope
        .execute(
            "INSERT INTO hdls.audit_events (id, at, actor_kind, actor_id, action, target, outcome, reason, workspace_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &Uuid::now_v7(),
                &at,
                &actor_kind(actor.credential.kind),
                &actor.credential.id,
                &action,
                &target.map(truncate),
                &outcome,
                &reason,
                &actor.workspace_id,
            ],
        )
        .await?;
    Ok(())
}

/// Who acted, for events recorded on the credential path (no Principal exists there yet).
pub struct Actor<'a> {
    /// `user` for a person on the web pages, `oauth_token` for a client at the token endpoint.
    pub kind: &'a str,
    pub id: &'a str,
}

/// Appends an event from the credential path (sign-in, consent, token endpoint), which runs as
/// the auth role with the workspace named explicitly, in the caller's transaction.
pub async fn record_on_credential_path(
    client: &impl deadpool_postgres::GenericClient,
    workspace_id: Uuid,
    actor: Actor<'_>,
    action: &str,
    target: Option<&str>,
    at: OffsetDateTime,
) -> Result<(), ToolError> {
    client
        .execute(
            "INSERT INTO hdls.audit_events (workspace_id, id, at, actor_kind, actor_id, action, target, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'allowed')",
            &[
                &workspace_id,
                &Uuid::now_v7(),
                &at,
                &actor.kind,
                &truncate(actor.id),
                &action,
                &target.map(truncate),
            ],
        )
        .await?;
    Ok(())
}

/// Records a refused attempt in a transaction of its own (the attempt's was rolled back).
/// A failure to record is logged, never turned into a different answer for the caller.
pub async fn record_refusal(
    pool: &Pool,
    actor: &Principal,
    action: &str,
    target: Option<&str>,
    reason: &str,
    at: OffsetDateTime,
) {
    let result = async {
        let scope = Scope::begin(pool, actor).await?;
        record(&scope, actor, action, target, Outcome::Refused(reason), at).await?;
        scope.commit().await
    }
    .await;
    if let Err(error) = result {
        tracing::error!(%error, action, "could not record a refused attempt in the audit log");
    }
}

/// The longest audit target a tool call's arguments become.
pub const MAX_TARGET_CHARS: usize = 256;

/// What a tool call's arguments say about its target, for the audit log: argument names, and
/// the values of identifier-like arguments only (ids, roles, products, emails), never the
/// values of free-text fields; at most [`MAX_TARGET_CHARS`] characters.
pub fn target_of(args: &serde_json::Value) -> String {
    use serde_json::Value;
    let Some(object) = args.as_object() else {
        return "(arguments are not an object)".to_owned();
    };
    let identifier = |name: &str| {
        name == "id"
            || name.ends_with("_id")
            || matches!(
                name,
                "role" | "product" | "products" | "email" | "expires_in"
            )
    };
    let short = |v: &Value| match v {
        Value::String(s) if s.chars().count() <= 64 && !s.chars().any(char::is_whitespace) => {
            Some(s.clone())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut names: Vec<&String> = object.keys().collect();
    names.sort();
    let parts: Vec<String> = names
        .into_iter()
        .map(|name| {
            let value = &object[name.as_str()];
            let shown = if identifier(name) {
                match value {
                    Value::Array(items) => items
                        .iter()
                        .take(8)
                        .map(short)
                        .collect::<Option<Vec<_>>>()
                        .map(|v| v.join(",")),
                    other => short(other),
                }
            } else {
                None
            };
            let name: String = name.chars().take(64).collect();
            match shown {
                Some(v) => format!("{name}={v}"),
                None => name,
            }
        })
        .collect();
    parts.join(" ").chars().take(MAX_TARGET_CHARS).collect()
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(1000) {
        Some((i, _)) => text.get(..i).unwrap_or(text),
        None => text,
    }
}
