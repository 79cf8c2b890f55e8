//! `hdls admin …`: operator commands that work whether or not `serve` is running.

use clap::Subcommand;
use serde_json::json;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::db::location::Location;
use crate::db::{DbTarget, OWNER_ROLE, Pools};
use crate::identity::Role;
use crate::tools::args::parse_duration;
use crate::workspaces;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage rate-limit plans.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Manage people's memberships.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Manage people's sign-in.
    #[command(subcommand)]
    Person(PersonCommand),
    /// Manage the OAuth authorization server.
    #[command(subcommand)]
    Oauth(OauthCommand),
    /// Scale out on Citus.
    #[command(subcommand)]
    Citus(CitusCommand),
}

#[derive(Debug, Subcommand)]
pub enum CitusCommand {
    /// Distribute an existing database by workspace: tenant tables distributed and co-located
    /// with hdls.workspaces, catalog and identity tables made reference tables, foreign keys
    /// dropped and added back around the conversion. For a database migrated before it had
    /// Citus (`hdls migrate` distributes a database that has Citus already). Idempotent; runs
    /// as hdls_owner after `hdls setup`.
    Distribute {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a person (by email) to a workspace with a role. A person with no password yet gets a
    /// one-time link to set one, printed once.
    Add {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long)]
        email: String,
        #[arg(long)]
        role: Role,
        /// The server's public URL, to print the link with.
        #[arg(long, env = "HDLS_PUBLIC_URL", default_value = "http://127.0.0.1:8787")]
        public_url: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PersonCommand {
    /// Print a new one-time link (valid 7 days) for a person to set a new password, e.g. after
    /// they forgot theirs. Their current password works until the link is used.
    PasswordLink {
        #[arg(long)]
        email: String,
        /// The server's public URL, to print the link with.
        #[arg(long, env = "HDLS_PUBLIC_URL", default_value = "http://127.0.0.1:8787")]
        public_url: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OauthCommand {
    /// Start signing access tokens with a new key. Tokens signed by older keys keep verifying
    /// until they expire (the old keys stay published for 15 minutes).
    RotateSigningKey {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Set a workspace's per-minute limit and monthly tool-call budget (creates or updates its plan).
    Set {
        #[arg(long)]
        workspace: Uuid,
        /// Tool calls per fixed one-minute window.
        #[arg(long)]
        per_minute: i32,
        /// Tool calls per calendar month (UTC).
        #[arg(long, conflicts_with = "unlimited")]
        monthly: Option<i64>,
        /// No monthly budget (the default).
        #[arg(long)]
        unlimited: bool,
        /// A plan name shared by several workspaces; defaults to one plan per workspace.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace (with the CRM installed) and print its one-time owner key.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Mint an API key in a workspace and print it once.
    Mint {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long)]
        role: Role,
        /// Lifetime such as 30d, 12h or 45m.
        #[arg(long)]
        expires_in: Option<String>,
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by id (key_…); it stops working on its next request.
    Revoke {
        key_id: String,
        #[arg(long)]
        json: bool,
    },
}

impl clap::ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &Role::ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Runs an admin command against the database, stopping the embedded cluster afterwards if it started it.
pub async fn run(
    location: Location,
    data_dir: &std::path::Path,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let opened = location.open().await?;
    let result = async {
        let pools = Pools::open(&opened.target)?;
        execute(&pools, &opened.target, data_dir, command).await
    }
    .await;
    opened.close().await;
    result
}

async fn execute(
    pools: &Pools,
    target: &DbTarget,
    data_dir: &std::path::Path,
    command: AdminCommand,
) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match command {
        AdminCommand::Member(MemberCommand::Add {
            workspace,
            email,
            role,
            public_url,
            json,
        }) => {
            let added =
                crate::people::provision(&pools.auth, workspace, &email, None, role, now).await?;
            let link = added.set_password_token.map(|t| {
                format!(
                    "{}/account/set-password?token={t}",
                    public_url.trim_end_matches('/')
                )
            });
            if json {
                println!(
                    "{}",
                    json!({ "user_id": added.user_id, "workspace_id": workspace, "role": role, "set_password_link": link })
                );
            } else {
                println!(
                    "{email} is a {role} of {workspace} (user {})",
                    added.user_id
                );
                if let Some(link) = link {
                    println!("one-time link to set a password (valid 7 days): {link}");
                }
            }
        }
        AdminCommand::Person(PersonCommand::PasswordLink {
            email,
            public_url,
            json,
        }) => {
            let token = crate::people::password_link(&pools.auth, &email, now)
                .await?
                .ok_or_else(|| anyhow::anyhow!("nobody signs in as {email}"))?;
            let link = format!(
                "{}/account/set-password?token={token}",
                public_url.trim_end_matches('/')
            );
            if json {
                println!("{}", json!({ "email": email, "set_password_link": link }));
            } else {
                println!("one-time link to set a new password (valid 7 days): {link}");
            }
        }
        AdminCommand::Oauth(OauthCommand::RotateSigningKey { json }) => {
            let master = crate::master_key::MasterKey::load_or_create(data_dir)?;
            let kid = crate::oauth::keys::rotate(&pools.auth, &master, now).await?;
            if json {
                println!("{}", json!({ "kid": kid }));
            } else {
                println!("new signing key {kid}; older keys verify for 15 more minutes");
            }
        }
        AdminCommand::Workspace(WorkspaceCommand::Create { name, json }) => {
            let created = workspaces::create(&pools.runtime, &name, now).await?;
            if json {
                println!(
                    "{}",
                    json!({ "workspace_id": created.workspace_id, "name": created.name,
                            "owner_key": created.owner_key, "owner_key_id": created.owner_key_id })
                );
            } else {
                println!("workspace {} ({})", created.name, created.workspace_id);
                println!(
                    "owner key (shown once, store it now): {}",
                    created.owner_key
                );
            }
        }
        AdminCommand::Key(KeyCommand::Mint {
            workspace,
            role,
            expires_in,
            label,
            json,
        }) => {
            let expires_at = match expires_in {
                Some(text) => Some(now + parse_duration("--expires-in", &text)?),
                None => None,
            };
            let key = workspaces::mint_key(&pools.runtime, workspace, role, label, expires_at, now)
                .await?;
            if json {
                println!("{}", serde_json::to_string(&key)?);
            } else {
                println!(
                    "{} ({} key, shown once, store it now): {}",
                    key.key_id, key.role, key.key
                );
            }
        }
        AdminCommand::Key(KeyCommand::Revoke { key_id, json }) => {
            let hex = crate::auth::api_key::parse_display_id(&key_id).ok_or_else(|| {
                anyhow::anyhow!(
                    "{key_id:?} is not a key id (expected key_ followed by 16 hex digits)"
                )
            })?;
            let revoked = workspaces::revoke_key(pools, hex, now).await?;
            anyhow::ensure!(revoked, "no API key {key_id}");
            if json {
                println!(
                    "{}",
                    json!({ "key_id": crate::auth::api_key::display_id(hex), "revoked": true })
                );
            } else {
                println!("revoked {}", crate::auth::api_key::display_id(hex));
            }
        }
        AdminCommand::Citus(CitusCommand::Distribute { json }) => {
            let owner = crate::db::connect(&target.for_role(OWNER_ROLE)).await?;
            let placement = crate::db::citus::distribute(&owner).await?;
            if json {
                println!("{}", serde_json::to_string(&placement)?);
            } else {
                println!(
                    "distributed by workspace: {} tables distributed, {} reference tables",
                    placement.distributed, placement.reference
                );
            }
            anyhow::ensure!(
                placement.pending == 0,
                "{} tables are still not distributed",
                placement.pending
            );
        }
        AdminCommand::Plan(PlanCommand::Set {
            workspace,
            per_minute,
            monthly,
            unlimited: _,
            name,
            json,
        }) => {
            // Plans are shared reference data: only the owner role writes them.
            let owner = target.pool(OWNER_ROLE, 1)?;
            let plan =
                workspaces::set_plan(&owner, workspace, name.as_deref(), per_minute, monthly, now)
                    .await?;
            if json {
                println!("{}", serde_json::to_string(&plan)?);
            } else {
                let budget = plan
                    .monthly_budget
                    .map_or_else(|| "unlimited".to_owned(), |b| b.to_string());
                println!(
                    "workspace {} is on plan {}: {} calls/minute, monthly budget {budget}",
                    plan.workspace_id, plan.plan, plan.per_minute
                );
            }
        }
    }
    Ok(())
}
