//! Pinned outbound HTTP GET for small JSON documents (OAuth Client ID Metadata Documents now;
//! the same path serves anything else hdls fetches on a client's say-so).
//!
//! The URL's host is resolved and checked once by the shared [`Guard`]; the request then goes
//! to those checked addresses only (`resolve_to_addrs`), with no proxy, no redirects, a short
//! timeout and a size cap. reqwest never consults a resolver for an IP-literal host, which is
//! why the guard checks literals itself before anything connects.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::guard::{Guard, Refusal};

/// Why a fetch failed. Messages name the URL's host, never anything from a response body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("the URL must use https")]
    NotHttps,
    #[error("the URL is not a valid absolute URL")]
    BadUrl,
    #[error("{host} did not answer in time or the connection failed")]
    Connection { host: String },
    #[error("{host} answered with HTTP {status}")]
    Status { host: String, status: u16 },
    #[error("the document from {host} is larger than {limit} bytes")]
    TooLarge { host: String, limit: usize },
    #[error("the document from {host} is not valid JSON")]
    NotJson { host: String },
}

/// Makes ring the process's TLS provider (reqwest is built without a default one, to keep
/// aws-lc's C build out of the tree). Idempotent; a provider installed earlier wins.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long a fetch may take in all.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches `url` as JSON through the guard. `https` is required unless the host's addresses are
/// all inside the operator's allowed networks (development and tests on loopback).
pub async fn json(guard: &Guard, url: &Url, limit: usize) -> Result<Value, FetchError> {
    install_tls_provider();
    let host = url.host_str().ok_or(FetchError::BadUrl)?.to_owned();
    let port = url.port_or_known_default().ok_or(FetchError::BadUrl)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = guard.check(bare, port).await?;
    match url.scheme() {
        "https" => {}
        "http" if guard.all_explicitly_allowed(&addrs) => {}
        _ => return Err(FetchError::NotHttps),
    }
    let connection = || FetchError::Connection { host: host.clone() };
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .resolve_to_addrs(bare, &addrs)
        .build()
        .map_err(|_| connection())?;
    let mut response = client
        .get(url.as_str())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|_| connection())?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            host,
            status: status.as_u16(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| connection())? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge { host, limit });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|_| FetchError::NotJson { host })
}
