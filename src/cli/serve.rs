//! `hdls serve`: run the server, on the embedded cluster by default.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::app::{App, PublicUrl};
use crate::clock::SystemClock;
use crate::db::location::Location;
use crate::db::{Pools, RUNTIME_ROLE, connect, migrate};
use crate::identity::Endpoint;
use crate::master_key::MasterKey;
use crate::net::guard::{Cidr, Guard, SystemResolver};
use crate::{server, workspaces};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HDLS_BIND", default_value = "127.0.0.1:8787")]
    pub bind: SocketAddr,
    /// The URL clients use to reach this server (defaults to http://<bind>); sets allowed Host/Origin values.
    #[arg(long, env = "HDLS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Extra browser Origins allowed to call the MCP endpoints.
    #[arg(
        long = "allowed-origin",
        env = "HDLS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Networks (CIDR) the outbound guard allows besides public addresses, for development
    /// and tests only, e.g. 127.0.0.0/8 to fetch a client metadata document from loopback.
    #[arg(
        long = "outbound-allow",
        env = "HDLS_OUTBOUND_ALLOW",
        value_delimiter = ','
    )]
    pub outbound_allow: Vec<String>,
    /// Reverse proxies (CIDR) whose X-Forwarded-For is believed for the client address that
    /// throttles use; read right to left, skipping these hops. Default: none (the TCP peer).
    #[arg(
        long = "trusted-proxy",
        env = "HDLS_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// SMTP relay for invitation emails, e.g. smtp://user:pass@mail.example.com:587?tls=required.
    #[arg(
        long,
        env = "HDLS_SMTP_URL",
        hide_env_values = true,
        requires = "smtp_from"
    )]
    pub smtp_url: Option<crate::secret::Redacted>,
    /// Sender of invitation emails, e.g. "hdls <hdls@example.com>".
    #[arg(long, env = "HDLS_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Where `/metrics` (Prometheus text format) is served, on a listener of its own, never
    /// the public one; `off` turns it off. Default 127.0.0.1:9787 (loopback only), skipped with
    /// a warning if that port is taken; an address given here must bind.
    #[arg(long, env = "HDLS_METRICS_BIND", value_parser = parse_metrics_bind)]
    pub metrics_bind: Option<MetricsBind>,
    /// Email of the demo workspace's owner, created on the embedded first start.
    #[arg(long, env = "HDLS_OWNER_EMAIL", default_value = "owner@localhost")]
    pub owner_email: String,
}

/// Where `/metrics` is served when `--metrics-bind` is not given.
pub const DEFAULT_METRICS_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9787);

/// `--metrics-bind`: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsBind {
    Off,
    At(SocketAddr),
}

fn parse_metrics_bind(text: &str) -> Result<MetricsBind, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsBind::Off);
    }
    text.parse()
        .map(MetricsBind::At)
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:9787 (or `off`)"))
}

/// Binds the metrics listener: an address the operator gave must bind; the default may be
/// taken (another hdls on this machine), which is said and skipped.
async fn metrics_listener(
    bind: Option<MetricsBind>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    match bind {
        Some(MetricsBind::Off) => Ok(None),
        Some(MetricsBind::At(addr)) => tokio::net::TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("--metrics-bind: listening on {addr}")),
        None => match tokio::net::TcpListener::bind(DEFAULT_METRICS_BIND).await {
            Ok(listener) => Ok(Some(listener)),
            Err(error) => {
                eprintln!(
                    "metrics are not served: {DEFAULT_METRICS_BIND} is not free ({error}); \
                     choose an address with --metrics-bind, or `off`"
                );
                Ok(None)
            }
        },
    }
}

/// File recording that the demo workspace was created (its key is printed only then).
const DEMO_MARKER: &str = "demo-workspace";

pub async fn run(location: Location, data_dir: &Path, args: ServeArgs) -> anyhow::Result<()> {
    let master_key = MasterKey::load_or_create(data_dir)?;
    let opened = location.open().await?;
    let result = serve(&location, &opened, data_dir, master_key, args).await;
    opened.close().await;
    result
}

async fn serve(
    location: &Location,
    opened: &crate::db::location::Opened,
    data_dir: &Path,
    master_key: MasterKey,
    args: ServeArgs,
) -> anyhow::Result<()> {
    let mut allowed = Vec::new();
    for text in &args.outbound_allow {
        allowed.push(Cidr::parse(text).ok_or_else(|| {
            anyhow::anyhow!("--outbound-allow: {text:?} is not a CIDR like 127.0.0.0/8")
        })?);
    }
    let mut trusted_proxies = Vec::new();
    for text in &args.trusted_proxies {
        trusted_proxies.push(Cidr::parse(text).ok_or_else(|| {
            anyhow::anyhow!("--trusted-proxy: {text:?} is not a CIDR like 10.0.0.0/8")
        })?);
    }
    let probe = connect(&opened.target.for_role(RUNTIME_ROLE))
        .await
        .context("connecting as hdls_runtime (run `hdls setup` with a superuser URL, then `hdls migrate`)")?;
    anyhow::ensure!(
        migrate::is_current(&probe).await?,
        "the database schema is not current: run `hdls migrate`"
    );
    // On Citus, every shard must enforce the restrictive row policies (migration V20).
    let broken = crate::db::citus::broken_policies(&probe).await?;
    anyhow::ensure!(
        broken == 0,
        "{broken} Citus shard placements do not enforce hdls's restrictive row policies (Citus \
         re-creates them permissive when it makes or moves shards): run `hdls admin citus \
         distribute` to repair them"
    );
    drop(probe);

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("listening on {}", args.bind))?;
    let bound = listener.local_addr()?;
    let metrics = metrics_listener(args.metrics_bind).await?;
    let public_url = args.public_url.clone().unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            format!("http://localhost:{}", bound.port())
        } else {
            format!("http://{bound}")
        }
    });
    let public = PublicUrl::parse(&public_url, &args.allowed_origins)?;
    let pools = Pools::open(&opened.target)?;
    let mut app = App::new(pools, Arc::new(SystemClock), public)
        .with_master_key(master_key)
        .with_outbound(Guard::new(Arc::new(SystemResolver), allowed))
        .with_trusted_proxies(trusted_proxies)
        .with_webhook_settings(crate::webhooks::Settings::from_env());
    if let (Some(url), Some(from)) = (&args.smtp_url, &args.smtp_from) {
        app = app.with_mailer(crate::mail::Mailer::from_url(&url.0, from)?);
    }
    let app = Arc::new(app);

    let running = server::spawn(app.clone(), listener)?;
    let metrics = match metrics {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let task = server::spawn_metrics(app.clone(), listener, running.shutdown.clone());
            Some((addr, task))
        }
        None => None,
    };

    println!("hdls {} is running", env!("CARGO_PKG_VERSION"));
    for endpoint in Endpoint::ALL {
        println!(
            "  {:<10} {}",
            endpoint.name(),
            app.public.endpoint_url(endpoint)
        );
    }
    if let Some((addr, _)) = &metrics {
        println!("  metrics    http://{addr}/metrics");
    }
    if let Location::Embedded(_) = location {
        println!("  data       {}", data_dir.display());
        // Said on every start: the database is not where the data directory suggests.
        if let Some(cluster) = &opened.cluster
            && let Some(link) = cluster.link()
        {
            println!(
                "  postgres   {} (the postgres user cannot reach the data directory; linked as {})",
                cluster.root().display(),
                link.display()
            );
        }
        let marker = data_dir.join(DEMO_MARKER);
        if !marker.exists() {
            let demo = workspaces::create(&app.pools.runtime, "demo", app.clock.now()).await?;
            std::fs::write(&marker, demo.workspace_id.to_string())?;
            println!();
            println!("Created workspace \"demo\" ({}).", demo.workspace_id);
            println!("Its owner API key is shown this once; store it now:");
            println!();
            println!("  {}", demo.owner_key);
            println!();
            println!("Connect an MCP client to the URLs above with the header");
            println!("  Authorization: Bearer <that key>");
            let owner = crate::people::provision(
                &app.pools.auth,
                demo.workspace_id,
                &args.owner_email,
                None,
                crate::identity::Role::Owner,
                app.clock.now(),
            )
            .await?;
            if let Some(token) = owner.set_password_token {
                println!();
                println!(
                    "Or connect with OAuth: first set a password for {} (one-time link, valid 7 days):",
                    args.owner_email
                );
                println!();
                println!("  {}/account/set-password?token={token}", app.public.base());
            }
        }
    }

    wait_for_signal().await;
    eprintln!("shutting down");
    running.stop().await;
    if let Some((_, task)) = metrics {
        let _ = task.await;
    }
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_bind_is_an_address_or_off() {
        assert_eq!(parse_metrics_bind("off"), Ok(MetricsBind::Off));
        assert_eq!(parse_metrics_bind("OFF"), Ok(MetricsBind::Off));
        assert_eq!(
            parse_metrics_bind("127.0.0.1:0"),
            Ok(MetricsBind::At("127.0.0.1:0".parse().unwrap()))
        );
        assert!(parse_metrics_bind("localhost:9787").is_err());
        assert!(parse_metrics_bind("9787").is_err());
        assert!(DEFAULT_METRICS_BIND.ip().is_loopback());
    }
}
