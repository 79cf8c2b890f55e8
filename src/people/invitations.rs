//! Invitations: an admin invites an email with a role; the one-time link, valid 7 days,
//! creates the person (or has an existing one prove their password) and adds the membership.
//! A customer invitation (support) is the same link for one requester: accepting it makes a
//! customer account (hdls.customer_accounts) instead, which is never a membership.
//!
//! The link is shown to the inviter too, so holding it proves nothing about the address:
//! accepting never sets, replaces or skips the credentials of a person who already exists,
//! and a person created here reaches only the memberships they joined through such links
//! until an operator-issued link proves their address (`usable_memberships`, migration V6).

use std::net::IpAddr;

use deadpool_postgres::Pool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{customer_accounts, normalize_email, password, throttle};
use crate::audit;
use crate::db::Scope;
use crate::error::ToolError;
use crate::identity::{Principal, Role};
use crate::secret;

/// How long an invitation link stays valid.
pub const VALID: time::Duration = time::Duration::days(7);
const PREFIX: &str = "inv_";

/// A new invitation; `token` is shown once (inside the link).
pub struct Created {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires_at: OffsetDateTime,
    pub token: String,
}

/// Invites `email` with `role` into the Scope's workspace, never above the inviter's role.
pub async fn create(
    scope: &Scope,
    actor: &Principal,
    email: &str,
    role: Role,
    now: OffsetDateTime,
) -> Result<Created, ToolError> {
    let email = normalize_email(email)?;
    if role > actor.role {
        return Err(ToolError::forbidden(format!(
            "a {} cannot invite a teammate as {role}",
            actor.role
        )));
    }
    let already = scope
        .query_opt("SELECT 1 FROM hdls.members WHERE email = $1", &[&email])
        .await?;
    if already.is_some() {
        return Err(ToolError::conflict(format!(
            "{email} is already a member of this workspace"
        )));
    }
    let created = insert(scope, actor, email, role, None, now).await?;
    audit::record(
        scope,
        actor,
        audit::actions::MEMBER_INVITE,
        Some(&format!("{} as {role}", created.email)),
        audit::Outcome::Allowed,
        now,
    )
    .await?;
    Ok(created)
}

/// Invites requester `requester_id` (whose address is `email`) to a customer account in the
/// Scope's workspace. The caller (the support tool) has checked the requester is enabled and
/// has no account yet; the inviter must still be at least a member when the link is used.
pub async fn create_for_customer(
    scope: &Scope,
    actor: &Principal,
    requester_id: Uuid,
    email: &str,
    now: OffsetDateTime,
) -> Result<Created, ToolError> {
    let email = normalize_email(email)?;
    // The role column is required by the table but means nothing for a customer.
    insert(scope, actor, email, Role::Reader, Some(requester_id), now).await
}

async fn insert(
    scope: &Scope,
    actor: &Principal,
    email: String,
    role: Role,
    requester_id: Option<Uuid>,
    now: OffsetDateTime,
) -> Result<Created, ToolError> {
    let link = secret::generate(PREFIX);
    let invitation_id = Uuid::now_v7();
    let expires_at = now + VALID;
    scope
        .execute(
            "INSERT INTO hdls.invitations
                 (invitation_id, token_hash, email, role, invited_by, created_at, expires_at, requester_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &invitation_id,
                &link.hash.as_slice(),
                &email,
                &role.as_str(),
                &actor.credential.id,
                &now,
                &expires_at,
                &requester_id,
            ],
        )
        .await?;
    Ok(Created {
        invitation_id,
        email,
        role,
        expires_at,
        token: link.token,
    })
}

/// A valid, unaccepted invitation, as the accept page shows it.
pub struct Pending {
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub email: String,
    pub role: Role,
    /// Set for a customer invitation: the requester the account will act as.
    pub requester_id: Option<Uuid>,
}

/// Looks an invitation link up without using it. Deliberately says nothing about whether the
/// address already has an account or a password: the page is the same for everyone.
pub async fn peek(
    auth: &Pool,
    token: &str,
    now: OffsetDateTime,
) -> Result<Option<Pending>, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let row = client
        .query_opt(
            "SELECT i.workspace_id, w.name, i.email, i.role, i.requester_id
             FROM hdls.invitations i JOIN hdls.workspaces w USING (workspace_id)
             WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.expires_at > $2",
            &[&secret::hash(token).as_slice(), &now],
        )
        .await?;
    row.map(|r| {
        Ok(Pending {
            workspace_id: r.get("workspace_id"),
            workspace_name: r.get("name"),
            requester_id: r.get("requester_id"),
            email: r.get("email"),
            role: r
                .get::<_, &str>("role")
                .parse()
                .map_err(ToolError::internal)?,
        })
    })
    .transpose()
}

/// Whether the credential that made an invitation still stands behind it: not revoked or
/// expired, and (for a person's connection) still a member with at least the invited role.
/// An invitation is a credential minted through another; revoking the maker (or removing or
/// demoting its member) must leave its links unable to add anyone. Only team credentials
/// (persona agent) vouch: a customer credential never made a link.
async fn inviter_still_vouches(
    tx: &impl deadpool_postgres::GenericClient,
    workspace_id: Uuid,
    invited_by: &str,
    invited_as: Role,
    now: OffsetDateTime,
) -> Result<bool, ToolError> {
    let at_least = |role: &str| role.parse::<Role>().is_ok_and(|r| r >= invited_as);
    if invited_by == "cli" {
        return Ok(true);
    }
    if let Some(key_id) = invited_by.strip_prefix("key_") {
        let row = tx
            .query_opt(
                "SELECT role FROM hdls.api_keys
                 WHERE workspace_id = $1 AND key_id = $2 AND revoked_at IS NULL AND persona = 'agent'
                   AND (expires_at IS NULL OR expires_at > $3)",
                &[&workspace_id, &key_id, &now],
            )
            .await?;
        return Ok(row.is_some_and(|r| at_least(r.get(0))));
    }
    if let Some(grant) = invited_by.strip_prefix("grant_") {
        let Ok(grant_id) = grant.parse::<Uuid>() else {
            return Ok(false);
        };
        let row = tx
            .query_opt(
                "SELECT m.role FROM hdls.oauth_grants g
                 JOIN hdls_identity.usable_memberships m
                   ON m.workspace_id = g.workspace_id AND m.user_id = g.user_id
                 WHERE g.workspace_id = $1 AND g.grant_id = $2 AND g.revoked_at IS NULL
                   AND g.persona = 'agent'",
                &[&workspace_id, &grant_id],
            )
            .await?;
        return Ok(row.is_some_and(|r| at_least(r.get(0))));
    }
    Ok(false)
}

/// Why accepting did not work.
#[derive(Debug)]
pub enum Refused {
    /// Unknown, expired or already used link.
    Link,
    /// The invited address belongs to an existing person and this is not their password
    /// (or they have none yet: they set it through their own link first).
    Password,
    /// A new password that breaks the rules.
    Rules(String),
    Throttled(i64),
    /// A customer invitation whose requester already has an account with another person, or
    /// a person who is already a customer of this workspace as another requester.
    Taken,
}

/// What accepting did: the person (now signed in) and the workspace they joined.
pub struct Accepted {
    pub user_id: Uuid,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    /// Whether this made a customer account (rather than a membership).
    pub customer: bool,
}

/// Uses an invitation once. An existing person proves their password (under the sign-in
/// throttle); a new person chooses one, which then reaches only invitation memberships until
/// their address is proven.
pub async fn accept(
    auth: &Pool,
    token: &str,
    password_text: &str,
    address: Option<IpAddr>,
    now: OffsetDateTime,
) -> Result<Result<Accepted, Refused>, ToolError> {
    let mut client = auth.get().await.map_err(ToolError::from_pool)?;
    let hash = secret::hash(token);
    // The workspace first, then the row locked on its shard: Citus locks rows only in a
    // statement that names the workspace (DESIGN §3). The lookup visits every shard, so it
    // runs before the transaction, which changes the people (a reference table; Citus
    // refuses that after a statement on several shards in the same transaction).
    let workspace: Option<Uuid> = client
        .query_opt(
            "SELECT workspace_id FROM hdls.invitations WHERE token_hash = $1",
            &[&hash.as_slice()],
        )
        .await?
        .map(|row| row.get(0));
    let tx = client.transaction().await?;
    let Some(invite) = tx
        .query_opt(
            "SELECT i.workspace_id, i.invitation_id, i.email, i.role, i.invited_by, i.requester_id, w.name
             FROM hdls.invitations i JOIN hdls.workspaces w USING (workspace_id)
             WHERE i.workspace_id = $3 AND i.token_hash = $1 AND i.accepted_at IS NULL
               AND i.expires_at > $2
             FOR UPDATE OF i",
            &[&hash.as_slice(), &now, &workspace],
        )
        .await?
    else {
        return Ok(Err(Refused::Link));
    };
    let workspace_id: Uuid = invite.get("workspace_id");
    let email: String = invite.get("email");
    let role: String = invite.get("role");
    let requester_id: Option<Uuid> = invite.get("requester_id");
    // A customer invitation needs an inviter who is still at least a member of the team, and
    // a requester who is still enabled.
    let invited_as: Role = match requester_id {
        Some(_) => Role::Member,
        None => role.parse().map_err(ToolError::internal)?,
    };
    if !inviter_still_vouches(&tx, workspace_id, invite.get("invited_by"), invited_as, now).await? {
        return Ok(Err(Refused::Link));
    }
    if let Some(requester_id) = requester_id
        && !customer_accounts::requester_enabled(&tx, workspace_id, requester_id).await?
    {
        return Ok(Err(Refused::Link));
    }
    let subjects = throttle::Subjects::new(&email, address);
    if let Err(minutes) = throttle::attempt(&tx, &subjects, now).await? {
        // The attempt is counted even though nothing else happens.
        tx.commit().await?;
        return Ok(Err(Refused::Throttled(minutes)));
    }
    let existing = tx
        .query_opt(
            "SELECT user_id, password_hash FROM hdls_identity.users WHERE email = $1",
            &[&email],
        )
        .await?;
    let user_id = match existing {
        // An existing person, with or without a password: only their own password lets the
        // link add a membership. Never set, replace or bypass it here.
        Some(row) => {
            if !password::verify(password_text, row.get(1)).await? {
                tx.commit().await?;
                return Ok(Err(Refused::Password));
            }
            throttle::clear_account(&tx, &subjects).await?;
            row.get::<_, Uuid>(0)
        }
        None => {
            let hash = match password::hash(password_text).await {
                Ok(h) => h,
                Err(e) if e.code == crate::error::ErrorCode::InvalidInput => {
                    return Ok(Err(Refused::Rules(e.message)));
                }
                Err(e) => return Err(e),
            };
            // A person created concurrently for the same address is an existing person:
            // DO NOTHING, and refuse as if the password did not match.
            let created = tx
                .query_opt(
                    "INSERT INTO hdls_identity.users (user_id, email, password_hash, created_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (email) DO NOTHING
                     RETURNING user_id",
                    &[&Uuid::now_v7(), &email, &hash, &now],
                )
                .await?;
            match created {
                Some(row) => row.get(0),
                None => {
                    tx.commit().await?;
                    return Ok(Err(Refused::Password));
                }
            }
        }
    };
    let (action, detail) = match requester_id {
        None => {
            tx.execute(
                "INSERT INTO hdls.members (workspace_id, user_id, email, role, joined_at, joined_via)
                 VALUES ($1, $2, $3, $4, $5, 'invitation') ON CONFLICT (workspace_id, user_id) DO NOTHING",
                &[&workspace_id, &user_id, &email, &role, &now],
            )
            .await?;
            (audit::actions::MEMBER_JOIN, format!("{email} as {role}"))
        }
        Some(requester_id) => {
            if !customer_accounts::bind(&tx, workspace_id, user_id, requester_id, now).await? {
                // Nothing of this attempt is kept (not even a person it created).
                drop(tx);
                return Ok(Err(Refused::Taken));
            }
            (
                audit::actions::CUSTOMER_JOIN,
                format!("{email} as requester {requester_id}"),
            )
        }
    };
    tx.execute(
        "UPDATE hdls.invitations SET accepted_at = $3, accepted_by = $4
         WHERE workspace_id = $1 AND invitation_id = $2",
        &[
            &workspace_id,
            &invite.get::<_, Uuid>("invitation_id"),
            &now,
            &user_id,
        ],
    )
    .await?;
    let actor_id = format!("user:{user_id}");
    audit::record_on_credential_path(
        &tx,
        workspace_id,
        audit::Actor {
            kind: "user",
            id: &actor_id,
        },
        action,
        Some(&detail),
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Ok(Accepted {
        user_id,
        workspace_id,
        workspace_name: invite.get("name"),
        customer: requester_id.is_some(),
    }))
}
