//! The role × tool matrix over every registered tool: listed iff callable, refused below the minimum role.

use hdls::identity::{Endpoint, Role};
use hdls::tools::Registry;
use serde_json::json;

use crate::harness::TestEnv;

#[tokio::test]
async fn every_tool_is_listed_and_callable_exactly_from_its_minimum_role() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("matrix").await;
    let registry = Registry::standard();
    for role in Role::ALL {
        let key = env.key(ws, role).await;
        for endpoint in [
            Endpoint::Concierge,
            Endpoint::Product(hdls::identity::Product::Crm),
        ] {
            let client = env.client(endpoint.path(), &key).await;
            let listed = client.tool_names().await;
            let mut expected: Vec<String> = registry
                .on(endpoint)
                .filter(|t| role >= t.min_role)
                .map(|t| t.name.to_owned())
                .collect();
            expected.sort();
            assert_eq!(
                listed,
                expected,
                "tools/list for {role} on {}",
                endpoint.path()
            );
            for tool in registry.on(endpoint) {
                // Empty arguments: allowed tools either succeed or reject the input, never "forbidden".
                let result = client.call(tool.name, json!({})).await;
                let code = result
                    .structured_content
                    .as_ref()
                    .and_then(|v| v["error"]["code"].as_str())
                    .map(str::to_owned);
                if role >= tool.min_role {
                    assert_ne!(
                        code.as_deref(),
                        Some("forbidden"),
                        "{role} refused {} ",
                        tool.name
                    );
                } else {
                    assert_eq!(
                        result.is_error,
                        Some(true),
                        "{role} was allowed {}",
                        tool.name
                    );
                    assert_eq!(
                        code.as_deref(),
                        Some("forbidden"),
                        "{role} calling {}",
                        tool.name
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn the_ladder_for_privileged_actions() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("ladder").await;
    let reader = env
        .client("/api/mcp/crm", &env.key(ws, Role::Reader).await)
        .await;
    assert_eq!(
        reader
            .err_code("create_account", json!({ "name": "x" }))
            .await,
        "forbidden"
    );
    let member = env
        .client("/api/mcp", &env.key(ws, Role::Member).await)
        .await;
    assert_eq!(
        member
            .err_code("install_product", json!({ "product": "support" }))
            .await,
        "forbidden"
    );
    let admin = env
        .client("/api/mcp", &env.key(ws, Role::Admin).await)
        .await;
    admin
        .ok("install_product", json!({ "product": "support" }))
        .await;
    assert_eq!(
        admin
            .err_code("uninstall_product", json!({ "product": "support" }))
            .await,
        "forbidden"
    );
}

#[tokio::test]
async fn nobody_mints_above_their_own_role() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("ceiling").await;
    for actor in [Role::Admin, Role::Owner] {
        let client = env.client("/api/mcp", &env.key(ws, actor).await).await;
        for requested in Role::ALL {
            let args = json!({ "role": requested });
            if requested <= actor {
                let minted = client.ok("mint_api_key", args).await;
                assert_eq!(minted["role"], json!(requested));
                assert!(minted["key"].as_str().unwrap().starts_with("hdls_"));
            } else {
                assert_eq!(
                    client.err_code("mint_api_key", args).await,
                    "forbidden",
                    "{actor} minted {requested}"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_admin_cannot_revoke_an_owner_key() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("revoke-ceiling").await;
    let owner = env
        .client("/api/mcp", &env.key(ws, Role::Owner).await)
        .await;
    let owner_key = owner.ok("mint_api_key", json!({ "role": "owner" })).await;
    let admin = env
        .client("/api/mcp", &env.key(ws, Role::Admin).await)
        .await;
    assert_eq!(
        admin
            .err_code("revoke_api_key", json!({ "key_id": owner_key["key_id"] }))
            .await,
        "forbidden"
    );
    owner
        .ok("revoke_api_key", json!({ "key_id": owner_key["key_id"] }))
        .await;
}

/// A customer credential (persona frozen at issue time) sees none of the agents' tools and
/// cannot call them, whatever its role: the persona allowlist is part of the one permit rule.
#[test]
fn the_customer_persona_sees_none_of_the_agent_tools() {
    use hdls::identity::{CredentialKind, CredentialRef, Persona, Principal, Product};
    let customer = Principal {
        workspace_id: uuid::Uuid::new_v4(),
        workspace_name: "w".into(),
        role: Role::Owner,
        persona: Persona::Customer,
        principal_id: Some(uuid::Uuid::new_v4()),
        user_id: None,
        products: Product::ALL.to_vec(),
        all_products: true,
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "key_0000000000000000".into(),
        },
        expires_at: None,
    };
    let registry = Registry::standard();
    for endpoint in Endpoint::ALL {
        assert_eq!(
            registry.visible(endpoint, &customer).count(),
            0,
            "{}",
            endpoint.path()
        );
        for tool in registry.on(endpoint) {
            let refusal = tool.permits(&customer).expect_err(tool.name);
            assert_eq!(refusal.code, hdls::tools::ErrorCode::Forbidden);
        }
    }
    // The power tools in particular exist on every product endpoint, for agents only.
    for product in Product::ALL {
        let endpoint = Endpoint::Product(product);
        for name in [
            "list_tables",
            "describe_table",
            "query_records",
            "aggregate_records",
            "insert_record",
            "update_record",
            "delete_record",
        ] {
            let tool = registry
                .find(endpoint, name)
                .unwrap_or_else(|| panic!("{name} on {}", endpoint.path()));
            assert_eq!(tool.personas, &[Persona::Agent]);
        }
    }
}
