//! The pinned connector for linked databases. Every connection — the test at link time,
//! `test_database`, and every connection a source's pool opens — resolves the host again,
//! checks every address with the one outbound guard, and dials the checked address
//! (`hostaddr`) while TLS verifies the certificate against the host name (`host`). Nothing
//! hands tokio-postgres a name to resolve, so a DNS answer cannot change between the check
//! and the dial.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::ClientWrapper;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use super::target::{Ssl, Target};
use crate::error::ToolError;
use crate::net::guard::{Guard, Refusal};

/// How long one connection attempt may take (resolution, TCP, TLS, authentication).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on any one statement against a linked database.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// A session left idle inside a transaction this long is ended by the server.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection to a linked database was not made. Messages name the host the user
/// linked, never the connection string, its user or password, or the resolved address.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Refused(Refusal),
    #[error(
        "sslmode=disable is refused: hdls connects to databases outside the operator's allowed networks over TLS only"
    )]
    PlainRefused,
    #[error("{host} did not answer within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout { host: String },
    #[error("the database at {host} refused the user name or password")]
    Authentication { host: String },
    #[error("the database named in the connection string does not exist on {host}")]
    NoDatabase { host: String },
    #[error(
        "the TLS handshake with {host} failed (hdls requires TLS with a certificate valid for the host name)"
    )]
    Tls { host: String },
    #[error("could not connect to the database at {host}")]
    Connect { host: String },
}

impl LinkError {
    /// The error a tool returns: a guard refusal is `forbidden`, anything else `unavailable`.
    pub fn to_tool_error(&self) -> ToolError {
        match self {
            LinkError::Refused(_) | LinkError::PlainRefused => {
                ToolError::forbidden(self.to_string())
            }
            _ => ToolError::unavailable(self.to_string()),
        }
    }

    fn from_driver(host: &str, error: &tokio_postgres::Error) -> LinkError {
        use tokio_postgres::error::SqlState;
        let host = host.to_owned();
        match error.code() {
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                LinkError::Authentication { host }
            }
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => LinkError::NoDatabase { host },
            _ => {
                // A TLS failure surfaces as the driver's "error performing TLS handshake";
                // its source says which, and nothing in it is secret.
                let text = error.to_string();
                if text.contains("TLS") || text.contains("tls") {
                    LinkError::Tls { host }
                } else {
                    LinkError::Connect { host }
                }
            }
        }
    }
}

/// Where one connection was dialed: the name TLS verified and the checked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub host: String,
    pub address: SocketAddr,
}

/// The last dials made, newest last (for operators' debugging and the rebinding tests).
#[derive(Default)]
pub struct DialLog(Mutex<Vec<Dial>>);

impl DialLog {
    const KEEP: usize = 64;

    fn record(&self, dial: Dial) {
        let mut dials = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if dials.len() >= Self::KEEP {
            dials.remove(0);
        }
        dials.push(dial);
    }

    /// The recorded dials, oldest first.
    pub fn recent(&self) -> Vec<Dial> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Opens one connection to `target` through `guard` (see the module docs), with the session
/// limits set.
pub async fn connect(
    guard: &Guard,
    target: &Target,
    dials: &DialLog,
) -> Result<ClientWrapper, LinkError> {
    let host = target.host.clone();
    let addrs = guard
        .check(&target.host, target.port)
        .await
        .map_err(LinkError::Refused)?;
    let plain_allowed = guard.all_explicitly_allowed(&addrs);
    let mode = match (target.ssl, plain_allowed) {
        (Ssl::Disable, false) => return Err(LinkError::PlainRefused),
        (Ssl::Disable, true) => SslMode::Disable,
        (Ssl::Require, _) | (_, false) => SslMode::Require,
        (Ssl::Default | Ssl::Prefer, true) => SslMode::Prefer,
    };
    // The guard refused the host if any address was blocked; every one is safe, the first
    // is dialed (one attempt keeps the connect timeout meaningful).
    let address = addrs[0];
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .hostaddr(address.ip())
        .port(address.port())
        .user(&target.user)
        .dbname(&target.dbname)
        .ssl_mode(mode)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("hdls");
    if let Some(password) = target.password() {
        config.password(password);
    }
    dials.record(Dial {
        host: target.host.clone(),
        address,
    });
    let (client, connection) =
        match tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls())).await {
            Err(_) => return Err(LinkError::Timeout { host }),
            Ok(Err(error)) => return Err(LinkError::from_driver(&host, &error)),
            Ok(Ok(pair)) => pair,
        };
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    // Session limits, on every connection: a runaway statement or an abandoned transaction
    // on someone else's database is ended by that database.
    let limits = format!(
        "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {}",
        STATEMENT_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
    );
    if let Err(error) = client.batch_execute(&limits).await {
        task.abort();
        return Err(LinkError::from_driver(&host, &error));
    }
    Ok(ClientWrapper::new(client, task))
}

/// The deadpool manager of one linked source's pool: every new connection goes through
/// [`connect`], so every connect re-checks the host.
pub struct LinkedManager {
    pub guard: Guard,
    pub target: Target,
    pub dials: Arc<DialLog>,
}

impl managed::Manager for LinkedManager {
    type Type = ClientWrapper;
    type Error = LinkError;

    async fn create(&self) -> Result<ClientWrapper, LinkError> {
        connect(&self.guard, &self.target, &self.dials).await
    }

    async fn recycle(&self, client: &mut ClientWrapper, _: &Metrics) -> RecycleResult<LinkError> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// TLS for linked databases: rustls (ring, already the process's provider) with the
/// platform's certificate verifier, so `require` verifies the chain and the host name.
fn tls() -> MakeRustls {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        crate::net::fetch::install_tls_provider();
        use rustls_platform_verifier::ConfigVerifierExt;
        match rustls::ClientConfig::with_platform_verifier() {
            Ok(config) => Some(Arc::new(config)),
            Err(error) => {
                tracing::error!(%error, "no TLS configuration for linked databases");
                None
            }
        }
    });
    MakeRustls(config.clone())
}

#[derive(Clone)]
struct MakeRustls(Option<Arc<rustls::ClientConfig>>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = std::io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, std::io::Error> {
        let config = self
            .0
            .clone()
            .ok_or_else(|| std::io::Error::other("TLS is not configured"))?;
        let name = rustls::pki_types::ServerName::try_from(domain.to_owned())
            .map_err(|_| std::io::Error::other("invalid TLS server name"))?;
        Ok(RustlsConnect { config, name })
    }
}

struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<RustlsStream<S>, std::io::Error>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            let stream = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (the server still proves the password exchange);
        // binding would need the certificate's signature hash parsed out of DER.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}
