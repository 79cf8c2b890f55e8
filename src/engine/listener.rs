//! Keeps catalog snapshots fresh: LISTEN for `hdls_catalog` and empty the cache on each
//! notification (and on every reconnect, since notifications may have been missed).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::catalog::{CHANGE_CHANNEL, CatalogCache};

/// Runs until `shutdown`, reconnecting with a capped backoff.
pub async fn run(
    cache: Arc<CatalogCache>,
    config: tokio_postgres::Config,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = listen_once(&cache, &config, &shutdown);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session => {
                if let Err(error) = result {
                    tracing::warn!(%error, "catalog change listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn listen_once(
    cache: &CatalogCache,
    config: &tokio_postgres::Config,
    shutdown: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {CHANGE_CHANNEL}"))
        .await?;
    cache.invalidate();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            message = rx.recv() => match message {
                Some(()) => cache.invalidate(),
                None => break,
            },
        }
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
