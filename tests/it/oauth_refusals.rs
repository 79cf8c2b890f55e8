//! Every way an OAuth request can be wrong, each refused on its own: PKCE, codes, redirects,
//! audiences, expiry, signatures, keys, refresh reuse and idleness, removed members, blocked
//! metadata-document addresses, CSRF, throttled sign-in, ungranted products.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hdls::identity::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::TestEnv;
use crate::oauth_support::*;

async fn refused_at_authorize(
    env: &TestEnv,
    challenge: Option<&str>,
    method: Option<&str>,
) -> String {
    let client_id = register(env, REDIRECT).await;
    let resource = env.url("/api/mcp");
    let url = authorize_url(
        env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge,
            method,
            resource: Some(&resource),
        },
    );
    let page = Browser::new(env).get(&url).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let location = page.location.unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "code"), None);
    assert_eq!(query_param(&location, "state").as_deref(), Some("st4te"));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(env.base_url.as_str())
    );
    query_param(&location, "error").unwrap()
}

#[tokio::test]
async fn plain_pkce_is_refused() {
    let env = TestEnv::start().await;
    let p = pkce();
    // With plain, the challenge is the verifier itself.
    let error = refused_at_authorize(&env, Some(&p.verifier), Some("plain")).await;
    assert_eq!(error, "invalid_request");
}

#[tokio::test]
async fn a_missing_challenge_or_method_is_refused() {
    let env = TestEnv::start().await;
    assert_eq!(
        refused_at_authorize(&env, None, Some("S256")).await,
        "invalid_request"
    );
    // No method means plain (RFC 7636 §4.3), which is refused too.
    let p = pkce();
    assert_eq!(
        refused_at_authorize(&env, Some(&p.challenge), None).await,
        "invalid_request"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_verifier_is_refused() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &["crm"], "/api/mcp").await;
    let other = pkce();
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &a.code),
            ("client_id", &a.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &other.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    // A verifier with no challenge behind it: a fresh code, exchanged with no verifier at all.
    let b = authorize(&env, Role::Member, &["crm"], "/api/mcp").await;
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &b.code),
            ("client_id", &b.client_id),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request", "{body}");
}

#[tokio::test]
async fn a_reused_code_is_refused_and_revokes_what_it_issued() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &["crm"], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::OK
    );
    let (status, body) = a.exchange(&env).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = a.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let owner = env.client("/api/mcp", &a.owner_key).await;
    let events = owner
        .ok("list_audit_events", json!({ "action": "oauth.code_reuse" }))
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &["crm"], "/api/mcp").await;
    env.clock
        .advance(time::Duration::minutes(5) + time::Duration::seconds(1));
    let (status, body) = a.exchange(&env).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn a_redirect_uri_mismatch_is_refused_without_redirecting() {
    let env = TestEnv::start().await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    for wrong in [
        "https://attacker.example/callback",
        "http://127.0.0.1:9/other",
        "http://localhost:9/callback",
    ] {
        let url = authorize_url(
            &env,
            &AuthParams {
                client_id: &client_id,
                redirect: wrong,
                challenge: Some(&p.challenge),
                method: Some("S256"),
                resource: Some(&resource),
            },
        );
        let page = Browser::new(&env).get(&url).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{wrong}");
        assert_eq!(page.location, None, "never redirect to an unregistered URI");
    }
    // A loopback redirect may differ in its port only (RFC 8252 §7.3).
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &client_id,
            redirect: "http://127.0.0.1:51234/callback",
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    assert_eq!(Browser::new(&env).get(&url).await.status, StatusCode::OK);
    // And the token request must repeat the authorization request's redirect exactly.
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &a.code),
            ("client_id", &a.client_id),
            ("redirect_uri", "http://127.0.0.1:10/callback"),
            ("code_verifier", &a.pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn a_token_works_only_at_its_own_endpoint() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &["crm", "support"], "/api/mcp/crm").await;
    let tokens = a.tokens(&env).await;
    assert_eq!(
        probe(&env, "/api/mcp/crm", &tokens.access).await.0,
        StatusCode::OK
    );
    for elsewhere in ["/api/mcp", "/api/mcp/support", "/api/mcp/contacts"] {
        let (status, challenge) = probe(&env, elsewhere, &tokens.access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{elsewhere}");
        let challenge = challenge.expect("WWW-Authenticate");
        assert!(challenge.contains("invalid_token"), "{challenge}");
        assert!(
            challenge.contains(&format!(
                "resource_metadata=\"{}/.well-known/oauth-protected-resource{elsewhere}\"",
                env.base_url
            )),
            "{challenge}"
        );
    }
}

#[tokio::test]
async fn an_expired_access_token_is_refused() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    env.clock.advance(time::Duration::minutes(9));
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::OK
    );
    env.clock.advance(time::Duration::minutes(1));
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::UNAUTHORIZED
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn a_tampered_token_is_refused() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Reader, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let parts: Vec<&str> = tokens.access.split('.').collect();
    assert_eq!(parts.len(), 3);
    // A flipped signature bit.
    let mut signature = unb64(parts[2]);
    signature[0] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    assert_eq!(
        probe(&env, "/api/mcp", &forged).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Claims edited to owner, original signature.
    let mut claims: serde_json::Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    assert_eq!(claims["role"], "reader");
    claims["role"] = json!("owner");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        probe(&env, "/api/mcp", &forged).await.0,
        StatusCode::UNAUTHORIZED
    );
    // alg=none with no signature.
    let none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let forged = format!("{none}.{}.", parts[1]);
    assert_eq!(
        probe(&env, "/api/mcp", &forged).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The untouched token still works.
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let claims: serde_json::Value = serde_json::from_slice(&unb64(parts[1])).unwrap();
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let der = ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_der()
        .unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
    for kid in [Some("0123456789abcdef".to_owned()), None] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = kid;
        let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(
            probe(&env, "/api/mcp", &forged).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The real kid with a foreign key is a bad signature, also refused.
    let real_kid: serde_json::Value = serde_json::from_slice(&unb64(parts[0])).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = real_kid["kid"].as_str().map(str::to_owned);
    let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    assert_eq!(
        probe(&env, "/api/mcp", &forged).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_connection() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &["crm"], "/api/mcp/crm").await;
    let first = a.tokens(&env).await;
    let (status, body) = a.refresh(&env, &first.refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let second_access = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second_refresh, first.refresh);
    let (status, body) = a.refresh(&env, &second_refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let newest_access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        probe(&env, "/api/mcp/crm", &newest_access).await.0,
        StatusCode::OK
    );

    // The first (already used) refresh token comes back: theft is assumed.
    let (status, body) = a.refresh(&env, &first.refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    // Everything of that connection is dead, including the newest tokens.
    let (status, body) = a.refresh(&env, &newest_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    for access in [&first.access, &second_access, &newest_access] {
        assert_eq!(
            probe(&env, "/api/mcp/crm", access).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let owner = env.client("/api/mcp", &a.owner_key).await;
    let events = owner
        .ok(
            "list_audit_events",
            json!({ "action": "oauth.refresh_reuse" }),
        )
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
}

#[tokio::test]
async fn a_refresh_token_idle_for_30_days_expires() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    env.clock.advance(time::Duration::days(29));
    let (status, body) = a.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::OK, "29 days idle is fine: {body}");
    let next = body["refresh_token"].as_str().unwrap().to_owned();
    env.clock
        .advance(time::Duration::days(30) + time::Duration::seconds(1));
    let (status, body) = a.refresh(&env, &next).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("30 days"),
        "{body}"
    );
}

#[tokio::test]
async fn a_removed_member_gets_no_new_tokens_and_loses_the_old() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let me = env.client("/api/mcp", &tokens.access).await;
    let who = me.ok("whoami", json!({})).await;
    let owner = env.client("/api/mcp", &a.owner_key).await;
    let members = owner.ok("list_members", json!({})).await;
    let user_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == a.email.as_str())
        .unwrap()["user_id"]
        .clone();
    let removed = owner
        .ok("remove_member", json!({ "user_id": user_id }))
        .await;
    assert_eq!(removed["connections_revoked"], 1, "{removed} {who}");
    let (status, body) = a.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Whether an authorize page says the outbound guard refused the document's address, rather
/// than its scheme or a failed connection (which is what a fetch without the guard gives).
/// Either wording of the guard's refusal counts.
fn refused_by_the_guard(body: &str) -> bool {
    let guard = body.contains("otherwise reserved address")
        || body.contains("does not connect to")
        || body.contains("is not a valid host name");
    guard && !body.contains("must use https") && !body.contains("connection failed")
}

/// A loopback port that only counts the TCP connections made to it (it speaks neither TLS
/// nor HTTP): zero proves that a refused fetch never connected.
async fn counting_port() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, count)
}

#[tokio::test]
async fn a_metadata_document_on_a_blocked_address_is_refused() {
    let env = TestEnv::start().await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    // https throughout, so the scheme rule cannot be what refuses them. Two point at a port
    // that is really listening on loopback: without the guard the fetch would connect there.
    let (port, connections) = counting_port().await;
    for client_id in [
        format!("https://127.0.0.1:{port}/oauth/client.json"),
        format!("https://localhost:{port}/oauth/client.json"),
        "https://localhost/oauth/client.json".to_owned(),
        "https://127.0.0.1/client.json".to_owned(),
        "https://169.254.169.254/latest/meta-data.json".to_owned(),
        "https://[::1]/client.json".to_owned(),
        "https://0x7f000001/client.json".to_owned(),
        "https://10.1.2.3/client.json".to_owned(),
    ] {
        let url = authorize_url(
            &env,
            &AuthParams {
                client_id: &client_id,
                redirect: REDIRECT,
                challenge: Some(&p.challenge),
                method: Some("S256"),
                resource: Some(&resource),
            },
        );
        let page = Browser::new(&env).get(&url).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{client_id}: {}",
            page.body
        );
        assert_eq!(page.location, None);
        assert!(
            refused_by_the_guard(&page.body),
            "{client_id}: {}",
            page.body
        );
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "a blocked metadata document address was connected to"
    );
}

#[tokio::test]
async fn a_product_not_granted_gets_403_insufficient_scope() {
    let env = TestEnv::start().await;
    // Granted nothing, for the CRM endpoint.
    let a = authorize(&env, Role::Member, &[], "/api/mcp/crm").await;
    let tokens = a.tokens(&env).await;
    let (status, challenge) = probe(&env, "/api/mcp/crm", &tokens.access).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let challenge = challenge.unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
}

#[tokio::test]
async fn consent_without_the_session_csrf_token_is_refused() {
    let env = TestEnv::start().await;
    let (workspace, _) = env.workspace("CSRF Co").await;
    env.person(workspace, "csrf@example.com", PASSWORD, Role::Member)
        .await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    // Sign-in without the double-submit token is refused.
    let refused = browser
        .post(
            "/oauth/sign-in",
            &[
                ("email", "csrf@example.com"),
                ("password", PASSWORD),
                ("csrf", "x"),
                ("next", &hidden(&page.body, "next")),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let signed_in = browser.sign_in(&page, "csrf@example.com", PASSWORD).await;
    let consent = browser.get(signed_in.location.as_deref().unwrap()).await;
    let mut form = consent_fields(&consent.body);
    form.retain(|(n, _)| n != "csrf");
    form.push(("csrf".into(), "forged".into()));
    form.push(("workspace".into(), workspace.to_string()));
    form.push(("decision".into(), "approve".into()));
    let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let done = browser.post("/oauth/authorize", &pairs).await;
    assert_eq!(done.status, StatusCode::FORBIDDEN);
    assert_eq!(done.location, None);
    // A foreign Origin on the form post is refused before anything else.
    let response = reqwest::Client::new()
        .post(env.url("/oauth/authorize"))
        .header("origin", "https://attacker.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("decision=approve")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_in_is_throttled_per_account() {
    let env = TestEnv::start().await;
    let (workspace, _) = env.workspace("Throttle Co").await;
    env.person(workspace, "slow@example.com", PASSWORD, Role::Member)
        .await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    for _ in 0..5 {
        let wrong = browser
            .sign_in(&page, "slow@example.com", "not the password")
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.body.contains("not right"));
    }
    // Even the right password is refused now, with a clear message.
    let throttled = browser.sign_in(&page, "slow@example.com", PASSWORD).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        throttled.body.contains("try again in 15 minute"),
        "{}",
        throttled.body
    );
    env.clock.advance(time::Duration::minutes(15));
    let ok = browser.sign_in(&page, "slow@example.com", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
}

#[tokio::test]
async fn an_unknown_client_or_bad_registration_is_refused() {
    let env = TestEnv::start().await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: "hc_nope",
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let page = Browser::new(&env).get(&url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(page.location, None);
    for (body, error) in [
        (
            json!({ "redirect_uris": ["http://evil.example/cb"] }),
            "invalid_redirect_uri",
        ),
        (
            json!({ "redirect_uris": ["javascript:alert(1)"] }),
            "invalid_redirect_uri",
        ),
        (json!({ "redirect_uris": [] }), "invalid_redirect_uri"),
        (
            json!({ "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": [REDIRECT], "grant_types": ["password"] }),
            "invalid_client_metadata",
        ),
    ] {
        let response = reqwest::Client::new()
            .post(env.url("/oauth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], error, "{body}");
    }
}

#[tokio::test]
async fn a_resource_that_is_not_ours_is_refused() {
    let env = TestEnv::start().await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    for resource in [
        None,
        Some("https://other.example/api/mcp"),
        Some(&*env.url("/api/mcp/")),
    ] {
        let url = authorize_url(
            &env,
            &AuthParams {
                client_id: &client_id,
                redirect: REDIRECT,
                challenge: Some(&p.challenge),
                method: Some("S256"),
                resource,
            },
        );
        let page = Browser::new(&env).get(&url).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{resource:?}");
        assert_eq!(
            query_param(&page.location.unwrap(), "error").as_deref(),
            Some("invalid_target")
        );
    }
}

#[tokio::test]
async fn a_metadata_document_client_signs_in_when_the_operator_allows_its_network() {
    // A client metadata document served on loopback, reachable only because this server's
    // operator allowed 127.0.0.0/8 (the development setting; the default allows nothing).
    let doc_url = serve_client_document(None).await;
    let env = loopback_allowed_env().await;
    let (workspace, _) = env.workspace("CIMD Co").await;
    env.person(workspace, "cimd@example.com", PASSWORD, Role::Member)
        .await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &doc_url,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let signed_in = browser.sign_in(&page, "cimd@example.com", PASSWORD).await;
    let consent = browser.get(signed_in.location.as_deref().unwrap()).await;
    assert!(
        consent.body.contains("Metadata Document Client"),
        "{}",
        consent.body
    );
    // A redirect the document does not list is still refused.
    let other = authorize_url(
        &env,
        &AuthParams {
            client_id: &doc_url,
            redirect: "http://127.0.0.1:9/elsewhere",
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    assert_eq!(browser.get(&other).await.status, StatusCode::BAD_REQUEST);
    // Without the operator's allowance the same document is refused for its address, before
    // its plain-http scheme is even considered (a 400 alone would also be the scheme rule).
    let strict = TestEnv::start().await;
    let url = authorize_url(
        &strict,
        &AuthParams {
            client_id: &doc_url,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&strict.url("/api/mcp")),
        },
    );
    let page = Browser::new(&strict).get(&url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(refused_by_the_guard(&page.body), "{}", page.body);
}

#[tokio::test]
async fn sign_in_is_throttled_per_client_address() {
    let env = TestEnv::start().await;
    let (workspace, _) = env.workspace("Spray Co").await;
    env.person(workspace, "target@example.com", PASSWORD, Role::Member)
        .await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    let resource = env.url("/api/mcp");
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    // One address spraying many accounts (4 tries each, under the per-account limit).
    for i in 0..20 {
        let wrong = browser
            .sign_in(
                &page,
                &format!("guess{}@example.com", i / 4),
                "nope nope nope",
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let throttled = browser.sign_in(&page, "target@example.com", PASSWORD).await;
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.body
    );
}

#[tokio::test]
async fn use_another_account_signs_out_and_asks_again() {
    let env = TestEnv::start().await;
    let (workspace, _) = env.workspace("Two People").await;
    env.person(workspace, "first@example.com", PASSWORD, Role::Member)
        .await;
    env.person(workspace, "second@example.com", PASSWORD, Role::Member)
        .await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&env.url("/api/mcp")),
        },
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    let signed_in = browser.sign_in(&page, "first@example.com", PASSWORD).await;
    let consent = browser.get(signed_in.location.as_deref().unwrap()).await;
    assert!(consent.body.contains("first@example.com"));
    // Signing out without the session's CSRF token is refused.
    let next = hidden(
        &consent.body[consent.body.find("id=\"sign-out\"").unwrap()..],
        "next",
    );
    let forged = browser
        .post("/oauth/sign-out", &[("csrf", "forged"), ("next", &next)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let out = browser
        .post(
            "/oauth/sign-out",
            &[("csrf", &hidden(&consent.body, "csrf")), ("next", &next)],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let again = browser.get(out.location.as_deref().unwrap()).await;
    assert!(again.body.contains("id=\"sign-in\""), "{}", again.body);
    let second = browser
        .sign_in(&again, "second@example.com", PASSWORD)
        .await;
    let consent = browser.get(second.location.as_deref().unwrap()).await;
    assert!(
        consent.body.contains("second@example.com"),
        "{}",
        consent.body
    );
}

/// Serves a client metadata document on loopback; its `client_id` is its own URL unless
/// `claimed_id` says otherwise. Returns the URL.
async fn serve_client_document(claimed_id: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let doc_url = format!(
        "http://{}/oauth/client.json",
        listener.local_addr().unwrap()
    );
    let doc = json!({
        "client_id": claimed_id.unwrap_or(&doc_url),
        "client_name": "Metadata Document Client",
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    });
    let app = axum::Router::new().route(
        "/oauth/client.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    doc_url
}

/// A server whose operator allowed outbound connections to 127.0.0.0/8.
async fn loopback_allowed_env() -> TestEnv {
    TestEnv::start_with_app(|app| {
        app.with_outbound(hdls::net::guard::Guard::new(
            std::sync::Arc::new(hdls::net::guard::SystemResolver),
            vec![hdls::net::guard::Cidr::parse("127.0.0.0/8").unwrap()],
        ))
    })
    .await
}

#[tokio::test]
async fn a_metadata_document_naming_another_client_id_is_refused() {
    let doc_url = serve_client_document(Some("https://app.example/client.json")).await;
    let env = loopback_allowed_env().await;
    let p = pkce();
    let url = authorize_url(
        &env,
        &AuthParams {
            client_id: &doc_url,
            redirect: REDIRECT,
            challenge: Some(&p.challenge),
            method: Some("S256"),
            resource: Some(&env.url("/api/mcp")),
        },
    );
    let page = Browser::new(&env).get(&url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body.contains("does not equal its URL"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn a_token_request_naming_another_resource_is_refused() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &["crm"], "/api/mcp/crm").await;
    let elsewhere = env.url("/api/mcp/support");
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &a.code),
            ("client_id", &a.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &a.pkce.verifier),
            ("resource", &elsewhere),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_target", "{body}");
    let b = authorize(&env, Role::Member, &["crm"], "/api/mcp/crm").await;
    let tokens = b.tokens(&env).await;
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh),
            ("client_id", &b.client_id),
            ("resource", &elsewhere),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_target", "{body}");
    // A repeated parameter is refused too (RFC 6749 §3.2).
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh),
            ("refresh_token", &tokens.refresh),
            ("client_id", &b.client_id),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request", "{body}");
    // None of that spent the refresh token.
    assert_eq!(b.refresh(&env, &tokens.refresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn another_client_can_neither_refresh_nor_revoke_a_connection() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let intruder = register(&env, REDIRECT).await;
    let (status, body) = token(
        &env,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &tokens.refresh),
            ("client_id", &intruder),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let revoked = reqwest::Client::new()
        .post(env.url("/oauth/revoke"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}&client_id={intruder}", tokens.access))
        .send()
        .await
        .unwrap();
    assert_eq!(
        revoked.status(),
        StatusCode::OK,
        "RFC 7009 answers 200 either way"
    );
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::OK
    );
    assert_eq!(a.refresh(&env, &tokens.refresh).await.0, StatusCode::OK);
}
