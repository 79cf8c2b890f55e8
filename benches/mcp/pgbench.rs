//! The floor a tool call is measured against: `pgbench -M prepared` running, as
//! `hdls_runtime`, the transaction the tool itself runs (its statement, taken from the
//! product code, with the tool's parameters), one client thread pinned to one CPU.

use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use crate::procfs::{self, Postgres};

/// One pgbench script: its SQL, and the values of its `:variables` (passed with `-D`, so
/// under `-M prepared` they reach the server as bind parameters, as the tool's do).
pub struct Script {
    pub name: &'static str,
    pub sql: String,
    pub variables: Vec<(&'static str, String)>,
}

/// `statement` with each `$n` replaced by `values[n - 1]`. pgbench has no NULL bind value
/// (a NULL variable is sent as the text "NULL"), so the tool's NULL parameters are written
/// as the literal NULL; the rest become `:variables`.
fn bind(statement: &str, values: &[&str]) -> String {
    let mut sql = statement.to_owned();
    // Highest first, so `$1` never eats the front of `$10`.
    for (i, value) in values.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", i + 1), value);
    }
    sql
}

/// The transaction `search_accounts` runs for an agent: the Scope's stamps, then
/// `SEARCH_HEAD_SQL` (which fills the page for this query, so the whole search does not run)
/// on its generic plan, as the tool runs it (`Scope::query_generic`), with the pattern the
/// tool makes of `query`, a first page's start position ('' and the nil uuid, see
/// `named::after_or_start`), `limit + 1` rows.
pub fn search(workspace: Uuid, pattern: &str, limit: i64) -> Script {
    // `$5`: the workspace, which the statement names so Citus routes it to one shard.
    let named = format!("'{workspace}'::uuid");
    let statement = bind(
        hdls::products::crm::SEARCH_HEAD_SQL,
        &[
            ":pattern",
            "''",
            "'00000000-0000-0000-0000-000000000000'::uuid",
            ":rows",
            &named,
        ],
    );
    Script {
        name: "search",
        sql: format!(
            "BEGIN;\n\
             SET LOCAL hdls.workspace_id = '{workspace}';\n\
             SET LOCAL hdls.persona = 'agent';\n\
             SET LOCAL plan_cache_mode = force_generic_plan;\n\
             {statement};\n\
             SET LOCAL plan_cache_mode TO DEFAULT;\n\
             COMMIT;\n"
        ),
        variables: vec![
            ("pattern", pattern.to_owned()),
            ("rows", (limit + 1).to_string()),
        ],
    }
}

/// The transaction `create_account {"name": …}` runs: the Scope's stamps (including the
/// call's credential, time, author and role, which the change-event trigger reads), then
/// `INSERT_SQL`. The tool makes the id (a uuid v7) itself; pgbench cannot make a uuid, so
/// the server does (`gen_random_uuid()`).
pub fn create_account(workspace: Uuid, call: &str, now: &str) -> Script {
    let statement = bind(
        hdls::products::crm::INSERT_SQL,
        &[
            "gen_random_uuid()",
            ":name",
            "NULL",
            "NULL",
            "NULL",
            ":tags",
            ":custom",
            ":now",
        ],
    );
    Script {
        name: "create_account",
        sql: format!(
            "\\set name random(1, 1000000000)\n\
             BEGIN;\n\
             SET LOCAL hdls.workspace_id = '{workspace}';\n\
             SET LOCAL hdls.persona = 'agent';\n\
             SET LOCAL hdls.call = '{call}';\n\
             {statement};\n\
             COMMIT;\n"
        ),
        variables: vec![
            ("tags", "{}".to_owned()),
            ("custom", "{}".to_owned()),
            ("now", now.to_owned()),
        ],
    }
}

/// What one pgbench run measured.
pub struct Run {
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    /// Each transaction's latency in microseconds (from pgbench's per-transaction log).
    pub latencies_us: Vec<u32>,
    /// CPU seconds of pgbench itself and of PostgreSQL during the run.
    pub pgbench_cpu: f64,
    pub postgres_cpu: Option<f64>,
    /// CPU seconds of the whole machine during the run, and the run's wall time.
    pub machine_cpu: f64,
    pub wall: Duration,
}

impl Run {
    /// Two runs of the same script as one (the slices of an interleaved run): their
    /// transactions over the time each measured (pgbench's tps leaves out connecting).
    pub fn and(mut self, other: Run) -> Run {
        let measured = |run: &Run| {
            if run.tps > 0.0 {
                run.transactions as f64 / run.tps
            } else {
                run.wall.as_secs_f64()
            }
        };
        let seconds = measured(&self) + measured(&other);
        let transactions = self.transactions + other.transactions;
        self.latencies_us.extend(other.latencies_us);
        Run {
            tps: transactions as f64 / seconds.max(f64::MIN_POSITIVE),
            transactions,
            failed: self.failed + other.failed,
            latencies_us: self.latencies_us,
            pgbench_cpu: self.pgbench_cpu + other.pgbench_cpu,
            postgres_cpu: self
                .postgres_cpu
                .zip(other.postgres_cpu)
                .map(|(a, b)| a + b),
            machine_cpu: self.machine_cpu + other.machine_cpu,
            wall: self.wall + other.wall,
        }
    }
}

/// Runs pgbench against one database.
pub struct Pgbench {
    program: PathBuf,
    taskset: PathBuf,
    /// A libpq connection string for `hdls_runtime`.
    conninfo: String,
    dir: PathBuf,
}

impl Pgbench {
    /// Finds pgbench beside the server binaries, and taskset (util-linux) on PATH.
    pub fn locate(conninfo: String, dir: &Path) -> anyhow::Result<Pgbench> {
        let bins = hdls::db::embedded::PgBinaries::locate()?;
        let program = bins.bindir.join("pgbench");
        anyhow::ensure!(
            program.is_file(),
            "no pgbench in {} (it ships with the PostgreSQL server packages)",
            bins.bindir.display()
        );
        let taskset = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join("taskset"))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow::anyhow!("no taskset on PATH (apt-get install util-linux)"))?;
        std::fs::create_dir_all(dir)?;
        Ok(Pgbench {
            program,
            taskset,
            conninfo,
            dir: dir.to_owned(),
        })
    }

    /// `clients` connections on one pgbench thread pinned to `cpu`, for `duration`.
    pub async fn run(
        &self,
        script: &Script,
        clients: usize,
        duration: Duration,
        cpu: usize,
        postgres: Option<Postgres>,
    ) -> anyhow::Result<Run> {
        let file = self.dir.join(format!("{}.sql", script.name));
        std::fs::write(&file, &script.sql)?;
        let logs = self.dir.join(format!("{}-{clients}", script.name));
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs)?;
        let mut command = tokio::process::Command::new(&self.taskset);
        command
            .arg("-c")
            .arg(cpu.to_string())
            .arg(&self.program)
            .args(["-n", "-M", "prepared", "-j", "1", "-c"])
            .arg(clients.to_string())
            .arg("-T")
            .arg(duration.as_secs().max(1).to_string())
            .arg("-f")
            .arg(&file)
            .arg("-l")
            .arg(format!("--log-prefix={}", logs.join("tx").display()));
        for (name, value) in &script.variables {
            command.arg("-D").arg(format!("{name}={value}"));
        }
        command.arg(&self.conninfo);
        if let Some(password) = hdls::db::role_password(hdls::db::RUNTIME_ROLE) {
            command.env("PGPASSWORD", password);
        }
        let started = std::time::Instant::now();
        let cpu_before = (
            procfs::reaped_children_cpu_seconds(),
            postgres.map(|p| p.cpu_seconds()),
            procfs::machine_cpu_seconds(),
        );
        let output = command.output().await?;
        let pgbench_cpu = procfs::reaped_children_cpu_seconds() - cpu_before.0;
        let postgres_cpu = postgres.zip(cpu_before.1).map(|(p, b)| p.cpu_seconds() - b);
        let machine_cpu = procfs::machine_cpu_seconds() - cpu_before.2;
        let wall = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "pgbench {} failed ({}):\n{stdout}\n{}",
            script.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let latencies_us = read_logs(&logs)?;
        let _ = std::fs::remove_dir_all(&logs);
        Ok(Run {
            tps: figure(&stdout, "tps = ")
                .ok_or_else(|| anyhow::anyhow!("no tps in:\n{stdout}"))?,
            transactions: figure(&stdout, "number of transactions actually processed: ")
                .unwrap_or(0.0) as u64,
            failed: figure(&stdout, "number of failed transactions: ").unwrap_or(0.0) as u64,
            latencies_us,
            pgbench_cpu,
            postgres_cpu,
            machine_cpu,
            wall,
        })
    }
}

/// The number after `label` on the line that starts with it.
fn figure(output: &str, label: &str) -> Option<f64> {
    let rest = output.lines().find_map(|l| l.strip_prefix(label))?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Latencies from pgbench's per-transaction logs: `client tx latency_us script epoch us`.
fn read_logs(dir: &Path) -> anyhow::Result<Vec<u32>> {
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        latencies.extend(
            text.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok()),
        );
    }
    Ok(latencies)
}
