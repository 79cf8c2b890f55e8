//! Managing a workspace's members from the concierge tools (runtime role, inside the
//! caller's Scope, so RLS keeps every statement inside the caller's workspace).
//!
//! Two rules, checked here and nowhere else:
//! * nobody changes a member whose role is above their own, or grants a role above their own
//!   (so only an owner grants or removes owner);
//! * the last owner can be neither demoted nor removed.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::db::Scope;
use crate::error::ToolError;
use crate::identity::{Principal, Role};

/// A member as the tools show it.
#[derive(Debug, Serialize)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub joined_at: OffsetDateTime,
}

fn member_from(row: &tokio_postgres::Row) -> Result<Member, ToolError> {
    Ok(Member {
        user_id: row.get("user_id"),
        email: row.get("email"),
        role: row
            .get::<_, &str>("role")
            .parse()
            .map_err(ToolError::internal)?,
        joined_at: row.get("joined_at"),
    })
}

/// Every member of the Scope's workspace, owners first.
pub async fn list(scope: &Scope) -> Result<Vec<Member>, ToolError> {
    let rows = scope
        .query(
            "SELECT user_id, email, role, joined_at FROM hdls.members
             ORDER BY array_position(ARRAY['owner','admin','member','reader'], role), email",
            &[],
        )
        .await?;
    rows.iter().map(member_from).collect()
}

async fn locked_member(scope: &Scope, user_id: Uuid) -> Result<Member, ToolError> {
    let row = scope
        .query_opt(
            "SELECT user_id, email, role, joined_at FROM hdls.members
             WHERE workspace_id = $2 AND user_id = $1 FOR UPDATE",
            &[&user_id, &scope.workspace()],
        )
        .await?
        .ok_or_else(|| ToolError::not_found(format!("no member {user_id} in this workspace")))?;
    member_from(&row)
}

fn check_authority(actor: &Principal, current: Role, new: Option<Role>) -> Result<(), ToolError> {
    if current > actor.role {
        return Err(ToolError::forbidden(format!(
            "a {} cannot change a member whose role is {current}",
            actor.role
        )));
    }
    if let Some(new) = new
        && new > actor.role
    {
        return Err(ToolError::forbidden(format!(
            "a {} cannot grant the {new} role",
            actor.role
        )));
    }
    Ok(())
}

/// Refuses when `user_id` is the workspace's only owner. Locks every owner row first, so two
/// owners demoting each other at once cannot both succeed.
async fn ensure_not_last_owner(scope: &Scope, user_id: Uuid) -> Result<(), ToolError> {
    let owners = scope
        .query(
            "SELECT user_id FROM hdls.members WHERE workspace_id = $1 AND role = 'owner' FOR UPDATE",
            &[&scope.workspace()],
        )
        .await?;
    let others = owners
        .iter()
        .filter(|r| r.get::<_, Uuid>(0) != user_id)
        .count();
    if others == 0 {
        return Err(ToolError::conflict(
            "this is the workspace's last owner; make another member owner first",
        ));
    }
    Ok(())
}

/// Changes a member's role. Their connections pick the new role up at their next request.
pub async fn change_role(
    scope: &Scope,
    actor: &Principal,
    user_id: Uuid,
    role: Role,
    now: OffsetDateTime,
) -> Result<Member, ToolError> {
    let member = locked_member(scope, user_id).await?;
    check_authority(actor, member.role, Some(role))?;
    if member.role == Role::Owner && role != Role::Owner {
        ensure_not_last_owner(scope, user_id).await?;
    }
    scope
        .execute(
            "UPDATE hdls.members SET role = $2 WHERE user_id = $1",
            &[&user_id, &role.as_str()],
        )
        .await?;
    // A demoted person's connections carry the lower role at once; keys they minted through
    // those connections above the new role would not, so they are revoked (and, by the
    // cascade, what those keys minted).
    let revoked = if role < member.role {
        scope
            .execute(
                "UPDATE hdls.api_keys SET revoked_at = $3, revoked_reason = 'minter demoted'
                 WHERE revoked_at IS NULL
                   AND array_position(ARRAY['reader','member','admin','owner'], role)
                       > array_position(ARRAY['reader','member','admin','owner'], $2::text)
                   AND parent_grant_id IN (SELECT grant_id FROM hdls.oauth_grants WHERE user_id = $1)",
                &[&user_id, &role.as_str(), &now],
            )
            .await?
    } else {
        0
    };
    audit::record(
        scope,
        actor,
        audit::actions::MEMBER_ROLE_CHANGE,
        Some(&format!(
            "{} {} -> {role}; {revoked} key(s) above the new role revoked",
            member.email, member.role
        )),
        audit::Outcome::Allowed,
        now,
    )
    .await?;
    Ok(Member { role, ..member })
}

/// Removes a member and revokes every team connection they hold in this workspace (a
/// customer account of the same person is not a membership and keeps its own). Returns how
/// many connections were revoked.
pub async fn remove(
    scope: &Scope,
    actor: &Principal,
    user_id: Uuid,
    now: OffsetDateTime,
) -> Result<u64, ToolError> {
    let member = locked_member(scope, user_id).await?;
    check_authority(actor, member.role, None)?;
    if member.role == Role::Owner {
        ensure_not_last_owner(scope, user_id).await?;
    }
    scope
        .execute("DELETE FROM hdls.members WHERE user_id = $1", &[&user_id])
        .await?;
    let revoked = scope
        .execute(
            "UPDATE hdls.oauth_grants SET revoked_at = $2, revoked_reason = 'member removed'
             WHERE user_id = $1 AND revoked_at IS NULL AND persona = 'agent'",
            &[&user_id, &now],
        )
        .await?;
    audit::record(
        scope,
        actor,
        audit::actions::MEMBER_REMOVE,
        Some(&format!(
            "{} ({}); {revoked} connection(s) revoked",
            member.email, member.role
        )),
        audit::Outcome::Allowed,
        now,
    )
    .await?;
    Ok(revoked)
}
