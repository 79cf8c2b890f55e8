//! What the benchmark prints: one line per run as it finishes, then every figure against its
//! limit from issue 15 (a ratio, and OK or MISS).

use crate::load::{self, Measurement};
use crate::pgbench;

/// More failed calls than this share fails the benchmark: its figures would mean nothing.
const MAX_FAILED: f64 = 0.01;

/// One run's figures.
pub struct Stats {
    /// Successful calls (or transactions) per second.
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ok: u64,
    pub failed: u64,
    pub first_failure: Option<String>,
    /// CPU milliseconds per successful call, by process.
    pub cpu_ms: Vec<(&'static str, f64)>,
    /// Database transactions per successful call (from the database's statistics).
    pub transactions_per_call: Option<f64>,
    /// CPUs kept busy during the run by everything not measured above: other processes, and
    /// kernel work charged to no process. Well above zero means the figures are noisy.
    pub others_cores: f64,
}

impl Stats {
    /// From a load-generator run; `cpu` is each measured process's CPU seconds in the run,
    /// `machine_cpu` the whole machine's.
    pub fn from_load(
        mut m: Measurement,
        cpu: &[(&'static str, Option<f64>)],
        machine_cpu: f64,
    ) -> Stats {
        let ok = m.ok();
        let own: f64 = cpu.iter().filter_map(|(_, s)| *s).sum::<f64>() + m.cpu_seconds;
        let others_cores = (machine_cpu - own).max(0.0) / m.elapsed.as_secs_f64();
        let per_call = |seconds: f64| seconds * 1e3 / ok.max(1) as f64;
        let mut cpu_ms: Vec<_> = cpu
            .iter()
            .filter_map(|(name, s)| Some((*name, per_call((*s)?))))
            .collect();
        cpu_ms.push(("load generator", per_call(m.cpu_seconds)));
        Stats {
            rate: ok as f64 / m.elapsed.as_secs_f64(),
            p50_ms: load::percentile_ms(&mut m.latencies_us, 0.50),
            p99_ms: load::percentile_ms(&mut m.latencies_us, 0.99),
            ok,
            failed: m.failed,
            first_failure: m.first_failure,
            cpu_ms,
            transactions_per_call: None,
            others_cores,
        }
    }

    pub fn from_pgbench(mut run: pgbench::Run) -> Stats {
        let per_tx = |seconds: f64| seconds * 1e3 / run.transactions.max(1) as f64;
        let mut cpu_ms = Vec::new();
        if let Some(s) = run.postgres_cpu {
            cpu_ms.push(("postgres", per_tx(s)));
        }
        cpu_ms.push(("pgbench", per_tx(run.pgbench_cpu)));
        let own = run.pgbench_cpu + run.postgres_cpu.unwrap_or(0.0);
        let others_cores = (run.machine_cpu - own).max(0.0) / run.wall.as_secs_f64();
        Stats {
            rate: run.tps,
            p50_ms: load::percentile_ms(&mut run.latencies_us, 0.50),
            p99_ms: load::percentile_ms(&mut run.latencies_us, 0.99),
            ok: run.transactions,
            failed: run.failed,
            first_failure: None,
            cpu_ms,
            transactions_per_call: None,
            others_cores,
        }
    }

    /// With the number of database transactions the run made.
    pub fn with_transactions(self, transactions: i64) -> Stats {
        Stats {
            transactions_per_call: Some(transactions as f64 / self.ok.max(1) as f64),
            ..self
        }
    }

    /// Prints the run's line, and fails if too many calls failed.
    pub fn print(&self, label: &str, unit: &str) -> anyhow::Result<()> {
        let cpu: Vec<String> = self
            .cpu_ms
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.3}"))
            .collect();
        println!(
            "  {label:<34} {:>8} {unit:<7} p50 {:>6.2} ms  p99 {:>6.2} ms  {:>7} ok {:>4} failed   db tx/call {:.1}  CPU ms/call: {}; rest of machine {:.2} CPUs",
            thousands(self.rate),
            self.p50_ms,
            self.p99_ms,
            thousands(self.ok as f64),
            self.failed,
            self.transactions_per_call.unwrap_or(f64::NAN),
            cpu.join(", "),
            self.others_cores,
        );
        let share = self.failed as f64 / (self.ok + self.failed).max(1) as f64;
        anyhow::ensure!(
            share <= MAX_FAILED,
            "{label}: {} of {} calls failed ({:.1}%); first: {}",
            self.failed,
            self.ok + self.failed,
            share * 100.0,
            self.first_failure
                .as_deref()
                .unwrap_or("(pgbench: see its output)")
        );
        Ok(())
    }
}

/// The closing table: each figure against its limit.
#[derive(Default)]
pub struct Targets {
    lines: Vec<String>,
}

impl Targets {
    /// A rate as a multiple of a reference rate, against a least multiple.
    pub fn ratio(&mut self, what: &str, value: &Stats, unit: &str, of: (&str, &Stats), least: f64) {
        let ratio = value.rate / of.1.rate;
        // Shown rounded down, so a ratio just under its limit never reads as meeting it.
        let shown = (ratio * 100.0).floor() / 100.0;
        self.lines.push(format!(
            "{what}: {} {unit} = {shown:.2}× {} ({}); target ≥{least}× — {}   (p50 {:.2} ms, p99 {:.2} ms)",
            thousands(value.rate),
            of.0,
            thousands(of.1.rate),
            verdict(ratio >= least),
            value.p50_ms,
            value.p99_ms,
        ));
    }

    /// A figure against the most it may be.
    pub fn at_most(&mut self, what: &str, value: f64, unit: &str, most: f64) {
        self.lines.push(format!(
            "{what}: {value:.2} {unit} = {:.2}× the limit; target ≤{most} {unit} — {}",
            value / most,
            verdict(value <= most),
        ));
    }

    /// A figure shown against a reference, with no numeric limit to meet.
    pub fn note(&mut self, line: String) {
        self.lines.push(line);
    }

    pub fn print(&self) {
        println!();
        println!("Against issue 15's targets:");
        for line in &self.lines {
            println!("  {line}");
        }
        let missed = self.lines.iter().filter(|l| l.contains("— MISS")).count();
        let met = self.lines.iter().filter(|l| l.contains("— OK")).count();
        println!("  {met} met, {missed} missed");
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "OK" } else { "MISS" }
}

/// 14,200 for 14200.4.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 45.3 MB.
pub fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
