//! The authorization server's documents and lifecycle: metadata, JWKS, token claims, key
//! rotation, the revocation endpoint, and the connection tools.

use hdls::identity::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestEnv;
use crate::oauth_support::*;

async fn get_json(env: &TestEnv, path: &str) -> Value {
    let response = reqwest::get(env.url(path)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn metadata_documents_describe_the_server() {
    let env = TestEnv::start().await;
    let base = env.base_url.as_str();
    let meta = get_json(&env, "/.well-known/oauth-authorization-server").await;
    assert_eq!(meta["issuer"], base);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "jwks_uri",
    ] {
        assert!(meta[field].as_str().unwrap().starts_with(base), "{field}");
    }
    for path in [
        "/api/mcp",
        "/api/mcp/crm",
        "/api/mcp/support",
        "/api/mcp/contacts",
    ] {
        let prm = get_json(
            &env,
            &format!("/.well-known/oauth-protected-resource{path}"),
        )
        .await;
        assert_eq!(prm["resource"], format!("{base}{path}"));
        assert_eq!(prm["authorization_servers"], json!([base]));
    }
}

#[tokio::test]
async fn tokens_carry_the_frozen_decision_and_verify_against_the_jwks() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let c = claims(&tokens.access);
    assert_eq!(c["iss"], env.base_url.as_str());
    assert_eq!(c["aud"], env.url("/api/mcp"));
    assert_eq!(c["role"], "admin");
    assert_eq!(c["products"], json!(["crm"]));
    assert_eq!(c["workspace_id"], a.workspace.to_string());
    assert_eq!(c["client_id"], a.client_id.as_str());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    assert!(c["grant_id"].is_string() && c["sub"].is_string());
    // The JWKS publishes the key that signed it, and that key verifies it.
    let jwks = get_json(&env, "/oauth/jwks").await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid(&tokens.access).as_str())
        .expect("signing key published");
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[env.url("/api/mcp")]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(&tokens.access, &key, &validation)
        .expect("verifies with the published key");
    // The same Principal as an API key: whoami says so.
    let me = env.client("/api/mcp", &tokens.access).await;
    let who = me.ok("whoami", json!({})).await;
    assert_eq!(who["role"], "admin", "{who}");
    assert_eq!(who["workspace"]["id"], a.workspace.to_string(), "{who}");
}

#[tokio::test]
async fn rotating_the_signing_key_keeps_valid_tokens_working() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let before = a.tokens(&env).await;
    let new_kid = env
        .app
        .keys
        .rotate(&env.app.pools.auth, env.clock_now())
        .await
        .unwrap();
    assert_ne!(kid(&before.access), new_kid);
    let jwks = get_json(&env, "/oauth/jwks").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&new_kid.as_str()) && kids.contains(&kid(&before.access).as_str()),
        "{jwks}"
    );
    // The old token still works; tokens issued now are signed by the new key and work too.
    assert_eq!(
        probe(&env, "/api/mcp", &before.access).await.0,
        StatusCode::OK
    );
    let (status, body) = a.refresh(&env, &before.refresh).await;
    assert_eq!(status, StatusCode::OK);
    let after = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid(&after), new_kid);
    assert_eq!(probe(&env, "/api/mcp", &after).await.0, StatusCode::OK);
    // After the grace period the retired key stops verifying.
    // A retired key verifies for 15 minutes (longer than any token it signed lives), then is
    // dropped from the JWKS.
    env.clock.advance(time::Duration::minutes(16));
    env.app.keys.invalidate().await;
    let jwks = get_json(&env, "/oauth/jwks").await;
    assert!(!jwks.to_string().contains(&kid(&before.access)), "{jwks}");
}

#[tokio::test]
async fn the_revocation_endpoint_ends_the_connection() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let revoke = |token: String| {
        let env_url = env.url("/oauth/revoke");
        let client_id = a.client_id.clone();
        async move {
            reqwest::Client::new()
                .post(env_url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}&client_id={client_id}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(revoke("unknown-token".into()).await, StatusCode::OK);
    assert_eq!(revoke(tokens.refresh.clone()).await, StatusCode::OK);
    assert_eq!(
        probe(&env, "/api/mcp", &tokens.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = a.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let owner = env.client("/api/mcp", &a.owner_key).await;
    let events = owner
        .ok("list_audit_events", json!({ "action": "oauth.revoke" }))
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
    let grants = owner
        .ok("list_audit_events", json!({ "action": "oauth.grant" }))
        .await;
    assert_eq!(grants["events"].as_array().unwrap().len(), 1, "{grants}");
}

#[tokio::test]
async fn connections_are_listed_and_revoked_by_the_right_people() {
    let env = TestEnv::start().await;
    let mine = authorize(&env, Role::Member, &["crm"], "/api/mcp").await;
    let my_tokens = mine.tokens(&env).await;
    // A teammate in the same workspace with their own connection.
    let theirs_email = "teammate@example.com";
    env.person(mine.workspace, theirs_email, PASSWORD, Role::Member)
        .await;
    let me = env.client("/api/mcp", &my_tokens.access).await;
    let listed = me.ok("list_connections", json!({})).await;
    let connections = listed["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{listed}");
    assert_eq!(connections[0]["user"]["email"], mine.email.as_str());
    assert_eq!(connections[0]["client"]["name"], "Refusal Test Client");
    assert_eq!(connections[0]["products"], json!(["crm"]));
    let id = connections[0]["connection_id"].as_str().unwrap().to_owned();
    // An API-key reader sees no one's connections; an owner sees all and could revoke any.
    let reader = env
        .client("/api/mcp", &env.key(mine.workspace, Role::Reader).await)
        .await;
    assert_eq!(
        reader.ok("list_connections", json!({})).await["connections"],
        json!([])
    );
    assert_eq!(
        reader
            .err_code("revoke_connection", json!({ "connection_id": id }))
            .await,
        "forbidden"
    );
    let owner = env.client("/api/mcp", &mine.owner_key).await;
    assert_eq!(
        owner.ok("list_connections", json!({})).await["connections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The member revokes their own connection, with the token of that very connection.
    let revoked = me
        .ok("revoke_connection", json!({ "connection_id": id }))
        .await;
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        probe(&env, "/api/mcp", &my_tokens.access).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        owner.ok("list_connections", json!({})).await["connections"],
        json!([])
    );
    assert_eq!(
        owner
            .err_code(
                "revoke_connection",
                json!({ "connection_id": "grant_nope" })
            )
            .await,
        "invalid_input"
    );
    assert_eq!(
        owner
            .err_code(
                "revoke_connection",
                json!({ "connection_id": format!("grant_{}", uuid::Uuid::new_v4()) })
            )
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn a_demoted_member_s_token_carries_the_lower_role_at_once() {
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Admin, &[], "/api/mcp").await;
    let tokens = a.tokens(&env).await;
    let me = env.client("/api/mcp", &tokens.access).await;
    assert_eq!(me.ok("whoami", json!({})).await["role"], "admin");
    let owner = env.client("/api/mcp", &a.owner_key).await;
    let members = owner.ok("list_members", json!({})).await;
    let user_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == a.email.as_str())
        .unwrap()["user_id"]
        .clone();
    owner
        .ok(
            "change_member_role",
            json!({ "user_id": user_id, "role": "reader" }),
        )
        .await;
    assert_eq!(me.ok("whoami", json!({})).await["role"], "reader");
    assert_eq!(
        me.err_code(
            "invite_teammate",
            json!({ "email": "x@example.com", "role": "reader" })
        )
        .await,
        "forbidden"
    );
    // And the next refresh issues a reader token.
    let (status, body) = a.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["role"],
        "reader"
    );
}

#[tokio::test]
async fn browser_based_clients_may_call_the_json_endpoints_but_not_the_pages() {
    let env = TestEnv::start().await;
    let http = reqwest::Client::new();
    let origin = "http://localhost:6274";
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/api/mcp/crm",
        "/oauth/jwks",
    ] {
        let response = http
            .get(env.url(path))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{path}"
        );
    }
    let preflight = http
        .request(reqwest::Method::OPTIONS, env.url("/oauth/token"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    // Registration and token answers are readable cross-origin, errors included.
    let token = http
        .post(env.url("/oauth/token"))
        .header("origin", origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&code=nope&client_id=x&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb")
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::BAD_REQUEST);
    assert_eq!(token.headers()["access-control-allow-origin"], "*");
    // The pages (cookies, CSRF) and the MCP endpoints stay same-origin.
    for path in ["/oauth/sign-in", "/oauth/authorize", "/invite", "/api/mcp"] {
        let response = http
            .post(env.url(path))
            .header("origin", origin)
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn housekeeping_deletes_only_credentials_that_can_never_be_used() {
    use hdls::oauth::housekeeping::purge;
    let env = TestEnv::start().await;
    let a = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let first = a.tokens(&env).await;
    let (_, body) = a.refresh(&env, &first.refresh).await;
    let second_refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let _never_exchanged = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let auth = &env.app.pools.auth;
    let nothing = purge(auth, env.clock_now()).await.unwrap();
    assert_eq!(nothing, Default::default(), "nothing is spent yet");

    // Two days on: both codes and both sign-in sessions are long expired.
    env.clock.advance(time::Duration::days(2));
    let purged = purge(auth, env.clock_now()).await.unwrap();
    assert_eq!(
        (purged.codes, purged.sessions, purged.refresh_tokens),
        (2, 2, 0),
        "{purged:?}"
    );
    // The used refresh token was kept, so its reuse is still detected and ends the connection.
    let (status, body) = a.refresh(&env, &first.refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    let (status, _) = a.refresh(&env, &second_refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A day after the revocation, that connection's refresh tokens go too.
    env.clock
        .advance(time::Duration::days(1) + time::Duration::seconds(1));
    let purged = purge(auth, env.clock_now()).await.unwrap();
    assert_eq!(purged.refresh_tokens, 2, "{purged:?}");
}

#[tokio::test]
async fn products_named_in_scope_start_ticked_on_the_consent_page() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = env.workspace("Scope Co").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    owner
        .ok("install_product", json!({ "product": "support" }))
        .await;
    owner
        .ok("install_product", json!({ "product": "contacts" }))
        .await;
    env.person(workspace, "scope@example.com", PASSWORD, Role::Member)
        .await;
    let client_id = register(&env, REDIRECT).await;
    let p = pkce();
    let url = format!(
        "{}&scope=support",
        authorize_url(
            &env,
            &AuthParams {
                client_id: &client_id,
                redirect: REDIRECT,
                challenge: Some(&p.challenge),
                method: Some("S256"),
                resource: Some(&env.url("/api/mcp/crm"))
            },
        )
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    let signed_in = browser.sign_in(&page, "scope@example.com", PASSWORD).await;
    let consent = browser.get(signed_in.location.as_deref().unwrap()).await;
    let ticked = |slug: &str| {
        let at = consent
            .body
            .find(&format!("id=\"product-{slug}\""))
            .unwrap();
        let tag_end = at + consent.body[at..].find('>').unwrap();
        consent.body[at..tag_end].contains("checked")
    };
    assert!(ticked("crm"), "the endpoint's own product");
    assert!(ticked("support"), "named in scope");
    assert!(!ticked("contacts"), "neither");
}

#[tokio::test]
async fn housekeeping_forgets_clients_nobody_connected() {
    use hdls::oauth::housekeeping::purge;
    let env = TestEnv::start().await;
    let used = authorize(&env, Role::Member, &[], "/api/mcp").await;
    let tokens = used.tokens(&env).await;
    let unused = register(&env, REDIRECT).await;
    let auth = &env.app.pools.auth;
    assert_eq!(purge(auth, env.clock_now()).await.unwrap().clients, 0);
    env.clock.advance(time::Duration::days(2));
    let purged = purge(auth, env.clock_now()).await.unwrap();
    assert_eq!(purged.clients, 1, "{purged:?}");
    let left: Vec<String> = env
        .db
        .connect_superuser()
        .await
        .query("SELECT client_id FROM hdls_identity.oauth_clients", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, std::slice::from_ref(&used.client_id));
    assert!(!left.contains(&unused));
    let _ = tokens;
}

#[tokio::test]
async fn registration_is_rate_limited_per_address() {
    let env = TestEnv::start().await;
    for _ in 0..hdls::limits::per_address::REGISTRATIONS_PER_HOUR {
        register(&env, REDIRECT).await;
    }
    let response = reqwest::Client::new()
        .post(env.url("/oauth/register"))
        .json(&json!({ "client_name": "one too many", "redirect_uris": [REDIRECT] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    env.clock.advance(time::Duration::hours(1));
    register(&env, REDIRECT).await;
}
