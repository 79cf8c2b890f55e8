//! Teammates: invitations and their one-time links, the role rules, the last owner, removal,
//! and the set-password link an operator hands out.

use hdls::identity::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestEnv;
use crate::oauth_support::{Browser, PASSWORD, hidden};

fn member<'a>(members: &'a Value, email: &str) -> &'a Value {
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == email)
        .unwrap_or_else(|| panic!("{email} not in {members}"))
}

async fn accept(env: &TestEnv, link: &str, password: &str) -> crate::oauth_support::Page {
    let mut browser = Browser::new(env);
    let page = browser.get(link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csrf = hidden(&page.body, "csrf");
    let token = hidden(&page.body, "token");
    browser
        .post(
            "/invite",
            &[("csrf", &csrf), ("token", &token), ("password", password)],
        )
        .await
}

#[tokio::test]
async fn an_invitation_link_creates_the_person_once() {
    let env = TestEnv::start().await;
    let (_, owner_key) = env.workspace("Team Co").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let invite = owner
        .ok(
            "invite_teammate",
            json!({ "email": "New.Person@Example.com", "role": "member" }),
        )
        .await;
    assert_eq!(invite["email"], "new.person@example.com");
    let link = invite["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{}/invite?token=", env.base_url)),
        "{link}"
    );
    // A password that breaks the rules is refused with the reason; the link still works.
    let short = accept(&env, link, "short").await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("at least 10"), "{}", short.body);
    let joined = accept(&env, link, PASSWORD).await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.body);
    assert!(joined.body.contains("Welcome to Team Co"));
    let members = owner.ok("list_members", json!({})).await;
    assert_eq!(member(&members, "new.person@example.com")["role"], "member");
    // Used once: the link is gone.
    let again = Browser::new(&env).get(link).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let events = owner
        .ok("list_audit_events", json!({ "action": "member.join" }))
        .await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_existing_person_proves_their_password_to_join_and_links_expire() {
    let env = TestEnv::start().await;
    let (first, _) = env.workspace("First").await;
    env.person(first, "ann@example.com", PASSWORD, Role::Member)
        .await;
    let (_, owner_key) = env.workspace("Second").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let link = owner
        .ok(
            "invite_teammate",
            json!({ "email": "ann@example.com", "role": "reader" }),
        )
        .await["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = accept(&env, &link, "not her password").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(accept(&env, &link, PASSWORD).await.status, StatusCode::OK);
    let members = owner.ok("list_members", json!({})).await;
    assert_eq!(member(&members, "ann@example.com")["role"], "reader");

    let stale = owner
        .ok(
            "invite_teammate",
            json!({ "email": "late@example.com", "role": "member" }),
        )
        .await["link"]
        .as_str()
        .unwrap()
        .to_owned();
    env.clock.advance(time::Duration::days(7));
    assert_eq!(
        Browser::new(&env).get(&stale).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn nobody_invites_or_grants_above_their_own_role() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Ladder").await;
    let admin = env
        .client("/api/mcp", &env.key(ws, Role::Admin).await)
        .await;
    assert_eq!(
        admin
            .err_code(
                "invite_teammate",
                json!({ "email": "o@example.com", "role": "owner" })
            )
            .await,
        "forbidden"
    );
    let member_key = env.key(ws, Role::Member).await;
    let member_client = env.client("/api/mcp", &member_key).await;
    assert_eq!(
        member_client
            .err_code(
                "invite_teammate",
                json!({ "email": "x@example.com", "role": "reader" })
            )
            .await,
        "forbidden"
    );
    assert_eq!(
        admin
            .err_code(
                "invite_teammate",
                json!({ "email": "not an email", "role": "reader" })
            )
            .await,
        "invalid_input"
    );
    let boss = env
        .person(ws, "boss@example.com", PASSWORD, Role::Owner)
        .await;
    let worker = env
        .person(ws, "worker@example.com", PASSWORD, Role::Member)
        .await;
    // An admin cannot make someone owner, nor change or remove an owner.
    assert_eq!(
        admin
            .err_code(
                "change_member_role",
                json!({ "user_id": worker, "role": "owner" })
            )
            .await,
        "forbidden"
    );
    assert_eq!(
        admin
            .err_code(
                "change_member_role",
                json!({ "user_id": boss, "role": "member" })
            )
            .await,
        "forbidden"
    );
    assert_eq!(
        admin
            .err_code("remove_member", json!({ "user_id": boss }))
            .await,
        "forbidden"
    );
    // An admin can promote a member to admin.
    let changed = admin
        .ok(
            "change_member_role",
            json!({ "user_id": worker, "role": "admin" }),
        )
        .await;
    assert_eq!(changed["member"]["role"], "admin");
    assert_eq!(
        admin
            .err_code(
                "invite_teammate",
                json!({ "email": "boss@example.com", "role": "reader" })
            )
            .await,
        "conflict",
        "already a member"
    );
    let audit = env
        .client("/api/mcp", &env.key(ws, Role::Owner).await)
        .await
        .ok(
            "list_audit_events",
            json!({ "action": "member.role_change" }),
        )
        .await;
    let outcomes: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"allowed") && outcomes.contains(&"refused"),
        "{audit}"
    );
}

#[tokio::test]
async fn the_last_owner_cannot_be_demoted_or_removed() {
    let env = TestEnv::start().await;
    let (ws, owner_key) = env.workspace("Owners").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let only = env
        .person(ws, "only@example.com", PASSWORD, Role::Owner)
        .await;
    assert_eq!(
        owner
            .err_code(
                "change_member_role",
                json!({ "user_id": only, "role": "admin" })
            )
            .await,
        "conflict"
    );
    assert_eq!(
        owner
            .err_code("remove_member", json!({ "user_id": only }))
            .await,
        "conflict"
    );
    let second = env
        .person(ws, "second@example.com", PASSWORD, Role::Member)
        .await;
    owner
        .ok(
            "change_member_role",
            json!({ "user_id": second, "role": "owner" }),
        )
        .await;
    // Now there are two owners: one may step down, but not both.
    owner
        .ok(
            "change_member_role",
            json!({ "user_id": only, "role": "admin" }),
        )
        .await;
    assert_eq!(
        owner
            .err_code("remove_member", json!({ "user_id": second }))
            .await,
        "conflict"
    );
    let members = owner.ok("list_members", json!({})).await;
    assert_eq!(member(&members, "second@example.com")["role"], "owner");
    assert_eq!(member(&members, "only@example.com")["role"], "admin");
    assert_eq!(
        owner
            .err_code("remove_member", json!({ "user_id": uuid::Uuid::new_v4() }))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn members_are_invisible_across_workspaces() {
    let env = TestEnv::start().await;
    let (a, a_key) = env.workspace("A").await;
    let (_, b_key) = env.workspace("B").await;
    let ann = env.person(a, "ann@a.example", PASSWORD, Role::Member).await;
    let b = env.client("/api/mcp", &b_key).await;
    let members = b.ok("list_members", json!({})).await;
    assert!(!members.to_string().contains("ann@a.example"), "{members}");
    assert_eq!(
        b.err_code("remove_member", json!({ "user_id": ann })).await,
        "not_found"
    );
    assert_eq!(
        b.err_code(
            "change_member_role",
            json!({ "user_id": ann, "role": "reader" })
        )
        .await,
        "not_found"
    );
    let a_members = env
        .client("/api/mcp", &a_key)
        .await
        .ok("list_members", json!({}))
        .await;
    assert_eq!(member(&a_members, "ann@a.example")["role"], "member");
}

#[tokio::test]
async fn a_set_password_link_works_once_and_signs_in() {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("Links").await;
    let provisioned = hdls::people::provision(
        &env.app.pools.auth,
        ws,
        "owner@links.example",
        None,
        Role::Owner,
        env.clock_now(),
    )
    .await
    .unwrap();
    let token = provisioned
        .set_password_token
        .expect("a link for a person with no password");
    let link = format!("/account/set-password?token={token}");
    let mut browser = Browser::new(&env);
    let page = browser.get(&link).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("owner@links.example"));
    let csrf = hidden(&page.body, "csrf");
    let short = browser
        .post(
            "/account/set-password",
            &[("csrf", &csrf), ("token", &token), ("password", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("at least 10"), "{}", short.body);
    let done = browser
        .post(
            "/account/set-password",
            &[("csrf", &csrf), ("token", &token), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        Browser::new(&env).get(&link).await.status,
        StatusCode::NOT_FOUND
    );
    // The password now signs in.
    let signed_in = hdls::people::sign_in::sign_in(
        &env.app.pools.auth,
        "owner@links.example",
        PASSWORD,
        None,
        env.clock_now(),
    )
    .await
    .unwrap();
    assert!(signed_in.is_ok());
    // A second provisioning of someone who has a password makes no link.
    let again = hdls::people::provision(
        &env.app.pools.auth,
        ws,
        "owner@links.example",
        None,
        Role::Owner,
        env.clock_now(),
    )
    .await
    .unwrap();
    assert!(again.set_password_token.is_none());
}

/// A minimal SMTP peer on loopback that hands back the first message it receives.
async fn smtp_sink() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done, received) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
        let (mut data, mut in_data) = (String::new(), false);
        while let Ok(Some(line)) = lines.next_line().await {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let command = line.to_ascii_uppercase();
            let reply: &[u8] = if command.starts_with("EHLO") {
                b"250-sink\r\n250 8BITMIME\r\n"
            } else if command.starts_with("DATA") {
                in_data = true;
                b"354 go ahead\r\n"
            } else if command.starts_with("QUIT") {
                write.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            write.write_all(reply).await.unwrap();
        }
        let _ = done.send(data);
    });
    (port, received)
}

#[tokio::test]
async fn invitations_are_emailed_when_smtp_is_configured() {
    let (port, received) = smtp_sink().await;
    let mailer = hdls::mail::Mailer::from_url(
        &format!("smtp://127.0.0.1:{port}"),
        "hdls <hdls@test.example>",
    )
    .unwrap();
    let env = TestEnv::start_with_app(|app| app.with_mailer(mailer)).await;
    let (_, owner_key) = env.workspace("Mail Co").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let invite = owner
        .ok(
            "invite_teammate",
            json!({ "email": "mailed@example.com", "role": "member" }),
        )
        .await;
    assert_eq!(invite["emailed"], true, "{invite}");
    let message = tokio::time::timeout(std::time::Duration::from_secs(10), received)
        .await
        .unwrap()
        .unwrap();
    // Undo quoted-printable: soft line breaks and the encoded '='.
    let decoded = message.replace("=\n", "").replace("=3D", "=");
    assert!(decoded.contains("To: mailed@example.com"), "{message}");
    assert!(
        decoded.contains("Subject: Join Mail Co on hdls"),
        "{message}"
    );
    let link = invite["link"].as_str().unwrap();
    assert!(decoded.contains(link), "{link} not in {message}");
    // The emailed link is the working one-time link.
    assert_eq!(accept(&env, link, PASSWORD).await.status, StatusCode::OK);
}

#[tokio::test]
async fn an_unreachable_mail_server_still_returns_the_link() {
    // A port nothing listens on: the invitation is created and its link returned to the inviter.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mailer = hdls::mail::Mailer::from_url(
        &format!("smtp://127.0.0.1:{port}"),
        "hdls <hdls@test.example>",
    )
    .unwrap();
    let env = TestEnv::start_with_app(|app| app.with_mailer(mailer)).await;
    let (_, owner_key) = env.workspace("No Mail Co").await;
    let owner = env.client("/api/mcp", &owner_key).await;
    let invite = owner
        .ok(
            "invite_teammate",
            json!({ "email": "later@example.com", "role": "reader" }),
        )
        .await;
    assert_eq!(invite["emailed"]["sent"], false, "{invite}");
    assert!(
        invite["link"]
            .as_str()
            .unwrap()
            .contains("/invite?token=inv_")
    );
}
