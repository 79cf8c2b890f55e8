//! The OAuth sign-in and consent pages in a real headless browser (Chromium driven by the pinned
//! playwright-core in tests/interop/browser): a person signs in, picks a workspace and products,
//! approves or denies, and the client gets a code (exchanged for a working token) or an error.
//! The page elements are the contract in docs/oauth-pages.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hdls::identity::Role;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::harness::TestEnv;

const CHROMIUM: &str = "/usr/bin/chromium";
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const EMAIL: &str = "pat@browser.example";
const PASSWORD: &str = "correct horse battery staple";

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The script's directory once Node.js, Chromium and playwright-core are there; None to skip
/// (allowed only outside CI). Done once for all the browser tests (this module's and the
/// portal's).
pub fn browser_dir() -> Option<&'static Path> {
    static READY: OnceLock<Option<PathBuf>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/browser");
            if !have("node") || !have("npm") {
                assert!(!in_ci(), "CI must have Node.js for the browser test");
                eprintln!("skipping: Node.js is not installed");
                return None;
            }
            if !Path::new(CHROMIUM).exists() {
                // SAFETY: geteuid has no preconditions.
                if in_ci() && unsafe { libc::geteuid() } == 0 {
                    let installed = Command::new("sh")
                        .args([
                            "-c",
                            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium",
                        ])
                        .status()
                        .expect("run apt-get");
                    assert!(installed.success(), "apt-get install chromium failed");
                }
                if !Path::new(CHROMIUM).exists() {
                    assert!(!in_ci(), "CI must have {CHROMIUM} for the browser test");
                    eprintln!("skipping: {CHROMIUM} is not installed");
                    return None;
                }
            }
            crate::harness::npm_ci_once(&dir, "playwright-core");
            Some(dir)
        })
        .as_deref()
}

/// What the client got back after the person answered the consent page.
struct Answered {
    env: TestEnv,
    client_id: String,
    verifier: String,
    /// The URL the browser was sent back to.
    redirect: Url,
    /// Everything the script printed.
    stdout: String,
}

impl Answered {
    fn param(&self, name: &str) -> Option<String> {
        self.redirect
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

async fn post_form(url: &str, pairs: &[(&str, &str)]) -> (reqwest::StatusCode, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("POST {url} answered {status} with non-JSON ({e}): {text}"));
    (status, json)
}

/// A client registers dynamically and sends a person's browser to the authorization endpoint; the
/// person (a member of two workspaces) signs in, picks "Browser Co" and the CRM, and answers
/// `decision`. None when the test is skipped.
async fn sign_in_and_answer(decision: &str, screenshot: Option<&Path>) -> Option<Answered> {
    let dir = browser_dir()?;
    let env = TestEnv::start().await;

    // Two memberships, so picking the workspace by name matters.
    let (other, _) = env.workspace("Another Co").await;
    let (workspace, owner_key) = env.workspace("Browser Co").await;
    let concierge = env.client("/api/mcp", &owner_key).await;
    concierge
        .ok("install_product", json!({ "product": "crm" }))
        .await;
    env.client("/api/mcp/crm", &owner_key)
        .await
        .ok("create_account", json!({ "name": "Browser Account" }))
        .await;
    env.person(other, EMAIL, PASSWORD, Role::Member).await;
    env.person(workspace, EMAIL, PASSWORD, Role::Member).await;

    // Dynamic client registration (RFC 7591).
    let client_id =
        crate::oauth_support::register_named(&env, "Browser Test Client", REDIRECT_URI).await;

    // PKCE S256: 64 unreserved characters, and base64url(sha256(verifier)).
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let resource = env.url("/api/mcp/crm");
    let authorize = Url::parse_with_params(
        &env.url("/oauth/authorize"),
        [
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
            ("resource", resource.as_str()),
        ],
    )
    .unwrap();

    let screenshot = screenshot.map(|p| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p.to_string_lossy().into_owned()
    });
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg("consent.mjs")
            .arg(authorize.as_str())
            .arg(EMAIL)
            .arg(PASSWORD)
            .arg("Browser Co")
            .arg("crm")
            .arg(decision)
            .arg(screenshot.as_deref().unwrap_or("-"))
            .arg(REDIRECT_URI)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finished within 3 minutes")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser script failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    assert!(
        stdout.contains("client-name: Browser Test Client"),
        "{stdout}"
    );
    let host_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("redirect-host: "))
        .unwrap_or_else(|| panic!("no redirect-host line in {stdout}"));
    assert!(host_line.contains("127.0.0.1"), "{host_line}");
    let redirect = stdout
        .lines()
        .find_map(|l| l.strip_prefix("redirect: "))
        .unwrap_or_else(|| panic!("no redirect line in {stdout}"));
    let redirect = Url::parse(redirect).unwrap();
    assert!(
        redirect.as_str().starts_with(REDIRECT_URI),
        "sent back to {redirect}, not {REDIRECT_URI}"
    );
    Some(Answered {
        env,
        client_id,
        verifier,
        redirect,
        stdout,
    })
}

#[tokio::test]
async fn browser_sign_in_consent_and_approve() {
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts/consent.png");
    let Some(answered) = sign_in_and_answer("approve", Some(&shot)).await else {
        return;
    };
    let env = &answered.env;
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
        "no screenshot at {}",
        shot.display()
    );
    let code = answered
        .param("code")
        .unwrap_or_else(|| panic!("no code in {}", answered.redirect));
    assert_eq!(answered.param("state").as_deref(), Some("xyz"));
    assert_eq!(
        answered.param("iss").as_deref(),
        Some(env.base_url.as_str())
    );
    assert_eq!(answered.param("error"), None, "{}", answered.stdout);

    let resource = env.url("/api/mcp/crm");
    let (status, token) = post_form(
        &env.url("/oauth/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("client_id", &answered.client_id),
            ("code_verifier", &answered.verifier),
            ("resource", &resource),
        ],
    )
    .await;
    assert!(status.is_success(), "token exchange: {status} {token}");
    let access_token = token["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {token}"));

    // The token works on the consented product, in the chosen workspace.
    let crm = env.client("/api/mcp/crm", access_token).await;
    let found = crm
        .ok("search_accounts", json!({ "query": "Browser Account" }))
        .await;
    let names: Vec<&str> = found["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["Browser Account"], "{found}");
}

#[tokio::test]
async fn browser_deny_returns_access_denied() {
    let Some(answered) = sign_in_and_answer("deny", None).await else {
        return;
    };
    assert_eq!(
        answered.param("error").as_deref(),
        Some("access_denied"),
        "{}",
        answered.redirect
    );
    assert_eq!(answered.param("state").as_deref(), Some("xyz"));
    assert_eq!(
        answered.param("iss").as_deref(),
        Some(answered.env.base_url.as_str())
    );
    assert_eq!(answered.param("code"), None, "{}", answered.redirect);
}
