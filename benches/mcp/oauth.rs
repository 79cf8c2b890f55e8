//! An OAuth access token from the server under test, the way an MCP client gets one:
//! dynamic client registration, the authorization request (S256 PKCE), sign-in and consent
//! submitted as a browser would, and the code exchange. Only what the flow needs; the
//! protocol itself is tested in tests/it/oauth_flow.rs.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sha2::Digest;
use uuid::Uuid;

/// Nothing listens here: the flow reads the redirect's Location itself.
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

/// A person who can sign in, and the workspace and product they grant.
pub struct Person<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub workspace: Uuid,
}

/// An access token for `{base}/api/mcp/crm`.
pub async fn access_token(base: &str, person: &Person<'_>) -> anyhow::Result<String> {
    let mut browser = Browser::new(base)?;
    let resource = format!("{base}/api/mcp/crm");
    let client_id = register(&browser.http, base).await?;
    let verifier = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = hdls::secret::b64url(&sha2::Sha256::digest(verifier.as_bytes()));
    let request = [
        ("response_type", "code"),
        ("client_id", &client_id),
        ("redirect_uri", REDIRECT_URI),
        ("state", "bench"),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("resource", &resource),
    ];
    let authorize = format!("/oauth/authorize?{}", form(&request));

    // Not signed in: the sign-in page (its CSRF token is double-submitted with a cookie).
    let page = browser.get(&authorize).await?;
    let csrf = hidden_csrf(&page)?;
    let signed_in = browser
        .post(
            "/oauth/sign-in",
            &[
                ("email", person.email),
                ("password", person.password),
                ("csrf", &csrf),
                ("next", &authorize),
            ],
        )
        .await?;
    anyhow::ensure!(signed_in.is_some(), "sign-in did not redirect");

    // Signed in: the consent page; approve the CRM for the workspace.
    let page = browser.get(&authorize).await?;
    let csrf = hidden_csrf(&page)?;
    let workspace = person.workspace.to_string();
    let mut consent = request.to_vec();
    consent.extend([
        ("csrf", csrf.as_str()),
        ("workspace", workspace.as_str()),
        ("product", "crm"),
        ("decision", "approve"),
    ]);
    let callback = browser
        .post("/oauth/authorize", &consent)
        .await?
        .ok_or_else(|| anyhow::anyhow!("consent did not redirect"))?;
    let code = reqwest::Url::parse(&callback)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| anyhow::anyhow!("no code in {callback}"))?;

    // The code exchange, with the PKCE verifier.
    let token: Value = browser
        .http
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
            ("resource", &resource),
        ]))
        .send()
        .await?
        .json()
        .await?;
    token["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access token: {token}"))
}

/// Dynamic client registration (RFC 7591) of a public client.
async fn register(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let registered: Value = http
        .post(format!("{base}/oauth/register"))
        .json(&json!({
            "client_name": "hdls benchmark",
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
        .send()
        .await?
        .json()
        .await?;
    registered["client_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("registration failed: {registered}"))
}

fn form(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// The value of the first `<input … name="csrf" value="…">` on a page.
fn hidden_csrf(page: &str) -> anyhow::Result<String> {
    page.split("<input")
        .skip(1)
        .filter_map(|tag| tag.split('>').next())
        .find(|tag| tag.contains(r#"name="csrf""#))
        .and_then(|tag| tag.split(r#"value=""#).nth(1)?.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no csrf field on the page:\n{page}"))
}

/// Just enough of a browser: same-origin posts, cookies kept, redirects not followed.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new(base: &str) -> anyhow::Result<Browser> {
        Ok(Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.to_owned(),
            cookies: BTreeMap::new(),
        })
    }

    /// A page that must answer 200; its HTML.
    async fn get(&mut self, path: &str) -> anyhow::Result<String> {
        let request = self.http.get(format!("{}{path}", self.base));
        let response = self.with_cookies(request).send().await?;
        let (status, _) = self.keep_cookies(&response);
        let body = response.text().await?;
        anyhow::ensure!(status == StatusCode::OK, "GET {path}: {status}\n{body}");
        Ok(body)
    }

    /// Submits a form; the Location of a 303, if that is the answer.
    async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<Option<String>> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", &self.base)
            .body(form(fields));
        let response = self.with_cookies(request).send().await?;
        let (status, location) = self.keep_cookies(&response);
        if status != StatusCode::SEE_OTHER {
            anyhow::bail!("POST {path}: {status}\n{}", response.text().await?);
        }
        Ok(location)
    }

    fn with_cookies(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.cookies.is_empty() {
            return request;
        }
        let header: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        request.header(COOKIE, header.join("; "))
    }

    /// Stores the response's cookies; returns its status and Location.
    fn keep_cookies(&mut self, response: &reqwest::Response) -> (StatusCode, Option<String>) {
        for value in response.headers().get_all(SET_COOKIE) {
            let pair = value.to_str().unwrap_or_default().split(';').next();
            if let Some((name, value)) = pair.and_then(|p| p.split_once('=')) {
                self.cookies
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        (response.status(), location)
    }
}
