//! whoami and verify_security: the concierge tells who you are and proves its promises live.

use hdls::identity::Role;
use serde_json::{Value, json};

use crate::harness::{Mcp, TestEnv, no_args};
use crate::oauth_support::authorize;

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

const ALWAYS_APPLICABLE: [&str; 6] = [
    "runtime_role_is_powerless",
    "row_level_security_on_every_table",
    "no_workspace_context_sees_zero_rows",
    "credential_bound_to_one_workspace",
    "pkce_s256_only",
    "rate_limit_in_force",
];

#[tokio::test]
async fn verify_security_passes_on_a_healthy_setup_with_evidence() {
    let env = TestEnv::start().await;
    let (ws, owner) = env.workspace("Proven").await;
    env.client("/api/mcp/crm", &owner)
        .await
        .ok("create_account", json!({ "name": "Acme Robotics" }))
        .await;
    // Readers may run it too.
    let reader = env.key(ws, Role::Reader).await;
    let report = env
        .client("/api/mcp", &reader)
        .await
        .ok("verify_security", no_args())
        .await;
    assert_eq!(report["all_passed"], true, "{report}");
    for id in ALWAYS_APPLICABLE {
        let c = check(&report, id);
        assert_eq!(c["status"], "pass", "{c}");
        assert!(
            c["verify_yourself"].as_str().unwrap().len() > 20,
            "{id} says how to verify it"
        );
    }
    let role = &check(&report, "runtime_role_is_powerless")["evidence"];
    assert_eq!(role["role"], "hdls_runtime");
    assert_eq!(role["superuser"], false);
    assert_eq!(role["bypasses_row_level_security"], false);
    let probe = &check(&report, "no_workspace_context_sees_zero_rows")["evidence"];
    assert!(probe["rows_seen_with_your_workspace"].as_i64().unwrap() >= 1);
    assert_eq!(probe["rows_seen_without_a_workspace"], 0);
    let bound = &check(&report, "credential_bound_to_one_workspace")["evidence"];
    assert_eq!(bound["workspace_stamped_by_the_server"], json!(ws));
    assert_eq!(bound["credential_rows_in_this_workspace"], 1);
    assert_eq!(
        check(&report, "pkce_s256_only")["evidence"]["code_challenge_methods_supported"],
        json!(["S256"])
    );
    // An API key has no audience: said so, not claimed as a pass.
    assert_eq!(
        check(&report, "token_audience_is_this_endpoint")["status"],
        "not_applicable"
    );
    // Nothing that helps an attacker: no other workspace, no database address.
    // (The public URL is the server's published address, the only one it names.)
    let text = report.to_string().replace(&env.base_url, "<public url>");
    assert!(
        !text.contains("127.0.0.1") && !text.contains("host="),
        "{text}"
    );
    let secrets = check(&report, "secrets_encrypted_at_rest");
    assert_eq!(secrets["status"], "pass", "{secrets}");
    let sealed = secrets["evidence"]["sealed_columns"].to_string();
    assert!(
        sealed.contains("hdls.webhook_subscriptions.secret_sealed")
            && sealed.contains("hdls.data_sources.sealed_connection"),
        "{sealed}"
    );
}

#[tokio::test]
async fn a_check_fails_when_its_condition_is_broken_in_the_database() {
    let env = TestEnv::start().await;
    let (_, owner) = env.workspace("Broken").await;
    let (_, other) = env.workspace("Neighbour").await;
    env.client("/api/mcp/crm", &other)
        .await
        .ok("create_account", json!({ "name": "Neighbour Inc" }))
        .await;
    let concierge = env.client("/api/mcp", &owner).await;
    let su = env.db.connect_superuser().await;

    // Row-level security no longer forced on one table.
    su.batch_execute("ALTER TABLE crm.notes NO FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let report = concierge.ok("verify_security", no_args()).await;
    assert_eq!(report["all_passed"], false);
    let rls = check(&report, "row_level_security_on_every_table");
    assert_eq!(rls["status"], "fail");
    assert_eq!(
        rls["evidence"]["tables_without_enabled_and_forced_rls"],
        json!(["crm.notes"])
    );
    assert_eq!(
        report["failed"],
        json!(["row_level_security_on_every_table"])
    );
    su.batch_execute("ALTER TABLE crm.notes FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    assert_eq!(
        concierge.ok("verify_security", no_args()).await["all_passed"],
        true
    );

    // A policy that leaks every row to the runtime role: the no-context probe sees the
    // neighbour's account (and the report says how many rows, never which).
    su.batch_execute("CREATE POLICY leak ON crm.accounts FOR SELECT TO hdls_runtime USING (true)")
        .await
        .unwrap();
    let report = concierge.ok("verify_security", no_args()).await;
    let probe = check(&report, "no_workspace_context_sees_zero_rows");
    su.batch_execute("DROP POLICY leak ON crm.accounts")
        .await
        .unwrap();
    // A secret kept in plain text next to the sealed one.
    su.batch_execute("ALTER TABLE hdls.webhook_subscriptions ADD COLUMN signing_secret text")
        .await
        .unwrap();
    let secrets = concierge.ok("verify_security", no_args()).await;
    let secrets = check(&secrets, "secrets_encrypted_at_rest");
    assert_eq!(secrets["status"], "fail");
    assert_eq!(
        secrets["evidence"]["columns_not_ciphertext"],
        json!(["hdls.webhook_subscriptions.signing_secret"])
    );
    assert_eq!(probe["status"], "fail", "{probe}");
    assert!(
        probe["evidence"]["rows_seen_without_a_workspace"]
            .as_i64()
            .unwrap()
            >= 1
    );
    assert!(!report.to_string().contains("Neighbour"));
}

#[tokio::test]
async fn whoami_tells_an_api_key_its_label_role_ladder_and_rate_limit() {
    let env = TestEnv::start().await;
    let (_, owner) = env.workspace("Ladder Co").await;
    let concierge = env.client("/api/mcp", &owner).await;
    let minted = concierge
        .ok(
            "mint_api_key",
            json!({ "role": "member", "label": "nightly sync", "expires_in": "30d" }),
        )
        .await;
    let member = env
        .client("/api/mcp", minted["key"].as_str().unwrap())
        .await;
    member.ok("get_usage", no_args()).await;
    let who = member.ok("whoami", no_args()).await;
    assert_eq!(who["workspace"]["name"], "Ladder Co");
    assert_eq!(who["role"], "member");
    assert_eq!(
        who["role_allows"],
        "read and write records, manage webhooks"
    );
    assert_eq!(who["role_ladder"].as_array().unwrap().len(), 4);
    assert_eq!(who["credential"]["kind"], "api_key");
    assert_eq!(who["credential"]["id"], minted["key_id"]);
    assert_eq!(who["credential"]["label"], "nightly sync");
    assert!(
        who["credential"]["minted_by"]
            .as_str()
            .unwrap()
            .starts_with("key_")
    );
    assert!(who["expires_at"].is_string());
    assert_eq!(who["endpoint"], env.url("/api/mcp"));
    assert_eq!(who["rate_limit"]["per_minute"], 120);
    assert!(who["rate_limit"]["used_this_minute"].as_i64().unwrap() >= 2);
    let summary = who["summary"].as_str().unwrap();
    for part in ["a member", "credential.label", "120 tool calls per minute"] {
        assert!(summary.contains(part), "{summary}");
    }
    // Names people chose stay in their fields, never in our sentence.
    assert!(!summary.contains("Ladder Co") && !summary.contains("nightly sync"));
}

#[tokio::test]
async fn whoami_and_verify_security_over_an_oauth_connection() {
    let env = TestEnv::start().await;
    let authorized = authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let tokens = authorized.tokens(&env).await;
    let concierge = Mcp::connect(&env.url("/api/mcp"), &tokens.access).await;
    let who = concierge.ok("whoami", no_args()).await;
    assert_eq!(who["credential"]["kind"], "oauth_token");
    assert_eq!(who["credential"]["client_name"], "Refusal Test Client");
    assert_eq!(who["credential"]["audience"], env.url("/api/mcp"));
    assert!(who["credential"]["access_token_expires_at"].is_string());
    assert!(
        who["credential"]["refresh_idles_out_at"].is_string(),
        "{who}"
    );
    assert_eq!(who["role"], "admin");
    let summary = who["summary"].as_str().unwrap();
    assert!(summary.contains("OAuth connection") && !summary.contains("Refusal Test Client"));

    let report = concierge.ok("verify_security", no_args()).await;
    assert_eq!(report["all_passed"], true, "{report}");
    let audience = check(&report, "token_audience_is_this_endpoint");
    assert_eq!(audience["status"], "pass");
    assert_eq!(audience["evidence"]["audience"], env.url("/api/mcp"));
}

#[tokio::test]
async fn customers_get_neither_whoami_nor_verify_security() {
    let env = TestEnv::start().await;
    let (_, owner) = env.workspace("Portal Co").await;
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
    let names = customer.tool_names().await;
    assert!(
        !names
            .iter()
            .any(|n| n == "whoami" || n == "verify_security")
    );
}
