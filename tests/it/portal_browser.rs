//! The customer portal (/portal/<workspace id>): the seed's customer flow in headless
//! Chromium (driven by tests/interop/browser/portal.mjs), and the page rules over plain HTTP:
//! CSRF, Origin, sessions bound to one workspace, sign-out, a disabled requester, and
//! customer B seeing nothing of customer A's ticket.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::customer_accounts::{customer, disable, support_workspace};
use crate::harness::TestEnv;
use crate::oauth_support::{Browser, PASSWORD, Page, hidden};

const SUBJECT: &str = "Login broken on mobile";
const BODY: &str = "Can't sign in since the update.";
const REPLY: &str = "Still happening on the latest build.";
const NOTE: &str = "Internal: probably the token refresh bug, do not tell the customer yet";
const AGENT_REPLY: &str = "Thanks, we are looking into it.";

/// Stamps an agent of `workspace` into the transaction with SET LOCAL, as the server's Scope
/// does (on Citus only SET LOCAL reaches the worker holding the shard).
async fn stamp_agent(tx: &tokio_postgres::Transaction<'_>, workspace: Uuid) {
    if crate::harness::on_citus() {
        tx.batch_execute("SET LOCAL citus.propagate_set_commands = 'local'")
            .await
            .unwrap();
    }
    tx.batch_execute(&format!("SET LOCAL hdls.workspace_id = '{workspace}'"))
        .await
        .unwrap();
    tx.batch_execute("SET LOCAL hdls.persona = 'agent'")
        .await
        .unwrap();
}

/// Writes a thread entry as an agent of `workspace` (the desk's `reply` does the same; the
/// triggers stamp persona and requester).
async fn agent_entry(env: &TestEnv, workspace: Uuid, ticket: &str, kind: &str, body: &str) {
    let mut db = env.db.connect_superuser().await;
    let tx = db.transaction().await.unwrap();
    stamp_agent(&tx, workspace).await;
    tx.execute(
        "INSERT INTO support.ticket_entries (ticket_id, kind, author, body)
         VALUES ($1::text::uuid, $2, 'key_agent', $3)",
        &[&ticket, &kind, &body],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Sets a ticket's status as an agent.
async fn agent_status(env: &TestEnv, workspace: Uuid, ticket: &str, status: &str) {
    let mut db = env.db.connect_superuser().await;
    let tx = db.transaction().await.unwrap();
    stamp_agent(&tx, workspace).await;
    tx.execute(
        "UPDATE support.tickets SET status = $2 WHERE id = $1::text::uuid",
        &[&ticket, &status],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn entries(env: &TestEnv, ticket: &str) -> i64 {
    env.db
        .connect_superuser()
        .await
        .query_one(
            "SELECT count(*) FROM support.ticket_entries WHERE ticket_id = $1::text::uuid",
            &[&ticket],
        )
        .await
        .unwrap()
        .get(0)
}

fn portal(workspace: Uuid, rest: &str) -> String {
    format!("/portal/{workspace}{rest}")
}

/// Signs in on a workspace's portal; the page after the redirect.
async fn sign_in(browser: &mut Browser, workspace: Uuid, email: &str) -> Page {
    let form = browser.get(&portal(workspace, "")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains("id=\"portal-sign-in\""), "{}", form.body);
    let done = browser
        .post(
            &portal(workspace, "/sign-in"),
            &[
                ("csrf", &hidden(&form.body, "csrf")),
                ("email", email),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(portal(workspace, "").as_str())
    );
    browser.get(&portal(workspace, "")).await
}

/// Opens a ticket through the portal form; its id.
async fn open_ticket(browser: &mut Browser, workspace: Uuid, subject: &str, body: &str) -> String {
    let form = browser.get(&portal(workspace, "/tickets/new")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let done = browser
        .post(
            &portal(workspace, "/tickets"),
            &[
                ("csrf", &hidden(&form.body, "csrf")),
                ("subject", subject),
                ("body", body),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let location = done.location.unwrap();
    location
        .strip_prefix(&portal(workspace, "/tickets/"))
        .unwrap_or_else(|| panic!("{location}"))
        .to_owned()
}

fn cookie_value(browser_cookie_header: &str, name: &str) -> Option<String> {
    browser_cookie_header
        .split("; ")
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

#[tokio::test]
async fn portal_over_http_lists_my_tickets_and_shows_only_the_public_thread() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Acme").await;
    customer(&env, &owner_key, "cara@example.com").await;
    let mut browser = Browser::new(&env);

    let home = sign_in(&mut browser, workspace, "cara@example.com").await;
    assert!(home.body.contains("<h1>My tickets</h1>"), "{}", home.body);
    assert!(home.body.contains("id=\"no-tickets\""), "{}", home.body);

    let id = open_ticket(&mut browser, workspace, SUBJECT, BODY).await;
    let home = browser.get(&portal(workspace, "")).await;
    assert!(home.body.contains(SUBJECT), "{}", home.body);
    assert!(
        home.body
            .contains(&portal(workspace, &format!("/tickets/{id}")))
    );

    let page = browser
        .get(&portal(workspace, &format!("/tickets/{id}")))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(BODY), "{}", page.body);
    let replied = browser
        .post(
            &portal(workspace, &format!("/tickets/{id}/reply")),
            &[("csrf", &hidden(&page.body, "csrf")), ("body", REPLY)],
        )
        .await;
    assert_eq!(replied.status, StatusCode::SEE_OTHER, "{}", replied.body);

    agent_entry(&env, workspace, &id, "internal_note", NOTE).await;
    agent_entry(&env, workspace, &id, "reply", AGENT_REPLY).await;
    let page = browser
        .get(&portal(workspace, &format!("/tickets/{id}")))
        .await;
    for text in [BODY, REPLY, AGENT_REPLY] {
        assert!(page.body.contains(text), "{text} missing: {}", page.body);
    }
    assert!(!page.body.contains(NOTE), "{}", page.body);
    assert!(!page.body.contains("internal"), "{}", page.body);
    assert!(!page.body.contains("id=\"rate\""), "{}", page.body);

    // Once resolved, the customer rates it, once.
    agent_status(&env, workspace, &id, "resolved").await;
    let page = browser
        .get(&portal(workspace, &format!("/tickets/{id}")))
        .await;
    assert!(page.body.contains("id=\"rate\""), "{}", page.body);
    let rated = browser
        .post(
            &portal(workspace, &format!("/tickets/{id}/rate")),
            &[
                ("csrf", &hidden(&page.body, "csrf")),
                ("score", "4"),
                ("comment", "Quick, thanks"),
            ],
        )
        .await;
    assert_eq!(rated.status, StatusCode::SEE_OTHER, "{}", rated.body);
    let page = browser
        .get(&portal(workspace, &format!("/tickets/{id}")))
        .await;
    assert!(page.body.contains("id=\"rating\""), "{}", page.body);
    assert!(!page.body.contains("id=\"rate\""), "{}", page.body);
    let again = browser
        .post(
            &portal(workspace, &format!("/tickets/{id}/rate")),
            &[("csrf", &hidden(&page.body, "csrf")), ("score", "1")],
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(again.body.contains("id=\"error\""), "{}", again.body);

    // An empty reply is shown on the form, not sent.
    let before = entries(&env, &id).await;
    let empty = browser
        .post(
            &portal(workspace, &format!("/tickets/{id}/reply")),
            &[("csrf", &hidden(&page.body, "csrf")), ("body", "   ")],
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.body);
    assert!(empty.body.contains("id=\"error\""), "{}", empty.body);
    assert_eq!(entries(&env, &id).await, before);
}

#[tokio::test]
async fn customer_b_sees_not_found_for_customer_a_tickets() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Acme").await;
    customer(&env, &owner_key, "ann@example.com").await;
    customer(&env, &owner_key, "bob@example.com").await;
    let mut ann = Browser::new(&env);
    sign_in(&mut ann, workspace, "ann@example.com").await;
    let id = open_ticket(&mut ann, workspace, SUBJECT, BODY).await;

    let mut bob = Browser::new(&env);
    let home = sign_in(&mut bob, workspace, "bob@example.com").await;
    assert!(!home.body.contains(SUBJECT), "{}", home.body);
    let page = bob.get(&portal(workspace, &format!("/tickets/{id}"))).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    assert!(page.body.contains("Ticket not found"), "{}", page.body);
    assert!(!page.body.contains(SUBJECT) && !page.body.contains(BODY));

    let before = entries(&env, &id).await;
    let csrf = hidden(&home.body, "csrf");
    for action in ["reply", "rate"] {
        let refused = bob
            .post(
                &portal(workspace, &format!("/tickets/{id}/{action}")),
                &[("csrf", &csrf), ("body", "mine now"), ("score", "1")],
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::NOT_FOUND,
            "{action}: {}",
            refused.body
        );
    }
    assert_eq!(entries(&env, &id).await, before);
}

#[tokio::test]
async fn portal_forms_need_their_csrf_token_and_our_origin() {
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Acme").await;
    customer(&env, &owner_key, "cara@example.com").await;

    // Sign-in without the double-submit cookie's token: refused, no session.
    let mut stranger = Browser::new(&env);
    let refused = stranger
        .post(
            &portal(workspace, "/sign-in"),
            &[
                ("csrf", "x"),
                ("email", "cara@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let sessions: i64 = env
        .db
        .connect_superuser()
        .await
        .query_one("SELECT count(*) FROM hdls_identity.portal_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);

    // Signed in: a form without its token, or with another session's, does nothing.
    let mut cara = Browser::new(&env);
    sign_in(&mut cara, workspace, "cara@example.com").await;
    let mut other = Browser::new(&env);
    let other_home = sign_in(&mut other, workspace, "cara@example.com").await;
    for csrf in ["", hidden(&other_home.body, "csrf").as_str()] {
        let refused = cara
            .post(
                &portal(workspace, "/tickets"),
                &[("csrf", csrf), ("subject", SUBJECT), ("body", BODY)],
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    }
    let tickets: i64 = env
        .db
        .connect_superuser()
        .await
        .query_one("SELECT count(*) FROM support.tickets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tickets, 0);

    // Another site's form post is refused before anything runs.
    let response = reqwest::Client::new()
        .post(env.url(&portal(workspace, "/sign-in")))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=cara%40example.com&password=x&csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The cookie is HttpOnly, SameSite=Lax and scoped to this portal.
    let mut fresh = Browser::new(&env);
    let form = fresh.get(&portal(workspace, "")).await;
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(env.url(&portal(workspace, "/sign-in")))
        .header(
            "cookie",
            format!("hdls_csrf={}", hidden(&form.body, "csrf")),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "email=cara%40example.com&password={}&csrf={}",
            PASSWORD.replace(' ', "+"),
            hidden(&form.body, "csrf")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set.starts_with("hdls_portal=pts_"), "{set}");
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        &format!("Path=/portal/{workspace}"),
        "Max-Age=43200",
    ] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
}

#[tokio::test]
async fn a_portal_session_is_bound_to_its_workspace_and_ends_on_sign_out_or_disable() {
    let env = TestEnv::start().await;
    let (x, x_owner) = support_workspace(&env, "X Co").await;
    let (y, y_owner) = support_workspace(&env, "Y Co").await;
    let requester = customer(&env, &x_owner, "cara@example.com").await;
    customer(&env, &y_owner, "cara@example.com").await;

    let mut browser = Browser::new(&env);
    let home = sign_in(&mut browser, x, "cara@example.com").await;
    let cookies = browser_cookies(&browser);
    let token = cookie_value(&cookies, "hdls_portal").unwrap();

    // X's session cookie is nothing at Y's portal.
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Reloading the sign-in form's address (after a failed attempt) goes back to the portal.
    let reload = raw
        .get(env.url(&portal(x, "/sign-in")))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), StatusCode::SEE_OTHER);
    assert_eq!(reload.headers()["location"], portal(x, "").as_str());
    let at_y = raw
        .get(env.url(&portal(y, "")))
        .header("cookie", format!("hdls_portal={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(at_y.status(), StatusCode::OK);
    let body = at_y.text().await.unwrap();
    assert!(body.contains("id=\"portal-sign-in\""), "{body}");
    assert!(body.contains("Y Co"), "{body}");
    let new_at_y = raw
        .get(env.url(&portal(y, "/tickets/new")))
        .header("cookie", format!("hdls_portal={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(new_at_y.status(), StatusCode::SEE_OTHER);

    // Signing out ends the session; its cookie no longer opens anything.
    let out = browser
        .post(
            &portal(x, "/sign-out"),
            &[("csrf", &hidden(&home.body, "csrf"))],
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let replayed = raw
        .get(env.url(&portal(x, "/tickets/new")))
        .header("cookie", format!("hdls_portal={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::SEE_OTHER);

    // A disabled requester's session stops at the next request, and they cannot sign in.
    let mut again = Browser::new(&env);
    sign_in(&mut again, x, "cara@example.com").await;
    disable(&env, requester).await;
    let page = again.get(&portal(x, "")).await;
    assert!(page.body.contains("id=\"portal-sign-in\""), "{}", page.body);
    let form = again.get(&portal(x, "")).await;
    let refused = again
        .post(
            &portal(x, "/sign-in"),
            &[
                ("csrf", &hidden(&form.body, "csrf")),
                ("email", "cara@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    // Y's account is a separate binding and still works.
    let mut at_y = Browser::new(&env);
    sign_in(&mut at_y, y, "cara@example.com").await;

    // No portal where support is not installed, nor at a malformed address.
    let (plain, _) = env.workspace("No Support Co").await;
    for path in [portal(plain, ""), "/portal/not-a-workspace".to_owned()] {
        let page = Browser::new(&env).get(&path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
    }
}

fn browser_cookies(browser: &Browser) -> String {
    browser.cookie_header()
}

// ---- headless Chromium ---------------------------------------------------------------------

/// Runs tests/interop/browser/portal.mjs with these arguments; its stdout.
async fn run_portal_script(args: &[&str]) -> String {
    let dir = crate::browser::browser_dir().expect("checked by the caller");
    let output = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg("portal.mjs")
            .args(args)
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script finished within 3 minutes")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "portal.mjs {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in {stdout}"))
}

#[tokio::test]
async fn portal_in_a_browser_seed_flow_thread_and_isolation() {
    if crate::browser::browser_dir().is_none() {
        return;
    }
    let env = TestEnv::start().await;
    let (workspace, owner_key) = support_workspace(&env, "Browser Support Co").await;
    customer(&env, &owner_key, "ann@browser.example").await;
    customer(&env, &owner_key, "bob@browser.example").await;
    let home = env.url(&portal(workspace, ""));

    // Ann signs in, opens a ticket, sees it listed, opens it and replies.
    let out = run_portal_script(&[
        "flow",
        &home,
        "ann@browser.example",
        PASSWORD,
        SUBJECT,
        BODY,
        REPLY,
    ])
    .await;
    assert_eq!(line(&out, "portal"), "Browser Support Co support");
    assert_eq!(line(&out, "listed"), SUBJECT);
    let ticket_url = line(&out, "ticket-url").to_owned();
    let thread: Value = serde_json::from_str(line(&out, "thread")).unwrap();
    assert_eq!(
        thread,
        serde_json::json!([
            { "from": "customer", "body": BODY },
            { "from": "customer", "body": REPLY },
        ])
    );
    let id = ticket_url.rsplit('/').next().unwrap().to_owned();

    // The team answers, and writes an internal note Ann must never see.
    agent_entry(&env, workspace, &id, "internal_note", NOTE).await;
    agent_entry(&env, workspace, &id, "reply", AGENT_REPLY).await;
    let out =
        run_portal_script(&["view", &home, "ann@browser.example", PASSWORD, &ticket_url]).await;
    assert_eq!(line(&out, "heading"), SUBJECT);
    let thread: Value = serde_json::from_str(line(&out, "thread")).unwrap();
    assert_eq!(
        thread,
        serde_json::json!([
            { "from": "customer", "body": BODY },
            { "from": "customer", "body": REPLY },
            { "from": "agent", "body": AGENT_REPLY },
        ])
    );
    assert!(!out.contains(NOTE), "{out}");

    // Bob opening Ann's ticket URL sees not found.
    let out =
        run_portal_script(&["view", &home, "bob@browser.example", PASSWORD, &ticket_url]).await;
    assert_eq!(line(&out, "status"), "404");
    assert_eq!(line(&out, "heading"), "Ticket not found");
    assert!(!out.contains(SUBJECT) && !out.contains(BODY), "{out}");
}
