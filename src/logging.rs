//! The process's log: a tracing filter from `HDLS_LOG`, with one rule no setting can lift.
//!
//! Libraries below hdls log payloads at debug and trace level: rmcp logs every JSON-RPC
//! request and response (tool arguments and results: minted keys, invitation links), and
//! tokio-postgres logs statement parameters (tenant data, token hashes). Those events are
//! dropped whatever `HDLS_LOG` says, so turning on debug logging never writes a secret.

use tracing::Metadata;
use tracing_subscriber::filter::{EnvFilter, FilterExt, FilterFn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

/// The filter used when `HDLS_LOG` is unset.
pub const DEFAULT_FILTER: &str = "hdls=info,warn";

/// Targets whose debug and trace events carry request, response or statement payloads.
const PAYLOAD_TARGETS: [&str; 2] = ["rmcp", "tokio_postgres"];

/// Whether an event may be written at all: payload-carrying targets only at info and above.
fn carries_no_payload(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let payload_target = PAYLOAD_TARGETS.iter().any(|t| {
        target == *t
            || target
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with("::"))
    });
    !payload_target || *metadata.level() <= tracing::Level::INFO
}

/// The subscriber `hdls` logs through, for `spec` (an `HDLS_LOG` value) and `writer`.
pub fn subscriber<W>(spec: &str, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_filter(filter.and(FilterFn::new(carries_no_payload)));
    Registry::default().with(layer)
}

/// Installs the process-wide subscriber from `HDLS_LOG`, writing to standard error (and
/// bridging libraries that use the `log` crate, such as tokio-postgres, through the same
/// filter).
pub fn init() {
    use tracing_subscriber::util::SubscriberInitExt;
    let spec = std::env::var("HDLS_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let _ = subscriber(&spec, std::io::stderr).try_init();
}
