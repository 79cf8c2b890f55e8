//! Malformed JSON-RPC gets JSON-RPC errors: a body that is not JSON is a parse error
//! (HTTP 400, -32700), JSON that is not a JSON-RPC message an invalid request (-32600), and
//! `tools/call` params that do not fit (arguments not an object) invalid params (-32602).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Mcp, TestEnv};

/// A raw JSON-RPC POST on the CRM endpoint, as a 2025-11-25 client sends it.
async fn post(env: &TestEnv, key: &str, content_type: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(env.url("/api/mcp/crm"))
        .header("authorization", format!("Bearer {key}"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_json_rpc_gets_json_rpc_errors() {
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("protocol").await;
    for broken in [
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"tools/list\"",
        "not json at all",
        "",
        "{\"jsonrpc\": \"2.0\", \"id\": 1,}",
    ] {
        let response = post(&env, &key, "application/json", broken.to_owned()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{broken:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["jsonrpc"], "2.0", "{body}");
        assert_eq!(body["error"]["code"], -32700, "{broken:?}: {body}");
    }
    for not_a_message in ["{}", "[]", "42", "{\"jsonrpc\": \"2.0\", \"id\": 1}"] {
        let response = post(&env, &key, "application/json", not_a_message.to_owned()).await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{not_a_message}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32600, "{not_a_message}: {body}");
    }
    // Another content type is still what it was: unsupported.
    let response = post(&env, &key, "text/plain", "{}".to_owned()).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An unauthenticated caller learns nothing about the body: 401 first.
    let anonymous = reqwest::Client::new()
        .post(env.url("/api/mcp/crm"))
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // tools/call whose arguments are not an object: invalid params, not an unknown method.
    for arguments in [json!(5), json!("x"), json!([1, 2]), json!(true)] {
        let body = json!({ "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                           "params": { "name": "create_account", "arguments": arguments } });
        let response = post(&env, &key, "application/json", body.to_string()).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], -32602,
            "{arguments}: {status} {body}"
        );
        assert_eq!(body["id"], 9, "{body}");
    }
    // A well-formed call still works, and an unknown method is still -32601.
    let ok: Value = post(
        &env,
        &key,
        "application/json",
        json!({ "jsonrpc": "2.0", "id": 10, "method": "tools/call",
                "params": { "name": "create_account", "arguments": { "name": "Fine Ltd" } } })
        .to_string(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        ok["result"]["structuredContent"]["account"]["name"],
        "Fine Ltd"
    );
    let unknown: Value = post(
        &env,
        &key,
        "application/json",
        json!({ "jsonrpc": "2.0", "id": 11, "method": "no/such_method" }).to_string(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
}

/// The same through the official client, on both protocol revisions.
#[tokio::test]
async fn non_object_arguments_are_invalid_params_on_both_revisions() {
    use rmcp::ClientLifecycleMode;
    use rmcp::model::{ClientRequest, CustomRequest, ProtocolVersion};
    let env = TestEnv::start().await;
    let (_, key) = env.workspace("revisions").await;
    for lifecycle in [
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        ClientLifecycleMode::Initialize,
    ] {
        let crm = Mcp::connect_with(&env.url("/api/mcp/crm"), &key, lifecycle).await;
        let request = ClientRequest::CustomRequest(CustomRequest::new(
            "tools/call",
            Some(json!({ "name": "create_account", "arguments": [1, 2, 3] })),
        ));
        match crm.service.send_request(request).await {
            Err(rmcp::ServiceError::McpError(error)) => {
                assert_eq!(error.code.0, -32602, "{error:?}");
            }
            other => panic!("expected invalid params, got {other:?}"),
        }
    }
}
