//! Concierge tools for people and connections: teammates (invite, list, change role, remove)
//! and OAuth connections (list, revoke).

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit::actions;
use crate::identity::{Endpoint, Role};
use crate::people::{invitations, members};
use crate::tools::named::NoArgs;
use crate::tools::{Cx, Effect, ToolDef, ToolError, ToolResult, timestamp};

const HERE: Endpoint = Endpoint::Concierge;

/// The people and connection tools.
pub fn tools() -> Vec<ToolDef> {
    vec![
        ToolDef::new(
            "invite_teammate",
            "Invite a teammate by email with a role no higher than yours. Returns a one-time invitation link, \
             valid 7 days (also emailed to them when the server has SMTP configured): opening it lets them set \
             a password (or sign in) and join this workspace. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Write,
            invite_teammate,
        )
        .audited(actions::MEMBER_INVITE),
        ToolDef::new(
            "list_members",
            "List this workspace's members: user id, email, role and when they joined.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_members,
        ),
        ToolDef::new(
            "change_member_role",
            "Change a member's role. You cannot grant a role above your own or change someone above you, so only \
             an owner grants or removes owner; the last owner cannot be demoted. Their connections use the new \
             role from their next request. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::IdempotentWrite,
            change_member_role,
        )
        .audited(actions::MEMBER_ROLE_CHANGE),
        ToolDef::new(
            "remove_member",
            "Remove a member from this workspace and revoke every OAuth connection they hold here. The last owner \
             cannot be removed. Needs admin or owner.",
            HERE,
            Role::Admin,
            Effect::Destructive,
            remove_member,
        )
        .audited(actions::MEMBER_REMOVE),
        ToolDef::new(
            "list_connections",
            "List OAuth connections (MCP clients a person approved): client, person, products, resource, created \
             and last used. Members see their own; admins and owners see everyone's.",
            HERE,
            Role::Reader,
            Effect::Read,
            list_connections,
        ),
        ToolDef::new(
            "revoke_connection",
            "Revoke an OAuth connection by its id (grant_…): its tokens stop working at once and its refresh \
             token can never be used again. Members may revoke their own; admins and owners any.",
            HERE,
            Role::Reader,
            Effect::Destructive,
            revoke_connection,
        )
        .audited(actions::OAUTH_REVOKE),
    ]
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct InviteArgs {
    /// The teammate's email address.
    email: String,
    /// Their role in this workspace; at most your own.
    role: Role,
}

async fn invite_teammate(cx: &Cx<'_>, args: InviteArgs) -> ToolResult {
    let created = invitations::create(
        cx.scope,
        cx.principal,
        &args.email,
        args.role,
        cx.app.clock.now(),
    )
    .await?;
    let link = format!("{}/invite?token={}", cx.app.public.base(), created.token);
    let expires_at = timestamp(Some(created.expires_at));
    let emailed = match &cx.app.mailer {
        Some(mailer) => {
            let sent = mailer
                .send_invitation(
                    &created.email,
                    &cx.principal.workspace_name,
                    created.role.as_str(),
                    &link,
                    expires_at.as_str().unwrap_or_default(),
                )
                .await;
            match sent {
                Ok(()) => json!(true),
                Err(reason) => {
                    tracing::warn!(%reason, "invitation email not sent");
                    json!({ "sent": false, "reason": reason })
                }
            }
        }
        None => json!(false),
    };
    Ok(json!({
        "invitation_id": created.invitation_id,
        "email": created.email,
        "role": created.role,
        "expires_at": expires_at,
        "link": link,
        "emailed": emailed,
        "notice": "The link is shown once and works once. Unless it was emailed, send it to your teammate over a channel you trust.",
    }))
}

async fn list_members(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let members = members::list(cx.scope).await?;
    Ok(json!({ "members": members }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RoleArgs {
    /// The member's user id, as listed by list_members.
    user_id: Uuid,
    /// The new role.
    role: Role,
}

async fn change_member_role(cx: &Cx<'_>, args: RoleArgs) -> ToolResult {
    let member = members::change_role(
        cx.scope,
        cx.principal,
        args.user_id,
        args.role,
        cx.app.clock.now(),
    )
    .await?;
    Ok(json!({ "member": member }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MemberArgs {
    /// The member's user id, as listed by list_members.
    user_id: Uuid,
}

async fn remove_member(cx: &Cx<'_>, args: MemberArgs) -> ToolResult {
    let revoked = members::remove(cx.scope, cx.principal, args.user_id, cx.app.clock.now()).await?;
    Ok(json!({ "user_id": args.user_id, "removed": true, "connections_revoked": revoked }))
}

fn sees_everyone(cx: &Cx<'_>) -> bool {
    cx.principal.role >= Role::Admin
}

async fn list_connections(cx: &Cx<'_>, _: NoArgs) -> ToolResult {
    let everyone = sees_everyone(cx);
    let rows = cx
        .scope
        .query(
            "SELECT g.grant_id, g.client_id, g.client_name, g.user_id, m.email, g.products, g.resource,
                    g.created_at, g.last_used_at
             FROM hdls.oauth_grants g
             LEFT JOIN hdls.members m ON m.workspace_id = g.workspace_id AND m.user_id = g.user_id
             WHERE g.revoked_at IS NULL AND g.last_used_at IS NOT NULL
               AND ($1 OR g.user_id = $2)
             ORDER BY g.created_at DESC, g.grant_id",
            &[&everyone, &cx.principal.user_id],
        )
        .await?;
    let connections: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "connection_id": format!("grant_{}", r.get::<_, Uuid>("grant_id")),
                "client": { "name": r.get::<_, &str>("client_name"), "client_id": r.get::<_, &str>("client_id") },
                "user": { "user_id": r.get::<_, Uuid>("user_id"), "email": r.get::<_, Option<&str>>("email") },
                "products": r.get::<_, Vec<String>>("products"),
                "resource": r.get::<_, &str>("resource"),
                "created_at": timestamp(Some(r.get("created_at"))),
                "last_used_at": timestamp(r.get("last_used_at")),
            })
        })
        .collect();
    Ok(json!({ "connections": connections }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConnectionArgs {
    /// The connection id as listed, e.g. "grant_0190…".
    connection_id: String,
}

async fn revoke_connection(cx: &Cx<'_>, args: ConnectionArgs) -> ToolResult {
    let grant_id: Uuid = args
        .connection_id
        .strip_prefix("grant_")
        .unwrap_or(&args.connection_id)
        .parse()
        .map_err(|_| {
            ToolError::invalid_input("connection_id", "expected a connection id like grant_0190…")
        })?;
    let row = cx
        .scope
        .query_opt(
            "SELECT user_id, revoked_at FROM hdls.oauth_grants
             WHERE workspace_id = $2 AND grant_id = $1 FOR UPDATE",
            &[&grant_id, &cx.scope.workspace()],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!("no connection grant_{grant_id} in this workspace"))
        })?;
    let owner: Uuid = row.get("user_id");
    if !sees_everyone(cx) && cx.principal.user_id != Some(owner) {
        return Err(ToolError::forbidden(
            "members may revoke only their own connections; admins and owners may revoke any",
        ));
    }
    let already: Option<time::OffsetDateTime> = row.get("revoked_at");
    if already.is_none() {
        cx.scope
            .execute(
                "UPDATE hdls.oauth_grants SET revoked_at = $2, revoked_reason = 'revoked with revoke_connection'
                 WHERE grant_id = $1",
                &[&grant_id, &cx.app.clock.now()],
            )
            .await?;
        cx.audit(&format!("grant_{grant_id}")).await?;
    }
    Ok(json!({ "connection_id": format!("grant_{grant_id}"), "revoked": true }))
}
