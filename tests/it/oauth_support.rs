//! A deliberately plain OAuth client for the refusal tests: it sends exactly the requests a
//! test wants, including wrong ones. (The happy path is also driven by rmcp's real OAuth client
//! in `oauth_flow` and by a real browser in `browser`.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::harness::TestEnv;

pub const PASSWORD: &str = "correct horse battery";
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// A cookie-keeping HTTP client that never follows redirects (so tests see each 303).
pub struct Browser {
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
    pub base: String,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new(env: &TestEnv) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: Vec::new(),
            base: env.base_url.clone(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            self.cookies.push((name.to_owned(), value.to_owned()));
        }
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        Page {
            status,
            location,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let response = self
            .http
            .get(self.absolute(url))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(self.absolute(url))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// Signs in from the sign-in page the authorization URL showed.
    pub async fn sign_in(&mut self, page: &Page, email: &str, password: &str) -> Page {
        let csrf = hidden(&page.body, "csrf");
        let next = hidden(&page.body, "next");
        self.post(
            "/oauth/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("next", &next),
            ],
        )
        .await
    }
}

/// The value of `<input … name="NAME" value="…">` in a page (maud escapes `&` as `&amp;`).
pub fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no hidden input {name} in {body}"))
        + marker.len();
    let end = start + body[start..].find('"').unwrap();
    body[start..end]
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
}

/// Every hidden input of the consent form.
pub fn consent_fields(body: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for name in [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "scope",
        "csrf",
    ] {
        if body.contains(&format!("name=\"{name}\" value=\"")) {
            fields.push((name.to_owned(), hidden(body, name)));
        }
    }
    fields
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).unwrap();
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn register(env: &TestEnv, redirect: &str) -> String {
    register_named(env, "Refusal Test Client", redirect).await
}

/// Dynamic client registration (RFC 7591) of a public client; returns its client_id.
pub async fn register_named(env: &TestEnv, name: &str, redirect: &str) -> String {
    let response = reqwest::Client::new()
        .post(env.url("/oauth/register"))
        .json(&json!({
            "client_name": name,
            "redirect_uris": [redirect],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["client_id"].as_str().unwrap().to_owned()
}

pub struct AuthParams<'a> {
    pub client_id: &'a str,
    pub redirect: &'a str,
    pub challenge: Option<&'a str>,
    pub method: Option<&'a str>,
    pub resource: Option<&'a str>,
}

pub fn authorize_url(env: &TestEnv, p: &AuthParams<'_>) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", p.client_id),
        ("redirect_uri", p.redirect),
        ("state", "st4te"),
    ];
    if let Some(c) = p.challenge {
        pairs.push(("code_challenge", c));
    }
    if let Some(m) = p.method {
        pairs.push(("code_challenge_method", m));
    }
    if let Some(r) = p.resource {
        pairs.push(("resource", r));
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{}/oauth/authorize?{query}", env.base_url)
}

pub async fn token(env: &TestEnv, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = reqwest::Client::new()
        .post(env.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A person, a registered client and a code, ready to exchange.
pub struct Authorized {
    pub client_id: String,
    pub pkce: Pkce,
    pub code: String,
    pub resource: String,
    pub workspace: Uuid,
    pub owner_key: String,
    pub email: String,
}

/// Runs sign-in and consent for `email` (created as `role`) in a fresh workspace with the
/// CRM installed, granting `products`, for `resource_path`.
pub async fn authorize(
    env: &TestEnv,
    role: hdls::identity::Role,
    products: &[&str],
    resource_path: &str,
) -> Authorized {
    let (workspace, owner_key) = env.workspace("OAuth Co").await;
    let email = format!("p{}@example.com", &Uuid::new_v4().simple().to_string()[..8]);
    env.person(workspace, &email, PASSWORD, role).await;
    let client_id = register(env, REDIRECT).await;
    let pkce = pkce();
    let resource = env.url(resource_path);
    let url = authorize_url(
        env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge: Some(&pkce.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let mut browser = Browser::new(env);
    let page = browser.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let signed_in = browser.sign_in(&page, &email, PASSWORD).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let consent = browser.get(signed_in.location.as_deref().unwrap()).await;
    assert!(consent.body.contains("id=\"consent\""), "{}", consent.body);
    let mut form: Vec<(String, String)> = consent_fields(&consent.body);
    form.push(("workspace".into(), workspace.to_string()));
    for p in products {
        form.push(("product".into(), (*p).to_owned()));
    }
    form.push(("decision".into(), "approve".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let done = browser.post("/oauth/authorize", &pairs).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st4te"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(env.base_url.as_str())
    );
    Authorized {
        client_id,
        pkce,
        code: query_param(&location, "code").expect("code in the redirect"),
        resource,
        workspace,
        owner_key,
        email,
    }
}

pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Authorized {
    pub async fn exchange(&self, env: &TestEnv) -> (StatusCode, Value) {
        token(
            env,
            &[
                ("grant_type", "authorization_code"),
                ("code", &self.code),
                ("client_id", &self.client_id),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &self.pkce.verifier),
                ("resource", &self.resource),
            ],
        )
        .await
    }

    pub async fn tokens(&self, env: &TestEnv) -> Tokens {
        let (status, body) = self.exchange(env).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 600);
        Tokens {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn refresh(&self, env: &TestEnv, refresh: &str) -> (StatusCode, Value) {
        token(
            env,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &self.client_id),
                ("resource", &self.resource),
            ],
        )
        .await
    }
}

/// The HTTP status of a `tools/list` with this bearer token at `path`, and its challenge header.
pub async fn probe(env: &TestEnv, path: &str, token: &str) -> (StatusCode, Option<String>) {
    let response = reqwest::Client::new()
        .post(env.url(path))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "probe", "version": "0" } }
        }))
        .send()
        .await
        .unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), challenge)
}
