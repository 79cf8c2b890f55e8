//! No secret in any log: a whole scenario runs with the server's own log setup at `debug`
//! (every target), every line is captured, and no key, token, code, link token or password
//! may appear in it or in an audit target. New secrets (webhook secrets, connection strings)
//! belong in this scenario as their features land.

use std::io::Write;
use std::sync::{Arc, Mutex};

use hdls::identity::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::oauth_support::{self, AuthParams, Browser, PASSWORD, hidden};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn token_of(link: &str) -> String {
    oauth_support::query_param(link, "token").expect("a token in the link")
}

#[tokio::test]
async fn debug_logs_and_audit_targets_carry_no_secret() {
    let captured = Captured::default();
    let sink = captured.clone();
    let _guard =
        tracing::subscriber::set_default(hdls::logging::subscriber("debug", move || sink.clone()));
    tracing::debug!("capture is on");
    // With the loopback allowance, so a webhook can be subscribed and delivered (to a closed
    // port) and a database on this machine can be linked.
    let env = crate::byo_database::loopback_env().await;
    let mut secrets: Vec<(&str, String)> = Vec::new();

    // First start: a workspace with its owner key, and an owner's set-password link.
    let (ws, owner_key) = env.workspace("Secrets").await;
    secrets.push(("owner key", owner_key.clone()));
    let provisioned = hdls::people::provision(
        &env.app.pools.auth,
        ws,
        "owner@secrets.example",
        None,
        Role::Owner,
        env.clock_now(),
    )
    .await
    .unwrap();
    let set_password = provisioned.set_password_token.unwrap();
    secrets.push(("set-password link", set_password.clone()));

    // The owner sets a password through the page.
    let chosen = "owner's chosen password";
    secrets.push(("chosen password", chosen.to_owned()));
    let mut browser = Browser::new(&env);
    let page = browser
        .get(&format!("/account/set-password?token={set_password}"))
        .await;
    let done = browser
        .post(
            "/account/set-password",
            &[
                ("csrf", &hidden(&page.body, "csrf")),
                ("token", &set_password),
                ("password", chosen),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);

    // A key minted over MCP, and an invitation accepted with a new password.
    let owner = env.client("/api/mcp", &owner_key).await;
    let minted = owner
        .ok(
            "mint_api_key",
            json!({ "role": "reader", "label": "log test" }),
        )
        .await;
    secrets.push(("minted key", minted["key"].as_str().unwrap().to_owned()));

    // A linked database: its connection string and password, a data-source key and calls
    // through it, a link refused for a wrong password, and a re-check.
    let user = crate::byo_database::shared_cluster().await;
    let (connection_string, db_password) = user.prepare().await;
    secrets.push(("connection string", connection_string.clone()));
    secrets.push(("database password", db_password.clone()));
    let source = crate::byo_database::link(&owner, &connection_string).await;
    let data_source_key = owner
        .ok(
            "mint_api_key",
            json!({ "data_source": source, "role": "member" }),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(("data-source key", data_source_key.clone()));
    let linked = env
        .client(&format!("/api/mcp/db/{source}"), &data_source_key)
        .await;
    linked.ok("list_tables", json!({})).await;
    linked
        .ok("query_records", json!({ "table": "products" }))
        .await;
    let wrong_db_password = "Wr0ng-db-passw0rd";
    secrets.push(("wrong database password", wrong_db_password.to_owned()));
    let wrong = connection_string.replace(&db_password, wrong_db_password);
    let refused = owner
        .err(
            "link_database",
            json!({ "name": "wrong", "connection_string": wrong, "schema": "shop" }),
        )
        .await;
    assert!(
        !refused.to_string().contains(wrong_db_password),
        "{refused}"
    );
    owner.ok("test_database", json!({ "id": source })).await;
    owner.ok("list_databases", json!({})).await;
    let link = owner
        .ok(
            "invite_teammate",
            json!({ "email": "invitee@secrets.example", "role": "member" }),
        )
        .await["link"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.push(("invitation link", token_of(&link)));
    let invitee_password = "invitee's own password";
    secrets.push(("invitee password", invitee_password.to_owned()));
    let mut browser = Browser::new(&env);
    let page = browser.get(&link).await;
    let joined = browser
        .post(
            "/invite",
            &[
                ("csrf", &hidden(&page.body, "csrf")),
                ("token", &hidden(&page.body, "token")),
                ("password", invitee_password),
            ],
        )
        .await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);

    // A failed sign-in on the authorization page.
    let client_id = oauth_support::register(&env, oauth_support::REDIRECT).await;
    let pkce = oauth_support::pkce();
    let url = oauth_support::authorize_url(
        &env,
        &AuthParams {
            client_id: &client_id,
            redirect: oauth_support::REDIRECT,
            challenge: Some(&pkce.challenge),
            method: Some("S256"),
            resource: Some(&env.url("/api/mcp")),
        },
    );
    let wrong = "a wrong password typed here";
    secrets.push(("wrong password", wrong.to_owned()));
    let mut browser = Browser::new(&env);
    let page = browser.get(&url).await;
    let refused = browser.sign_in(&page, "owner@secrets.example", wrong).await;
    assert_ne!(refused.status, StatusCode::SEE_OTHER);

    // A whole OAuth flow: registration, code, tokens, refresh, a call, a minted key.
    let authorized = oauth_support::authorize(&env, Role::Admin, &["crm"], "/api/mcp").await;
    secrets.push(("authorization code", authorized.code.clone()));
    secrets.push(("code verifier", authorized.pkce.verifier.clone()));
    secrets.push(("person password", PASSWORD.to_owned()));
    let tokens = authorized.tokens(&env).await;
    secrets.push(("access token", tokens.access.clone()));
    secrets.push(("refresh token", tokens.refresh.clone()));
    let (status, refreshed) = authorized.refresh(&env, &tokens.refresh).await;
    assert_eq!(status, StatusCode::OK);
    secrets.push((
        "rotated refresh token",
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ));
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    secrets.push(("rotated access token", access.clone()));
    let by_oauth = env.client("/api/mcp", &access).await;
    let minted = by_oauth
        .ok("mint_api_key", json!({ "role": "reader" }))
        .await;
    secrets.push((
        "key minted over OAuth",
        minted["key"].as_str().unwrap().to_owned(),
    ));
    // A forgotten-password link from the operator.
    let forgotten = hdls::people::password_link(
        &env.app.pools.auth,
        "owner@secrets.example",
        env.clock_now(),
    )
    .await
    .unwrap()
    .unwrap();
    secrets.push(("password link", forgotten));

    // A webhook: its secret, shown at subscribe and at rotation, signs deliveries (which fail
    // here: nothing listens) and must appear nowhere else, list_webhooks included.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let subscribed = owner
        .ok(
            "subscribe_webhook",
            json!({ "target_url": target, "schema_name": "crm", "event_types": ["insert"] }),
        )
        .await;
    let webhook_secret = subscribed["secret"].as_str().unwrap().to_owned();
    let rotated = owner
        .ok("rotate_webhook_secret", json!({ "id": subscribed["id"] }))
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let crm = env.client("/api/mcp/crm", &owner_key).await;
    crm.ok("create_account", json!({ "name": "Hooked" })).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listed = owner
            .ok("list_webhook_deliveries", json!({ "id": subscribed["id"] }))
            .await;
        if listed["deliveries"][0]["attempts"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let listed = owner.ok("list_webhooks", json!({})).await.to_string();
    for secret in [&webhook_secret, &rotated] {
        let tail = &secret["whsec_".len()..];
        assert!(
            !listed.contains(tail),
            "list_webhooks shows a webhook secret"
        );
        secrets.push(("webhook secret", secret.clone()));
        secrets.push(("webhook secret's key part", tail.to_owned()));
    }

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("capture is on") && log.lines().count() > 20,
        "the capture did not see the server's log"
    );
    let audit: Vec<String> = env
        .db
        .connect_superuser()
        .await
        .query(
            "SELECT coalesce(target, '') || ' ' || coalesce(reason, '') || ' ' || actor_id FROM hdls.audit_events",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (what, secret) in &secrets {
        // Keys (`hdls_<hex id>_<base64url secret>`) are also checked by their secret half
        // alone: everything after the id, which may itself hold `_` (splitting at the last
        // one left a tail of a few characters that a busy log could contain by chance).
        let secret_half = secret
            .strip_prefix("hdls_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(_, half)| half);
        let needles: Vec<&str> = match secret_half {
            Some(half) => vec![secret.as_str(), half],
            None => vec![secret.as_str()],
        };
        for needle in needles {
            assert!(!log.contains(needle), "the {what} appears in the log");
            assert!(
                !audit.iter().any(|a| a.contains(needle)),
                "the {what} appears in an audit record"
            );
        }
    }
}
