//! The embedded default end to end: `hdls serve` on an empty data dir, a real MCP call, a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Mcp, no_args};

struct Serve {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    fn start(data_dir: &std::path::Path) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hdls"))
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("HDLS_DATABASE_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        Serve { child, lines }
    }

    /// Reads printed lines until the concierge URL appears (and, on first start, the key).
    fn read_banner(&self) -> (String, Option<String>) {
        let mut url = None;
        let mut key = None;
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
            if trimmed.starts_with("data") && url.is_some() {
                // The demo block follows immediately on first start; give it a moment via the channel.
                while let Ok(more) = self.lines.recv_timeout(Duration::from_secs(3)) {
                    if more.trim().starts_with("hdls_") {
                        key = Some(more.trim().to_owned());
                    }
                    if more.contains("Authorization: Bearer") {
                        break;
                    }
                }
                return (url.unwrap(), key);
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

#[tokio::test]
async fn serve_on_an_empty_data_dir_then_restart() {
    let dir = std::env::temp_dir().join(format!("hdls-serve-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();

    let first = Serve::start(&dir);
    let (url, key) = first.read_banner();
    let key = key.expect("first start prints a one-time owner key");
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
    first.interrupt_and_wait();
    // Ctrl-C stopped the private cluster too.
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "the embedded PostgreSQL is still running"
    );

    let second = Serve::start(&dir);
    let (url, key_again) = second.read_banner();
    assert!(
        key_again.is_none(),
        "the owner key was printed a second time"
    );
    let crm = Mcp::connect(&format!("{url}/crm"), &key).await;
    let found = crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
    drop(crm);
    second.interrupt_and_wait();
    let _ = std::fs::remove_dir_all(&dir);
}
