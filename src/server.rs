//! Running the HTTP server on a listener until told to stop (shared by `serve`, tests and
//! benchmarks), and the separate metrics listener.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::http;

/// A server running on a task.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub fn spawn(app: Arc<App>, listener: TcpListener) -> std::io::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::engine::listener::run(
        app.catalog.clone(),
        app.pools.target.for_role(crate::db::RUNTIME_ROLE),
        shutdown.clone(),
    ));
    tokio::spawn(crate::oauth::housekeeping::run(
        app.pools.auth.clone(),
        app.clock.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(crate::webhooks::worker::run(app.clone(), shutdown.clone()));
    let (admissions, runtime) = (app.admissions.clone(), app.pools.runtime.clone());
    let router = http::router(app, shutdown.clone());
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled_owned().await })
        .await;
        // Every request has finished: the calls this process leased are settled (billed as
        // far as they ran) rather than lost with it.
        admissions.settle_all(&runtime).await;
        served
    });
    Ok(RunningServer {
        addr,
        shutdown,
        task,
    })
}

/// The metrics listener's only route, `GET /metrics`. Never merged into the public router:
/// it is served on its own address (`--metrics-bind`, loopback by default).
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(app)
}

/// Serves [`metrics_router`] on `listener` until `shutdown` is cancelled.
pub fn spawn_metrics(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, metrics_router(app))
            .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
            .await
    })
}

/// Pools are read at scrape time; counters and histograms are kept as calls happen.
async fn scrape(State(app): State<Arc<App>>) -> impl IntoResponse {
    let metrics = &app.metrics;
    metrics.pool("runtime", app.pools.runtime.status().into());
    metrics.pool("auth", app.pools.auth.status().into());
    let (linked, total) = app.data_sources.pool_totals();
    metrics.pool("linked", total);
    metrics.linked_pools(linked);
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}
