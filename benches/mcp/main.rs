//! Benchmark for issue 15: what a tool call costs over MCP against the SQL it runs, in one
//! run, every figure against its limit.
//!
//! 1. At 16 and 64 connections, interleaved in slices so that the machine's drift falls on
//!    all alike: pgbench running the transaction `search_accounts` runs (its statement from
//!    the product code, the Scope's `SET LOCAL`s, the tool's parameters) as `hdls_runtime`,
//!    `-M prepared`, one thread pinned to CPU 1; and `hdls serve` (a child process) driven by
//!    stateless MCP `tools/call` POSTs over keep-alive connections from one thread of this
//!    process pinned to CPU 1, with an API key and with an OAuth access token. Then the same
//!    for `create_account` and its insert transaction.
//! 2. The same search against two servers built from the library with limits on and off
//!    (`serve` has no switch for that); the server's RSS idle, at peak and after.
//! 3. Unless HDLS_BENCH_LARGE=0: 1,000,009 accounts (100,000 in one workspace), and substring
//!    searches at one connection.
//!
//! `cargo bench --bench mcp`. Knobs: HDLS_BENCH_SECONDS (default 10 per run),
//! HDLS_BENCH_LARGE (default 1), HDLS_BENCH_DATABASE_URL (a superuser URL; default: a private
//! cluster in a temp dir, removed afterwards).

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod load;
mod oauth;
mod pgbench;
mod procfs;
mod report;
mod server;

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use futures_util::FutureExt;
use hdls::clock::{Clock, SystemClock};
use hdls::db::{DbTarget, RUNTIME_ROLE, connect};
use serde_json::{Value, json};

use crate::load::{Call, Spec};
use crate::pgbench::{Pgbench, Script};
use crate::procfs::Postgres;
use crate::report::{Stats, Targets, megabytes};
use crate::server::ServerProcess;

// The same allocator as the hdls binary (see src/main.rs): this binary is also the server
// of the limits on/off runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `search_accounts` is asked: 1,000 of the 2,000 accounts match, 20 are shown.
const QUERY: &str = "Acme";
const PAGE: i64 = 20;
const CONNECTIONS: [usize; 2] = [16, 64];
/// How long after the last run the server's memory is read again.
const SETTLE: Duration = Duration::from_secs(5);

/// Issue 15's limits.
const LEAST_OF_PGBENCH: f64 = 0.35;
const LEAST_OAUTH_OF_KEY: f64 = 0.9;
const LEAST_LIMITS_ON_OF_OFF: f64 = 0.9;
const MOST_P99_AT_64_MS: f64 = 20.0;
const MOST_RSS_MB: f64 = 150.0;
const MOST_LARGE_P50_MS: f64 = 5.0;

struct Knobs {
    run: Duration,
    large: bool,
    /// The CPU every load generator (pgbench and ours) is pinned to.
    cpu: usize,
}

fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider (see Cargo.toml); the loopback runs
    // use none, but building a client requires one.
    hdls::net::fetch::install_tls_provider();
    if let Some(limits) = server::requested_limits() {
        return server::serve_in_bench(limits);
    }
    let knobs = Knobs {
        run: Duration::from_secs(common::env_number("HDLS_BENCH_SECONDS", 10)),
        large: common::env_number("HDLS_BENCH_LARGE", 1) != 0,
        cpu: procfs::load_cpu(),
    };
    // This thread only orchestrates and is never pinned: PostgreSQL and the servers it
    // starts must be free to use every CPU. Load runs on threads of their own (see load.rs).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let database = common::BenchDatabase::create("hdls_bench").await?;
            let scratch =
                std::env::temp_dir().join(format!("hdls-bench-run-{}", std::process::id()));
            // A panic must not leave the private cluster running.
            let result = AssertUnwindSafe(bench(&database.target, &knobs, &scratch))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the benchmark panicked")));
            match &result {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&scratch);
                }
                Err(_) => eprintln!("server and pgbench files kept in {}", scratch.display()),
            }
            database.remove().await?;
            result
        })
}

/// What every measured run needs besides its spec.
struct Bench<'a> {
    knobs: &'a Knobs,
    postgres: Option<Postgres>,
    /// For counting the database's transactions around a run.
    superuser: tokio_postgres::Client,
    targets: Targets,
}

async fn bench(target: &DbTarget, knobs: &Knobs, scratch: &Path) -> anyhow::Result<()> {
    let read = fixtures::workspace(target, "bench", fixtures::ACCOUNTS).await?;
    fixtures::workspace(target, "neighbour", fixtures::ACCOUNTS).await?;
    let write = fixtures::workspace(target, "writes", 0).await?;
    fixtures::person(target, read.id).await?;
    fixtures::settle(target).await?;
    let superuser = connect(&target.as_given()).await?;
    let mut bench = Bench {
        knobs,
        postgres: Postgres::find(&superuser).await,
        superuser,
        targets: Targets::default(),
    };
    println!(
        "issue 15 benchmark: {} s per run; load generators on CPU {} of {}; {} accounts in the searched workspace",
        knobs.run.as_secs(),
        knobs.cpu,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        report::thousands(fixtures::ACCOUNTS as f64),
    );

    let pgbench = Pgbench::locate(
        fixtures::conninfo(target, Some(RUNTIME_ROLE)),
        &scratch.join("pgbench"),
    )?;
    let [search, create] = floor_scripts(&read, &write)?;
    let floors = Floors {
        pgbench: &pgbench,
        search: &search,
        create: &create,
    };

    let url = fixtures::conninfo(target, None);
    let hdls = ServerProcess::hdls(&url, &scratch.join("serve")).await?;
    first_call_works(&hdls.crm_url(), &read.key).await?;
    fixtures::settle(target).await?;
    let by_key = bench.hdls(&hdls, &read, &write, &floors).await?;

    fixtures::settle(target).await?;
    bench.limits(&url, scratch, &read, &by_key).await?;

    if knobs.large {
        bench.large(target, &hdls).await?;
    }
    hdls.stop().await;
    bench.targets.print();
    Ok(())
}

impl Bench<'_> {
    /// The runs against `hdls serve`, with its memory; returns the API-key search rates.
    async fn hdls(
        &mut self,
        hdls: &ServerProcess,
        read: &fixtures::Workspace,
        write: &fixtures::Workspace,
        floors: &Floors<'_>,
    ) -> anyhow::Result<Vec<Stats>> {
        println!(
            "pgbench -M prepared as hdls_runtime, and hdls serve (child process) over MCP, HTTP/1.1 keep-alive; load from 1 thread on CPU {}; \
             the runs of each block interleaved in {SLICES} slices of {} s",
            self.knobs.cpu,
            self.slice().as_secs()
        );
        let idle = procfs::rss_bytes(hdls.pid()).unwrap_or(0);
        let (by_key, peak_search) = self.search(hdls, read, floors).await?;
        let peak_create = self.create(hdls, write, floors).await?;
        tokio::time::sleep(SETTLE).await;
        let after = procfs::rss_bytes(hdls.pid()).unwrap_or(0);
        self.memory(idle, peak_search.max(peak_create), after);
        Ok(by_key)
    }

    /// `search_accounts` with the workspace's API key and with an OAuth access token,
    /// interleaved with pgbench of its transaction; the API key's rates and the peak RSS at 64.
    async fn search(
        &mut self,
        hdls: &ServerProcess,
        read: &fixtures::Workspace,
        floors: &Floors<'_>,
    ) -> anyhow::Result<(Vec<Stats>, u64)> {
        let person = oauth::Person {
            email: fixtures::EMAIL,
            password: fixtures::PASSWORD,
            workspace: read.id,
        };
        let (mut by_key, mut peak) = (Vec::new(), 0);
        let call = search_call();
        for c in CONNECTIONS {
            // A fresh token per connection count: an access token lives 10 minutes.
            let token = oauth::access_token(&hdls.base, &person).await?;
            let floor_label = format!("search transaction (pgbench) @{c}");
            let key_label = format!("search_accounts API key @{c}");
            let oauth_label = format!("search_accounts OAuth @{c}");
            let runs = [
                (floor_label.as_str(), floors.leg(floors.search)),
                (key_label.as_str(), Leg::calls(hdls, &read.key, &call)),
                (oauth_label.as_str(), Leg::calls(hdls, &token, &call)),
            ];
            let measured = self.interleaved(&runs, c, c == 64).await?;
            let [(floor, _), (key, key_rss), (by_oauth, oauth_rss)] =
                <[(Stats, u64); 3]>::try_from(measured)
                    .map_err(|_| anyhow::anyhow!("three runs"))?;
            peak = peak.max(key_rss).max(oauth_rss);
            self.targets.ratio(
                &key_label,
                &key,
                "calls/s",
                ("pgbench", &floor),
                LEAST_OF_PGBENCH,
            );
            if c == 64 {
                let what = format!("{key_label} p99");
                self.targets
                    .at_most(&what, key.p99_ms, "ms", MOST_P99_AT_64_MS);
            }
            self.targets.ratio(
                &oauth_label,
                &by_oauth,
                "calls/s",
                ("API key", &key),
                LEAST_OAUTH_OF_KEY,
            );
            by_key.push(key);
        }
        Ok((by_key, peak))
    }

    /// `create_account` with unique names, interleaved with pgbench of its insert
    /// transaction; the peak RSS at 64.
    async fn create(
        &mut self,
        hdls: &ServerProcess,
        write: &fixtures::Workspace,
        floors: &Floors<'_>,
    ) -> anyhow::Result<u64> {
        let mut peak = 0;
        for c in CONNECTIONS {
            let floor_label = format!("create_account transaction (pgbench) @{c}");
            let label = format!("create_account API key @{c}");
            let runs = [
                (floor_label.as_str(), floors.leg(floors.create)),
                (
                    label.as_str(),
                    Leg::calls(hdls, &write.key, &Call::CreateAccount),
                ),
            ];
            let measured = self.interleaved(&runs, c, c == 64).await?;
            let [(floor, _), (stats, rss)] =
                <[(Stats, u64); 2]>::try_from(measured).map_err(|_| anyhow::anyhow!("two runs"))?;
            peak = peak.max(rss);
            let of = ("pgbench", &floor);
            self.targets
                .ratio(&label, &stats, "calls/s", of, LEAST_OF_PGBENCH);
        }
        Ok(peak)
    }

    /// The server's RSS idle, at its peak in the 64-connection runs, and after them.
    fn memory(&mut self, idle: u64, peak: u64, after: u64) {
        println!(
            "  hdls serve RSS: idle {:.1} MB, peak {:.1} MB (64-connection runs), {:.1} MB {} s after",
            megabytes(idle),
            megabytes(peak),
            megabytes(after),
            SETTLE.as_secs()
        );
        let peak_mb = megabytes(peak);
        self.targets
            .at_most("hdls serve peak RSS @64", peak_mb, "MB", MOST_RSS_MB);
        self.targets.note(format!(
            "hdls serve RSS {} s after load: {:.1} MB = {:.2}× idle ({:.1} MB); target: near idle (no number set)",
            SETTLE.as_secs(),
            megabytes(after),
            after as f64 / idle.max(1) as f64,
            megabytes(idle),
        ));
    }

    /// The search against two servers built from the library, limits on and off (each in a
    /// child process, both up at once, their runs interleaved). The one with limits on is set beside `serve`'s
    /// rate, to show the two servers are alike.
    async fn limits(
        &mut self,
        url: &str,
        scratch: &Path,
        read: &fixtures::Workspace,
        by_key: &[Stats],
    ) -> anyhow::Result<()> {
        println!(
            "the same App and router built in a child process of this benchmark, limits on and off"
        );
        // Both servers up at once, so that their runs can take turns.
        let with = ServerProcess::in_bench(url, true, scratch).await?;
        let without = ServerProcess::in_bench(url, false, scratch).await?;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        let call = search_call();
        for c in CONNECTIONS {
            let (on_label, off_label) = (
                format!("search, limits on @{c}"),
                format!("search, limits off @{c}"),
            );
            let runs = [
                (on_label.as_str(), Leg::calls(&with, &read.key, &call)),
                (off_label.as_str(), Leg::calls(&without, &read.key, &call)),
            ];
            let measured = self.interleaved(&runs, c, false).await?;
            let [(with_limits, _), (without_limits, _)] =
                <[(Stats, u64); 2]>::try_from(measured).map_err(|_| anyhow::anyhow!("two runs"))?;
            on.push(with_limits);
            off.push(without_limits);
        }
        with.stop().await;
        without.stop().await;
        for (((c, on), off), serve) in CONNECTIONS.into_iter().zip(&on).zip(&off).zip(by_key) {
            self.targets.ratio(
                &format!("limits on/off @{c}"),
                on,
                "calls/s",
                ("limits off", off),
                LEAST_LIMITS_ON_OF_OFF,
            );
            let ratio = on.rate / serve.rate;
            let verdict = if (0.8..=1.25).contains(&ratio) {
                "alike within noise"
            } else {
                "they differ by more than noise: a run was disturbed, or the servers differ; run again"
            };
            self.targets.note(format!(
                "(library-built server with limits on @{c}: {ratio:.2}× hdls serve's rate; {verdict})"
            ));
        }
        Ok(())
    }

    /// Target 4: substring searches on a large workspace, one connection.
    async fn large(&mut self, target: &DbTarget, hdls: &ServerProcess) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let large = fixtures::workspace(target, "large", 0).await?;
        fixtures::at_scale(target, large.id).await?;
        println!(
            "large data: 1,000,009 accounts, 100,000 in the searched workspace (loaded in {:.0} s); 1 connection",
            started.elapsed().as_secs_f64()
        );
        let runs = [
            (
                "search_accounts \"cme Rob\"",
                "search_accounts",
                json!({ "query": "cme Rob" }),
                true,
            ),
            (
                "search_accounts \"zzqx\"",
                "search_accounts",
                json!({ "query": "zzqx" }),
                false,
            ),
            (
                "query_records ilike \"%cme Rob%\"",
                "query_records",
                filter("ilike", "%cme Rob%"),
                true,
            ),
            (
                "query_records like \"%cme Rob%\"",
                "query_records",
                filter("like", "%cme Rob%"),
                true,
            ),
        ];
        for (label, tool, args, targeted) in runs {
            let (stats, _) = self
                .calls(hdls, label, &large.key, Call::tool(tool, args), 1, false)
                .await?;
            if targeted {
                self.targets.at_most(
                    &format!("{label} p50 @1"),
                    stats.p50_ms,
                    "ms",
                    MOST_LARGE_P50_MS,
                );
            }
        }
        Ok(())
    }

    /// Transactions the database has ended so far (committed or rolled back), from its
    /// statistics: a run's difference per call says how many transactions a call costs.
    /// Approximate for the server's runs: a busy backend reports at most once a second, and
    /// an idle one up to 10 s later, so a run's last second may count in the next run (exact
    /// for pgbench, whose backends report as they exit).
    async fn transactions(&self) -> anyhow::Result<i64> {
        let row = self
            .superuser
            .query_one(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database
                 WHERE datname = current_database()",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    /// One load run against `server`, with what it cost each process and, if asked, the
    /// server's peak RSS during it.
    async fn calls(
        &self,
        server: &ServerProcess,
        label: &str,
        token: &str,
        call: Call,
        connections: usize,
        sample_rss: bool,
    ) -> anyhow::Result<(Stats, u64)> {
        let raw = self
            .measure(server, token, call, connections, self.knobs.run, sample_rss)
            .await?;
        let rss = raw.rss;
        Ok((raw.finish(label)?, rss))
    }

    /// Runs that are compared with each other, interleaved: each gets `SLICES` slices of
    /// [`Bench::slice`], taken in turn (A B C A B C …), so that a stretch of a slower machine
    /// falls on all of them alike (measured: on a shared virtual machine the CPU a call costs
    /// moved by a third between consecutive runs of the same server and call, and a ratio of
    /// two back-to-back runs showed that rather than what was compared). One result per run,
    /// in order, with the server's peak RSS if `sample_rss` (0 for pgbench).
    async fn interleaved(
        &self,
        runs: &[(&str, Leg<'_>)],
        connections: usize,
        sample_rss: bool,
    ) -> anyhow::Result<Vec<(Stats, u64)>> {
        let slice = self.slice();
        let mut totals: Vec<Option<Total>> = runs.iter().map(|_| None).collect();
        for _ in 0..SLICES {
            for ((_, leg), total) in runs.iter().zip(&mut totals) {
                let measured = match leg {
                    Leg::Floor { pgbench, script } => {
                        let before = self.transactions().await?;
                        let run = pgbench
                            .run(script, connections, slice, self.knobs.cpu, self.postgres)
                            .await?;
                        Total::Floor(run, self.transactions().await? - before)
                    }
                    Leg::Calls {
                        server,
                        token,
                        call,
                    } => {
                        let call = (*call).clone();
                        let raw = self
                            .measure(server, token, call, connections, slice, sample_rss)
                            .await?;
                        Total::Calls(raw)
                    }
                };
                *total = Some(match total.take() {
                    Some(before) => before.and(measured)?,
                    None => measured,
                });
            }
        }
        runs.iter()
            .zip(totals)
            .map(|((label, _), total)| {
                total
                    .ok_or_else(|| anyhow::anyhow!("no slice ran"))?
                    .finish(label)
            })
            .collect()
    }

    /// One slice of an interleaved run: whole seconds, since pgbench's `-T` takes no fraction.
    fn slice(&self) -> Duration {
        Duration::from_secs(self.knobs.run.as_secs().div_ceil(u64::from(SLICES)).max(1))
    }

    /// One load run's raw figures.
    async fn measure(
        &self,
        server: &ServerProcess,
        token: &str,
        call: Call,
        connections: usize,
        duration: Duration,
        sample_rss: bool,
    ) -> anyhow::Result<Raw> {
        let spec = Spec {
            url: server.crm_url().parse()?,
            token: token.to_owned(),
            call,
            connections,
            duration,
        };
        let pid = server.pid();
        let peak = sample_rss.then(|| procfs::PeakRss::start(pid));
        let before = (
            self.postgres.map(|p| p.cpu_seconds()),
            procfs::cpu_seconds(pid),
            procfs::machine_cpu_seconds(),
        );
        let transactions = self.transactions().await?;
        let measured = load::run(spec, self.knobs.cpu).await?;
        let postgres = self
            .postgres
            .zip(before.0)
            .map(|(p, b)| p.cpu_seconds() - b);
        let server_cpu = procfs::cpu_seconds(pid).zip(before.1).map(|(a, b)| a - b);
        let machine_cpu = procfs::machine_cpu_seconds() - before.2;
        let rss = match peak {
            Some(peak) => peak.stop().await,
            None => 0,
        };
        let transactions = self.transactions().await? - transactions;
        Ok(Raw {
            measured,
            postgres,
            server: server_cpu,
            machine: machine_cpu,
            transactions,
            rss,
        })
    }
}

/// Slices each of a set of compared runs is cut into (see [`Bench::interleaved`]).
const SLICES: u32 = 4;

/// pgbench and the transactions the tools run, which the tool calls are measured against.
struct Floors<'a> {
    pgbench: &'a Pgbench,
    search: &'a Script,
    create: &'a Script,
}

impl<'a> Floors<'a> {
    fn leg(&self, script: &'a Script) -> Leg<'a> {
        Leg::Floor {
            pgbench: self.pgbench,
            script,
        }
    }
}

/// One of the runs an interleaved block compares.
enum Leg<'a> {
    /// pgbench running a tool's transaction.
    Floor {
        pgbench: &'a Pgbench,
        script: &'a Script,
    },
    /// MCP tool calls to a server.
    Calls {
        server: &'a ServerProcess,
        token: &'a str,
        call: &'a Call,
    },
}

impl<'a> Leg<'a> {
    fn calls(server: &'a ServerProcess, token: &'a str, call: &'a Call) -> Leg<'a> {
        Leg::Calls {
            server,
            token,
            call,
        }
    }
}

/// What the slices of one leg measured so far.
enum Total {
    /// A pgbench run, and the database transactions it made.
    Floor(pgbench::Run, i64),
    Calls(Raw),
}

impl Total {
    fn and(self, other: Total) -> anyhow::Result<Total> {
        Ok(match (self, other) {
            (Total::Floor(a, at), Total::Floor(b, bt)) => Total::Floor(a.and(b), at + bt),
            (Total::Calls(a), Total::Calls(b)) => Total::Calls(a.and(b)),
            _ => anyhow::bail!("slices of one leg are of one kind"),
        })
    }

    /// The leg's line, printed, and the server's peak RSS (0 for pgbench).
    fn finish(self, label: &str) -> anyhow::Result<(Stats, u64)> {
        match self {
            Total::Floor(run, transactions) => {
                let stats = Stats::from_pgbench(run).with_transactions(transactions);
                stats.print(label, "tps")?;
                Ok((stats, 0))
            }
            Total::Calls(raw) => {
                let rss = raw.rss;
                Ok((raw.finish(label)?, rss))
            }
        }
    }
}

/// The pgbench scripts of the search and the insert transaction.
fn floor_scripts(
    read: &fixtures::Workspace,
    write: &fixtures::Workspace,
) -> anyhow::Result<[Script; 2]> {
    let pattern = hdls::tools::named::search_pattern(Some(QUERY))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .unwrap_or_default();
    let now = SystemClock.now();
    let millis = now.unix_timestamp_nanos() / 1_000_000;
    let call = format!("{c} {millis} {c} owner", c = write.credential);
    Ok([
        pgbench::search(read.id, &pattern, PAGE),
        pgbench::create_account(
            write.id,
            &call,
            &now.format(&time::format_description::well_known::Rfc3339)?,
        ),
    ])
}

/// What one load run (or the sum of a run's slices) measured, before it becomes [`Stats`].
struct Raw {
    measured: load::Measurement,
    postgres: Option<f64>,
    server: Option<f64>,
    machine: f64,
    transactions: i64,
    rss: u64,
}

impl Raw {
    /// The sum of two slices of one run.
    fn and(mut self, other: Raw) -> Raw {
        let add = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a + b);
        self.measured
            .latencies_us
            .extend(other.measured.latencies_us);
        self.measured.failed += other.measured.failed;
        self.measured.first_failure = self.measured.first_failure.or(other.measured.first_failure);
        self.measured.elapsed += other.measured.elapsed;
        self.measured.cpu_seconds += other.measured.cpu_seconds;
        Raw {
            measured: self.measured,
            postgres: add(self.postgres, other.postgres),
            server: add(self.server, other.server),
            machine: self.machine + other.machine,
            transactions: self.transactions + other.transactions,
            rss: self.rss.max(other.rss),
        }
    }

    /// The run's line, printed.
    fn finish(self, label: &str) -> anyhow::Result<Stats> {
        let stats = Stats::from_load(
            self.measured,
            &[("postgres", self.postgres), ("server", self.server)],
            self.machine,
        )
        .with_transactions(self.transactions);
        stats.print(label, "calls/s")?;
        Ok(stats)
    }
}

fn search_call() -> Call {
    Call::tool("search_accounts", json!({ "query": QUERY, "limit": PAGE }))
}

fn filter(op: &str, pattern: &str) -> Value {
    json!({
        "table": "accounts",
        "select": ["id", "name", "domain"],
        "filter": { "column": "name", "op": op, "value": pattern }
    })
}

/// A bare `tools/call`, without `initialize`, works in the server's stateless mode, and the
/// search finds a full page: otherwise the runs would measure something else.
async fn first_call_works(url: &str, key: &str) -> anyhow::Result<()> {
    let reply: Value = reqwest::Client::new()
        .post(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "search_accounts", "arguments": { "query": QUERY, "limit": PAGE } }
        }).to_string())
        .send()
        .await?
        .json()
        .await?;
    let shown = reply["result"]["structuredContent"]["accounts"]
        .as_array()
        .map(Vec::len);
    anyhow::ensure!(
        shown == Some(PAGE as usize) && reply["result"]["structuredContent"]["has_more"] == true,
        "search_accounts did not return a full page: {reply}"
    );
    Ok(())
}
