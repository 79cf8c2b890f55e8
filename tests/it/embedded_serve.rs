//! The embedded default end to end: `hdls serve` on an empty data dir, a real MCP call, a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Mcp, no_args};

struct Serve {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Everything the server logged, to check that no credential ever appears there.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// What `hdls serve` printed on start.
struct Banner {
    url: String,
    key: Option<String>,
    link: Option<String>,
    /// Every line read, in order.
    lines: Vec<String>,
}

impl Serve {
    fn start(data_dir: &std::path::Path) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hdls"));
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        Self::spawn(command)
    }

    /// `hdls serve` run from `dir` with the default data directory, as the README has it
    /// (only the port differs, so that tests can run side by side).
    fn start_in(dir: &std::path::Path) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hdls"));
        command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(dir)
            .env_remove("HDLS_DATA_DIR");
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Serve {
        // The tests talk to the child with reqwest, which needs a TLS provider installed.
        hdls::net::fetch::install_tls_provider();
        let mut child = command
            .env_remove("HDLS_DATABASE_URL")
            .stdout(Stdio::piped())
            .env("HDLS_LOG", "hdls=debug,info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hdls serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        Serve { child, lines, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 30 s for `needle` to reach the captured log (the reader thread may lag).
    fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.log().contains(needle) && std::time::Instant::now() < deadline {
            // Polling for a condition with a bound, not a sleep that guesses a duration.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads printed lines until the concierge URL appears (and, on first start, the key and
    /// the owner's set-password link).
    fn read_banner(&self) -> Banner {
        let mut url = None;
        let mut key = None;
        let mut link = None;
        let mut lines = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| {
                    panic!(
                        "hdls serve printed no banner:\n{}\n{}",
                        lines.join("\n"),
                        self.log()
                    )
                });
            lines.push(line.clone());
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("concierge") {
                url = Some(rest.trim().to_owned());
            }
            if trimmed.starts_with("hdls_") {
                key = Some(trimmed.to_owned());
            }
            if let (true, Some(url)) = (trimmed.starts_with("data"), url.clone()) {
                // The demo block follows immediately on first start; give it a moment via the channel.
                while let Ok(more) = self.lines.recv_timeout(Duration::from_secs(3)) {
                    lines.push(more.clone());
                    if more.trim().starts_with("hdls_") {
                        key = Some(more.trim().to_owned());
                    }
                    if more.contains("/account/set-password?token=") {
                        link = Some(more.trim().to_owned());
                        break;
                    }
                }
                return Banner {
                    url,
                    key,
                    link,
                    lines,
                };
            }
        }
    }

    fn interrupt_and_wait(mut self) {
        // SAFETY: sending SIGINT (Ctrl-C) to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "hdls serve exited with {status}");
    }
}

impl Drop for Serve {
    /// A failing test must not leave a server and its private cluster running: Ctrl-C it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: sending SIGINT (Ctrl-C) to our own child.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGINT);
            }
            let _ = self.child.wait();
        }
    }
}

fn admin(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hdls"))
        .arg("admin")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("HDLS_DATABASE_URL")
        .output()
        .expect("run hdls admin");
    assert!(
        output.status.success(),
        "hdls admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("admin --json output")
}

#[tokio::test]
async fn serve_on_an_empty_data_dir_then_restart() {
    // An empty data dir that does not exist yet: serve creates it.
    let dir = std::env::temp_dir().join(format!("hdls-serve-{}", uuid::Uuid::new_v4().simple()));

    let first = Serve::start(&dir);
    let Banner { url, key, link, .. } = first.read_banner();
    let key = key.expect("first start prints a one-time owner key");
    let link = link.expect("first start prints the owner's set-password link");
    let page = reqwest::get(&link).await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    assert!(page.text().await.unwrap().contains("owner@localhost"));
    let meta = std::fs::metadata(dir.join("master.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "master key must be 0600"
    );

    let concierge = Mcp::connect(&url, &key).await;
    let who = concierge.ok("whoami", no_args()).await;
    assert_eq!(who["workspace"]["name"], "demo");
    assert_eq!(who["role"], "owner");
    let crm = Mcp::connect(&format!("{url}/crm"), &key).await;
    crm.ok(
        "create_account",
        json!({ "name": "Acme Robotics", "domain": "acme.example" }),
    )
    .await;
    drop(crm);
    drop(concierge);
    // A refused credential is logged as refused, never printed.
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("{}{last}", &key[..key.len() - 1]);
    assert!(Mcp::try_connect(&url, &wrong).await.is_err());
    // The log is read from the child's stderr by another thread: wait (bounded) until the
    // refusal's line has arrived, rather than reading whatever has arrived so far.
    first.wait_for_log("credential refused");
    let log = first.log();
    first.interrupt_and_wait();
    assert!(
        log.contains("credential refused"),
        "debug logging was not captured:\n{log}"
    );
    let secret = key.rsplit('_').next().unwrap();
    assert!(
        !log.contains(secret) && !log.contains(&wrong[wrong.len() - 20..]),
        "a key appeared in the server log"
    );
    let link_token = link.rsplit('=').next().unwrap();
    assert!(
        !log.contains(link_token),
        "the set-password link appeared in the server log"
    );
    // Ctrl-C stopped the private cluster too.
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "the embedded PostgreSQL is still running"
    );

    // With serve stopped, an admin command starts the cluster, works, and stops it again.
    let demo_id = who["workspace"]["id"].as_str().unwrap().to_owned();
    let minted = admin(
        &dir,
        &[
            "key",
            "mint",
            "--workspace",
            &demo_id,
            "--role",
            "reader",
            "--json",
        ],
    );
    let reader_key = minted["key"].as_str().unwrap().to_owned();
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "admin left the embedded PostgreSQL running"
    );

    let second = Serve::start(&dir);
    let Banner {
        url,
        key: key_again,
        link: link_again,
        ..
    } = second.read_banner();
    assert!(
        key_again.is_none() && link_again.is_none(),
        "the owner key or link was printed a second time"
    );
    let crm = Mcp::connect(&format!("{url}/crm"), &key).await;
    let found = crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
    drop(crm);
    let reader = Mcp::connect(&url, &reader_key)
        .await
        .ok("whoami", no_args())
        .await;
    assert_eq!(reader["role"], "reader");
    second.interrupt_and_wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Removes directories when a test ends, passed or failed (after the servers it outlives).
struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A newcomer as root on a fresh server: the checkout is in root's home, mode 0700, which the
/// `postgres` user running the embedded cluster cannot traverse. `hdls serve` as the README
/// has it works without a chmod: hdls's own files stay in ./.hdls, the cluster goes to a
/// directory `postgres` can reach, linked from ./.hdls and named on the banner; a restart
/// finds it again, and a data directory that lost its link refuses to adopt it silently.
#[tokio::test]
async fn serve_as_root_from_a_private_home_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: only root runs the embedded cluster as another user");
        return;
    }
    let home = std::env::temp_dir().join(format!("hdls-home-{}", uuid::Uuid::new_v4().simple()));
    let checkout = home.join("hdls");
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = checkout.join(".hdls");
    // Where the cluster must go, known before the start so that a failed test cleans it up.
    let cluster = hdls::db::embedded::system_cluster_dir(
        &std::fs::canonicalize(&checkout).unwrap().join(".hdls"),
    );
    let _cleanup = RemoveOnDrop(vec![home.clone(), cluster.clone()]);

    let first = Serve::start_in(&checkout);
    let banner = first.read_banner();
    let key = banner
        .key
        .clone()
        .expect("first start prints a one-time owner key");
    let crm = Mcp::connect(&format!("{}/crm", banner.url), &key).await;
    crm.ok("create_account", json!({ "name": "Home Grown" }))
        .await;
    drop(crm);
    first.interrupt_and_wait();

    // Nobody loosened the home directory; hdls's own files are where the README says.
    assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
    let key_file = std::fs::metadata(data.join("master.key")).expect("./.hdls/master.key");
    assert_eq!(key_file.mode() & 0o777, 0o600);
    // The cluster is in the system directory, owned by postgres, linked from ./.hdls, and the
    // banner said where.
    assert!(
        cluster.starts_with(hdls::db::embedded::SYSTEM_CLUSTERS),
        "{}",
        cluster.display()
    );
    assert_eq!(std::fs::read_link(data.join("cluster")).unwrap(), cluster);
    let pgdata = std::fs::metadata(cluster.join("pgdata")).unwrap();
    assert_ne!(
        pgdata.uid(),
        0,
        "the cluster's data must belong to the postgres user"
    );
    assert!(
        banner
            .lines
            .iter()
            .any(|l| l.trim().starts_with("postgres") && l.contains(&*cluster.to_string_lossy())),
        "the banner does not say where the cluster lives:\n{}",
        banner.lines.join("\n")
    );
    assert!(
        !cluster.join("pgdata/postmaster.pid").exists(),
        "Ctrl-C left the embedded PostgreSQL running"
    );

    // A restart follows the link to the same database.
    let second = Serve::start_in(&checkout);
    let again = second.read_banner();
    assert!(
        again.key.is_none(),
        "the owner key was printed a second time"
    );
    let crm = Mcp::connect(&format!("{}/crm", again.url), &key).await;
    let found = crm
        .ok("search_accounts", json!({ "query": "Home Grown" }))
        .await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
    drop(crm);
    second.interrupt_and_wait();

    // Without ./.hdls (and so without the master key the database's secrets are sealed
    // under), the old cluster is not adopted: serve says where it is and what to do.
    std::fs::remove_dir_all(&data).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_hdls"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(&checkout)
        .env_remove("HDLS_DATABASE_URL")
        .env_remove("HDLS_DATA_DIR")
        .output()
        .expect("run hdls serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "serve adopted an unlinked cluster"
    );
    assert!(
        stderr.contains(&*cluster.to_string_lossy()) && stderr.contains("no longer links to it"),
        "{stderr}"
    );
}
