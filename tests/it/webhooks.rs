//! Signed webhooks against a real HTTP receiver on loopback (reached through an outbound
//! allowance for 127.0.0.0/8, as `--outbound-allow` gives): signatures verified by an
//! independent implementation, rotation, filters, retries, refusals by the outbound guard,
//! the minting rule, and at-least-once delivery across a `kill -9` and two processes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use hdls::clock::Clock;
use hdls::identity::Role;
use hdls::net::guard::{Cidr, Guard, Resolver};
use hdls::webhooks::Settings;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::harness::{Mcp, TestDb, TestEnv, no_args};

// ---------------------------------------------------------------------------------------
// An independent HMAC-SHA256 (RFC 2104), so the server's signatures are checked by code
// that shares nothing with it but SHA-256.

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The seed's check: `"v1=" + hmacSha256Hex(yourSecret, rawRequestBody)`.
fn hdls_signature_verifies(secret: &str, body: &[u8], header: &str) -> bool {
    format!("v1={}", hex::encode(hmac_sha256(secret.as_bytes(), body))) == header
}

/// The Standard Webhooks reference algorithm: key = base64 of the part after `whsec_`,
/// signed content `{id}.{timestamp}.{body}`, header a space-separated list of `v1,<b64>`.
fn standard_signature_verifies(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = received.header("webhook-id");
    let ts = received.header("webhook-timestamp");
    let mut content = format!("{id}.{ts}.").into_bytes();
    content.extend_from_slice(&received.body);
    let expected = STANDARD.encode(hmac_sha256(&key, &content));
    received
        .header("webhook-signature")
        .split(' ')
        .any(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
}

#[test]
fn the_test_hmac_matches_rfc_4231() {
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// ---------------------------------------------------------------------------------------
// The receiver.

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn event_id(&self) -> String {
        self.header("x-hdls-event-id").to_owned()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    Status(u16),
    /// 200 after this long.
    Slow(Duration),
    /// 302 to another path on this receiver.
    Redirect,
    /// Never answers.
    Stall,
}

#[derive(Default)]
struct Inbox {
    /// Every request that arrived, answered or not.
    arrived: Vec<Received>,
    /// The ones answered with a 2xx.
    accepted: Vec<Received>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    redirect_followed: usize,
}

#[derive(Clone, Default)]
pub struct Receiver {
    inbox: Arc<Mutex<Inbox>>,
    pub url: String,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let received = Received {
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
    };
    let reply = {
        let mut inbox = r.inbox.lock().unwrap();
        inbox.arrived.push(received.clone());
        inbox
            .script
            .pop_front()
            .or(inbox.default)
            .unwrap_or(Reply::Status(200))
    };
    let status = match reply {
        Reply::Status(code) => code,
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            200
        }
        Reply::Redirect => {
            return (
                StatusCode::FOUND,
                [("location", format!("{}/elsewhere", r.url))],
            )
                .into_response();
        }
        Reply::Stall => std::future::pending().await,
    };
    if (200..300).contains(&status) {
        r.inbox.lock().unwrap().accepted.push(received);
    }
    StatusCode::from_u16(status).unwrap().into_response()
}

async fn elsewhere(State(r): State<Receiver>) -> StatusCode {
    r.inbox.lock().unwrap().redirect_followed += 1;
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!("http://{}/hook", listener.local_addr().unwrap()),
            ..Receiver::default()
        };
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .route("/hook/elsewhere", axum::routing::any(elsewhere))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        receiver
    }

    pub fn script(&self, replies: &[Reply]) {
        self.inbox.lock().unwrap().script.extend(replies);
    }

    pub fn answer_by_default(&self, reply: Reply) {
        self.inbox.lock().unwrap().default = Some(reply);
    }

    pub fn arrived(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().arrived.clone()
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().accepted.clone()
    }

    fn redirect_followed(&self) -> usize {
        self.inbox.lock().unwrap().redirect_followed
    }
}

/// Polls `check` until it returns `Some`, for at most `limit` (a deadline, not a wait).
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Environments.

/// Answers host names from a table the test can change (for rebinding).
#[derive(Default)]
pub struct Names(Mutex<HashMap<String, Vec<IpAddr>>>);

impl Names {
    pub fn set(&self, host: &str, addrs: &[&str]) {
        self.0.lock().unwrap().insert(
            host.to_owned(),
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        );
    }
}

impl Resolver for Names {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let answer = self.0.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such test name"))
        })
    }
}

struct Hooked {
    env: TestEnv,
    names: Arc<Names>,
    ws: Uuid,
    owner_key: String,
    concierge: Mcp,
    crm: Mcp,
}

async fn hooked_with(allow_loopback: bool, timeout: Duration) -> Hooked {
    let names = Arc::new(Names::default());
    let resolver = names.clone();
    let env = TestEnv::start_with_app(move |app| {
        let allowed = if allow_loopback {
            vec![Cidr::parse("127.0.0.0/8").unwrap()]
        } else {
            Vec::new()
        };
        app.with_outbound(Guard::new(resolver, allowed))
            .with_webhook_settings(Settings::with_timeout(timeout))
    })
    .await;
    let (ws, owner_key) = env.workspace("Hooks").await;
    let concierge = env.client("/api/mcp", &owner_key).await;
    let crm = env.client("/api/mcp/crm", &owner_key).await;
    Hooked {
        env,
        names,
        ws,
        owner_key,
        concierge,
        crm,
    }
}

async fn hooked() -> Hooked {
    hooked_with(true, Duration::from_secs(5)).await
}

async fn subscribe(client: &Mcp, url: &str, schema: &str, types: &[&str]) -> (String, String) {
    let sub = client
        .ok(
            "subscribe_webhook",
            json!({ "target_url": url, "schema_name": schema, "event_types": types }),
        )
        .await;
    (
        sub["id"].as_str().unwrap().to_owned(),
        sub["secret"].as_str().unwrap().to_owned(),
    )
}

async fn create_account(crm: &Mcp, name: &str) -> String {
    crm.ok("create_account", json!({ "name": name })).await["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_accepted(receiver: &Receiver, n: usize) -> Vec<Received> {
    eventually(&format!("{n} accepted deliveries"), WAIT, || async {
        let got = receiver.accepted();
        (got.len() >= n).then_some(got)
    })
    .await
}

async fn deliveries(client: &Mcp, id: &str) -> Vec<Value> {
    client
        .ok("list_webhook_deliveries", json!({ "id": id }))
        .await["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the (only) delivery of a subscription satisfies `done`.
async fn wait_delivery(client: &Mcp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually("the delivery's state", WAIT, || async {
        deliveries(client, id)
            .await
            .into_iter()
            .next()
            .filter(|d| done(d))
    })
    .await
}

// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_crm_write_delivers_one_signed_event() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let (sub, secret) = subscribe(&h.concierge, &receiver.url, "crm", &["insert", "update"]).await;
    assert!(sub.starts_with("whk_"));
    assert!(secret.starts_with("whsec_"));
    assert_eq!(
        STANDARD.decode(&secret["whsec_".len()..]).unwrap().len(),
        32,
        "32 random bytes"
    );
    let account = create_account(&h.crm, "Signed Inc").await;
    let got = wait_accepted(&receiver, 1).await;
    let delivery = &got[0];
    let body = delivery.json();
    assert_eq!(body["type"], "crm.accounts.insert");
    assert_eq!(body["workspace_id"], h.ws.to_string());
    assert_eq!(body["data"]["id"], account);
    assert_eq!(body["data"]["name"], "Signed Inc");
    assert!(body["data"].get("workspace_id").is_none());
    assert!(body["occurred_at"].is_string());
    // The event id is the outbox's, in the body and both id headers.
    let event_id: Uuid = h
        .env
        .db
        .connect_superuser()
        .await
        .query_one(
            "SELECT event_id FROM hdls.change_events
             WHERE workspace_id = $1 AND table_name = 'accounts'",
            &[&h.ws],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivery.event_id(), event_id.to_string());
    assert_eq!(body["id"], event_id.to_string());
    assert_eq!(delivery.header("webhook-id"), event_id.to_string());
    // X-Hdls-Signature verifies over the raw body with the secret as shown.
    let signature = delivery.header("x-hdls-signature");
    assert!(signature.starts_with("v1="), "{signature}");
    assert!(hdls_signature_verifies(&secret, &delivery.body, signature));
    // One byte altered: it no longer verifies (nor with another secret).
    let mut altered = delivery.body.clone();
    altered[10] ^= 1;
    assert!(!hdls_signature_verifies(&secret, &altered, signature));
    assert!(!hdls_signature_verifies(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &delivery.body,
        signature
    ));
    // Standard Webhooks, by the reference algorithm; its timestamp is the server clock's.
    assert!(standard_signature_verifies(&secret, delivery));
    let mut tampered = delivery.clone();
    tampered.body = altered;
    assert!(!standard_signature_verifies(&secret, &tampered));
    let ts: i64 = delivery.header("webhook-timestamp").parse().unwrap();
    assert!((ts - h.env.clock_now().unix_timestamp()).abs() <= 5);

    // An update carries the changed columns; the listing counts and never shows the secret.
    h.crm
        .ok(
            "update_account",
            json!({ "id": account, "name": "Signed Ltd" }),
        )
        .await;
    let got = wait_accepted(&receiver, 2).await;
    let update = got[1].json();
    assert_eq!(update["type"], "crm.accounts.update");
    assert!(
        update["changed"]
            .as_array()
            .unwrap()
            .contains(&json!("name"))
    );
    assert_ne!(got[1].event_id(), got[0].event_id());
    let listed = eventually("both counted as delivered", WAIT, || async {
        let listed = h.concierge.ok("list_webhooks", no_args()).await;
        (listed["subscriptions"][0]["deliveries"]["delivered"] == 2).then_some(listed)
    })
    .await;
    let text = listed.to_string();
    assert!(!text.contains(&secret), "list_webhooks shows the secret");
    assert!(!text.contains(&secret["whsec_".len()..]));
    assert_eq!(listed["subscriptions"][0]["status"], "active");
    assert_eq!(
        listed["subscriptions"][0]["last_delivery"]["status_code"],
        200
    );
    assert_eq!(receiver.arrived().len(), 2, "one request per event");
}

#[tokio::test]
async fn after_rotation_deliveries_verify_with_the_new_secret_only() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let (sub, old) = subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Before").await;
    let got = wait_accepted(&receiver, 1).await;
    assert!(hdls_signature_verifies(
        &old,
        &got[0].body,
        got[0].header("x-hdls-signature")
    ));
    let rotated = h
        .concierge
        .ok("rotate_webhook_secret", json!({ "id": sub }))
        .await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    create_account(&h.crm, "After").await;
    let got = wait_accepted(&receiver, 2).await;
    let after = &got[1];
    assert_eq!(after.json()["data"]["name"], "After");
    let signature = after.header("x-hdls-signature");
    assert!(hdls_signature_verifies(&new, &after.body, signature));
    assert!(!hdls_signature_verifies(&old, &after.body, signature));
    assert!(standard_signature_verifies(&new, after));
    assert!(!standard_signature_verifies(&old, after));
}

#[tokio::test]
async fn filters_rollbacks_and_other_workspaces_deliver_nothing_extra() {
    let h = hooked().await;
    h.concierge
        .ok("install_product", json!({ "product": "contacts" }))
        .await;
    let contacts = h.env.client("/api/mcp/contacts", &h.owner_key).await;
    let crm_hook = Receiver::start().await;
    let contacts_hook = Receiver::start().await;
    // CRM: inserts into accounts only. Contacts: updates only.
    h.concierge
        .ok(
            "subscribe_webhook",
            json!({ "target_url": crm_hook.url, "schema_name": "crm", "event_types": ["insert"],
                    "tables": ["accounts"] }),
        )
        .await;
    subscribe(&h.concierge, &contacts_hook.url, "contacts", &["update"]).await;
    let unknown = h
        .concierge
        .err(
            "subscribe_webhook",
            json!({ "target_url": crm_hook.url, "schema_name": "crm", "event_types": ["insert"],
                    "tables": ["nope"] }),
        )
        .await;
    assert_eq!(unknown["code"], "invalid_input");
    assert_eq!(unknown["path"], "tables[0]");

    // Another workspace with its own subscription and receiver.
    let (other_ws, other_key) = h.env.workspace("Elsewhere").await;
    let other_hook = Receiver::start().await;
    let other = h.env.client("/api/mcp", &other_key).await;
    subscribe(&other, &other_hook.url, "crm", &["insert"]).await;
    let other_crm = h.env.client("/api/mcp/crm", &other_key).await;
    create_account(&other_crm, "Theirs").await;

    // A write rolled back records no event and delivers nothing.
    let mut rt = h.env.db.connect_as(hdls::db::RUNTIME_ROLE).await;
    let tx = rt.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL hdls.workspace_id = '{}'; SET LOCAL hdls.persona = 'agent'",
        h.ws
    ))
    .await
    .unwrap();
    tx.execute(
        "INSERT INTO crm.accounts (name, created_at, updated_at) VALUES ('Rolled back', now(), now())",
        &[],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    // Not matched: an account update (CRM wants inserts), a contacts insert and delete.
    let account = create_account(&h.crm, "Ours").await;
    h.crm
        .ok("update_account", json!({ "id": account, "name": "Ours 2" }))
        .await;
    let person = contacts
        .ok("create_contact", json!({ "name": "Ada" }))
        .await["contact"]["id"]
        .clone();
    contacts
        .ok("update_contact", json!({ "id": person, "name": "Ada L." }))
        .await;
    contacts.ok("delete_contact", json!({ "id": person })).await;
    // A marker last: once it is in, everything before it has been fanned out.
    create_account(&h.crm, "Marker").await;

    let crm_got = wait_accepted(&crm_hook, 2).await;
    let contacts_got = wait_accepted(&contacts_hook, 1).await;
    wait_accepted(&other_hook, 1).await;
    let names: HashSet<String> = crm_got
        .iter()
        .map(|r| r.json()["data"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        HashSet::from(["Ours".to_owned(), "Marker".to_owned()])
    );
    for r in &crm_got {
        assert_eq!(r.json()["type"], "crm.accounts.insert");
        assert_eq!(r.json()["workspace_id"], h.ws.to_string());
    }
    assert_eq!(contacts_got[0].json()["type"], "contacts.contacts.update");
    assert_eq!(contacts_got[0].json()["data"]["name"], "Ada L.");
    let theirs = other_hook.accepted();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].json()["workspace_id"], other_ws.to_string());
    // Every delivery row is accounted for: nothing further is pending anywhere.
    let su = h.env.db.connect_superuser().await;
    let made: i64 = su
        .query_one("SELECT count(*) FROM hdls.webhook_deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(made, 4, "deliveries made for exactly the matching events");
    assert_eq!(crm_hook.arrived().len(), 2);
    assert_eq!(contacts_hook.arrived().len(), 1);
}

#[tokio::test]
async fn a_500_then_200_is_retried_with_the_same_event_id() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    receiver.script(&[Reply::Status(500)]);
    let (sub, secret) = subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Retried").await;
    let failed = wait_delivery(&h.concierge, &sub, |d| d["attempts"] == 1).await;
    assert_eq!(failed["status"], "pending");
    assert_eq!(failed["last_status_code"], 500);
    assert_eq!(failed["last_error"], "HTTP 500");
    assert!(failed["next_attempt_at"].is_string());
    assert_eq!(receiver.accepted().len(), 0);
    // The first retry is due about 10 s later (server clock).
    h.env.clock.advance(time::Duration::seconds(13));
    h.env.app.webhooks.wake();
    let got = wait_accepted(&receiver, 1).await;
    let arrived = receiver.arrived();
    assert_eq!(arrived.len(), 2);
    assert_eq!(arrived[0].event_id(), arrived[1].event_id());
    assert_eq!(arrived[0].body, arrived[1].body, "the same body each time");
    assert!(hdls_signature_verifies(
        &secret,
        &got[0].body,
        got[0].header("x-hdls-signature")
    ));
    let done = wait_delivery(&h.concierge, &sub, |d| d["status"] == "delivered").await;
    assert_eq!(done["attempts"], 2);
}

#[tokio::test]
async fn gone_disables_the_subscription_until_enabled() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    receiver.script(&[Reply::Status(410)]);
    let (sub, _) = subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Gone").await;
    let failed = wait_delivery(&h.concierge, &sub, |d| d["status"] == "failed").await;
    assert_eq!(failed["last_status_code"], 410);
    let listed = h.concierge.ok("list_webhooks", no_args()).await;
    assert_eq!(listed["subscriptions"][0]["status"], "disabled");
    assert_eq!(
        listed["subscriptions"][0]["disabled_reason"],
        "the receiver answered 410 Gone"
    );
    // Disabled: new changes make no deliveries.
    create_account(&h.crm, "Unseen").await;
    assert_eq!(deliveries(&h.concierge, &sub).await.len(), 1);
    h.concierge.ok("enable_webhook", json!({ "id": sub })).await;
    create_account(&h.crm, "Seen").await;
    let got = wait_accepted(&receiver, 1).await;
    assert_eq!(got[0].json()["data"]["name"], "Seen");
}

#[tokio::test]
async fn five_days_of_failure_disable_the_subscription() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Reply::Status(503));
    let (sub, _) = subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Down").await;
    wait_delivery(&h.concierge, &sub, |d| d["attempts"] == 1).await;
    let listed = h.concierge.ok("list_webhooks", no_args()).await;
    assert_eq!(listed["subscriptions"][0]["status"], "active");
    assert!(listed["subscriptions"][0]["failing_since"].is_string());
    // Still failing six days later: the next failed attempt disables it.
    h.env.clock.advance(time::Duration::days(6));
    h.env.app.webhooks.wake();
    wait_delivery(&h.concierge, &sub, |d| d["attempts"] == 2).await;
    let listed = h.concierge.ok("list_webhooks", no_args()).await;
    assert_eq!(listed["subscriptions"][0]["status"], "disabled");
    assert_eq!(
        listed["subscriptions"][0]["disabled_reason"],
        "every delivery failed for 5 days"
    );
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_a_redirect_is_a_failure() {
    let h = hooked_with(true, Duration::from_secs(2)).await;
    let slow = Receiver::start().await;
    slow.script(&[Reply::Slow(Duration::from_secs(30))]);
    let (slow_sub, _) = subscribe(&h.concierge, &slow.url, "crm", &["insert"]).await;
    let moved = Receiver::start().await;
    moved.answer_by_default(Reply::Redirect);
    let (moved_sub, _) = subscribe(&h.concierge, &moved.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Patience").await;
    let timed_out = wait_delivery(&h.concierge, &slow_sub, |d| d["attempts"] == 1).await;
    assert_eq!(timed_out["status"], "pending");
    assert_eq!(timed_out["last_status_code"], Value::Null);
    let error = timed_out["last_error"].as_str().unwrap();
    assert!(error.contains("did not answer within 2 s"), "{error}");
    assert!(timed_out["last_duration_ms"].as_i64().unwrap() >= 1900);
    let redirected = wait_delivery(&h.concierge, &moved_sub, |d| d["attempts"] == 1).await;
    assert_eq!(redirected["status"], "pending");
    assert_eq!(redirected["last_status_code"], 302);
    assert!(
        redirected["last_error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed")
    );
    assert_eq!(moved.redirect_followed(), 0, "the redirect was followed");
    assert!(moved.accepted().is_empty());
}

#[tokio::test]
async fn the_guard_refuses_internal_targets_at_subscribe() {
    // No outbound allowance: loopback is as internal as anything else.
    let h = hooked_with(false, Duration::from_secs(5)).await;
    h.names.set("internal.test", &["10.0.0.5"]);
    h.names.set("mixed.test", &["93.184.216.34", "192.168.1.1"]);
    h.names.set("public.test", &["93.184.216.34"]);
    for target in [
        "http://169.254.169.254/latest/meta-data",
        "https://169.254.169.254/",
        "http://127.0.0.1/",
        "https://127.0.0.1:8443/hook",
        "http://[::1]/",
        "https://[::ffff:127.0.0.1]/",
        "https://internal.test/hook",
        "https://mixed.test/hook",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f000001/",
        "https://0x7f.1/",
    ] {
        let refused = h
            .concierge
            .err(
                "subscribe_webhook",
                json!({ "target_url": target, "schema_name": "crm", "event_types": ["insert"] }),
            )
            .await;
        assert_eq!(refused["code"], "invalid_input", "{target}: {refused}");
        assert_eq!(refused["path"], "target_url");
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("does not connect to"),
            "{target}: {message}"
        );
        assert!(!message.contains("10.0.0.5") && !message.contains("192.168"));
    }
    // A public address over plain http is refused for want of TLS; other schemes and
    // credentials in the URL are refused too.
    for (target, reason) in [
        ("http://public.test/hook", "must use https"),
        ("ftp://public.test/hook", "must use https"),
        ("https://user:pw@public.test/hook", "user name or password"),
        ("https://nowhere.test/hook", "could not resolve"),
    ] {
        let refused = h
            .concierge
            .err(
                "subscribe_webhook",
                json!({ "target_url": target, "schema_name": "crm", "event_types": ["insert"] }),
            )
            .await;
        assert_eq!(refused["code"], "invalid_input", "{target}");
        assert!(
            refused["message"].as_str().unwrap().contains(reason),
            "{target}: {refused}"
        );
    }
    // A public https target is accepted.
    subscribe(&h.concierge, "https://public.test/hook", "crm", &["insert"]).await;
}

#[tokio::test]
async fn a_name_that_rebinds_after_subscribe_is_refused_at_delivery() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let port = receiver.url.rsplit(':').next().unwrap().to_owned();
    h.names.set("rebind.test", &["127.0.0.1"]);
    let url = format!("http://rebind.test:{port}");
    let (sub, _) = subscribe(&h.concierge, &url, "crm", &["insert"]).await;
    // Now the name answers with the metadata service.
    h.names.set("rebind.test", &["169.254.169.254"]);
    create_account(&h.crm, "Rebound").await;
    let refused = wait_delivery(&h.concierge, &sub, |d| d["attempts"] == 1).await;
    assert_eq!(refused["status"], "pending", "retried later");
    let error = refused["last_error"].as_str().unwrap();
    assert!(
        error.contains("rebind.test resolves to an address hdls does not connect to"),
        "{error}"
    );
    assert!(!error.contains("169.254"), "{error}");
    assert!(receiver.arrived().is_empty());
}

#[tokio::test]
async fn revoking_the_maker_disables_its_subscriptions() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let minted = h
        .concierge
        .ok("mint_api_key", json!({ "role": "member" }))
        .await;
    let member_key = minted["key"].as_str().unwrap().to_owned();
    let key_id = minted["key_id"].as_str().unwrap().to_owned();
    let member = h.env.client("/api/mcp", &member_key).await;
    let (sub, _) = subscribe(&member, &receiver.url, "crm", &["insert"]).await;
    // A subscription to a product the credential does not reach is refused.
    let crm_only = h
        .concierge
        .ok(
            "mint_api_key",
            json!({ "role": "member", "products": ["crm"] }),
        )
        .await;
    h.concierge
        .ok("install_product", json!({ "product": "support" }))
        .await;
    let narrow = h
        .env
        .client("/api/mcp", crm_only["key"].as_str().unwrap())
        .await;
    let refused = narrow
        .err(
            "subscribe_webhook",
            json!({ "target_url": receiver.url, "schema_name": "support", "event_types": ["insert"] }),
        )
        .await;
    assert_eq!(refused["code"], "forbidden");
    assert_eq!(refused["path"], "schema_name");

    h.concierge
        .ok("revoke_api_key", json!({ "key_id": key_id }))
        .await;
    let listed = h.concierge.ok("list_webhooks", no_args()).await;
    let mine = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sub.as_str())
        .unwrap()
        .clone();
    assert_eq!(mine["status"], "disabled");
    assert_eq!(
        mine["disabled_reason"],
        format!("creator revoked: {key_id}")
    );
    create_account(&h.crm, "After revocation").await;
    assert!(deliveries(&h.concierge, &sub).await.is_empty());
    let refused = h
        .concierge
        .err("enable_webhook", json!({ "id": sub }))
        .await;
    assert_eq!(refused["code"], "conflict");
}

#[tokio::test]
async fn members_manage_their_own_subscriptions_and_admins_all() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let a = h
        .env
        .client("/api/mcp", &h.env.key(h.ws, Role::Member).await)
        .await;
    let b = h
        .env
        .client("/api/mcp", &h.env.key(h.ws, Role::Member).await)
        .await;
    let reader = h
        .env
        .client("/api/mcp", &h.env.key(h.ws, Role::Reader).await)
        .await;
    let (sub, _) = subscribe(&a, &receiver.url, "crm", &["insert"]).await;
    assert_eq!(
        reader
            .err_code(
                "subscribe_webhook",
                json!({ "target_url": receiver.url, "schema_name": "crm", "event_types": ["insert"] })
            )
            .await,
        "forbidden"
    );
    let theirs = b.ok("list_webhooks", no_args()).await;
    assert_eq!(theirs["subscriptions"].as_array().unwrap().len(), 0);
    for tool in [
        "rotate_webhook_secret",
        "unsubscribe_webhook",
        "enable_webhook",
    ] {
        assert_eq!(b.err_code(tool, json!({ "id": sub })).await, "forbidden");
    }
    assert_eq!(
        b.err_code("list_webhook_deliveries", json!({ "id": sub }))
            .await,
        "forbidden"
    );
    let all = h.concierge.ok("list_webhooks", no_args()).await;
    assert_eq!(all["subscriptions"].as_array().unwrap().len(), 1);
    h.concierge
        .ok("rotate_webhook_secret", json!({ "id": sub }))
        .await;
    a.ok("unsubscribe_webhook", json!({ "id": sub })).await;
    assert_eq!(
        h.concierge
            .err_code("unsubscribe_webhook", json!({ "id": sub }))
            .await,
        "not_found"
    );
}

#[tokio::test]
async fn deliveries_carry_only_the_custom_fields_the_creator_sees() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let mine_key = h.env.key(h.ws, Role::Member).await;
    let theirs_key = h.env.key(h.ws, Role::Member).await;
    let mine = h.env.client("/api/mcp/crm", &mine_key).await;
    let theirs = h.env.client("/api/mcp/crm", &theirs_key).await;
    for (client, name) in [(&mine, "mine"), (&theirs, "theirs"), (&h.crm, "shared")] {
        client
            .ok(
                "add_custom_field",
                json!({ "entity": "account", "name": name, "type": "text" }),
            )
            .await;
    }
    h.crm
        .ok(
            "promote_custom_field",
            json!({ "entity": "account", "name": "shared" }),
        )
        .await;
    let concierge = h.env.client("/api/mcp", &mine_key).await;
    subscribe(&concierge, &receiver.url, "crm", &["update"]).await;
    let account = create_account(&h.crm, "Fielded").await;
    theirs
        .ok(
            "update_account",
            json!({ "id": account, "custom": { "theirs": "secret plans", "shared": "s" } }),
        )
        .await;
    mine.ok(
        "update_account",
        json!({ "id": account, "custom": { "mine": "my note" } }),
    )
    .await;
    let got = wait_accepted(&receiver, 2).await;
    for r in &got {
        let custom = &r.json()["data"]["custom"];
        assert!(custom.get("theirs").is_none(), "{custom}");
        assert!(!String::from_utf8_lossy(&r.body).contains("secret plans"));
    }
    let last = got
        .iter()
        .map(|r| r.json())
        .find(|b| b["data"]["custom"].get("mine").is_some())
        .expect("the update with my field");
    assert_eq!(last["data"]["custom"]["mine"], "my note");
    assert_eq!(last["data"]["custom"]["shared"], "s");
}

#[tokio::test]
async fn redelivery_sends_the_same_event_again() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let (sub, _) = subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Again").await;
    wait_accepted(&receiver, 1).await;
    let delivered = wait_delivery(&h.concierge, &sub, |d| d["status"] == "delivered").await;
    h.concierge
        .ok(
            "redeliver_webhook",
            json!({ "delivery_id": delivered["delivery_id"] }),
        )
        .await;
    let got = wait_accepted(&receiver, 2).await;
    assert_eq!(got[0].event_id(), got[1].event_id());
}

#[tokio::test]
async fn retention_removes_old_events_and_their_deliveries() {
    let h = hooked().await;
    let receiver = Receiver::start().await;
    subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Old").await;
    wait_accepted(&receiver, 1).await;
    let su = h.env.db.connect_superuser().await;
    let count = |table: &'static str| {
        let su = &su;
        async move {
            su.query_one(&format!("SELECT count(*) FROM hdls.{table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    eventually("the delivery recorded", WAIT, || async {
        let delivered: i64 = su
            .query_one(
                "SELECT count(*) FROM hdls.webhook_deliveries WHERE status = 'delivered'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (delivered == 1).then_some(())
    })
    .await;
    // Within the retention age nothing goes.
    let now = h.env.clock_now();
    assert_eq!(
        hdls::webhooks::worker::housekeeping(&h.env.app, now)
            .await
            .unwrap(),
        0
    );
    h.env.clock.advance(time::Duration::days(31));
    create_account(&h.crm, "New").await;
    wait_accepted(&receiver, 2).await;
    let removed = hdls::webhooks::worker::housekeeping(&h.env.app, h.env.clock.now())
        .await
        .unwrap();
    // The old account's event, and the workspace's first events (its pipeline stages).
    assert!(removed >= 1, "{removed}");
    let left: Vec<String> = su
        .query(
            "SELECT data->>'name' FROM hdls.change_events WHERE table_name = 'accounts'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["New"]);
    assert_eq!(count("change_events").await, 1);
    assert_eq!(count("webhook_deliveries").await, 1);
}

// ---------------------------------------------------------------------------------------
// Real processes: `kill -9` mid-delivery, and two servers on one database.

struct ServeProcess {
    child: Child,
    url: String,
}

impl ServeProcess {
    fn start(database_url: &str, data_dir: &std::path::Path) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_hdls"))
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--outbound-allow",
                "127.0.0.0/8",
                "--data-dir",
            ])
            .arg(data_dir)
            .env("HDLS_DATABASE_URL", database_url)
            // A short timeout gives a short lease (4 ×), so the test need not wait 60 s.
            .env("HDLS_WEBHOOK_TIMEOUT", "2")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hdls serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines.next().expect("serve printed its endpoints").unwrap();
            if let Some(rest) = line.trim().strip_prefix("concierge") {
                break rest.trim().trim_end_matches("/api/mcp").to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        ServeProcess { child, url }
    }

    async fn client(&self, path: &str, key: &str) -> Mcp {
        Mcp::connect(&format!("{}{path}", self.url), key).await
    }

    /// SIGKILL: no shutdown, no cleanup, claims left as they are.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database with one workspace, for servers run as child processes (no in-process
/// server, so no other worker delivers).
async fn database_with_workspace() -> (TestDb, Uuid, String) {
    let db = TestDb::create().await;
    let pools = hdls::db::Pools::open(&db.target).unwrap();
    let created =
        hdls::workspaces::create(&pools.runtime, "Processes", hdls::clock::SystemClock.now())
            .await
            .unwrap();
    (db, created.workspace_id, created.owner_key)
}

async fn event_ids(db: &TestDb, ws: Uuid) -> HashSet<String> {
    db.connect_superuser()
        .await
        .query(
            "SELECT event_id::text FROM hdls.change_events
             WHERE workspace_id = $1 AND table_name = 'accounts'",
            &[&ws],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_server_killed_mid_delivery_loses_no_event() {
    hdls::net::fetch::install_tls_provider();
    let (db, ws, key) = database_with_workspace().await;
    let dir = std::env::temp_dir().join(format!("hdls-crash-{}", Uuid::new_v4().simple()));
    let url = db.superuser_url();
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Reply::Stall);

    let first = ServeProcess::start(&url, &dir);
    first
        .client("/api/mcp", &key)
        .await
        .ok(
            "subscribe_webhook",
            json!({ "target_url": receiver.url, "schema_name": "crm", "event_types": ["insert"] }),
        )
        .await;
    let crm = first.client("/api/mcp/crm", &key).await;
    for i in 0..10 {
        create_account(&crm, &format!("Before crash {i}")).await;
    }
    // The server is mid-delivery: requests are at the receiver, unanswered.
    eventually("deliveries in flight", WAIT, || async {
        (!receiver.arrived().is_empty()).then_some(())
    })
    .await;
    assert!(receiver.accepted().is_empty());
    first.kill();

    receiver.answer_by_default(Reply::Status(200));
    let second = ServeProcess::start(&url, &dir);
    let crm = second.client("/api/mcp/crm", &key).await;
    for i in 0..5 {
        create_account(&crm, &format!("After restart {i}")).await;
    }
    let expected = event_ids(&db, ws).await;
    assert_eq!(expected.len(), 15);
    let delivered = eventually("every event delivered", Duration::from_secs(90), || async {
        let got: HashSet<String> = receiver.accepted().iter().map(Received::event_id).collect();
        (got.len() >= expected.len()).then_some(got)
    })
    .await;
    assert_eq!(delivered, expected, "every event at least once, none lost");
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn two_servers_deliver_each_event_once() {
    hdls::net::fetch::install_tls_provider();
    let (db, ws, key) = database_with_workspace().await;
    let dir = std::env::temp_dir().join(format!("hdls-pair-{}", Uuid::new_v4().simple()));
    let url = db.superuser_url();
    let receiver = Receiver::start().await;
    let servers = [
        ServeProcess::start(&url, &dir),
        ServeProcess::start(&url, &dir),
    ];
    servers[0]
        .client("/api/mcp", &key)
        .await
        .ok(
            "subscribe_webhook",
            json!({ "target_url": receiver.url, "schema_name": "crm", "event_types": ["insert"] }),
        )
        .await;
    let clients = [
        servers[0].client("/api/mcp/crm", &key).await,
        servers[1].client("/api/mcp/crm", &key).await,
    ];
    for i in 0..30 {
        create_account(&clients[i % 2], &format!("Account {i}")).await;
    }
    let su = db.connect_superuser().await;
    eventually(
        "every delivery recorded as delivered",
        Duration::from_secs(60),
        || async {
            let pending: i64 = su
                .query_one(
                    "SELECT count(*) FROM hdls.webhook_deliveries WHERE status <> 'delivered'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (pending == 0).then_some(())
        },
    )
    .await;
    let expected = event_ids(&db, ws).await;
    assert_eq!(expected.len(), 30);
    let arrived = receiver.arrived();
    let distinct: HashSet<String> = arrived.iter().map(Received::event_id).collect();
    assert_eq!(distinct, expected);
    assert_eq!(arrived.len(), 30, "an event was sent twice without a crash");
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a user with a stock receiver sees: a real delivery verifies with the Standard
/// Webhooks library (`standardwebhooks`, pinned in tests/interop/webhooks) and with the
/// README's standard-library check of `X-Hdls-Signature`, and the same body altered by one
/// byte verifies with neither.
#[tokio::test]
async fn a_stock_verification_library_accepts_the_signature() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/webhooks");
    let Some(python) = crate::harness::python_env_once(&dir) else {
        return;
    };
    let h = hooked().await;
    let receiver = Receiver::start().await;
    let (_, secret) = subscribe(&h.concierge, &receiver.url, "crm", &["insert"]).await;
    create_account(&h.crm, "Verified Ltd").await;
    let delivery = wait_accepted(&receiver, 1).await.remove(0);
    let input = json!({
        "secret": secret,
        "headers": delivery.headers,
        "body_b64": STANDARD.encode(&delivery.body),
    });
    let mut child = tokio::process::Command::new(&python)
        .arg("verify.py")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("ok: verified {}", delivery.event_id())
    );
}

/// A customer's writes (support's customer persona, which may not read subscriptions or the
/// outbox) still fan out to the team's subscriptions, signed like any other.
#[tokio::test]
async fn a_customers_ticket_is_delivered_to_the_teams_subscription() {
    let h = hooked().await;
    h.concierge
        .ok("install_product", json!({ "product": "support" }))
        .await;
    let receiver = Receiver::start().await;
    let (_, secret) = h
        .concierge
        .ok(
            "subscribe_webhook",
            json!({ "target_url": receiver.url, "schema_name": "support",
                    "event_types": ["insert"], "tables": ["tickets"] }),
        )
        .await
        .as_object()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["secret"].as_str().unwrap().to_owned(),
            )
        })
        .unwrap();
    let desk = h.env.client("/api/mcp/support", &h.owner_key).await;
    let requester = desk
        .ok(
            "create_requester",
            json!({ "email": "cat@customer.example" }),
        )
        .await["requester"]["id"]
        .clone();
    let key = desk
        .ok("mint_customer_key", json!({ "requester_id": requester }))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let customer = h.env.client("/api/mcp/support", &key).await;
    let ticket = customer
        .ok(
            "create_ticket",
            json!({ "values": { "subject": "Login broken on mobile", "body": "Since the update." } }),
        )
        .await["ticket"]["id"]
        .clone();
    let got = wait_accepted(&receiver, 1).await;
    let body = got[0].json();
    assert_eq!(body["type"], "support.tickets.insert");
    assert_eq!(body["data"]["id"], ticket);
    assert_eq!(body["data"]["requester_id"], requester);
    assert!(hdls_signature_verifies(
        &secret,
        &got[0].body,
        got[0].header("x-hdls-signature")
    ));
    assert!(standard_signature_verifies(&secret, &got[0]));
}
