//! What every benchmark shares: its knobs, and a database of its own (on
//! `HDLS_BENCH_DATABASE_URL`, or on a private cluster in a temp dir that is stopped and removed
//! at the end, so a benchmark never leaves a server running).

use hdls::db::embedded::Cluster;
use hdls::db::{DbTarget, connect, migrate, setup};

/// A numeric knob from the environment.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A set-up, migrated database for one benchmark run.
pub struct BenchDatabase {
    pub target: DbTarget,
    admin: tokio_postgres::Client,
    dbname: String,
    cluster: Option<Cluster>,
}

impl BenchDatabase {
    /// Creates `<prefix>_<pid>`, sets it up and migrates it.
    pub async fn create(prefix: &str) -> anyhow::Result<BenchDatabase> {
        let (superuser, cluster) = match std::env::var("HDLS_BENCH_DATABASE_URL") {
            Ok(url) => (DbTarget::from_url(&url)?, None),
            Err(_) => {
                let dir = std::env::temp_dir().join(format!("hdls-bench-{}", std::process::id()));
                let cluster = Cluster::start(&dir).await?;
                (
                    DbTarget::from_config(cluster.superuser_config("postgres")),
                    Some(cluster),
                )
            }
        };
        let dbname = format!("{prefix}_{}", std::process::id());
        let admin = connect(&superuser.as_given()).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .await?;
        let target = superuser.with_dbname(&dbname);
        setup::run(&target).await?;
        migrate::run(&target).await?;
        Ok(BenchDatabase {
            target,
            admin,
            dbname,
            cluster,
        })
    }

    /// Drops the database, and stops and removes the private cluster if there is one.
    pub async fn remove(self) -> anyhow::Result<()> {
        let _ = self
            .admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.dbname
            ))
            .await;
        drop(self.admin);
        if let Some(cluster) = self.cluster {
            cluster.stop().await?;
            let _ = std::fs::remove_dir_all(cluster.root());
        }
        Ok(())
    }
}
