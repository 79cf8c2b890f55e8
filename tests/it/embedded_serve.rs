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

impl Serve {
    fn start(data_dir: &std::path::Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hdls"))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
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

    /// Reads printed lines until the concierge URL appears (and, on first start, the key and
    /// the owner's set-password link).
    fn read_banner(&self) -> (String, Option<String>, Option<String>) {
        let mut url = None;
        let mut key = None;
        let mut link = None;
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .expect("hdls serve printed its banner");
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
                    if more.trim().starts_with("hdls_") {
                        key = Some(more.trim().to_owned());
                    }
                    if more.contains("/account/set-password?token=") {
                        link = Some(more.trim().to_owned());
                        break;
                    }
                }
                return (url, key, link);
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
    let (url, key, link) = first.read_banner();
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
    let (url, key_again, link_again) = second.read_banner();
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
