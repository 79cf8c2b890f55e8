//! The server under test, always a child process of its own (the load generator must not
//! share its process): the real `hdls serve`, or this benchmark binary started again as a
//! server with limits switched off, which `serve` offers no flag for.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hdls::app::{App, PublicUrl};
use hdls::clock::SystemClock;
use hdls::db::{DbTarget, Pools};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Set on the re-started benchmark binary: serve instead of benchmarking. `on` or `off`.
const SERVE_WITH_LIMITS: &str = "HDLS_BENCH_SERVE_WITH_LIMITS";

/// A running server process; killed when dropped.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl ServerProcess {
    /// `hdls serve` on `database_url`, keeping its master key under `data_dir`.
    pub async fn hdls(database_url: &str, data_dir: &Path) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hdls"));
        command
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--metrics-bind",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .env("HDLS_DATABASE_URL", database_url);
        Self::start(command, &data_dir.join("serve.log")).await
    }

    /// This benchmark binary as a server with limits `on` or off: the same App and router as
    /// `serve`, built in a process of its own.
    pub async fn in_bench(
        database_url: &str,
        limits: bool,
        log_dir: &Path,
    ) -> anyhow::Result<ServerProcess> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(SERVE_WITH_LIMITS, if limits { "on" } else { "off" })
            .env("HDLS_DATABASE_URL", database_url);
        let log = log_dir.join(format!(
            "serve-limits-{}.log",
            if limits { "on" } else { "off" }
        ));
        Self::start(command, &log).await
    }

    /// Starts `command` and waits for the line naming its CRM endpoint.
    async fn start(mut command: Command, log: &Path) -> anyhow::Result<ServerProcess> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut child = command
            .env("HDLS_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let crm = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.trim().strip_prefix("crm") {
                    return Ok(url.trim().to_owned());
                }
            }
            anyhow::bail!("the server exited; see {}", log.display())
        })
        .await??;
        // Keep reading so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = crm
            .strip_suffix("/api/mcp/crm")
            .ok_or_else(|| anyhow::anyhow!("unexpected CRM URL {crm}"))?
            .to_owned();
        Ok(ServerProcess { child, base })
    }

    pub fn crm_url(&self) -> String {
        format!("{}/api/mcp/crm", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Kills the server and waits until it has exited, so its database sessions end before
    /// the next run is measured.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// In the re-started benchmark binary: whether to serve, and with limits or not.
pub fn requested_limits() -> Option<bool> {
    std::env::var(SERVE_WITH_LIMITS).ok().map(|v| v != "off")
}

/// Serves until killed, as `serve` does (its runtime, its pools, its router), with
/// `App::enforce_limits` as asked.
pub fn serve_in_bench(limits: bool) -> anyhow::Result<()> {
    hdls::logging::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let target = DbTarget::from_url(&std::env::var("HDLS_DATABASE_URL")?)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = Arc::new(App {
            enforce_limits: limits,
            ..App::new(
                Pools::open(&target)?,
                Arc::new(SystemClock),
                PublicUrl::parse(&base, &[])?,
            )
        });
        let _running = hdls::server::spawn(app, listener)?;
        println!("  crm        {base}/api/mcp/crm");
        std::future::pending::<()>().await;
        Ok(())
    })
}
