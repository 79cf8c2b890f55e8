//! Pinned outbound HTTP: GET for small JSON documents (OAuth Client ID Metadata Documents)
//! and POST for webhook deliveries; the same path serves anything else hdls reaches on a
//! client's say-so.
//!
//! The URL's host is resolved and checked once by the shared [`Guard`]; the request then goes
//! to those checked addresses only (`resolve_to_addrs`), with no proxy, no redirects, a short
//! timeout and a size cap. reqwest never consults a resolver for an IP-literal host, which is
//! why the guard checks literals itself before anything connects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    #[error("{host} did not answer within {seconds} s")]
    TimedOut { host: String, seconds: u64 },
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

/// Checks `url` against the guard (every delivery and fetch does, so a name that rebinds to a
/// blocked address after it was first checked is refused): returns the bare host and the
/// checked addresses to connect to. `https` is required unless every address is inside the
/// operator's allowed networks.
pub async fn check_url(guard: &Guard, url: &Url) -> Result<(String, Vec<SocketAddr>), FetchError> {
    let host = url.host_str().ok_or(FetchError::BadUrl)?;
    let port = url.port_or_known_default().ok_or(FetchError::BadUrl)?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addrs = guard.check(&bare, port).await?;
    match url.scheme() {
        "https" => Ok((bare, addrs)),
        "http" if guard.all_explicitly_allowed(&addrs) => Ok((bare, addrs)),
        _ => Err(FetchError::NotHttps),
    }
}

/// What a POST got back: the status (any; the caller decides what counts) and a
/// `Retry-After` given in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Posted {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

/// Reusable pinned clients for repeated POSTs to the same hosts (webhook targets): one per
/// host and checked address set, so connections are kept alive between deliveries while a
/// new DNS answer always gets a new client pinned to its own checked addresses.
#[derive(Default)]
pub struct Clients {
    pinned: Mutex<HashMap<Pin, (Instant, reqwest::Client)>>,
}

/// A host and the checked addresses a client is pinned to.
type Pin = (String, Vec<SocketAddr>);

/// How long a pinned client (and its idle connections) is reused.
const CLIENT_REUSE: Duration = Duration::from_secs(60);

impl Clients {
    fn get(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<reqwest::Client, FetchError> {
        let key = (host.to_owned(), addrs.to_vec());
        let mut pinned = self
            .pinned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pinned.retain(|_, (made, _)| made.elapsed() < CLIENT_REUSE);
        if let Some((_, client)) = pinned.get(&key) {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(CLIENT_REUSE)
            .resolve_to_addrs(host, addrs)
            .build()
            .map_err(|_| FetchError::Connection {
                host: host.to_owned(),
            })?;
        pinned.insert(key, (Instant::now(), client.clone()));
        Ok(client)
    }
}

/// POSTs `body` to `url` through the guard, pinned to the checked addresses, no redirects
/// followed (a 3xx comes back as its status), within `timeout`. The response body is read
/// (up to 64 KiB, so the connection can be reused) and dropped.
pub async fn post(
    guard: &Guard,
    clients: &Clients,
    url: &Url,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Posted, FetchError> {
    install_tls_provider();
    let (host, addrs) = check_url(guard, url).await?;
    let client = clients.get(&host, &addrs, timeout)?;
    let failed = |error: reqwest::Error| {
        if error.is_timeout() {
            FetchError::TimedOut {
                host: host.clone(),
                seconds: timeout.as_secs().max(1),
            }
        } else {
            FetchError::Connection { host: host.clone() }
        }
    };
    let mut request = client
        .post(url.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let mut response = request.body(body).send().await.map_err(failed)?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut read = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > 64 * 1024 {
            break;
        }
    }
    Ok(Posted {
        status,
        retry_after,
    })
}

/// Fetches `url` as JSON through the guard. `https` is required unless the host's addresses are
/// all inside the operator's allowed networks (development and tests on loopback).
pub async fn json(guard: &Guard, url: &Url, limit: usize) -> Result<Value, FetchError> {
    install_tls_provider();
    let host = url.host_str().ok_or(FetchError::BadUrl)?.to_owned();
    let (bare, addrs) = check_url(guard, url).await?;
    let bare = bare.as_str();
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
