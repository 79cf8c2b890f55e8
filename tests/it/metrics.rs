//! `/metrics`: scraped over HTTP after a few calls and parsed with a Prometheus text parser;
//! bounded labels (no workspace id, no uuid, no free text); never on the public listener.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdls::db::OWNER_ROLE;
use hdls::identity::Role;
use hdls::net::guard::{Cidr, Guard, SystemResolver};
use prometheus_parse::{Sample, Scrape, Value as Prom};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{TestEnv, no_args};
use crate::webhooks::{Receiver, Reply};

/// Serves the metrics router on its own loopback port, as `serve` does; stopped with the token.
async fn metrics_url(env: &TestEnv) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    hdls::server::spawn_metrics(env.app.clone(), listener, stop.clone());
    (url, stop)
}

/// GETs and parses one scrape, checking the content type and that every line is either a
/// comment or a sample the parser understood.
async fn scrape(url: &str) -> Scrape {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    parse(&text)
}

fn parse(text: &str) -> Scrape {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    // The parser skips what it cannot read; make sure it skipped nothing.
    let mut sample_lines = 0;
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || value == "+Inf",
            "unparsable sample line {line:?}"
        );
        sample_lines += 1;
    }
    assert!(sample_lines > 0, "{text}");
    scrape
}

/// The one sample of `metric` whose labels include all of `labels`.
fn find<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    let mut found = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    let first = found.next();
    assert!(found.next().is_none(), "{metric} {labels:?} is ambiguous");
    first
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        Some(Prom::Counter(v)) => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

fn gauge(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(scrape, metric, labels).map(|s| &s.value) {
        Some(Prom::Gauge(v)) => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

/// Every label value is a short lower-case word (or a bucket bound): no id, no free text.
fn assert_bounded(scrape: &Scrape, workspace: Uuid) {
    let ws = workspace.to_string();
    for sample in &scrape.samples {
        for (name, value) in sample.labels.iter() {
            assert!(!value.contains(&ws), "{name}={value} names the workspace");
            assert!(
                value.parse::<Uuid>().is_err(),
                "{name}={value} is a uuid in {}",
                sample.metric
            );
            assert!(
                !value.is_empty()
                    && value.len() <= 40
                    && value
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}: label {name}={value:?} is not a bounded word",
                sample.metric
            );
        }
    }
}

#[tokio::test]
async fn calls_refusals_latency_and_pools_are_scraped_in_the_prometheus_text_format() {
    let env = TestEnv::start().await;
    let (url, stop) = metrics_url(&env).await;
    let (ws, owner_key) = env.workspace("metrics").await;
    let owner = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner, ws, None, 4, None, env.clock_now())
        .await
        .unwrap();
    env.align_to_minute_start();
    let crm = env.client("/api/mcp/crm", &owner_key).await;
    let reader = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;

    // Four calls fill the minute (a refused call counts too), the fifth is refused.
    crm.ok("list_pipeline_stages", no_args()).await;
    crm.ok("list_pipeline_stages", no_args()).await;
    assert_eq!(
        reader
            .err_code("create_contact", json!({ "first_name": "X" }))
            .await,
        "forbidden"
    );
    crm.ok("list_pipeline_stages", no_args()).await;
    assert_eq!(
        crm.err_code("list_pipeline_stages", no_args()).await,
        "rate_limited"
    );

    let scrape = scrape(&url).await;
    let calls = "hdls_tool_calls_total";
    let stages = [("endpoint", "crm"), ("tool", "list_pipeline_stages")];
    assert_eq!(
        counter(&scrape, calls, &[stages[0], stages[1], ("outcome", "ok")]),
        3.0
    );
    assert_eq!(
        counter(
            &scrape,
            calls,
            &[stages[0], stages[1], ("outcome", "rate_limited")]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &scrape,
            calls,
            &[
                ("endpoint", "crm"),
                ("tool", "create_contact"),
                ("outcome", "forbidden")
            ]
        ),
        1.0
    );
    assert_eq!(
        counter(
            &scrape,
            "hdls_admission_refusals_total",
            &[("window", "minute")]
        ),
        1.0
    );

    // Latency: every call of the tool, refused ones included, in the +Inf bucket.
    let latency = find(&scrape, "hdls_tool_call_duration_seconds", &stages)
        .expect("a latency histogram for the tool");
    let Prom::Histogram(buckets) = &latency.value else {
        panic!("{latency:?}");
    };
    assert!(buckets.len() > 5, "{buckets:?}");
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert_eq!(inf.count, 4.0);
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "{buckets:?}"
    );

    // Pools: read at scrape time; the linked databases' pools are one label.
    for pool in ["runtime", "auth", "linked"] {
        let labels = [("pool", pool)];
        let max = gauge(&scrape, "hdls_db_pool_max_size", &labels);
        let size = gauge(&scrape, "hdls_db_pool_size", &labels);
        let in_use = gauge(&scrape, "hdls_db_pool_in_use", &labels);
        assert!(
            in_use <= size && size <= max,
            "{pool}: {in_use} {size} {max}"
        );
        gauge(&scrape, "hdls_db_pool_waiting", &labels);
    }
    assert!(gauge(&scrape, "hdls_db_pool_max_size", &[("pool", "runtime")]) > 0.0);
    assert!(gauge(&scrape, "hdls_db_pool_size", &[("pool", "runtime")]) > 0.0);
    assert_eq!(gauge(&scrape, "hdls_db_linked_pools", &[]), 0.0);

    assert_bounded(&scrape, ws);
    stop.cancel();
}

#[tokio::test]
async fn webhook_deliveries_are_counted_by_outcome() {
    let env = TestEnv::start_with_app(|app| {
        app.with_outbound(Guard::new(
            Arc::new(SystemResolver),
            vec![Cidr::parse("127.0.0.0/8").unwrap()],
        ))
    })
    .await;
    let (ws, owner_key) = env.workspace("metrics hooks").await;
    let concierge = env.client("/api/mcp", &owner_key).await;
    let crm = env.client("/api/mcp/crm", &owner_key).await;
    let ok = Receiver::start().await;
    let gone = Receiver::start().await;
    gone.answer_by_default(Reply::Status(410));
    for receiver in [&ok, &gone] {
        concierge
            .ok(
                "subscribe_webhook",
                json!({ "target_url": receiver.url, "schema_name": "crm", "event_types": ["insert"] }),
            )
            .await;
    }
    crm.ok("create_account", json!({ "name": "Acme" })).await;

    let (url, stop) = metrics_url(&env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let scrape = scrape(&url).await;
        let has = |outcome| {
            find(
                &scrape,
                "hdls_webhook_deliveries_total",
                &[("outcome", outcome)],
            )
            .is_some()
        };
        if has("delivered") && has("gone") {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no delivery was counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for outcome in ["delivered", "gone"] {
        assert_eq!(
            counter(
                &scrape,
                "hdls_webhook_deliveries_total",
                &[("outcome", outcome)]
            ),
            1.0,
            "{outcome}"
        );
    }
    assert_bounded(&scrape, ws);
    stop.cancel();
}

#[tokio::test]
async fn the_public_listener_does_not_serve_metrics() {
    let env = TestEnv::start().await;
    let response = reqwest::get(env.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NOT_FOUND);
}

/// A `hdls serve` process with `--metrics-bind`.
struct Served {
    child: Child,
    concierge: String,
    metrics: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(database_url: &str, data_dir: &std::path::Path) -> Served {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_hdls"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("HDLS_DATABASE_URL", database_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn hdls serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut concierge = None;
    let metrics = loop {
        let line = lines
            .next()
            .expect("serve printed its metrics URL")
            .unwrap();
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("concierge") {
            concierge = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("metrics") {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Served {
        child,
        concierge: concierge.expect("the concierge URL before the metrics URL"),
        metrics,
    }
}

#[tokio::test]
async fn serve_exports_metrics_on_its_own_address() {
    let env = TestEnv::start().await;
    let (ws, key) = env.workspace("served").await;
    let dir = std::env::temp_dir().join(format!("hdls-metrics-{}", Uuid::new_v4().simple()));
    let served = serve(&env.db.superuser_url(), &dir);
    assert!(
        served.metrics.starts_with("http://127.0.0.1:") && served.metrics.ends_with("/metrics"),
        "{}",
        served.metrics
    );
    assert_ne!(
        served.metrics.trim_end_matches("/metrics"),
        served.concierge.trim_end_matches("/api/mcp")
    );
    let http = reqwest::Client::new();
    let response: Value = http
        .post(&served.concierge)
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": "whoami", "arguments": {} } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        response["result"]["structuredContent"]["error"].is_null(),
        "{response}"
    );

    let scrape = scrape(&served.metrics).await;
    assert_eq!(
        counter(
            &scrape,
            "hdls_tool_calls_total",
            &[
                ("endpoint", "concierge"),
                ("tool", "whoami"),
                ("outcome", "ok")
            ]
        ),
        1.0
    );
    assert_bounded(&scrape, ws);
    let public = served.concierge.replace("/api/mcp", "/metrics");
    assert_eq!(
        http.get(&public).send().await.unwrap().status(),
        reqwest::StatusCode::NOT_FOUND
    );
    drop(served);
    let _ = std::fs::remove_dir_all(&dir);
}
