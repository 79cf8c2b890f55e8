//! The role × tool matrix over every registered tool: listed iff callable, refused below the minimum role.

use std::collections::HashMap;

use hdls::db::OWNER_ROLE;
use hdls::identity::{Endpoint, Persona, Product, Role};
use hdls::tools::ToolDef;
use serde_json::json;

use crate::harness::{Mcp, TestEnv};

/// Every persona a credential can carry. The exhaustive match stops compiling when a persona
/// is added, next to the list it must then join, so the matrix cannot silently skip one.
fn all_personas() -> [Persona; 2] {
    let listed = [Persona::Agent, Persona::Customer];
    for persona in listed {
        match persona {
            Persona::Agent | Persona::Customer => {}
        }
    }
    listed
}

/// Why `tool` must refuse a caller with this persona and role (the product being installed),
/// as a fragment of the refusal message; `None` if it must let them through. `bound`: the
/// caller's key is bound to a linked database (it reaches that endpoint and no other).
fn expected_refusal(tool: &ToolDef, persona: Persona, role: Role, bound: bool) -> Option<String> {
    let at_source = tool.endpoint == Endpoint::DataSource;
    if !tool.personas.contains(&persona) {
        Some(format!("not available to {} credentials", persona.as_str()))
    } else if role < tool.min_role {
        Some(format!("needs the {} role or higher", tool.min_role))
    } else if at_source && !bound {
        Some("reached with a data-source key".to_owned())
    } else if !at_source && bound {
        Some("works only at its data source's endpoint".to_owned())
    } else {
        None
    }
}

/// Over HTTP, with real keys: every tool of every endpoint, called by every role. Below its
/// minimum role a tool answers `forbidden` naming the role it needs; at or above, anything but
/// `forbidden` (empty arguments mostly give `invalid_input`). `tools/list` shows exactly the
/// callable tools. Keys carry the agent persona (the only one a key can be minted with today);
/// the customer persona is covered against the same rule below.
#[tokio::test]
async fn every_tool_is_listed_and_callable_exactly_from_its_minimum_role() {
    // With a linked database, so the data-source endpoint is in the matrix too.
    let env = crate::byo_database::loopback_env().await;
    let (ws, owner_key) = env.workspace("matrix").await;
    // Every product installed, so only the role ladder decides; and a per-minute limit that
    // the matrix's few hundred calls cannot reach.
    let concierge = env.client(Endpoint::Concierge.path(), &owner_key).await;
    for product in Product::ALL {
        concierge
            .ok("install_product", json!({ "product": product }))
            .await;
    }
    let owner_pool = env.db.target.pool(OWNER_ROLE, 1).unwrap();
    hdls::workspaces::set_plan(&owner_pool, ws, None, 100_000, None, env.clock_now())
        .await
        .unwrap();

    let registry = hdls::products::registry();
    let (connection_string, _) = crate::byo_database::shared_cluster().await.prepare().await;
    let source = crate::byo_database::link(&concierge, &connection_string).await;
    let mut clients: HashMap<(Role, Endpoint), Mcp> = HashMap::new();
    for role in Role::ALL {
        let key = env.key(ws, role).await;
        for endpoint in Endpoint::ALL {
            clients.insert((role, endpoint), env.client(endpoint.path(), &key).await);
        }
        let bound = concierge
            .ok(
                "mint_api_key",
                json!({ "data_source": source, "role": role }),
            )
            .await["key"]
            .as_str()
            .unwrap()
            .to_owned();
        clients.insert(
            (role, Endpoint::DataSource),
            env.client(&Endpoint::data_source_path(source), &bound)
                .await,
        );
    }

    let mut refused = 0;
    let mut allowed = 0;
    for ((role, endpoint), client) in &clients {
        let (role, endpoint) = (*role, *endpoint);
        let mut expected: Vec<String> = registry
            .all()
            .filter(|t| t.endpoint == endpoint)
            .filter(|t| {
                expected_refusal(t, Persona::Agent, role, endpoint == Endpoint::DataSource)
                    .is_none()
            })
            .map(|t| t.name.to_owned())
            .collect();
        expected.sort();
        assert_eq!(
            client.tool_names().await,
            expected,
            "tools/list for {role} on {}",
            endpoint.path()
        );
    }
    // The keys are agents': a customer tool is called by its name, which may be an agent
    // tool's too (support's create_ticket), so the customer's are covered by their own tests
    // (support_customers) and by the persona test below, not here.
    let agent_tools = || {
        registry
            .all()
            .filter(|t| t.personas.contains(&Persona::Agent))
    };
    for tool in agent_tools() {
        for role in Role::ALL {
            let client = clients
                .get(&(role, tool.endpoint))
                .unwrap_or_else(|| panic!("{} is on an endpoint no client reaches", tool.name));
            let result = client.call(tool.name, json!({})).await;
            let error = result
                .structured_content
                .as_ref()
                .map(|v| v["error"].clone())
                .unwrap_or_default();
            let at = format!("{role} calling {} on {}", tool.name, tool.endpoint.path());
            let bound = tool.endpoint == Endpoint::DataSource;
            match expected_refusal(tool, Persona::Agent, role, bound) {
                Some(reason) => {
                    refused += 1;
                    assert_eq!(result.is_error, Some(true), "{at} was allowed");
                    assert_eq!(error["code"], "forbidden", "{at}: {error}");
                    let message = error["message"].as_str().unwrap_or_default();
                    assert!(message.contains(&reason), "{at}: {message}");
                    assert_eq!(error["required_role"], tool.min_role.as_str(), "{at}");
                }
                None => {
                    allowed += 1;
                    assert_ne!(error["code"], "forbidden", "{at}: {error}");
                }
            }
        }
    }
    // Both halves of the matrix ran over every tool: nothing vacuous.
    assert_eq!(refused + allowed, agent_tools().count() * Role::ALL.len());
    assert!(
        refused > 0 && allowed > 0,
        "{refused} refused, {allowed} allowed"
    );
    for endpoint in Endpoint::ALL {
        assert!(
            registry.all().any(|t| t.endpoint == endpoint),
            "{} serves no tools",
            endpoint.path()
        );
    }
}

/// The same rule for every persona, including those no key can carry yet: `permits` (which
/// both `tools/list` and `tools/call` use) agrees with each tool's declared personas and
/// minimum role, with the reason in the refusal.
#[test]
fn every_persona_and_role_is_permitted_exactly_what_the_registry_declares() {
    let registry = hdls::products::registry();
    for (persona, bound) in all_personas()
        .into_iter()
        .flat_map(|p| [(p, false), (p, true)])
    {
        for role in Role::ALL {
            let mut principal = principal(persona, role);
            if bound {
                principal.data_source = Some(hdls::identity::DataSourceBinding {
                    id: uuid::Uuid::new_v4(),
                    schema: "shop".into(),
                });
            }
            for tool in registry.all() {
                let at = format!(
                    "{} {role} (bound to a data source: {bound}) calling {} on {}",
                    persona.as_str(),
                    tool.name,
                    tool.endpoint.name()
                );
                match (
                    expected_refusal(tool, persona, role, bound),
                    tool.permits(&principal),
                ) {
                    (None, Ok(())) => {}
                    (Some(reason), Err(refusal)) => {
                        assert_eq!(refusal.code, hdls::tools::ErrorCode::Forbidden, "{at}");
                        assert!(
                            refusal.message.contains(&reason),
                            "{at}: {}",
                            refusal.message
                        );
                    }
                    (expected, got) => panic!("{at}: expected {expected:?}, got {got:?}"),
                }
                // By identity, not name: an agent and a customer tool may share a name.
                let visible = registry
                    .visible(tool.endpoint, &principal)
                    .any(|t| std::ptr::eq(t, tool));
                assert_eq!(visible, tool.permits(&principal).is_ok(), "{at}: listing");
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
/// What it sees is support's customer allowlist and nothing else anywhere.
#[test]
fn the_customer_persona_sees_none_of_the_agent_tools() {
    let customer = principal(Persona::Customer, Role::Owner);
    let registry = hdls::products::registry();
    for endpoint in Endpoint::ALL {
        let mut visible: Vec<&str> = registry
            .visible(endpoint, &customer)
            .map(|t| t.name)
            .collect();
        visible.sort();
        let expected: &[&str] = match endpoint {
            Endpoint::Product(Product::Support) => &[
                "create_ticket",
                "get_ticket",
                "list_my_tickets",
                "rate_ticket",
                "reply",
            ],
            _ => &[],
        };
        assert_eq!(visible, expected, "{}", endpoint.path());
        for tool in registry.on(endpoint) {
            if tool.personas == [Persona::Customer] {
                assert_eq!(tool.min_role, Role::Reader, "{}", tool.name);
                continue;
            }
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
                .find(endpoint, name, Persona::Agent)
                .unwrap_or_else(|| panic!("{name} on {}", endpoint.path()));
            assert_eq!(tool.personas, &[Persona::Agent]);
        }
    }
}

/// A principal of any persona and role reaching every product (customers get a requester).
fn principal(persona: Persona, role: Role) -> hdls::identity::Principal {
    crate::harness::principal(uuid::Uuid::new_v4(), persona, role, None)
}
