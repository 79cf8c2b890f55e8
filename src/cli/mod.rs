//! The `hdls` command line: serve, setup, migrate, admin.

mod admin;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::db::location::Location;
use crate::db::{DbTarget, migrate, setup};

/// hdls: headless, MCP-native backends.
#[derive(Debug, Parser)]
#[command(name = "hdls", version)]
pub struct Cli {
    /// A PostgreSQL URL to use instead of the embedded private cluster.
    #[arg(long, env = "HDLS_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where hdls keeps its private cluster and master key.
    #[arg(long, env = "HDLS_DATA_DIR", global = true, default_value = ".hdls")]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (starting the embedded PostgreSQL unless --database-url is given).
    Serve(serve::ServeArgs),
    /// Create roles, schemas and grants (needs a superuser URL; idempotent).
    Setup,
    /// Apply migrations as the owner role.
    Migrate,
    /// Operator commands: workspaces and keys.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let location = Location::from_flags(cli.database_url.clone(), &cli.data_dir);
    match cli.command {
        Command::Serve(args) => serve::run(location, &cli.data_dir, args).await,
        Command::Setup => match &location {
            Location::External(url) => {
                let report = setup::run(&DbTarget::from_url(url)?).await?;
                println!(
                    "setup complete: roles hdls_owner, hdls_runtime, hdls_auth and schemas are in place"
                );
                if report.citus {
                    let workers: Vec<String> = report
                        .citus_workers
                        .iter()
                        .map(|(host, port)| format!("{host}:{port}"))
                        .collect();
                    println!(
                        "citus: this database is a coordinator; workers: {}; `hdls migrate` distributes the schema",
                        if workers.is_empty() {
                            "none registered yet (citus_add_node)".to_owned()
                        } else {
                            workers.join(", ")
                        }
                    );
                }
                Ok(())
            }
            Location::Embedded(_) => {
                location.open().await?.close().await;
                println!("embedded database is set up and migrated");
                Ok(())
            }
        },
        Command::Migrate => match &location {
            Location::External(url) => {
                let applied = migrate::run(&DbTarget::from_url(url)?).await?;
                println!("applied {applied} migration(s)");
                Ok(())
            }
            Location::Embedded(_) => {
                location.open().await?.close().await;
                println!("embedded database is migrated");
                Ok(())
            }
        },
        Command::Admin(command) => admin::run(location, &cli.data_dir, command).await,
    }
}
