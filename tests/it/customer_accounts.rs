//! Customer accounts: an agent invites a requester, the person accepts with their own
//! password, and connects an MCP client to /api/mcp/support as that customer. The binding is
//! made at issue (consent), frozen in the grant, and checked on every request.

use hdls::identity::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{TestEnv, no_args};
use crate::oauth_support::{
    self, AuthParams, Browser, PASSWORD, REDIRECT, consent_fields, hidden, query_param,
};

/// The customer tools, exactly (a customer's `tools/list` on /api/mcp/support).
pub const CUSTOMER_TOOLS: [&str; 5] = [
    "create_ticket",
    "get_ticket",
    "list_my_tickets",
    "rate_ticket",
    "reply",
];

/// A workspace with support installed: (id, owner key).
pub async fn support_workspace(env: &TestEnv, name: &str) -> (Uuid, String) {
    let (workspace, owner_key) = env.workspace(name).await;
    env.client("/api/mcp", &owner_key)
        .await
        .ok("install_product", json!({ "product": "support" }))
        .await;
    (workspace, owner_key)
}

/// `invite_customer` by email with an agent key; returns the tool's answer.
pub async fn invite(env: &TestEnv, agent_key: &str, email: &str) -> Value {
    env.client("/api/mcp/support", agent_key)
        .await
        .ok("invite_customer", json!({ "email": email }))
        .await
}

/// Opens an invitation link and answers it with `password`: (status, page).
pub async fn accept(env: &TestEnv, link: &str, password: &str) -> (StatusCode, String) {
    let mut browser = Browser::new(env);
    let page = browser.get(link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = browser
        .post(
            "/invite",
            &[
                ("csrf", &hidden(&page.body, "csrf")),
                ("token", &hidden(&page.body, "token")),
                ("password", password),
            ],
        )
        .await;
    (page.status, page.body)
}

/// A customer of `workspace` with a customer account (new person, `PASSWORD`): their
/// requester id.
pub async fn customer(env: &TestEnv, agent_key: &str, email: &str) -> Uuid {
    let invited = invite(env, agent_key, email).await;
    let (status, body) = accept(env, invited["link"].as_str().unwrap(), PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    invited["requester"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Disables a requester the way `update_requester {disabled: true}` does.
pub async fn disable(env: &TestEnv, requester: Uuid) {
    env.db
        .connect_superuser()
        .await
        .execute(
            "UPDATE support.requesters SET disabled_at = now() WHERE id = $1",
            &[&requester],
        )
        .await
        .unwrap();
}

async fn count(env: &TestEnv, sql: &str, workspace: Uuid) -> i64 {
    env.db
        .connect_superuser()
        .await
        .query_one(sql, &[&workspace])
        .await
        .unwrap()
        .get(0)
}

/// Sign-in and the consent page for `resource_path`: the browser (signed in), the client,
/// its PKCE pair and the consent page's body.
struct Consent {
    browser: Browser,
    client_id: String,
    pkce: oauth_support::Pkce,
    resource: String,
    body: String,
}

async fn consent(env: &TestEnv, email: &str, resource_path: &str) -> Consent {
    let client_id = oauth_support::register(env, REDIRECT).await;
    let pkce = oauth_support::pkce();
    let resource = env.url(resource_path);
    let url = oauth_support::authorize_url(
        env,
        &AuthParams {
            client_id: &client_id,
            redirect: REDIRECT,
            challenge: Some(&pkce.challenge),
            method: Some("S256"),
            resource: Some(&resource),
        },
    );
    let mut browser = Browser::new(env);
    let page = browser.get(&url).await;
    let signed_in = browser.sign_in(&page, email, PASSWORD).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let page = browser.get(signed_in.location.as_deref().unwrap()).await;
    Consent {
        browser,
        client_id,
        pkce,
        resource,
        body: page.body,
    }
}

impl Consent {
    /// Approves with this `workspace` choice; the redirect's code, or the refusal page.
    async fn approve(
        &mut self,
        choice: &str,
        products: &[&str],
    ) -> Result<String, (StatusCode, String)> {
        let mut form = consent_fields(&self.body);
        form.push(("workspace".into(), choice.to_owned()));
        for p in products {
            form.push(("product".into(), (*p).to_owned()));
        }
        form.push(("decision".into(), "approve".into()));
        let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let done = self.browser.post("/oauth/authorize", &pairs).await;
        if done.status != StatusCode::SEE_OTHER {
            return Err((done.status, done.body));
        }
        let location = done.location.unwrap();
        Ok(query_param(&location, "code").expect("code in the redirect"))
    }

    async fn tokens(&self, env: &TestEnv, code: &str) -> (String, String) {
        let (status, body) = oauth_support::token(
            env,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", &self.client_id),
                ("redirect_uri", REDIRECT),
                ("code_verifier", &self.pkce.verifier),
                ("resource", &self.resource),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    async fn refresh(&self, env: &TestEnv, refresh: &str) -> (StatusCode, Value) {
        oauth_support::token(
            env,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", &self.client_id),
                ("resource", &self.resource),
            ],
        )
        .await
    }
}

/// A customer's OAuth token for /api/mcp/support (access, refresh) and the consent used.
async fn customer_token(env: &TestEnv, email: &str, workspace: Uuid) -> (Consent, String, String) {
    let mut consent = consent(env, email, "/api/mcp/support").await;
    let code = consent
        .approve(&format!("customer:{workspace}"), &[])
        .await
        .unwrap_or_else(|(s, b)| panic!("{s}: {b}"));
    let (access, refresh) = consent.tokens(env, &code).await;
    (consent, access, refresh)
}

#[tokio::test]
async fn inviting_by_email_makes_a_requester_and_a_customer_account_that_is_no_membership() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Acme Support").await;
    let member_key = env.key(workspace, Role::Member).await;
    let concierge = env.client("/api/mcp", &owner_key).await;
    let members_before = concierge.ok("list_members", no_args()).await;

    let invited = invite(&env, &member_key, "Cara@Example.com").await;
    assert_eq!(
        invited["requester"]["email"], "cara@example.com",
        "{invited}"
    );
    let link = invited["link"].as_str().unwrap();
    assert!(link.starts_with(&env.url("/invite?token=inv_")), "{link}");
    assert_eq!(invited["emailed"], false);
    assert_eq!(invited["portal"], env.url(&format!("/portal/{workspace}")));
    assert_eq!(invited["mcp_endpoint"], env.url("/api/mcp/support"));
    let requester: Uuid = invited["requester"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM support.requesters WHERE workspace_id = $1",
            workspace
        )
        .await,
        1
    );

    // The page says what this is: a customer account for the workspace's support.
    let mut browser = Browser::new(&env);
    let page = browser.get(link).await;
    assert!(page.body.contains("Become a customer of"), "{}", page.body);
    assert!(
        page.body.contains("Acme Support</span>'s support"),
        "{}",
        page.body
    );

    let (status, body) = accept(&env, link, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!("/portal/{workspace}")), "{body}");
    assert!(body.contains("/api/mcp/support"), "{body}");

    let row = env
        .db
        .connect_superuser()
        .await
        .query_one(
            "SELECT ca.requester_id, u.email FROM hdls.customer_accounts ca
             JOIN hdls_identity.users u USING (user_id) WHERE ca.workspace_id = $1",
            &[&workspace],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), requester);
    assert_eq!(row.get::<_, &str>(1), "cara@example.com");
    // Not a member: list_members is unchanged and the workspace has no member rows (its owner
    // is a key).
    assert_eq!(
        concierge.ok("list_members", no_args()).await,
        members_before
    );
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM hdls.members WHERE workspace_id = $1",
            workspace
        )
        .await,
        0
    );

    // The link worked once; the requester has an account now; a reader cannot invite.
    assert_eq!(
        Browser::new(&env).get(link).await.status,
        StatusCode::NOT_FOUND
    );
    let support = env.client("/api/mcp/support", &member_key).await;
    assert_eq!(
        support
            .err_code("invite_customer", json!({ "requester_id": requester }))
            .await,
        "conflict"
    );
    let reader = env
        .client("/api/mcp/support", &env.key(workspace, Role::Reader).await)
        .await;
    assert_eq!(
        reader
            .err_code("invite_customer", json!({ "email": "dan@example.com" }))
            .await,
        "forbidden"
    );
    assert_eq!(
        support.err_code("invite_customer", json!({})).await,
        "invalid_input"
    );

    // A disabled requester is not invited; an invitation made before it was disabled no
    // longer works.
    let pending = invite(&env, &member_key, "dan@example.com").await;
    let dan: Uuid = pending["requester"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    disable(&env, dan).await;
    assert_eq!(
        support
            .err_code("invite_customer", json!({ "requester_id": dan }))
            .await,
        "conflict"
    );
    let mut browser = Browser::new(&env);
    let page = browser.get(pending["link"].as_str().unwrap()).await;
    let refused = browser
        .post(
            "/invite",
            &[
                ("csrf", &hidden(&page.body, "csrf")),
                ("token", &hidden(&page.body, "token")),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.body);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM hdls.customer_accounts WHERE workspace_id = $1",
            workspace
        )
        .await,
        1
    );
}

#[tokio::test]
async fn an_existing_person_must_give_their_own_password_and_keeps_it() {
    let env = TestEnv::start().await;
    let (elsewhere, _) = env.workspace("Elsewhere").await;
    env.person(elsewhere, "erin@example.com", PASSWORD, Role::Member)
        .await;
    let (workspace, owner_key) = support_workspace(&env, "Acme").await;
    let invited = invite(&env, &owner_key, "erin@example.com").await;
    let link = invited["link"].as_str().unwrap();

    let (status, body) = accept(&env, link, "an attacker's choice").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("That password is not right."), "{body}");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM hdls.customer_accounts WHERE workspace_id = $1",
            workspace
        )
        .await,
        0
    );

    let (status, body) = accept(&env, link, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM hdls.customer_accounts WHERE workspace_id = $1",
            workspace
        )
        .await,
        1
    );
    // Their password is their own still, and the other membership is untouched.
    let signed = hdls::people::sign_in::sign_in(
        &env.app.pools.auth,
        "erin@example.com",
        PASSWORD,
        None,
        env.clock_now(),
    )
    .await
    .unwrap();
    assert!(signed.is_ok());
}

#[tokio::test]
async fn the_seed_customer_flow_over_a_customer_oauth_token() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Acme").await;
    let requester = customer(&env, &owner_key, "cara@example.com").await;

    let consent_page = consent(&env, "cara@example.com", "/api/mcp/support").await;
    assert!(
        consent_page.body.contains("as a customer of Acme"),
        "{}",
        consent_page.body
    );
    assert!(
        consent_page
            .body
            .contains(&format!("value=\"customer:{workspace}\"")),
        "{}",
        consent_page.body
    );
    let (consent, access, refresh) = customer_token(&env, "cara@example.com", workspace).await;

    // 1. Connect: exactly the customer tools, and nothing anywhere else.
    let mcp = env.client("/api/mcp/support", &access).await;
    assert_eq!(mcp.tool_names().await, CUSTOMER_TOOLS);
    for path in ["/api/mcp", "/api/mcp/crm", "/api/mcp/contacts"] {
        let (status, _) = oauth_support::probe(&env, path, &access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // 2. Open a ticket.
    let created = mcp
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "Login broken on mobile", "body": "Can't sign in since the update." } }),
        )
        .await;
    let ticket_id = created["ticket"]["id"].as_str().unwrap().to_owned();
    // 3. Check on it later.
    let listed = mcp.ok("list_my_tickets", json!({})).await;
    let ids: Vec<&str> = listed["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ticket_id.as_str()]);
    // 4. Add a reply.
    let replied = mcp
        .ok(
            "reply",
            json!({ "ticket_id": ticket_id, "body": "Still happening on the latest build." }),
        )
        .await;
    assert_eq!(replied["entry"]["from"], "customer", "{replied}");

    // The ticket is the requester's, stamped by the server.
    let owner: Uuid = env
        .db
        .connect_superuser()
        .await
        .query_one(
            "SELECT requester_id FROM support.tickets WHERE id = $1::text::uuid",
            &[&ticket_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, requester);

    // A refreshed token is the same customer.
    let (status, body) = consent.refresh(&env, &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = body["access_token"].as_str().unwrap().to_owned();
    let again = env.client("/api/mcp/support", &refreshed).await;
    assert_eq!(again.tool_names().await, CUSTOMER_TOOLS);

    // Disabling the requester stops the token on its next request, and its refresh.
    disable(&env, requester).await;
    let (status, _) = oauth_support::probe(&env, "/api/mcp/support", &refreshed).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = consent
        .refresh(&env, body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn consent_offers_customer_accounts_only_for_support_and_never_as_membership() {
    let env = TestEnv::start().await;
    let (team, team_owner) = support_workspace(&env, "Team Co").await;
    env.client("/api/mcp", &team_owner)
        .await
        .ok("install_product", json!({ "product": "crm" }))
        .await;
    env.person(team, "pat@example.com", PASSWORD, Role::Admin)
        .await;
    let (vendor, vendor_owner) = support_workspace(&env, "Vendor Co").await;
    customer(&env, &vendor_owner, "pat@example.com").await;

    // CRM: the membership only; a forged customer choice is refused and makes no grant.
    let mut crm = consent(&env, "pat@example.com", "/api/mcp/crm").await;
    assert!(!crm.body.contains("customer:"), "{}", crm.body);
    assert!(!crm.body.contains("Vendor Co"), "{}", crm.body);
    let (status, body) = crm
        .approve(&format!("customer:{vendor}"), &["crm"])
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // Nor can the customer workspace be picked as a membership.
    let (status, _) = crm
        .approve(&vendor.to_string(), &["support"])
        .await
        .unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM hdls.oauth_grants WHERE workspace_id = $1",
            vendor
        )
        .await,
        0
    );

    // Support: both, the customer one labelled as such.
    let support = consent(&env, "pat@example.com", "/api/mcp/support").await;
    assert!(
        support.body.contains(">Team Co</option>"),
        "{}",
        support.body
    );
    assert!(
        support
            .body
            .contains(">as a customer of Vendor Co</option>"),
        "{}",
        support.body
    );

    // A person who is only a customer is told where a customer connects.
    customer(&env, &vendor_owner, "olive@example.com").await;
    let only = consent(&env, "olive@example.com", "/api/mcp").await;
    assert!(
        only.body
            .contains("Customer accounts connect to support only"),
        "{}",
        only.body
    );
}

#[tokio::test]
async fn a_customer_grant_never_becomes_an_agent_one_nor_the_reverse() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Both Co").await;
    // One person, an admin of the team and a customer of the same workspace.
    env.person(workspace, "sam@example.com", PASSWORD, Role::Admin)
        .await;
    let requester = customer(&env, &owner_key, "sam@example.com").await;

    let (grant, access, refresh) = customer_token(&env, "sam@example.com", workspace).await;
    let as_customer = env.client("/api/mcp/support", &access).await;
    assert_eq!(as_customer.tool_names().await, CUSTOMER_TOOLS);
    // Their admin membership adds nothing to the customer grant.
    assert_eq!(
        as_customer
            .err_code("invite_customer", json!({ "email": "x@example.com" }))
            .await,
        "forbidden"
    );
    let (status, _) = oauth_support::probe(&env, "/api/mcp", &access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The grant's persona and principal are frozen, even for the credential path.
    let auth = env.db.connect_as("hdls_auth").await;
    let changed = auth
        .execute(
            "UPDATE hdls.oauth_grants SET persona = 'agent', principal_id = NULL WHERE principal_id = $1",
            &[&requester],
        )
        .await;
    assert!(changed.is_err(), "persona changed");

    // Removing the membership leaves the customer connection (not a membership grant)...
    let owner = env.client("/api/mcp", &owner_key).await;
    let members = owner.ok("list_members", no_args()).await;
    let sam = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "sam@example.com")
        .unwrap()["user_id"]
        .clone();
    owner.ok("remove_member", json!({ "user_id": sam })).await;
    let (status, body) = grant.refresh(&env, &refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = env
        .client("/api/mcp/support", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(after.tool_names().await, CUSTOMER_TOOLS);

    // ...and an agent connection of a person who is also a customer is an agent one.
    let (team, team_owner) = support_workspace(&env, "Agents Co").await;
    env.person(team, "cleo@example.com", PASSWORD, Role::Member)
        .await;
    customer(&env, &team_owner, "cleo@example.com").await;
    let mut agent = consent(&env, "cleo@example.com", "/api/mcp/support").await;
    let code = agent
        .approve(&team.to_string(), &["support"])
        .await
        .unwrap();
    let (agent_access, _) = agent.tokens(&env, &code).await;
    let agent_tools = env
        .client("/api/mcp/support", &agent_access)
        .await
        .tool_names()
        .await;
    assert!(
        agent_tools.contains(&"invite_customer".to_owned()),
        "{agent_tools:?}"
    );
    assert!(
        !agent_tools.contains(&"list_my_tickets".to_owned()),
        "{agent_tools:?}"
    );
}
