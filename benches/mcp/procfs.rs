//! What the processes of a run cost, read from /proc: resident memory of the server, and the
//! CPU time of PostgreSQL, the server and the load generator, so a report can say where a
//! call's time goes and not only how many calls there were.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A process's resident set size in bytes (`VmRSS`), if it is still running.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Samples a process's RSS every 100 ms until stopped; keeps the highest value.
pub struct PeakRss {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    pub fn start(pid: u32) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or(0)));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        PeakRss { stop, peak, task }
    }

    /// The highest RSS seen, in bytes.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// `/proc/<pid>/stat` fields after the command name: (ppid, own CPU s, reaped children's CPU s).
fn stat(pid: u32) -> Option<(u32, f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let ticks = clock_ticks();
    Some((
        fields.get(1)?.parse().ok()?,
        (field(14)? + field(15)?) / ticks,
        (field(16)? + field(17)?) / ticks,
    ))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds a running process has used (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat(pid).map(|(_, own, _)| own)
}

/// The PostgreSQL server the benchmark runs against, when it runs on this machine.
#[derive(Clone, Copy)]
pub struct Postgres {
    postmaster: u32,
}

impl Postgres {
    /// Finds the postmaster from `postmaster.pid` in the data directory (readable when the
    /// server is local and we may read its files: the private cluster, as root).
    pub async fn find(superuser: &tokio_postgres::Client) -> Option<Postgres> {
        let row = superuser.query_one("SHOW data_directory", &[]).await.ok()?;
        let dir: String = row.get(0);
        let pid_file = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid")).ok()?;
        let postmaster = pid_file.lines().next()?.trim().parse().ok()?;
        stat(postmaster).map(|_| Postgres { postmaster })
    }

    /// CPU seconds used by the whole server: the postmaster, its live backends and helpers,
    /// and the ones that exited (the postmaster reaps them, so their time is in its
    /// children's total). A difference of two readings is what a run cost PostgreSQL.
    pub fn cpu_seconds(&self) -> f64 {
        // A backend reaped while /proc is scanned would be counted in neither total (or in
        // both): scan again until the postmaster reaped nothing meanwhile.
        let mut total = 0.0;
        for _ in 0..10 {
            let Some((_, own, reaped)) = stat(self.postmaster) else {
                return 0.0;
            };
            let live = self.live_children_cpu_seconds();
            total = own + reaped + live;
            if stat(self.postmaster).is_some_and(|(_, _, after)| after == reaped) {
                break;
            }
        }
        total
    }

    fn live_children_cpu_seconds(&self) -> f64 {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(stat)
            .filter(|(ppid, _, _)| *ppid == self.postmaster)
            .map(|(_, own, _)| own)
            .sum()
    }
}

/// CPU seconds every process on the machine has used since boot (`/proc/stat`: all but idle
/// and iowait). Less what a run's own processes used, it says how busy the rest of the
/// machine kept the CPUs during the run: the noise in its figures.
pub fn machine_cpu_seconds() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<f64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (ticks.iter().take(8).sum::<f64>() - idle) / clock_ticks()
}

/// CPU seconds of this thread (the load generator runs on one thread).
pub fn thread_cpu_seconds() -> f64 {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU seconds of this process's children that have exited and been waited for (pgbench).
pub fn reaped_children_cpu_seconds() -> f64 {
    rusage(libc::RUSAGE_CHILDREN)
}

fn rusage(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain data; getrusage writes only into it.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Pins the calling thread (and threads and processes it starts later) to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data, CPU_SET writes inside it, and sched_setaffinity with
    // pid 0 reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU load generators are pinned to: CPU 1, or CPU 0 on a one-CPU machine.
pub fn load_cpu() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get().min(2) - 1)
}
