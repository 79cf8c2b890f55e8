//! The docs the server carries: search_docs, MCP resources and prompts, and the docs kept true
//! against the registry; the security checklist walked as conversations.

use std::collections::BTreeSet;

use hdls::docs::{PAGES, Status};
use hdls::identity::Role;
use rmcp::model::{
    CacheScope, GetPromptRequestParams, ReadResourceRequestParams, ResourceContents,
};
use serde_json::{Value, json};

use crate::harness::{Mcp, TestEnv, no_args};
use crate::oauth_support::authorize;

/// Tools of features being built on other branches: their pages describe them ahead of the
/// registry. Each must be absent from the registry (move it out of here when it lands), and
/// may be named only on a page whose status is `BeingBuilt`.
const BEING_BUILT: &[&str] = &[];

/// Snake-case words in code spans that are not tools (error codes and the like).
const NOT_TOOLS: &[&str] = &[];

/// The tool names a page mentions: the first word of each inline code span, and the first word
/// of fenced lines shaped `name {…}`, that looks like a tool name (snake case, or a registered
/// one-word tool).
fn mentions(markdown: &str, one_word_tools: &BTreeSet<&str>) -> BTreeSet<String> {
    let ident = |s: &str| -> Option<String> {
        let word: String = s
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let rest = &s[word.len()..];
        let ends = rest.is_empty() || rest.starts_with(' ') || rest.starts_with('{');
        (ends && !word.is_empty() && (word.contains('_') || one_word_tools.contains(word.as_str())))
            .then_some(word)
    };
    let mut found = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            if line.contains(" {") {
                found.extend(ident(line.trim()));
            }
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 {
                found.extend(ident(span));
            }
        }
    }
    found
}

#[test]
fn the_docs_name_only_registered_tools_and_document_every_one() {
    let registry = hdls::products::registry();
    let names: BTreeSet<&str> = registry.all().map(|t| t.name).collect();
    let one_word: BTreeSet<&str> = names.iter().copied().filter(|n| !n.contains('_')).collect();
    let mut documented = BTreeSet::new();
    for page in PAGES {
        for name in mentions(page.markdown, &one_word) {
            if BEING_BUILT.contains(&name.as_str()) {
                assert_eq!(
                    page.status,
                    Status::BeingBuilt,
                    "{} names {name}, which is not built yet, as if it were",
                    page.slug
                );
                continue;
            }
            assert!(
                names.contains(name.as_str()) || NOT_TOOLS.contains(&name.as_str()),
                "{} mentions `{name}`, which is no registered tool",
                page.slug
            );
            documented.insert(name);
        }
    }
    for name in &names {
        assert!(
            documented.contains(*name),
            "the tool {name} is documented on no page of docs/product/"
        );
    }
    for name in BEING_BUILT {
        assert!(
            !names.contains(name),
            "{name} is registered now: remove it from BEING_BUILT and mark its page shipped"
        );
    }
}

async fn search(concierge: &Mcp, args: Value) -> Vec<Value> {
    concierge.ok("search_docs", args).await["results"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn search_docs_ranks_sections_with_snippets_and_uris() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Docs").await;
    let reader = env.key(ws, Role::Reader).await;
    let concierge = env.client("/api/mcp", &reader).await;

    let verify = search(&concierge, json!({ "query": "verify" })).await;
    let checklist = verify
        .iter()
        .find(|h| h["section"] == "Quick verification checklist")
        .unwrap_or_else(|| panic!("no checklist in {verify:?}"));
    assert_eq!(
        checklist["uri"],
        "hdls://docs/security-and-trust#quick-verification-checklist"
    );
    assert_eq!(checklist["page"], "security-and-trust");
    let matched = checklist["matched"].as_array().unwrap();
    assert!(matched.contains(&json!("verify")) || matched.contains(&json!("verification")));
    assert!(!checklist["snippet"].as_str().unwrap().is_empty());

    let ssrf = search(&concierge, json!({ "query": "metadata address" })).await;
    let guardrails = ssrf[..3]
        .iter()
        .find(|h| h["uri"] == "hdls://docs/bring-your-own-database#ssrf-guardrails")
        .unwrap_or_else(|| panic!("no SSRF guardrails in the top 3: {ssrf:?}"));
    assert_eq!(guardrails["status"], "available");
    let snippet = guardrails["snippet"].as_str().unwrap();
    assert!(
        snippet.contains("address") && snippet.contains("metadata"),
        "{snippet}"
    );

    // A product narrows to that product's pages, and nothing else.
    let crm = search(
        &concierge,
        json!({ "query": "tickets customer portal", "product": "crm", "limit": 20 }),
    )
    .await;
    assert!(crm.iter().all(|h| h["product"] == "crm"), "{crm:?}");
    let support = search(
        &concierge,
        json!({ "query": "tickets", "product": "support", "limit": 20 }),
    )
    .await;
    assert!(!support.is_empty());
    assert!(
        support.iter().all(|h| h["product"] == "support"),
        "{support:?}"
    );
    let contacts = search(
        &concierge,
        json!({ "query": "verification checklist", "product": "contacts" }),
    )
    .await;
    assert!(contacts.is_empty(), "{contacts:?}");

    // A word excluded with -, and bad input refused with the field named.
    let excluded = search(
        &concierge,
        json!({ "query": "webhook -signature", "limit": 20 }),
    )
    .await;
    assert!(
        excluded
            .iter()
            .all(|h| !h["snippet"].as_str().unwrap().contains("Signature"))
    );
    let error = concierge.err("search_docs", json!({ "query": "  " })).await;
    assert_eq!(error["code"], "invalid_input");
    let error = concierge
        .err("search_docs", json!({ "query": "x", "product": "billing" }))
        .await;
    assert_eq!(error["code"], "invalid_input");
}

#[tokio::test]
async fn docs_are_resources_and_just_ask_phrases_are_prompts_with_caching_hints() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Resources").await;
    let reader = env.key(ws, Role::Reader).await;
    let concierge = env.client("/api/mcp", &reader).await;
    let peer = &concierge.service;

    let listed = peer.list_resources(None).await.unwrap();
    assert_eq!(listed.cache_scope, Some(CacheScope::Private));
    assert!(listed.ttl_ms.unwrap() > 0);
    let uris: Vec<&str> = listed.resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris.len(), PAGES.len());
    assert!(uris.contains(&"hdls://docs/security-and-trust"));
    let read = peer
        .read_resource(ReadResourceRequestParams::new("hdls://docs/roles"))
        .await
        .unwrap();
    assert_eq!(read.cache_scope, Some(CacheScope::Private));
    let ResourceContents::TextResourceContents {
        text, mime_type, ..
    } = &read.contents[0]
    else {
        panic!("not text: {read:?}");
    };
    assert!(text.starts_with("# Roles"));
    assert_eq!(mime_type.as_deref(), Some("text/markdown"));
    // A section URI from search_docs reads that section only.
    let section = peer
        .read_resource(ReadResourceRequestParams::new(
            "hdls://docs/security-and-trust#quick-verification-checklist",
        ))
        .await
        .unwrap();
    let ResourceContents::TextResourceContents { text, .. } = &section.contents[0] else {
        panic!();
    };
    assert!(text.starts_with("## Quick verification checklist"));
    assert!(
        peer.read_resource(ReadResourceRequestParams::new("hdls://docs/../etc/passwd"))
            .await
            .is_err()
    );

    let prompts = peer.list_prompts(None).await.unwrap();
    assert_eq!(prompts.cache_scope, Some(CacheScope::Private));
    assert!(prompts.ttl_ms.unwrap() > 0);
    let names: Vec<&str> = prompts.prompts.iter().map(|p| p.name.as_str()).collect();
    for name in [
        "verify_my_security",
        "set_up_customer_portal",
        "check_my_connection",
        "compare_roles",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    // A prompt is offered only when the server has its tools (bring your own database: later).
    let registered = hdls::products::registry()
        .all()
        .any(|t| t.name == "link_database");
    assert_eq!(names.contains(&"connect_my_database"), registered);
    let got = peer
        .get_prompt(GetPromptRequestParams::new("set_up_customer_portal"))
        .await
        .unwrap();
    let text = serde_json::to_string(&got.messages).unwrap();
    assert!(text.contains("Set up a portal so my customers"));
    for tool in ["install_product", "invite_customer", "create_requester"] {
        assert!(text.contains(tool), "{text}");
    }
    assert!(
        peer.get_prompt(GetPromptRequestParams::new("connect_my_database"))
            .await
            .is_err()
            || registered
    );
}

#[tokio::test]
async fn customers_get_no_resources_prompts_or_search() {
    let env = TestEnv::start().await;
    let (_, owner) = env.workspace("Portal Docs").await;
    env.client("/api/mcp", &owner)
        .await
        .ok("install_product", json!({ "product": "support" }))
        .await;
    let desk = env.client("/api/mcp/support", &owner).await;
    let requester = desk
        .ok("create_requester", json!({ "email": "c@example.com" }))
        .await;
    let key = desk
        .ok(
            "mint_customer_key",
            json!({ "requester_id": requester["requester"]["id"] }),
        )
        .await;
    let customer = env
        .client("/api/mcp/support", key["key"].as_str().unwrap())
        .await;
    assert!(
        customer
            .service
            .list_resources(None)
            .await
            .unwrap()
            .resources
            .is_empty()
    );
    assert!(
        customer
            .service
            .list_prompts(None)
            .await
            .unwrap()
            .prompts
            .is_empty()
    );
    assert!(
        customer
            .service
            .read_resource(ReadResourceRequestParams::new("hdls://docs/roles"))
            .await
            .is_err()
    );
    assert!(
        !customer
            .tool_names()
            .await
            .contains(&"search_docs".to_owned())
    );
}

/// The seed's "Quick verification checklist", each item as the conversation the docs describe.
/// Items 3 and 6 (webhooks) are walked by the test after this one.
#[tokio::test]
async fn the_quick_verification_checklist_as_conversations() {
    let env = TestEnv::start().await;

    // 1. Connected via the browser OAuth prompt, no key pasted.
    let authorized = authorize(&env, Role::Member, &["crm"], "/api/mcp").await;
    let tokens = authorized.tokens(&env).await;
    let oauth = Mcp::connect(&env.url("/api/mcp"), &tokens.access).await;
    let who = oauth.ok("whoami", no_args()).await;
    assert_eq!(who["credential"]["kind"], "oauth_token");
    assert_eq!(who["workspace"]["id"], json!(authorized.workspace));
    let report = oauth.ok("verify_security", no_args()).await;
    let status = |id: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("token_audience_is_this_endpoint"), "pass");
    assert_eq!(status("pkce_s256_only"), "pass");

    // 2. Created and searched a record without ever supplying a tenant id.
    let (ws, owner) = env.workspace("Checklist").await;
    let crm = env.client("/api/mcp/crm", &owner).await;
    crm.ok(
        "create_account",
        json!({ "name": "Acme Robotics", "domain": "acme.example" }),
    )
    .await;
    let found = crm.ok("search_accounts", json!({ "query": "Acme" })).await;
    assert_eq!(found["accounts"][0]["name"], "Acme Robotics");
    let error = crm
        .err(
            "search_accounts",
            json!({ "query": "Acme", "tenant_id": ws }),
        )
        .await;
    assert_eq!(error["code"], "invalid_input");
    let concierge = env.client("/api/mcp", &owner).await;
    let report = concierge.ok("verify_security", no_args()).await;
    assert_eq!(report["all_passed"], true, "{report}");

    // 4. The one-time API key: shown once with the notice, never listed again.
    let minted = concierge
        .ok(
            "mint_api_key",
            json!({ "role": "reader", "label": "sync job" }),
        )
        .await;
    let secret = minted["key"].as_str().unwrap();
    assert!(minted["notice"].as_str().unwrap().contains("shown once"));
    let listed = concierge.ok("list_api_keys", no_args()).await;
    assert!(!listed.to_string().contains(secret));

    // 5. Admin-only actions behave per role: the ladder from whoami, the refusals name the role.
    let member = env
        .client("/api/mcp", &env.key(ws, Role::Member).await)
        .await;
    let who = member.ok("whoami", no_args()).await;
    assert_eq!(who["role_ladder"][2]["role"], "admin");
    assert!(
        who["role_ladder"][2]["can"]
            .as_str()
            .unwrap()
            .contains("install products")
    );
    for (tool, args, needs) in [
        ("install_product", json!({ "product": "support" }), "admin"),
        (
            "invite_teammate",
            json!({ "email": "x@example.com", "role": "reader" }),
            "admin",
        ),
        ("uninstall_product", json!({ "product": "crm" }), "owner"),
    ] {
        let error = member.err(tool, args).await;
        assert_eq!(error["code"], "forbidden", "{tool}");
        assert_eq!(error["required_role"], needs, "{tool}");
    }

    // And the docs answer each item.
    let hits = search(
        &concierge,
        json!({ "query": "checklist OAuth tenant id secret manager role" }),
    )
    .await;
    assert_eq!(
        hits[0]["section"], "Quick verification checklist",
        "{hits:?}"
    );
}

/// Items 3, 4 (its webhook half) and 6 of the checklist, against a real receiver on loopback
/// (allowed as `--outbound-allow 127.0.0.0/8` would).
#[tokio::test]
async fn the_webhook_items_of_the_checklist_as_conversations() {
    use hmac::{Hmac, KeyInit, Mac};
    use std::sync::Arc;

    fn signature(secret: &str, body: &[u8]) -> String {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    let env = TestEnv::start_with_app(|app| {
        app.with_outbound(hdls::net::guard::Guard::new(
            Arc::new(crate::webhooks::Names::default()),
            vec![hdls::net::guard::Cidr::parse("127.0.0.0/8").unwrap()],
        ))
    })
    .await;
    let (_, owner) = env.workspace("Hooked checklist").await;
    let concierge = env.client("/api/mcp", &owner).await;
    let receiver = crate::webhooks::Receiver::start().await;

    // 3. "Send CRM changes to my endpoint": the secret is shown once; a delivery verifies with
    // it, and the same body altered by one byte does not (what the endpoint must reject).
    let sub = concierge
        .ok(
            "subscribe_webhook",
            json!({ "target_url": receiver.url, "schema_name": "crm", "event_types": ["insert"] }),
        )
        .await;
    let secret = sub["secret"].as_str().unwrap().to_owned();
    env.client("/api/mcp/crm", &owner)
        .await
        .ok("create_account", json!({ "name": "Hooked Inc" }))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let first = loop {
        if let Some(got) = receiver.accepted().into_iter().next() {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "no delivery");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(
        first.header("x-hdls-signature"),
        signature(&secret, &first.body)
    );
    let mut tampered = first.body.clone();
    tampered[0] ^= 1;
    assert_ne!(
        first.header("x-hdls-signature"),
        signature(&secret, &tampered)
    );

    // 4. The secret is never shown again, and it is stored sealed.
    let listed = concierge.ok("list_webhooks", json!({})).await;
    assert!(!listed.to_string().contains(&secret));
    let report = concierge.ok("verify_security", no_args()).await;
    let secrets = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "secrets_encrypted_at_rest")
        .unwrap()
        .clone();
    assert_eq!(secrets["status"], "pass");
    assert!(
        secrets["evidence"]["sealed_values_in_this_workspace"]
            .as_i64()
            .unwrap()
            >= 1
    );

    // 6. "Redeliver my last webhook": the same event id again, for an idempotent handler.
    let deliveries = concierge
        .ok("list_webhook_deliveries", json!({ "id": sub["id"] }))
        .await;
    concierge
        .ok(
            "redeliver_webhook",
            json!({ "delivery_id": deliveries["deliveries"][0]["delivery_id"] }),
        )
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let second = loop {
        if let Some(got) = receiver.accepted().into_iter().nth(1) {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "no redelivery");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert_eq!(second.event_id(), first.event_id());
    assert_eq!(second.body, first.body);
}
