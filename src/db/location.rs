//! Where the database is: the embedded private cluster under the data dir, or an operator's server.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::embedded::Cluster;
use super::{DbTarget, migrate, setup};

/// Database name inside the embedded cluster.
pub const EMBEDDED_DBNAME: &str = "hdls";

/// Which database a command uses.
#[derive(Debug, Clone)]
pub enum Location {
    /// `hdls serve` with no URL: a private cluster under this directory.
    Embedded(PathBuf),
    /// `--database-url`: a server the operator runs (setup and migrate are their steps).
    External(String),
}

/// An opened database: its target, and the embedded cluster if this process started one.
pub struct Opened {
    pub target: DbTarget,
    pub cluster: Option<Cluster>,
}

impl Opened {
    /// Stops the embedded cluster if this process started it.
    pub async fn close(self) {
        if let Some(cluster) = self.cluster
            && let Err(error) = cluster.stop().await
        {
            tracing::warn!(%error, "stopping the embedded PostgreSQL failed");
        }
    }
}

impl Location {
    /// Chooses from the CLI flags.
    pub fn from_flags(database_url: Option<String>, data_dir: &Path) -> Location {
        match database_url {
            Some(url) => Location::External(url),
            None => Location::Embedded(data_dir.to_path_buf()),
        }
    }

    /// Opens the database. The embedded cluster is started if needed, then set up and
    /// migrated (both idempotent), so `hdls serve` needs no other step.
    pub async fn open(&self) -> anyhow::Result<Opened> {
        match self {
            Location::External(url) => Ok(Opened {
                target: DbTarget::from_url(url)?,
                cluster: None,
            }),
            Location::Embedded(dir) => {
                crate::data_dir::ensure(dir)
                    .with_context(|| format!("creating the data directory {}", dir.display()))?;
                let cluster = Cluster::start(dir).await?;
                let target = DbTarget::from_config(cluster.superuser_config(EMBEDDED_DBNAME));
                let prepared = async {
                    setup::ensure_database(&target).await?;
                    setup::run(&target).await?;
                    migrate::run(&target).await?;
                    anyhow::Ok(())
                }
                .await;
                let opened = Opened {
                    target,
                    cluster: Some(cluster),
                };
                match prepared {
                    Ok(()) => Ok(opened),
                    Err(error) => {
                        opened.close().await;
                        Err(error)
                    }
                }
            }
        }
    }
}
