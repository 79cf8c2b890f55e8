//! The load generator: N keep-alive HTTP/1.1 connections, each sending one stateless MCP
//! `tools/call` POST after another, from one thread pinned to one CPU with a current-thread
//! runtime. It runs in the benchmark's process, never in the server's (the server is a child
//! process), and its CPU time is measured so the report can show what it cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::procfs;

/// The protocol revision the calls declare (stateless JSON mode needs no initialize).
const PROTOCOL_VERSION: &str = "2025-06-18";

/// What each call sends.
#[derive(Clone)]
pub enum Call {
    /// The same tool call every time.
    Fixed(String),
    /// `create_account` with a name no other call of the run uses.
    CreateAccount,
}

impl Call {
    /// A `tools/call` of `tool` with `arguments`.
    pub fn tool(tool: &str, arguments: serde_json::Value) -> Call {
        Call::Fixed(tools_call(tool, arguments))
    }

    /// The body of call `n` on `connection` in the benchmark's `run`-th load run.
    fn body(&self, run: u64, connection: usize, n: u64) -> String {
        match self {
            Call::Fixed(body) => body.clone(),
            Call::CreateAccount => tools_call(
                "create_account",
                serde_json::json!({ "name": format!("Bench {run}-{connection}-{n}") }),
            ),
        }
    }
}

fn tools_call(tool: &str, arguments: serde_json::Value) -> String {
    serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    })
    .to_string()
}

/// One run: `connections` connections to `url` for `duration`, as `token`.
pub struct Spec {
    pub url: reqwest::Url,
    pub token: String,
    pub call: Call,
    pub connections: usize,
    pub duration: Duration,
}

/// What a run measured.
#[derive(Default)]
pub struct Measurement {
    /// Latency of every call that succeeded, in microseconds.
    pub latencies_us: Vec<u32>,
    pub failed: u64,
    /// The first failure, to say what went wrong.
    pub first_failure: Option<String>,
    pub elapsed: Duration,
    /// CPU seconds of the load generator's thread.
    pub cpu_seconds: f64,
}

impl Measurement {
    pub fn ok(&self) -> u64 {
        self.latencies_us.len() as u64
    }
}

/// Runs `spec` on a thread of its own pinned to `cpu`, and waits for it. A new thread, not
/// the caller's: the pin is inherited by whatever a thread starts later, and the server and
/// PostgreSQL (started from the main thread) must stay free to use every CPU.
pub async fn run(spec: Spec, cpu: usize) -> anyhow::Result<Measurement> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let measured = procfs::pin_to_cpu(cpu)
            .and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .map(|runtime| runtime.block_on(drive(Arc::new(spec))));
        let _ = done.send(measured);
    });
    Ok(result.await??)
}

/// Load runs started so far in this process: a run's number keeps the names `create_account`
/// makes unique across runs (and across the slices of one interleaved run).
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn drive(spec: Arc<Spec>) -> Measurement {
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let headers = Arc::new(headers(&spec.token));
    let cpu_before = procfs::thread_cpu_seconds();
    let started = Instant::now();
    let deadline = started + spec.duration;
    let tasks: Vec<_> = (0..spec.connections)
        .map(|i| tokio::spawn(connection(spec.clone(), headers.clone(), run, i, deadline)))
        .collect();
    let mut total = Measurement::default();
    for task in tasks {
        let m = task.await.unwrap_or_else(|e| Measurement {
            failed: 1,
            first_failure: Some(format!("a connection's task failed: {e}")),
            ..Measurement::default()
        });
        total.latencies_us.extend(m.latencies_us);
        total.failed += m.failed;
        total.first_failure = total.first_failure.or(m.first_failure);
    }
    total.elapsed = started.elapsed();
    total.cpu_seconds = procfs::thread_cpu_seconds() - cpu_before;
    total
}

fn headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("content-type", "application/json");
    set("accept", "application/json, text/event-stream");
    set("mcp-protocol-version", PROTOCOL_VERSION);
    set("authorization", &format!("Bearer {token}"));
    headers
}

/// One keep-alive connection, one request at a time until the deadline. It is one TCP
/// connection for the whole run, held by hyper's connection-level client: a pooling client
/// (reqwest) opened a new connection for about every second call here, because the previous
/// one was not back in its pool yet when the next request left, and the server then paid an
/// accept, a shutdown and a close per two calls (measured with `strace -c`).
async fn connection(
    spec: Arc<Spec>,
    headers: Arc<HeaderMap>,
    run: u64,
    index: usize,
    deadline: Instant,
) -> Measurement {
    let mut m = Measurement::default();
    let mut sender = match connect(&spec.url).await {
        Ok(sender) => sender,
        Err(e) => {
            m.failed = 1;
            m.first_failure = Some(e);
            return m;
        }
    };
    let mut n = 0;
    while Instant::now() < deadline {
        let body = spec.call.body(run, index, n);
        n += 1;
        let started = Instant::now();
        match call(&mut sender, &spec.url, &headers, body).await {
            Ok(()) => m
                .latencies_us
                .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Err(why) => {
                m.failed += 1;
                m.first_failure.get_or_insert(why);
                if sender.is_closed() {
                    // The server closed it (a failure already counted): go on with another.
                    match connect(&spec.url).await {
                        Ok(again) => sender = again,
                        Err(_) => return m,
                    }
                }
            }
        }
    }
    m
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens one HTTP/1.1 connection to the URL's host and port, driven by a task of its own.
async fn connect(url: &reqwest::Url) -> Result<Sender, String> {
    let address = url
        .socket_addrs(|| None)
        .map_err(|e| format!("no address for {url}: {e}"))?;
    let address = address
        .first()
        .ok_or_else(|| format!("no address for {url}"))?;
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address} failed: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One call; OK only for HTTP 200 with a JSON-RPC result that is not a tool error.
async fn call(
    sender: &mut Sender,
    url: &reqwest::Url,
    headers: &HeaderMap,
    body: String,
) -> Result<(), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection lost: {e}"))?;
    let mut request = hyper::Request::post(url.path())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request: {e}"))?;
    *request.headers_mut() = headers.clone();
    if let Some(host) = url.host_str() {
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        if let Ok(value) = HeaderValue::from_str(&authority) {
            request.headers_mut().insert("host", value);
        }
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the reply failed: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(format!("HTTP {status}: {}", excerpt(&body)));
    }
    check_reply(&body)
}

/// The parts of a JSON-RPC reply that say whether the call worked; the rest is skipped
/// without being built, so checking costs the load generator little.
#[derive(Deserialize)]
struct Reply {
    result: Option<CallResult>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct CallResult {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

pub fn check_reply(body: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<Reply>(body) {
        Ok(Reply {
            result: Some(CallResult {
                is_error: None | Some(false),
            }),
            error: None,
        }) => Ok(()),
        Ok(_) => Err(format!("error reply: {}", excerpt(body))),
        Err(e) => Err(format!("unreadable reply ({e}): {}", excerpt(body))),
    }
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// The p-th percentile (0..=1) of latencies in microseconds, in milliseconds.
pub fn percentile_ms(latencies_us: &mut [u32], p: f64) -> f64 {
    if latencies_us.is_empty() {
        return f64::NAN;
    }
    latencies_us.sort_unstable();
    let index = ((latencies_us.len() - 1) as f64 * p).round() as usize;
    f64::from(latencies_us[index]) / 1e3
}
