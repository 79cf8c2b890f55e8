//! HTTP-level guards and documents: Origin, Host, body size, metadata, health, tool descriptions.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestEnv, no_args};

fn initialize_body() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": { "name": "raw", "version": "0" } }
    })
}

#[tokio::test]
async fn foreign_origin_and_host_are_refused_before_authentication() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("guards").await;
    let http = reqwest::Client::new();
    let post = |credential: Option<String>, origin: Option<&str>, host: Option<&str>| {
        let mut r = http
            .post(env.url("/api/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize_body());
        if let Some(c) = credential {
            r = r.header("authorization", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(h) = host {
            r = r.header("host", h);
        }
        async move {
            let response = r.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    // No credential, and a well-formed key that does not exist: authentication would answer
    // 401 to either, so a 403 naming the Origin or Host can only come from the guard in front.
    let last = if key.ends_with('x') { 'y' } else { 'x' };
    let wrong_key = format!("Bearer {}{last}", &key[..key.len() - 1]);
    for credential in [None, Some(wrong_key.clone())] {
        for origin in ["https://evil.example", "null"] {
            assert_eq!(
                post(credential.clone(), Some(origin), None).await,
                (StatusCode::FORBIDDEN, "Origin not allowed".to_owned()),
                "Origin {origin}, credential {credential:?}"
            );
        }
        assert_eq!(
            post(credential.clone(), None, Some("evil.example")).await,
            (StatusCode::FORBIDDEN, "Host not allowed".to_owned()),
            "credential {credential:?}"
        );
        // The same requests from our own origin and host reach authentication, which refuses them.
        assert_eq!(
            post(credential.clone(), Some(&env.base_url), None).await.0,
            StatusCode::UNAUTHORIZED,
            "credential {credential:?}"
        );
    }
    // A valid key does not get a foreign origin in either.
    let valid = Some(format!("Bearer {key}"));
    assert_eq!(
        post(valid.clone(), Some("https://evil.example"), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // Our own origin is fine, and so is no Origin (non-browser clients).
    assert_eq!(
        post(valid.clone(), Some(&env.base_url), None).await.0,
        StatusCode::OK
    );
    assert_eq!(post(valid, None, None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("big").await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = reqwest::Client::new()
        .post(env.url("/api/mcp/crm"))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(
            json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": { "name": "create_account", "arguments": { "name": huge } } })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn protected_resource_metadata_names_each_endpoint() {
    let env = TestEnv::start().await;
    for path in [
        "/api/mcp",
        "/api/mcp/crm",
        "/api/mcp/support",
        "/api/mcp/contacts",
    ] {
        let doc: Value =
            reqwest::get(env.url(&format!("/.well-known/oauth-protected-resource{path}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(doc["resource"], env.url(path));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let env = TestEnv::start().await;
    let status = |path: &'static str| {
        let url = env.url(path);
        async move { reqwest::get(url).await.unwrap().status() }
    };
    assert_eq!(status("/healthz").await, StatusCode::OK);
    assert_eq!(status("/readyz").await, StatusCode::OK);
    // Readiness asks the database: cut off, the server is alive but not ready; let back in,
    // it is ready again (a new pooled connection, no restart).
    env.db.cut_off().await;
    assert_eq!(status("/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status("/healthz").await, StatusCode::OK);
    env.db.reopen().await;
    assert_eq!(status("/readyz").await, StatusCode::OK);
}

#[tokio::test]
async fn tools_carry_annotations_and_lists_are_private() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("annotations").await;
    let crm = env.client("/api/mcp/crm", &key).await;
    let listed = crm.service.list_tools(None).await.unwrap();
    assert_eq!(listed.cache_scope, Some(rmcp::model::CacheScope::Private));
    let by_name = |name: &str| {
        listed
            .tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .clone()
    };
    let search = by_name("search_accounts").annotations.unwrap();
    assert_eq!(search.read_only_hint, Some(true));
    let delete = by_name("delete_account").annotations.unwrap();
    assert_eq!(delete.destructive_hint, Some(true));
    assert_eq!(delete.read_only_hint, Some(false));
    let create = by_name("create_account");
    assert_eq!(create.annotations.unwrap().idempotent_hint, Some(false));
    assert!(
        create
            .input_schema
            .get("properties")
            .and_then(|p| p.get("name"))
            .is_some()
    );

    // Results: structuredContent plus a readable text rendering.
    let result = env
        .client("/api/mcp", &key)
        .await
        .call("whoami", no_args())
        .await;
    assert!(result.structured_content.is_some());
    let text = result.content[0].as_text().unwrap().text.clone();
    assert!(
        text.contains("annotations"),
        "text rendering lacks the workspace name: {text}"
    );

    // An unknown tool is a protocol error, not a tool result.
    let unknown = crm
        .service
        .call_tool(rmcp::model::CallToolRequestParams::new("no_such_tool"))
        .await;
    assert!(unknown.is_err());
}

/// A 2025-11-25 client as other SDKs speak it: plain JSON-RPC POSTs with the version header.
#[tokio::test]
async fn a_2025_11_25_client_works_over_plain_http() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("legacy").await;
    let http = reqwest::Client::new();
    let post = |body: Value, version: Option<&'static str>| {
        let mut r = http
            .post(env.url("/api/mcp/crm"))
            .header("authorization", format!("Bearer {key}"))
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(v) = version {
            r = r.header("mcp-protocol-version", v);
        }
        r.send()
    };
    let init = post(initialize_body(), None).await.unwrap();
    assert_eq!(init.status(), StatusCode::OK);
    let init: Value = init.json().await.unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert!(init["result"]["capabilities"]["tools"].is_object());

    let note = post(
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
        Some("2025-11-25"),
    )
    .await
    .unwrap();
    assert!(
        note.status().is_success(),
        "initialized notification: {}",
        note.status()
    );

    let list: Value = post(
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
        Some("2025-11-25"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"create_account"), "{names:?}");

    let call: Value = post(
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": { "name": "create_account", "arguments": { "name": "Legacy Ltd" } } }),
        Some("2025-11-25"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        call["result"]["structuredContent"]["account"]["name"],
        "Legacy Ltd"
    );
    assert_ne!(call["result"]["isError"], true);

    let refused: Value = post(
        json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": { "name": "get_account", "arguments": { "id": uuid::Uuid::new_v4() } } }),
        Some("2025-11-25"),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(refused["result"]["isError"], true);
    assert_eq!(
        refused["result"]["structuredContent"]["error"]["code"],
        "not_found"
    );
}

/// Both lifecycles of the official client: 2026-07-28 `server/discover` and the `initialize` handshake.
#[tokio::test]
async fn both_protocol_revisions_through_the_rmcp_client() {
    use rmcp::ClientLifecycleMode;
    use rmcp::model::ProtocolVersion;
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("revisions").await;
    for (lifecycle, expected) in [
        (
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
            ProtocolVersion::V_2026_07_28,
        ),
        (
            ClientLifecycleMode::Initialize,
            ProtocolVersion::V_2025_11_25,
        ),
    ] {
        let crm =
            crate::harness::Mcp::connect_with(&env.url("/api/mcp/crm"), &key, lifecycle).await;
        let info = crm.service.peer_info().expect("server info");
        assert_eq!(info.protocol_version, expected);
        assert!(
            crm.tool_names()
                .await
                .contains(&"search_accounts".to_owned())
        );
        let name = format!("Company on {expected}");
        crm.ok("create_account", json!({ "name": name })).await;
        let found = crm.ok("search_accounts", json!({ "query": name })).await;
        assert_eq!(found["accounts"].as_array().unwrap().len(), 1);
        assert_eq!(
            crm.err_code("get_account", json!({ "id": uuid::Uuid::new_v4() }))
                .await,
            "not_found"
        );
    }
}
