//! The operator command line against an existing server: setup, migrate, admin workspace/key.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{TestEnv, no_args};

fn hdls(args: &[&str], url: &str) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hdls"))
        .args(args)
        .env("HDLS_DATABASE_URL", url)
        .output()
        .expect("run hdls");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs an hdls command that must fail and asserts that stderr gives `reason`: a bare non-zero
/// exit would also pass on a misspelt subcommand or flag (clap's usage error).
fn hdls_refused(args: &[&str], url: &str, reason: &str) {
    let (ok, stdout, stderr) = hdls(args, url);
    assert!(!ok, "hdls {args:?} succeeded: {stdout}");
    assert!(
        stderr.contains(reason),
        "hdls {args:?} failed for another reason than {reason:?}: {stderr}"
    );
}

fn hdls_json(args: &[&str], url: &str) -> Value {
    let (ok, stdout, stderr) = hdls(args, url);
    assert!(ok, "hdls {args:?} failed: {stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("hdls {args:?} printed non-JSON {stdout:?}: {e}"))
}

#[tokio::test]
async fn setup_and_migrate_are_idempotent() {
    let env = TestEnv::start().await;
    let url = env.db.superuser_url();
    for _ in 0..2 {
        let (ok, _, stderr) = hdls(&["setup"], &url);
        assert!(ok, "setup: {stderr}");
        let (ok, _, stderr) = hdls(&["migrate"], &url);
        assert!(ok, "migrate: {stderr}");
    }
}

#[tokio::test]
async fn setup_refuses_a_non_superuser() {
    let env = TestEnv::start().await;
    let url = env
        .db
        .superuser_url()
        .replace("user=postgres", "user=hdls_runtime");
    let url = if url.contains("user=") {
        url
    } else {
        format!("{url} user=hdls_runtime")
    };
    hdls_refused(&["setup"], &url, "setup must connect as a superuser");
}

#[tokio::test]
async fn admin_workspace_and_key_commands() {
    let env = TestEnv::start().await;
    let url = env.db.superuser_url();
    let created = hdls_json(
        &["admin", "workspace", "create", "--name", "Ops", "--json"],
        &url,
    );
    let workspace_id = created["workspace_id"].as_str().unwrap().to_owned();
    let owner_key = created["owner_key"].as_str().unwrap().to_owned();
    assert!(owner_key.starts_with("hdls_"));

    let who = env
        .client("/api/mcp", &owner_key)
        .await
        .ok("whoami", no_args())
        .await;
    assert_eq!(who["workspace"]["id"], json!(workspace_id));
    assert_eq!(who["workspace"]["name"], "Ops");

    let minted = hdls_json(
        &[
            "admin",
            "key",
            "mint",
            "--workspace",
            &workspace_id,
            "--role",
            "reader",
            "--expires-in",
            "30d",
            "--json",
        ],
        &url,
    );
    let key = minted["key"].as_str().unwrap().to_owned();
    let key_id = minted["key_id"].as_str().unwrap().to_owned();
    assert_eq!(minted["role"], "reader");
    assert!(minted["expires_at"].is_string());
    let reader = env.client("/api/mcp/crm", &key).await;
    assert_eq!(
        reader
            .err_code("create_account", json!({ "name": "x" }))
            .await,
        "forbidden"
    );

    let revoked = hdls_json(&["admin", "key", "revoke", &key_id, "--json"], &url);
    assert_eq!(revoked["revoked"], true);
    // Refused by authentication (401), not by anything else that would fail a connect.
    let status = reqwest::Client::new()
        .post(env.url("/api/mcp"))
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "cli-test", "version": "0" } }
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status,
        reqwest::StatusCode::UNAUTHORIZED,
        "revoked key still works"
    );

    // Refusals: unknown workspace, unknown key, bad role, bad duration.
    let missing = uuid::Uuid::new_v4().to_string();
    hdls_refused(
        &[
            "admin",
            "key",
            "mint",
            "--workspace",
            &missing,
            "--role",
            "reader",
        ],
        &url,
        &format!("no workspace {missing}"),
    );
    hdls_refused(
        &["admin", "key", "revoke", "key_0000000000000000"],
        &url,
        "no API key key_0000000000000000",
    );
    hdls_refused(
        &[
            "admin",
            "key",
            "mint",
            "--workspace",
            &workspace_id,
            "--role",
            "root",
        ],
        &url,
        "invalid value 'root' for '--role",
    );
    hdls_refused(
        &[
            "admin",
            "key",
            "mint",
            "--workspace",
            &workspace_id,
            "--role",
            "reader",
            "--expires-in",
            "soon",
        ],
        &url,
        "expected a duration like 30d",
    );
    hdls_refused(
        &["admin", "workspace", "create", "--name", ""],
        &url,
        "workspace name must be 1 to 200 characters",
    );
}

#[tokio::test]
async fn admin_plan_set_limits_the_workspace() {
    let env = TestEnv::start().await;
    let url = env.db.superuser_url();
    let (ws, key) = env.workspace("planned").await;
    let plan = hdls_json(
        &[
            "admin",
            "plan",
            "set",
            "--workspace",
            &ws.to_string(),
            "--per-minute",
            "2",
            "--monthly",
            "50",
            "--json",
        ],
        &url,
    );
    assert_eq!(plan["per_minute"], 2);
    assert_eq!(plan["monthly_budget"], 50);
    let client = env.client("/api/mcp", &key).await;
    let usage = client.ok("get_usage", no_args()).await;
    assert_eq!(usage["minute"]["limit"], 2);
    assert_eq!(usage["month"]["budget"], 50);
    client.ok("whoami", no_args()).await;
    assert_eq!(client.err_code("whoami", no_args()).await, "rate_limited");

    let unlimited = hdls_json(
        &[
            "admin",
            "plan",
            "set",
            "--workspace",
            &ws.to_string(),
            "--per-minute",
            "100",
            "--unlimited",
            "--json",
        ],
        &url,
    );
    assert_eq!(unlimited["monthly_budget"], Value::Null);
    // Refusals: a zero limit, both budget flags, an unknown workspace.
    hdls_refused(
        &[
            "admin",
            "plan",
            "set",
            "--workspace",
            &ws.to_string(),
            "--per-minute",
            "0",
        ],
        &url,
        "the per-minute limit must be at least 1",
    );
    hdls_refused(
        &[
            "admin",
            "plan",
            "set",
            "--workspace",
            &ws.to_string(),
            "--per-minute",
            "5",
            "--monthly",
            "5",
            "--unlimited",
        ],
        &url,
        "'--monthly <MONTHLY>' cannot be used with '--unlimited'",
    );
    let missing = uuid::Uuid::new_v4().to_string();
    hdls_refused(
        &[
            "admin",
            "plan",
            "set",
            "--workspace",
            &missing,
            "--per-minute",
            "5",
        ],
        &url,
        &format!("no workspace {missing}"),
    );
}

#[tokio::test]
async fn serve_refuses_a_database_that_was_never_set_up() {
    let env = TestEnv::start().await;
    let su = env.db.connect_superuser().await;
    let name = format!(
        "hdls_t_{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    su.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = env.db.superuser_url().replace(
        &format!("dbname={}", env.db.name),
        &format!("dbname={name}"),
    );
    let dir = std::env::temp_dir().join(format!("hdls-unset-{}", uuid::Uuid::new_v4().simple()));
    let output = Command::new(env!("CARGO_BIN_EXE_hdls"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("HDLS_DATABASE_URL", &url)
        .output()
        .expect("run hdls serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "serve started on an empty database"
    );
    assert!(stderr.contains("hdls migrate"), "{stderr}");
    su.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn operators_add_people_reset_passwords_and_rotate_signing_keys() {
    let env = TestEnv::start().await;
    let url = env.db.superuser_url();
    let (ws, _) = env.workspace("Ops").await;
    let ws = ws.to_string();
    let added = hdls_json(
        &[
            "admin",
            "member",
            "add",
            "--workspace",
            &ws,
            "--email",
            "Ops@Example.com",
            "--role",
            "admin",
            "--public-url",
            &env.base_url,
            "--json",
        ],
        &url,
    );
    assert_eq!(added["role"], "admin");
    let link = added["set_password_link"]
        .as_str()
        .expect("a person with no password gets a link")
        .to_owned();
    assert!(
        link.starts_with(&format!("{}/account/set-password?token=pwl_", env.base_url)),
        "{link}"
    );
    assert_eq!(
        reqwest::get(&link).await.unwrap().status(),
        reqwest::StatusCode::OK
    );
    let reset = hdls_json(
        &[
            "admin",
            "person",
            "password-link",
            "--email",
            "ops@example.com",
            "--public-url",
            &env.base_url,
            "--json",
        ],
        &url,
    );
    let reset_link = reset["set_password_link"].as_str().unwrap();
    assert_ne!(reset_link, link);
    assert_eq!(
        reqwest::get(reset_link).await.unwrap().status(),
        reqwest::StatusCode::OK
    );
    hdls_refused(
        &[
            "admin",
            "person",
            "password-link",
            "--email",
            "nobody@example.com",
        ],
        &url,
        "nobody signs in as",
    );

    // Rotation seals the new key under the data dir's master key.
    let dir = std::env::temp_dir().join(format!("hdls-cli-{}", uuid::Uuid::new_v4().simple()));
    let rotated = hdls_json(
        &[
            "admin",
            "oauth",
            "rotate-signing-key",
            "--json",
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &url,
    );
    let kid = rotated["kid"].as_str().unwrap();
    let jwks: Value = reqwest::get(env.url("/oauth/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(jwks.to_string().contains(kid), "{jwks}");
    let _ = std::fs::remove_dir_all(&dir);
}
