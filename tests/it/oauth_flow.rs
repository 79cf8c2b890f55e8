//! The whole OAuth 2.1 flow driven by a real OAuth client, rmcp's: discovery from the MCP
//! endpoint (RFC 9728 → RFC 8414), dynamic client registration (RFC 7591), an S256 PKCE
//! authorization request, the sign-in and consent forms submitted as a browser would, the
//! code exchange, MCP calls through rmcp's authorized transport, and refresh-token rotation.

use std::collections::{BTreeMap, HashMap};

use hdls::identity::Role;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{StatusCode, Url};
use rmcp::ServiceExt;
use rmcp::model::ClientConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationManager, AuthorizationMetadataSource, AuthorizationRequest,
    AuthorizationSession, CredentialStore, InMemoryCredentialStore, OAuthTokenResponse,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Mcp, TestEnv};

const CLIENT_NAME: &str = "rmcp flow test";
const EMAIL: &str = "flow@example.com";
const PASSWORD: &str = "correct horse battery";
/// Nothing listens here: the test reads the redirect itself.
const REDIRECT_URI: &str = "http://127.0.0.1:47913/callback";

/// What a completed authorization leaves behind.
struct Authorized {
    /// rmcp's client for the MCP transport; shares its manager (and so its tokens).
    client: AuthClient<reqwest::Client>,
    /// The manager's credential store (a clone shares the same slot).
    store: InMemoryCredentialStore,
    workspace: Uuid,
}

/// Starts a server with workspace "Flow Co" (crm and `extra` installed) and a member who can sign in.
async fn setup(extra: &[&str]) -> (TestEnv, Uuid) {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("Flow Co").await;
    let concierge = env.client("/api/mcp", &owner_key).await;
    for product in std::iter::once(&"crm").chain(extra) {
        concierge
            .ok("install_product", json!({ "product": product }))
            .await;
    }
    env.person(ws, EMAIL, PASSWORD, Role::Member).await;
    (env, ws)
}

/// The token response's fields as JSON (oauth2's accessors need a crate this test doesn't depend on).
fn token_json(token: &OAuthTokenResponse) -> Value {
    serde_json::to_value(token).unwrap()
}

fn token_field(token: &OAuthTokenResponse, field: &str) -> String {
    token_json(token)[field]
        .as_str()
        .unwrap_or_else(|| panic!("token response lacks {field}"))
        .to_owned()
}

async fn current_token(client: &AuthClient<reqwest::Client>) -> OAuthTokenResponse {
    let (_client_id, token) = client
        .auth_manager
        .lock()
        .await
        .get_credentials()
        .await
        .expect("get_credentials");
    token.expect("rmcp holds a token")
}

/// rmcp discovers, registers, and builds the authorization URL; the test then plays the
/// browser through sign-in and consent, and hands the redirect back to rmcp for the exchange.
async fn authorize(env: &TestEnv, ws: Uuid) -> Authorized {
    let resource = env.url("/api/mcp/crm");

    // Discovery, starting from nothing but the MCP endpoint.
    let mut manager = AuthorizationManager::new_allowing_private_addresses(resource.as_str())
        .await
        .expect("AuthorizationManager");
    let store = InMemoryCredentialStore::new();
    manager.set_credential_store(store.clone());
    let resolution = manager.resolve_metadata().await.expect("OAuth discovery");
    assert_eq!(
        resolution.source,
        AuthorizationMetadataSource::ProtectedResourceMetadata,
        "discovery must go through the protected-resource metadata: {:?}",
        resolution.metadata
    );
    let metadata = &resolution.metadata;
    assert_eq!(metadata.issuer.as_deref(), Some(env.base_url.as_str()));
    assert_eq!(metadata.authorization_endpoint, env.url("/oauth/authorize"));
    assert_eq!(metadata.token_endpoint, env.url("/oauth/token"));
    assert_eq!(
        metadata.registration_endpoint.as_deref(),
        Some(env.url("/oauth/register").as_str())
    );
    // MCP: a client MUST refuse an AS that does not advertise PKCE (S256).
    assert!(
        metadata
            .code_challenge_methods_supported
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m == "S256")),
        "code_challenge_methods_supported lacks S256: {metadata:?}"
    );
    manager.set_metadata(resolution.metadata);

    // Dynamic client registration and the PKCE authorization URL.
    let session = match AuthorizationSession::new(
        manager,
        AuthorizationRequest::new(REDIRECT_URI).with_client_name(CLIENT_NAME),
    )
    .await
    {
        Ok(session) => session,
        Err((_, error)) => panic!("registration / authorization URL: {error}"),
    };
    let auth_url = Url::parse(session.get_authorization_url()).unwrap();
    let query: HashMap<String, String> = auth_url.query_pairs().into_owned().collect();
    assert_eq!(query["response_type"], "code");
    assert_eq!(query["redirect_uri"], REDIRECT_URI);
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["resource"], resource, "RFC 8707 resource indicator");
    let state = query["state"].clone();

    // The browser: sign-in page, sign in, consent page, approve.
    let mut browser = Browser::new(&env.base_url);
    let response = browser.get(auth_url.as_str()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let sign_in = form(&response.body, "sign-in").expect("form#sign-in");
    assert_eq!(
        attr(sign_in.open_tag, "action").as_deref(),
        Some("/oauth/sign-in")
    );
    assert!(find_by_id(&response.body, "email").is_some(), "input#email");
    assert!(
        find_by_id(&response.body, "password").is_some(),
        "input#password"
    );
    let hidden = sign_in.hidden_inputs();
    let csrf = hidden.get("csrf").expect("hidden csrf on the sign-in form");
    let next = hidden.get("next").expect("hidden next on the sign-in form");
    let response = browser
        .post(
            "/oauth/sign-in",
            &[
                ("email", EMAIL),
                ("password", PASSWORD),
                ("csrf", csrf),
                ("next", next),
            ],
        )
        .await;
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.body);
    let back = response.location.expect("Location after sign-in");
    assert_eq!(
        back.path(),
        auth_url.path(),
        "sign-in returns to the authorization request"
    );
    let back_query: HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(
        back_query, query,
        "sign-in returns to the same authorization request"
    );

    let response = browser.get(back.as_str()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    let page = response.body;
    let consent = form(&page, "consent").expect("form#consent");
    assert_eq!(
        attr(consent.open_tag, "action").as_deref(),
        Some("/oauth/authorize")
    );
    assert_eq!(
        text_by_id(&page, "client-name").as_deref(),
        Some(CLIENT_NAME)
    );
    assert!(
        text_by_id(&page, "redirect-host").is_some_and(|t| t.contains("127.0.0.1")),
        "#redirect-host: {:?}",
        text_by_id(&page, "redirect-host")
    );
    assert!(
        text_by_id(&page, "signed-in-as").is_some_and(|t| t.contains(EMAIL)),
        "#signed-in-as: {:?}",
        text_by_id(&page, "signed-in-as")
    );
    let options = consent.workspace_options();
    assert_eq!(options.len(), 1, "one option per membership: {options:?}");
    assert_eq!(options[0].0, ws.to_string(), "option value = workspace id");
    // The contract says text = workspace name; the page adds the role ("Flow Co (member)").
    assert!(
        options[0].1.starts_with("Flow Co"),
        "option text: {options:?}"
    );
    let crm_box = find_by_id(consent.html, "product-crm").expect("input#product-crm");
    assert_eq!(attr(crm_box, "type").as_deref(), Some("checkbox"));
    assert_eq!(attr(crm_box, "value").as_deref(), Some("crm"));
    assert!(
        find_by_id(consent.html, "approve").is_some(),
        "button#approve"
    );
    assert!(find_by_id(consent.html, "deny").is_some(), "button#deny");

    let hidden = consent.hidden_inputs();
    for field in [
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
        "csrf",
    ] {
        assert!(
            hidden.contains_key(field),
            "consent form lacks hidden {field}: {hidden:?}"
        );
    }
    assert_eq!(hidden["state"], state);
    assert_eq!(hidden["code_challenge"], query["code_challenge"]);
    let workspace = options[0].0.clone();
    let mut fields: Vec<(&str, &str)> = hidden
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fields.extend([
        ("workspace", workspace.as_str()),
        ("product", "crm"),
        ("decision", "approve"),
    ]);
    let response = browser.post("/oauth/authorize", &fields).await;
    assert_eq!(response.status, StatusCode::SEE_OTHER, "{}", response.body);
    let callback = response.location.expect("Location after approval");
    assert!(
        callback.as_str().starts_with(&format!("{REDIRECT_URI}?")),
        "approval redirects to the client: {callback}"
    );
    let params: HashMap<String, String> = callback.query_pairs().into_owned().collect();
    assert!(params.contains_key("code"), "{callback}");
    assert_eq!(params.get("state"), Some(&state), "{callback}");
    assert_eq!(
        params.get("iss"),
        Some(&env.base_url),
        "RFC 9207 iss: {callback}"
    );

    // rmcp checks state and iss, and exchanges the code with the PKCE verifier.
    session
        .handle_callback_url(callback.as_str())
        .await
        .expect("code exchange");
    let token = store
        .load()
        .await
        .unwrap()
        .and_then(|c| c.token_response)
        .expect("rmcp stored the token");
    let token = token_json(&token);
    assert_eq!(
        token["token_type"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("bearer")
    );
    assert!(
        token["refresh_token"].is_string(),
        "a refresh token is issued: {token}"
    );

    Authorized {
        client: AuthClient::new(reqwest::Client::new(), session.auth_manager),
        store,
        workspace: ws,
    }
}

#[tokio::test]
async fn rmcp_client_authorizes_calls_tools_and_refreshes() {
    let (env, ws) = setup(&[]).await;
    let Authorized {
        client,
        store,
        workspace,
    } = authorize(&env, ws).await;
    assert_eq!(workspace, ws);

    // An MCP session over rmcp's authorized transport.
    let transport = StreamableHttpClientTransport::with_client(
        client.clone(),
        StreamableHttpClientTransportConfig::with_uri(env.url("/api/mcp/crm")),
    );
    let service = ClientConfig::default()
        .serve(transport)
        .await
        .expect("MCP initialize with the OAuth token");
    let mcp = Mcp { service };
    let tools = mcp.tool_names().await;
    for tool in ["create_account", "search_accounts", "get_account"] {
        assert!(
            tools.contains(&tool.to_owned()),
            "{tool} missing from {tools:?}"
        );
    }
    let created = mcp
        .ok(
            "create_account",
            json!({ "name": "Acme Robotics", "domain": "acme.example" }),
        )
        .await;
    assert_eq!(created["account"]["name"], "Acme Robotics");
    assert_eq!(created["account"]["domain"], "acme.example");
    let found = mcp.ok("search_accounts", json!({ "query": "acme" })).await;
    let accounts = found["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{found}");
    assert_eq!(accounts[0]["id"], created["account"]["id"]);

    // The token acts in the consented workspace: an API key of that workspace sees the row.
    let key_view = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await
        .ok("search_accounts", json!({ "query": "acme" }))
        .await;
    assert_eq!(key_view["accounts"][0]["id"], created["account"]["id"]);

    // Refresh through rmcp: both tokens rotate.
    let before = current_token(&client).await;
    let old_access = token_field(&before, "access_token");
    let old_refresh = token_field(&before, "refresh_token");
    client
        .auth_manager
        .lock()
        .await
        .refresh_token()
        .await
        .expect("refresh");
    let after = current_token(&client).await;
    let new_access = token_field(&after, "access_token");
    let new_refresh = token_field(&after, "refresh_token");
    assert_ne!(new_access, old_access, "refresh issues a new access token");
    assert_ne!(
        new_refresh, old_refresh,
        "OAuth 2.1: a public client's refresh token rotates"
    );

    // The same rmcp session now sends the new token, and it works.
    let found = mcp.ok("search_accounts", json!({ "query": "acme" })).await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
    // And the new access token on its own, as any client would send it.
    let fresh = Mcp::connect(&env.url("/api/mcp/crm"), &new_access).await;
    let found = fresh
        .ok("search_accounts", json!({ "query": "acme" }))
        .await;
    assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
    fresh.service.cancel().await.unwrap();

    // The old refresh token is spent: put it back in rmcp's store and refresh again.
    let (client_id, _) = client
        .auth_manager
        .lock()
        .await
        .get_credentials()
        .await
        .unwrap();
    let mut stale = store.load().await.unwrap().expect("stored credentials");
    stale.token_response = Some(before);
    store.save(stale).await.unwrap();
    let replay = client.auth_manager.lock().await.refresh_token().await;
    assert!(
        matches!(replay, Err(AuthError::TokenRefreshRejected(_))),
        "the rotated-out refresh token must be refused with invalid_grant, got {:?}",
        replay.map(|t| token_json(&t))
    );
    // The same refusal as a raw token request, to see the error body.
    let raw = reqwest::Client::new()
        .post(env.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &old_refresh),
            ("client_id", &client_id),
            ("resource", &env.url("/api/mcp/crm")),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");

    mcp.service.cancel().await.unwrap();
}

#[tokio::test]
async fn a_crm_token_is_refused_at_another_product() {
    let (env, ws) = setup(&["support"]).await;
    let Authorized { client, .. } = authorize(&env, ws).await;
    let access = token_field(&current_token(&client).await, "access_token");

    let list = |path: &str| {
        reqwest::Client::new()
            .post(env.url(path))
            .header("authorization", format!("Bearer {access}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-11-25")
            .body(json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string())
            .send()
    };

    // The token is good where it was granted...
    let ok = list("/api/mcp/crm").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let listed: Value = ok.json().await.unwrap();
    assert!(listed["result"]["tools"].is_array(), "{listed}");

    // ...and its audience is the CRM endpoint only, even with support installed.
    let refused = list("/api/mcp/support").await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate on 401")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    let expected = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource/api/mcp/support\"",
        env.base_url
    );
    assert!(
        challenge.contains(&expected),
        "{challenge} lacks {expected}"
    );

    // rmcp's transport, holding the same token, is refused there too.
    let transport = StreamableHttpClientTransport::with_client(
        client.clone(),
        StreamableHttpClientTransportConfig::with_uri(env.url("/api/mcp/support")),
    );
    assert!(
        ClientConfig::default().serve(transport).await.is_err(),
        "rmcp must not connect to support with a crm token"
    );
}

// ---------------------------------------------------------------------------------------------
// A browser, just enough of one: cookies carried by hand, redirects not followed.

struct Browser {
    http: reqwest::Client,
    base: Url,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: Option<Url>,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: Url::parse(base).unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, url: &str) -> Page {
        let url = self.base.join(url).unwrap();
        let mut request = self.http.get(url);
        if !self.cookies.is_empty() {
            request = request.header(COOKIE, self.cookie_header());
        }
        self.read(request.send().await.unwrap()).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let url = self.base.join(path).unwrap();
        let origin = self.base.origin().ascii_serialization();
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .body(form_body(fields));
        if !self.cookies.is_empty() {
            request = request.header(COOKIE, self.cookie_header());
        }
        self.read(request.send().await.unwrap()).await
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all(SET_COOKIE) {
            let value = value.to_str().unwrap();
            let pair = value.split(';').next().unwrap_or_default();
            let Some((name, val)) = pair.split_once('=') else {
                continue;
            };
            let expired = value.split(';').any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a == "max-age=0" || a.starts_with("max-age=-")
            });
            if expired || val.is_empty() {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), val.trim().to_owned());
            }
        }
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .map(|l| self.base.join(l.to_str().unwrap()).unwrap());
        let body = response.text().await.unwrap();
        Page {
            status,
            location,
            body,
        }
    }
}

/// application/x-www-form-urlencoded, via the url crate's serializer.
fn form_body(fields: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(fields);
    url.query().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------------------------
// HTML, just enough of it: tags found by string search, attributes parsed, entities decoded.

struct Form<'a> {
    open_tag: &'a str,
    /// From the opening tag to its `</form>`.
    html: &'a str,
}

impl Form<'_> {
    fn hidden_inputs(&self) -> BTreeMap<String, String> {
        tags(self.html, "input")
            .into_iter()
            .filter(|t| attr(t, "type").is_some_and(|v| v.eq_ignore_ascii_case("hidden")))
            .filter_map(|t| Some((attr(t, "name")?, attr(t, "value").unwrap_or_default())))
            .collect()
    }

    /// (value, text) of each option of `select#workspace`.
    fn workspace_options(&self) -> Vec<(String, String)> {
        let select = find_by_id(self.html, "workspace").expect("select#workspace");
        assert!(
            select.starts_with("<select"),
            "#workspace is a select: {select}"
        );
        assert_eq!(attr(select, "name").as_deref(), Some("workspace"));
        let start = self.html.find(select).unwrap();
        let end = self.html[start..]
            .find("</select>")
            .map_or(self.html.len(), |e| start + e);
        let inside = &self.html[start..end];
        let mut options = Vec::new();
        for tag in tags(inside, "option") {
            let at = inside.find(tag).unwrap() + tag.len();
            let text_end = inside[at..].find('<').map_or(inside.len(), |e| at + e);
            options.push((
                attr(tag, "value").expect("option value"),
                decode(inside[at..text_end].trim()),
            ));
        }
        options
    }
}

fn form<'a>(html: &'a str, id: &str) -> Option<Form<'a>> {
    let open_tag = tags(html, "form")
        .into_iter()
        .find(|t| attr(t, "id").as_deref() == Some(id))?;
    assert_eq!(
        attr(open_tag, "method")
            .map(|m| m.to_ascii_lowercase())
            .as_deref(),
        Some("post"),
        "form#{id} posts"
    );
    let start = html.find(open_tag).unwrap();
    let end = html[start..]
        .find("</form>")
        .map_or(html.len(), |e| start + e);
    Some(Form {
        open_tag,
        html: &html[start..end],
    })
}

/// Every opening tag `<name ...>` (the whole tag text).
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let open = format!("<{name}");
    let mut rest = 0;
    while let Some(i) = html[rest..].find(&open) {
        let start = rest + i;
        let after = html[start + open.len()..].chars().next();
        let Some(end) = tag_end(html, start) else {
            break;
        };
        if after.is_some_and(|c| c.is_whitespace() || c == '>' || c == '/') {
            found.push(&html[start..end]);
        }
        rest = end;
    }
    found
}

/// The index just past the `>` closing the tag at `start`, skipping quoted attribute values.
fn tag_end(html: &str, start: usize) -> Option<usize> {
    let mut quote = None;
    for (i, c) in html[start..].char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(start + i + 1),
            _ => {}
        }
    }
    None
}

/// Any opening tag whose id is `id`.
fn find_by_id<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let mut rest = 0;
    while let Some(i) = html[rest..].find('<') {
        let start = rest + i;
        let end = tag_end(html, start)?;
        let tag = &html[start..end];
        if !tag.starts_with("</") && attr(tag, "id").as_deref() == Some(id) {
            return Some(tag);
        }
        rest = end;
    }
    None
}

/// The text content of the element with this id (tags inside it stripped).
fn text_by_id(html: &str, id: &str) -> Option<String> {
    let tag = find_by_id(html, id)?;
    let name: String = tag[1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let start = html.find(tag)? + tag.len();
    let end = html[start..]
        .find(&format!("</{name}"))
        .map_or(html.len(), |e| start + e);
    let mut text = String::new();
    let mut in_tag = false;
    for c in html[start..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    Some(decode(text.trim()))
}

/// An attribute's decoded value (`Some("")` for a bare boolean attribute).
fn attr(tag: &str, name: &str) -> Option<String> {
    let inner = tag
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim_end_matches('/');
    let mut chars = inner.char_indices().peekable();
    // Skip the tag name.
    while chars.next_if(|(_, c)| !c.is_whitespace()).is_some() {}
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let (key_start, _) = *chars.peek()?;
        let mut key_end = inner.len();
        while let Some(&(i, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                key_end = i;
                break;
            }
            chars.next();
        }
        let key = &inner[key_start..key_end.min(inner.len())];
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '=').is_some() {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            match chars.peek().map(|&(_, c)| c) {
                Some(q @ ('"' | '\'')) => {
                    chars.next();
                    for (_, c) in chars.by_ref() {
                        if c == q {
                            break;
                        }
                        value.push(c);
                    }
                }
                _ => {
                    while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                        value.push(c);
                    }
                }
            }
        }
        if key.eq_ignore_ascii_case(name) {
            return Some(decode(&value));
        }
    }
}

/// Decodes the character references an HTML serializer emits.
fn decode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';').filter(|&s| s <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn the_html_helpers_read_what_a_serializer_writes() {
    let html = r#"<p>x</p><form id="consent" method="post" action="/oauth/authorize">
        <input type="hidden" name="next" value="/oauth/authorize?a=1&amp;b=&quot;2&quot;">
        <input name='csrf' type=hidden value="t&#x27;k">
        <span id="client-name">rmcp <b>flow</b> &amp; co</span>
        <select id="workspace" name="workspace"><option value="w1" selected>Flow &lt;Co&gt;</option></select>
        <input type="checkbox" name="product" id="product-crm" value="crm" checked>
        </form>"#;
    let f = form(html, "consent").unwrap();
    let hidden = f.hidden_inputs();
    assert_eq!(hidden["next"], "/oauth/authorize?a=1&b=\"2\"");
    assert_eq!(hidden["csrf"], "t'k");
    assert_eq!(hidden.len(), 2);
    assert_eq!(text_by_id(html, "client-name").unwrap(), "rmcp flow & co");
    assert_eq!(
        f.workspace_options(),
        vec![("w1".to_owned(), "Flow <Co>".to_owned())]
    );
    let crm = find_by_id(html, "product-crm").unwrap();
    assert_eq!(attr(crm, "checked").as_deref(), Some(""));
    assert_eq!(attr(crm, "value").as_deref(), Some("crm"));
    assert_eq!(form_body(&[("a b", "c&d=e")]), "a+b=c%26d%3De");
}
