//! Credentials: every refusal is a 401 with the RFC 9728 challenge; revocation and expiry apply on the next request.

use hdls::clock::Clock;
use hdls::identity::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Mcp, TestEnv, no_args};

/// A raw MCP initialize POST, to see the HTTP status and headers a client would.
async fn raw_initialize(url: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                        "clientInfo": { "name": "raw", "version": "0" } }
        }));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

fn assert_challenge(response: &reqwest::Response, env: &TestEnv, path: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let header = response
        .headers()
        .get("www-authenticate")
        .expect("WWW-Authenticate on 401")
        .to_str()
        .unwrap();
    let expected = format!(
        "resource_metadata=\"{}/.well-known/oauth-protected-resource{path}\"",
        env.base_url
    );
    assert!(header.starts_with("Bearer "), "{header}");
    assert!(header.contains(&expected), "{header} lacks {expected}");
}

#[tokio::test]
async fn every_bad_credential_gets_401_with_the_challenge() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("creds").await;
    let revoked = env.key(ws, Role::Member).await;
    hdls::workspaces::revoke_key(
        &env.app.pools,
        hdls::auth::api_key::parse_key_id(&revoked).unwrap(),
        env.clock.now(),
    )
    .await
    .unwrap();
    let expiring = hdls::workspaces::mint_key(
        &env.app.pools.runtime,
        ws,
        Role::Member,
        None,
        Some(env.clock.now() + time::Duration::hours(1)),
        env.clock.now(),
    )
    .await
    .unwrap()
    .key;
    env.clock.advance(time::Duration::hours(2));
    let valid = env.key(ws, Role::Reader).await;
    let unknown = hdls::auth::api_key::generate().token;
    let mut tampered = valid.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });

    for path in ["/api/mcp", "/api/mcp/crm"] {
        let url = env.url(path);
        let missing = raw_initialize(&url, None).await;
        assert_challenge(&missing, &env, path);
        assert!(
            !missing.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=")
        );
        for (what, header) in [
            ("malformed scheme", format!("Basic {valid}")),
            ("empty bearer", "Bearer ".to_owned()),
            ("not our format", "Bearer abc.def.ghi".to_owned()),
            ("truncated key", format!("Bearer {}", &valid[..20])),
            ("unknown key", format!("Bearer {unknown}")),
            ("tampered secret", format!("Bearer {tampered}")),
            ("expired key", format!("Bearer {expiring}")),
            ("revoked key", format!("Bearer {revoked}")),
        ] {
            let response = raw_initialize(&url, Some(&header)).await;
            assert_challenge(&response, &env, path);
            let www = response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(www.contains("error=\"invalid_token\""), "{what}: {www}");
            let body: Value = response.json().await.unwrap();
            assert!(
                !body.to_string().contains("hdls_"),
                "{what}: the body echoes a key"
            );
        }
        let ok = raw_initialize(&url, Some(&format!("Bearer {valid}"))).await;
        assert_eq!(
            ok.status(),
            StatusCode::OK,
            "a valid key is accepted at {path}"
        );
    }
    // The official client sees the refusal too.
    assert!(
        Mcp::try_connect(&env.url("/api/mcp"), &revoked)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_key_in_the_query_string_is_refused() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("query").await;
    for query in [
        format!("access_token={key}"),
        format!("api_key={key}"),
        format!("x={key}"),
    ] {
        let url = format!("{}?{query}", env.url("/api/mcp"));
        // Even together with a valid header: a credential in a URL ends up in logs and histories.
        let response = raw_initialize(&url, Some(&format!("Bearer {key}"))).await;
        assert_challenge(&response, &env, "/api/mcp");
        let www = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(www.contains("invalid_request"), "{www}");
    }
}

#[tokio::test]
async fn revocation_and_expiry_apply_on_the_next_request() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("revoke").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let minted = owner
        .ok(
            "mint_api_key",
            json!({ "role": "member", "expires_in": "30d", "label": "job" }),
        )
        .await;
    let key = minted["key"].as_str().unwrap().to_owned();
    let key_id = minted["key_id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hdls_"));
    assert!(key_id.starts_with("key_"));

    let member = env.client("/api/mcp/crm", &key).await;
    member
        .ok("create_account", json!({ "name": "Before revoke" }))
        .await;

    // Listing never shows the key or its hash, and records use.
    let listed = owner.ok("list_api_keys", no_args()).await;
    let text = listed.to_string();
    assert!(!text.contains(&key), "list_api_keys leaked a key");
    assert!(!text.contains("hash"), "list_api_keys mentions a hash");
    let entry = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["label"], "job");
    assert_eq!(entry["status"], "active");
    // Use is recorded (off the request path, so wait for it boundedly).
    let mut last_used = serde_json::Value::Null;
    for _ in 0..100 {
        let keys = owner.ok("list_api_keys", no_args()).await;
        last_used = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["key_id"] == key_id.as_str())
            .unwrap()["last_used_at"]
            .clone();
        if last_used.is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(last_used.is_string(), "last_used_at was never recorded");

    owner
        .ok("revoke_api_key", json!({ "key_id": key_id }))
        .await;
    let after = member.service.list_all_tools().await;
    assert!(after.is_err(), "a revoked key still worked");

    // Expiry: a 1h key stops working when the clock passes it.
    let short = owner
        .ok(
            "mint_api_key",
            json!({ "role": "reader", "expires_in": "1h" }),
        )
        .await;
    let short_client = env.client("/api/mcp", short["key"].as_str().unwrap()).await;
    short_client.ok("whoami", no_args()).await;
    env.clock.advance(time::Duration::minutes(61));
    assert!(
        short_client.service.list_all_tools().await.is_err(),
        "an expired key still worked"
    );
    let _ = ws;
}

#[tokio::test]
async fn whoami_describes_the_credential() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Who Am I").await;
    let key = hdls::workspaces::mint_key(
        &env.app.pools.runtime,
        ws,
        Role::Member,
        None,
        Some(env.clock.now() + time::Duration::days(30)),
        env.clock.now(),
    )
    .await
    .unwrap();
    let who = env
        .client("/api/mcp", &key.key)
        .await
        .ok("whoami", no_args())
        .await;
    assert_eq!(who["workspace"]["id"], json!(ws));
    assert_eq!(who["workspace"]["name"], "Who Am I");
    assert_eq!(who["role"], "member");
    assert_eq!(who["persona"], "agent");
    assert_eq!(who["credential"]["kind"], "api_key");
    assert_eq!(who["credential"]["id"], json!(key.key_id));
    assert_eq!(who["products"], json!(["crm"]));
    assert!(who["expires_at"].is_string());
}

#[tokio::test]
async fn malformed_mint_arguments_are_invalid_input() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("mint-input").await;
    let owner = env.client("/api/mcp", &key).await;
    for args in [
        json!({ "role": "superuser" }),
        json!({ "role": "reader", "expires_in": "forever" }),
        json!({ "role": "reader", "expires_in": "-5d" }),
        json!({ "role": "reader", "expires_in": "0d" }),
        json!({ "role": "reader", "label": "x".repeat(201) }),
    ] {
        assert_eq!(
            owner.err_code("mint_api_key", args.clone()).await,
            "invalid_input",
            "{args}"
        );
    }
    assert_eq!(
        owner
            .err_code("revoke_api_key", json!({ "key_id": "nonsense" }))
            .await,
        "invalid_input"
    );
    assert_eq!(
        owner
            .err_code(
                "revoke_api_key",
                json!({ "key_id": "key_0000000000000000" })
            )
            .await,
        "not_found"
    );
}
