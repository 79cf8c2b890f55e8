//! Identities and credentials cannot be widened around row-level security: an invitation link
//! never becomes someone else's account, a password from such a link reaches nothing it was
//! not invited to, and a credential never mints anything wider or longer-lived than itself.

use hdls::identity::Role;
use hdls::people;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestEnv;
use crate::oauth_support::{self, Browser, PASSWORD, hidden};

const ATTACKER_PASSWORD: &str = "attacker picked this";

async fn invite(env: &TestEnv, owner_key: &str, email: &str, role: &str) -> String {
    let owner = env.client("/api/mcp", owner_key).await;
    owner
        .ok("invite_teammate", json!({ "email": email, "role": role }))
        .await["link"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn accept(env: &TestEnv, link: &str, password: &str) -> (StatusCode, String) {
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

/// The operator adds `email` to `workspace` without a password (as first start and
/// `hdls admin member add` do); returns the set-password link token, if one was made.
async fn operator_adds(
    env: &TestEnv,
    workspace: uuid::Uuid,
    email: &str,
    role: Role,
) -> Option<String> {
    people::provision(
        &env.app.pools.auth,
        workspace,
        email,
        None,
        role,
        env.clock_now(),
    )
    .await
    .unwrap()
    .set_password_token
}

async fn signs_in(env: &TestEnv, email: &str, password: &str) -> bool {
    people::sign_in::sign_in(&env.app.pools.auth, email, password, None, env.clock_now())
        .await
        .unwrap()
        .is_ok()
}

async fn user_id(env: &TestEnv, email: &str) -> uuid::Uuid {
    env.db
        .connect_superuser()
        .await
        .query_one(
            "SELECT user_id FROM hdls_identity.users WHERE email = $1",
            &[&email],
        )
        .await
        .unwrap()
        .get(0)
}

async fn web_sessions(env: &TestEnv) -> i64 {
    env.db
        .connect_superuser()
        .await
        .query_one("SELECT count(*) FROM hdls_identity.web_sessions", &[])
        .await
        .unwrap()
        .get(0)
}

async fn usable_workspaces(env: &TestEnv, email: &str) -> Vec<String> {
    let user = user_id(env, email).await;
    people::memberships(&env.app.pools.auth, user)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.workspace_name)
        .collect()
}

/// The form of an invitation page with its per-link values blanked out.
fn form_of(body: &str, email: &str) -> String {
    let start = body.find("<form").unwrap();
    let end = body[start..].find("</form>").unwrap() + start;
    body[start..end]
        .replace(&hidden(body, "csrf"), "CSRF")
        .replace(&hidden(body, "token"), "TOKEN")
        .replace(email, "EMAIL")
}

#[tokio::test]
async fn an_invitation_never_sets_or_bypasses_an_existing_persons_password() {
    let env = TestEnv::start().await;
    // B's owner exists but has not used their set-password link yet.
    let (b, _) = env.workspace("Victim Co").await;
    assert!(
        operator_adds(&env, b, "owner@victim.example", Role::Owner)
            .await
            .is_some()
    );
    // An admin of A invites that address and opens the link themselves.
    let (_, a_key) = env.workspace("Attacker Co").await;
    let link = invite(&env, &a_key, "owner@victim.example", "reader").await;
    let (status, body) = accept(&env, &link, ATTACKER_PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!signs_in(&env, "owner@victim.example", ATTACKER_PASSWORD).await);
    let has_password: bool = env
        .db
        .connect_superuser()
        .await
        .query_one(
            "SELECT password_hash IS NOT NULL FROM hdls_identity.users WHERE email = 'owner@victim.example'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!has_password, "the invitation set the victim's password");
    // Nor for someone with a password: only their own opens the door.
    env.person(b, "ann@victim.example", PASSWORD, Role::Member)
        .await;
    let link = invite(&env, &a_key, "ann@victim.example", "reader").await;
    assert_eq!(
        accept(&env, &link, ATTACKER_PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(signs_in(&env, "ann@victim.example", PASSWORD).await);
    assert!(!signs_in(&env, "ann@victim.example", ATTACKER_PASSWORD).await);
    assert_eq!(accept(&env, &link, PASSWORD).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_invitation_page_is_the_same_whoever_the_address_belongs_to() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Pages").await;
    env.person(ws, "has.password@example.com", PASSWORD, Role::Reader)
        .await;
    operator_adds(&env, ws, "no.password@example.com", Role::Reader).await;
    let (_, inviter) = env.workspace("Inviter").await;
    let mut forms = Vec::new();
    for email in [
        "has.password@example.com",
        "no.password@example.com",
        "nobody@example.com",
    ] {
        let link = invite(&env, &inviter, email, "reader").await;
        let page = Browser::new(&env).get(&link).await;
        assert_eq!(page.status, StatusCode::OK);
        forms.push(form_of(&page.body, email));
    }
    assert_eq!(forms[0], forms[1]);
    assert_eq!(forms[1], forms[2]);
}

#[tokio::test]
async fn a_password_from_an_invitation_reaches_only_that_invitation_until_the_address_is_proven() {
    let env = TestEnv::start().await;
    let (_, a_key) = env.workspace("Attacker Co").await;
    // The attacker pre-registers an address that is not theirs.
    let link = invite(&env, &a_key, "cfo@victim.example", "reader").await;
    assert_eq!(
        accept(&env, &link, ATTACKER_PASSWORD).await.0,
        StatusCode::OK
    );
    assert!(signs_in(&env, "cfo@victim.example", ATTACKER_PASSWORD).await);
    // Later the victim's own workspace adds that address through its operator.
    let (b, _) = env.workspace("Victim Co").await;
    let added = operator_adds(&env, b, "cfo@victim.example", Role::Admin).await;
    // The attacker's password does not reach it: the consent page would list Attacker Co only.
    assert_eq!(
        usable_workspaces(&env, "cfo@victim.example").await,
        ["Attacker Co"]
    );
    // The address is unproven, so the operator got a link that proves it. The real person
    // uses it: their password replaces the attacker's, whose sessions end.
    let token = added.expect("a link to prove the address");
    assert_eq!(
        web_sessions(&env).await,
        1,
        "the attacker's session from accepting"
    );
    let user = people::links::use_set_password(
        &env.app.pools.auth,
        &token,
        "the real cfo's password",
        env.clock_now(),
    )
    .await
    .unwrap();
    assert!(user.is_some());
    assert!(!signs_in(&env, "cfo@victim.example", ATTACKER_PASSWORD).await);
    assert!(signs_in(&env, "cfo@victim.example", "the real cfo's password").await);
    let mut reachable = usable_workspaces(&env, "cfo@victim.example").await;
    reachable.sort();
    assert_eq!(reachable, ["Attacker Co", "Victim Co"]);
    assert_eq!(
        web_sessions(&env).await,
        0,
        "setting a password ends every session"
    );
}

#[tokio::test]
async fn setting_a_password_revokes_connections_and_what_they_minted() {
    let env = TestEnv::start().await;
    let authorized = oauth_support::authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let tokens = authorized.tokens(&env).await;
    let concierge = env.client("/api/mcp", &tokens.access).await;
    let minted = concierge
        .ok("mint_api_key", json!({ "role": "member" }))
        .await;
    let child = minted["key"].as_str().unwrap().to_owned();
    env.client("/api/mcp/crm", &child)
        .await
        .ok("search_accounts", json!({}))
        .await;
    let link = people::password_link(&env.app.pools.auth, &authorized.email, env.clock_now())
        .await
        .unwrap()
        .unwrap();
    people::links::use_set_password(
        &env.app.pools.auth,
        &link,
        "a new long password",
        env.clock_now(),
    )
    .await
    .unwrap()
    .unwrap();
    let (status, body) = authorized.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    let (status, _) = oauth_support::probe(&env, "/api/mcp", &tokens.access).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = oauth_support::probe(&env, "/api/mcp/crm", &child).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the minted key survived");
    let owner = env.client("/api/mcp", &authorized.owner_key).await;
    let events = owner
        .ok("list_audit_events", json!({ "action": "oauth.revoke" }))
        .await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0]["target"]
            .as_str()
            .unwrap()
            .contains("password changed")
    );
}

fn key_entry<'a>(keys: &'a Value, key_id: &str) -> &'a Value {
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == key_id)
        .unwrap_or_else(|| panic!("{key_id} not in {keys}"))
}

#[tokio::test]
async fn an_oauth_connection_mints_only_keys_within_it_and_they_die_with_it() {
    let env = TestEnv::start().await;
    let authorized = oauth_support::authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let owner = env.client("/api/mcp", &authorized.owner_key).await;
    owner
        .ok("install_product", json!({ "product": "support" }))
        .await;
    let tokens = authorized.tokens(&env).await;
    let concierge = env.client("/api/mcp", &tokens.access).await;
    // Wider in role or in products: refused, with the reason.
    let refused = concierge
        .err("mint_api_key", json!({ "role": "owner" }))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("owner"));
    let refused = concierge
        .err(
            "mint_api_key",
            json!({ "role": "member", "products": ["support"] }),
        )
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("support"));
    // Within it: the key carries the connection's products and names its maker.
    let child = concierge
        .ok("mint_api_key", json!({ "role": "admin" }))
        .await;
    assert_eq!(child["products"], json!(["crm"]));
    // …and lives no longer than an unused connection can (its refresh idle limit).
    let expires: time::OffsetDateTime = time::OffsetDateTime::parse(
        child["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(expires <= env.clock_now() + hdls::oauth::grants::REFRESH_IDLE);
    let forever = concierge
        .err(
            "mint_api_key",
            json!({ "role": "reader", "expires_in": "3650d" }),
        )
        .await;
    assert_eq!(forever["code"], "forbidden", "{forever}");
    let connection = child["minted_by"].as_str().unwrap().to_owned();
    assert!(connection.starts_with("grant_"), "{child}");
    let child_key = child["key"].as_str().unwrap().to_owned();
    let (status, _) = oauth_support::probe(&env, "/api/mcp/crm", &child_key).await;
    assert_eq!(status, StatusCode::OK);
    let support = env.client("/api/mcp/support", &child_key).await;
    assert!(
        support.tool_names().await.is_empty(),
        "a crm-only key reaches support"
    );
    // A key minted by that key is bounded again, and hangs off it.
    let by_child = env.client("/api/mcp", &child_key).await;
    let grandchild = by_child
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await;
    assert_eq!(grandchild["products"], json!(["crm"]));
    assert_eq!(grandchild["minted_by"], child["key_id"]);
    let grandchild_key = grandchild["key"].as_str().unwrap().to_owned();
    // Revoking the connection revokes both, transitively.
    owner
        .ok("revoke_connection", json!({ "connection_id": connection }))
        .await;
    for key in [&child_key, &grandchild_key] {
        let (status, _) = oauth_support::probe(&env, "/api/mcp/crm", key).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let keys = owner.ok("list_api_keys", json!({})).await;
    let listed = key_entry(&keys, child["key_id"].as_str().unwrap());
    assert_eq!(listed["status"], "revoked");
    assert_eq!(listed["minted_by"], connection.as_str());
    assert!(
        listed["revoked_reason"]
            .as_str()
            .unwrap()
            .contains(&connection)
    );
    let listed = key_entry(&keys, grandchild["key_id"].as_str().unwrap());
    assert_eq!(listed["status"], "revoked");
}

#[tokio::test]
async fn refresh_reuse_and_member_removal_revoke_minted_keys() {
    let env = TestEnv::start().await;
    // Refresh-token reuse revokes the connection, and with it its keys.
    let authorized = oauth_support::authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let tokens = authorized.tokens(&env).await;
    let key = env
        .client("/api/mcp", &tokens.access)
        .await
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        authorized.refresh(&env, &tokens.refresh).await.0,
        StatusCode::OK
    );
    assert_eq!(
        authorized.refresh(&env, &tokens.refresh).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        oauth_support::probe(&env, "/api/mcp/crm", &key).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Removing the member revokes their connections, and with them their keys.
    let authorized = oauth_support::authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let tokens = authorized.tokens(&env).await;
    let key = env
        .client("/api/mcp", &tokens.access)
        .await
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner = env.client("/api/mcp", &authorized.owner_key).await;
    let user = user_id(&env, &authorized.email).await;
    owner.ok("remove_member", json!({ "user_id": user })).await;
    assert_eq!(
        oauth_support::probe(&env, "/api/mcp/crm", &key).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_key_never_mints_one_that_outlives_it_and_revoking_it_revokes_its_children() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Keys").await;
    let parent = hdls::workspaces::mint_key(
        &env.app.pools.runtime,
        ws,
        Role::Admin,
        None,
        Some(env.clock_now() + time::Duration::days(1)),
        env.clock_now(),
    )
    .await
    .unwrap();
    let by_parent = env.client("/api/mcp", &parent.key).await;
    let refused = by_parent
        .err(
            "mint_api_key",
            json!({ "role": "reader", "expires_in": "30d" }),
        )
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let child = by_parent
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await;
    assert_eq!(
        child["expires_at"],
        by_parent.ok("whoami", json!({})).await["expires_at"]
    );
    assert!(
        child["products"].is_null(),
        "an unrestricted key mints unrestricted"
    );
    let child_key = child["key"].as_str().unwrap().to_owned();
    assert_eq!(
        oauth_support::probe(&env, "/api/mcp", &child_key).await.0,
        StatusCode::OK
    );
    by_parent
        .ok("revoke_api_key", json!({ "key_id": parent.key_id }))
        .await;
    assert_eq!(
        oauth_support::probe(&env, "/api/mcp", &child_key).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_stranger_holding_a_spent_code_changes_nothing() {
    let env = TestEnv::start().await;
    let authorized = oauth_support::authorize(&env, Role::Member, &["crm"], "/api/mcp/crm").await;
    let tokens = authorized.tokens(&env).await;
    let stranger = oauth_support::register(&env, oauth_support::REDIRECT).await;
    let (status, body) = oauth_support::token(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &authorized.code),
            ("client_id", &stranger),
            ("redirect_uri", oauth_support::REDIRECT),
            ("code_verifier", &authorized.pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    // Nor does one who knows the client's (public) id but not its PKCE verifier.
    let (status, _) = oauth_support::token(
        &env,
        &[
            ("grant_type", "authorization_code"),
            ("code", &authorized.code),
            ("client_id", &authorized.client_id),
            ("redirect_uri", oauth_support::REDIRECT),
            ("code_verifier", &"x".repeat(43)),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The connection is untouched: its refresh token still works.
    let (status, body) = authorized.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The code's own client presenting it again does revoke it.
    assert_eq!(authorized.exchange(&env).await.0, StatusCode::BAD_REQUEST);
    let refreshed = body["refresh_token"].as_str().unwrap();
    assert_eq!(
        authorized.refresh(&env, refreshed).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn parallel_wrong_passwords_stop_at_the_limit() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Throttle").await;
    env.person(ws, "target@example.com", PASSWORD, Role::Member)
        .await;
    let attempts = (0..20).map(|i| {
        let pool = env.app.pools.auth.clone();
        let now = env.clock_now();
        async move {
            people::sign_in::sign_in(
                &pool,
                "target@example.com",
                &format!("wrong password {i}"),
                None,
                now,
            )
            .await
            .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let checked = outcomes
        .iter()
        .filter(|o| matches!(o, Err(people::sign_in::Refused::Invalid)))
        .count();
    assert!(
        checked <= people::throttle::PER_ACCOUNT as usize,
        "{checked} passwords were checked"
    );
    // And the right password is now refused too, until the window ends.
    assert!(!signs_in(&env, "target@example.com", PASSWORD).await);
}

#[tokio::test]
async fn demoting_a_person_revokes_the_keys_they_minted_above_their_new_role() {
    let env = TestEnv::start().await;
    let authorized = oauth_support::authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    let tokens = authorized.tokens(&env).await;
    let by_oauth = env.client("/api/mcp", &tokens.access).await;
    let admin_key = by_oauth
        .ok("mint_api_key", json!({ "role": "admin" }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader_key = by_oauth
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner = env.client("/api/mcp", &authorized.owner_key).await;
    let user = user_id(&env, &authorized.email).await;
    owner
        .ok(
            "change_member_role",
            json!({ "user_id": user, "role": "reader" }),
        )
        .await;
    assert_eq!(
        oauth_support::probe(&env, "/api/mcp", &admin_key).await.0,
        StatusCode::UNAUTHORIZED,
        "an admin key outlived its minter's demotion"
    );
    assert_eq!(
        oauth_support::probe(&env, "/api/mcp", &reader_key).await.0,
        StatusCode::OK,
        "a key within the new role stays"
    );
}

#[tokio::test]
async fn an_invitation_dies_with_the_credential_that_made_it() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("Inviters").await;
    let admin_key = env.key(ws, Role::Admin).await;
    let link = invite(&env, &admin_key, "late@example.com", "admin").await;
    let key_id = env
        .client("/api/mcp", &admin_key)
        .await
        .ok("whoami", json!({}))
        .await["credential"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.client("/api/mcp", &owner_key)
        .await
        .ok("revoke_api_key", json!({ "key_id": key_id }))
        .await;
    let (status, body) = accept(&env, &link, PASSWORD).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(no_person_with(&env, "late@example.com").await);
}

/// True when no person with this address exists (nothing was created by a dead link).
async fn no_person_with(env: &TestEnv, email: &str) -> bool {
    env.db
        .connect_superuser()
        .await
        .query_opt(
            "SELECT 1 FROM hdls_identity.users WHERE email = $1",
            &[&email],
        )
        .await
        .unwrap()
        .is_none()
}
