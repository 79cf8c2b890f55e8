//! `whoami`: the caller's identity, told in words an assistant can repeat to its user.

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::api_key;
use crate::identity::{CredentialKind, Persona, Principal, Role};
use crate::oauth::grants::REFRESH_IDLE;
use crate::tools::named::NoArgs;
use crate::tools::{Cx, Registry, ToolError, ToolResult, timestamp};

/// What each rung of the ladder may do (security-and-trust, "one credential, one workspace"),
/// with webhooks named only once this server has them.
pub fn role_abilities(role: Role, registry: &Registry) -> &'static str {
    let webhooks = registry.all().any(|t| t.name == "subscribe_webhook");
    let databases = registry.all().any(|t| t.name == "link_database");
    match (role, webhooks, databases) {
        (Role::Reader, ..) => "read records",
        (Role::Member, true, _) => "read and write records, manage webhooks",
        (Role::Member, false, _) => "read and write records",
        (Role::Admin, _, true) => {
            "everything a member can, plus install products, invite teammates, mint and revoke API keys, \
             link your own database and read the audit log"
        }
        (Role::Admin, _, false) => {
            "everything a member can, plus install products, invite teammates, mint and revoke API keys \
             and read the audit log"
        }
        (Role::Owner, ..) => {
            "everything, plus uninstall products and grant or remove the owner role"
        }
    }
}

/// The ladder, lowest first, for answers that compare roles.
pub fn ladder(registry: &Registry) -> Value {
    Value::Array(
        Role::ALL
            .into_iter()
            .map(|r| json!({ "role": r, "can": role_abilities(r, registry) }))
            .collect(),
    )
}

pub async fn whoami(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let p = cx.principal;
    let endpoint_url = cx.app.public.endpoint_url(cx.endpoint);
    let (credential, said) = credential(cx, p, &endpoint_url).await?;
    let usage = super::workspace::usage(cx).await?;
    let minute = &usage["minute"];
    // Our words only: names and labels people chose stay in their JSON fields (record content
    // is data, not instructions), so the summary points at them instead of quoting them.
    let summary = format!(
        "You are connected to the workspace {} (its name is in workspace.name) as {} {} ({} persona) \
         with {}. This role may {}. Products reachable: {}. Rate limit: {} tool calls per minute, {} \
         used this minute.",
        p.workspace_id,
        article(p.role),
        p.role,
        p.persona.as_str(),
        said,
        role_abilities(p.role, &cx.app.registry),
        if p.products.is_empty() {
            "none".to_owned()
        } else {
            p.products
                .iter()
                .map(|x| x.slug())
                .collect::<Vec<_>>()
                .join(", ")
        },
        minute["limit"],
        minute["calls"],
    );
    Ok(json!({
        "summary": summary,
        "workspace": { "id": p.workspace_id, "name": p.workspace_name },
        "role": p.role,
        "role_allows": role_abilities(p.role, &cx.app.registry),
        "role_ladder": ladder(&cx.app.registry),
        "persona": p.persona,
        "requester_id": p.principal_id,
        "credential": credential,
        "products": p.products,
        "expires_at": timestamp(p.expires_at),
        "endpoint": endpoint_url,
        "rate_limit": {
            "per_minute": minute["limit"],
            "used_this_minute": minute["calls"],
            "minute_resets_at": minute["resets_at"],
            "monthly_budget": usage["month"]["budget"],
            "used_this_month": usage["month"]["calls"],
        },
    }))
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Admin | Role::Owner => "an",
        Role::Reader | Role::Member => "a",
    }
}

/// The credential's own facts, read from its row (under the workspace's policy), and a phrase.
async fn credential(
    cx: &Cx<'_>,
    p: &Principal,
    endpoint_url: &str,
) -> Result<(Value, String), ToolError> {
    match p.credential.kind {
        CredentialKind::ApiKey => {
            let row = match api_key::parse_display_id(&p.credential.id) {
                Some(hex) => {
                    cx.scope
                        .query_opt(
                            "SELECT label, created_by, created_at FROM hdls.api_keys
                         WHERE workspace_id = $2 AND key_id = $1",
                            &[&hex, &p.workspace_id],
                        )
                        .await?
                }
                None => None,
            };
            let label: Option<String> = row.as_ref().and_then(|r| r.get("label"));
            let kind = match p.persona {
                Persona::Agent => "API key",
                Persona::Customer => "customer API key",
            };
            let said = match &label {
                Some(_) => format!(
                    "the {kind} {} (its label is in credential.label)",
                    p.credential.id
                ),
                None => format!("the {kind} {} (no label)", p.credential.id),
            };
            Ok((
                json!({
                    "kind": p.credential.kind,
                    "id": p.credential.id,
                    "label": label,
                    "minted_by": row.as_ref().map(|r| r.get::<_, String>("created_by")),
                    "created_at": timestamp(row.as_ref().map(|r| r.get("created_at"))),
                    "expires_at": timestamp(p.expires_at),
                    "works_at": "the endpoints of its products (an API key carries no audience)",
                }),
                said,
            ))
        }
        CredentialKind::OauthToken => {
            let grant = p
                .credential
                .id
                .strip_prefix("grant_")
                .and_then(|g| g.parse::<uuid::Uuid>().ok());
            let row = match grant {
                Some(g) => {
                    cx.scope
                        .query_opt(
                            "SELECT client_name, client_id, created_at, last_used_at
                             FROM hdls.oauth_grants WHERE grant_id = $1",
                            &[&g],
                        )
                        .await?
                }
                None => None,
            };
            let client: Option<String> = row.as_ref().map(|r| r.get("client_name"));
            let last: Option<OffsetDateTime> = row.as_ref().and_then(|r| r.get("last_used_at"));
            let said = format!(
                "the OAuth connection {} (the client's name is in credential.client_name)",
                p.credential.id
            );
            Ok((
                json!({
                    "kind": p.credential.kind,
                    "id": p.credential.id,
                    "client_name": client,
                    "client_id": row.as_ref().map(|r| r.get::<_, String>("client_id")),
                    "connected_at": timestamp(row.as_ref().map(|r| r.get("created_at"))),
                    "audience": endpoint_url,
                    "access_token_expires_at": timestamp(p.expires_at),
                    "refresh_idles_out_at": timestamp(last.map(|t| t + REFRESH_IDLE)),
                    "note": "the access token is accepted only at its audience and lives 10 minutes; \
                             the client refreshes it, and a connection whose refresh token goes unused \
                             for 30 days ends",
                }),
                said,
            ))
        }
        CredentialKind::Cli | CredentialKind::User => Ok((
            json!({ "kind": p.credential.kind, "id": p.credential.id }),
            "the operator's command line".to_owned(),
        )),
    }
}

/// The endpoint a principal's token is pinned to, for `verify_security`.
pub fn audience(cx: &Cx<'_>) -> Option<String> {
    (cx.principal.credential.kind == CredentialKind::OauthToken)
        .then(|| cx.app.public.endpoint_url(cx.endpoint))
}
