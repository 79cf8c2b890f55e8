//! Support's customer isolation is the database's, not the tools': raw SQL as the runtime
//! role under customer settings (what the Scope stamps) sees only the customer's own
//! requester row, tickets and public entries, writes only as itself, and sees nothing at all
//! without a principal or a persona. An agent sees everything.

use hdls::db::RUNTIME_ROLE;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::harness::{TestEnv, assert_refused, statements};

/// The message of a refusal by row-level security's WITH CHECK.
const RLS_CHECK: &str = "violates row-level security policy";

/// Two customers' rows in one workspace, written as an agent.
struct Fixture {
    env: TestEnv,
    ws: Uuid,
    alice: Uuid,
    bob: Uuid,
    /// A requester without tickets (nothing refers to the row).
    carol: Uuid,
    alice_ticket: Uuid,
    bob_ticket: Uuid,
    /// On Alice's ticket: her opening, an internal note, a public agent reply.
    alice_opening: Uuid,
    alice_note: Uuid,
    alice_reply: Uuid,
    bob_opening: Uuid,
}

async fn fixture() -> Fixture {
    let env = TestEnv::start().await;
    let (ws, _) = env.workspace("RLS").await;
    let [
        alice,
        bob,
        carol,
        alice_ticket,
        bob_ticket,
        alice_opening,
        alice_note,
        alice_reply,
        bob_opening,
    ] = [(); 9].map(|_| Uuid::now_v7());
    let rt = env.db.connect_as(RUNTIME_ROLE).await;
    statements(&rt, &format!(
        "BEGIN;
         SET LOCAL hdls.workspace_id = '{ws}';
         SET LOCAL hdls.persona = 'agent';
         INSERT INTO support.requesters (id, email, created_at, updated_at)
         VALUES ('{alice}', 'alice@example.com', now(), now()), ('{bob}', 'bob@example.com', now(), now()),
                ('{carol}', 'carol@example.com', now(), now());
         INSERT INTO support.tickets (id, subject, requester_id)
         VALUES ('{alice_ticket}', 'Alice''s', '{alice}'), ('{bob_ticket}', 'Bob''s', '{bob}');
         INSERT INTO support.ticket_entries (id, ticket_id, kind, body, author)
         VALUES ('{alice_opening}', '{alice_ticket}', 'opening', 'help', 'requester:{alice}'),
                ('{alice_note}', '{alice_ticket}', 'internal_note', 'internal only', 'key_agent'),
                ('{alice_reply}', '{alice_ticket}', 'reply', 'public answer', 'key_agent'),
                ('{bob_opening}', '{bob_ticket}', 'opening', 'bob help', 'requester:{bob}');
         INSERT INTO support.sla_policies (priority, first_response_minutes, resolution_minutes, updated_at)
         VALUES ('urgent', 30, 120, now());
         COMMIT;"
    ))
    .await
    .unwrap();
    // Alice and Carol have customer accounts (a person bound to their requester).
    let alice_user = Uuid::now_v7();
    let carol_user = Uuid::now_v7();
    statements(
        &env.db.connect_superuser().await,
        &format!(
            "INSERT INTO hdls_identity.users (user_id, email, created_at)
             VALUES ('{alice_user}', 'alice@example.com', now()), ('{carol_user}', 'carol@example.com', now());
             INSERT INTO hdls.customer_accounts (workspace_id, user_id, requester_id, joined_at)
             VALUES ('{ws}', '{alice_user}', '{alice}', now()), ('{ws}', '{carol_user}', '{carol}', now());"
        ),
    )
    .await
    .unwrap();
    Fixture {
        env,
        ws,
        alice,
        bob,
        carol,
        alice_ticket,
        bob_ticket,
        alice_opening,
        alice_note,
        alice_reply,
        bob_opening,
    }
}

impl Fixture {
    /// A runtime-role connection inside a transaction with these settings (what the Scope
    /// stamps); `None` leaves a setting unset.
    async fn session(&self, persona: Option<&str>, principal: Option<Uuid>) -> Client {
        self.session_in(self.ws, persona, principal).await
    }

    async fn session_in(&self, ws: Uuid, persona: Option<&str>, principal: Option<Uuid>) -> Client {
        let rt = self.env.db.connect_as(RUNTIME_ROLE).await;
        let mut sql = format!("BEGIN; SET LOCAL hdls.workspace_id = '{ws}';");
        if let Some(persona) = persona {
            sql.push_str(&format!(" SET LOCAL hdls.persona = '{persona}';"));
        }
        if let Some(principal) = principal {
            sql.push_str(&format!(" SET LOCAL hdls.principal_id = '{principal}';"));
            // The call stamp a customer's Scope sets: who writes, for the author column.
            sql.push_str(&format!(
                " SET LOCAL hdls.call = 'key_0000000000000000 {} requester:{principal}';",
                self.env.clock_now().unix_timestamp() * 1000
            ));
        }
        statements(&rt, &sql).await.unwrap();
        rt
    }

    async fn alice(&self) -> Client {
        self.session(Some("customer"), Some(self.alice)).await
    }

    async fn superuser_count(&self, sql: &str) -> i64 {
        self.env
            .db
            .connect_superuser()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

async fn ids(client: &Client, sql: &str) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort();
    ids
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .get(0)
}

fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

const SUPPORT_TABLES: [&str; 6] = [
    "support.requesters",
    "support.tickets",
    "support.ticket_entries",
    "support.sla_policies",
    "hdls.customer_accounts",
    "hdls.change_events",
];

#[tokio::test]
async fn a_customer_reads_only_their_requester_tickets_and_public_entries() {
    let f = fixture().await;
    let alice = f.alice().await;
    assert_eq!(
        ids(&alice, "SELECT id FROM support.requesters").await,
        [f.alice]
    );
    assert_eq!(
        ids(&alice, "SELECT id FROM support.tickets").await,
        [f.alice_ticket]
    );
    assert_eq!(
        ids(&alice, "SELECT id FROM support.ticket_entries").await,
        sorted(vec![f.alice_opening, f.alice_reply])
    );
    // Asking for Bob's rows by id, or for the note by id, finds nothing.
    for sql in [
        format!(
            "SELECT id FROM support.tickets WHERE id = '{}'",
            f.bob_ticket
        ),
        format!("SELECT id FROM support.requesters WHERE id = '{}'", f.bob),
        format!(
            "SELECT id FROM support.ticket_entries WHERE id IN ('{}', '{}')",
            f.alice_note, f.bob_opening
        ),
        "SELECT id FROM support.ticket_entries WHERE kind = 'internal_note'".to_owned(),
    ] {
        assert!(ids(&alice, &sql).await.is_empty(), "{sql}");
    }
    assert_eq!(count(&alice, "hdls.customer_accounts").await, 1);
    // The outbox carries whole rows (the internal note among them) and the SLA policies are
    // the team's: a customer reads none of either.
    assert_eq!(count(&alice, "hdls.change_events").await, 0);
    assert_eq!(count(&alice, "support.sla_policies").await, 0);
    let bob = f.session(Some("customer"), Some(f.bob)).await;
    assert_eq!(
        ids(&bob, "SELECT id FROM support.tickets").await,
        [f.bob_ticket]
    );
    assert_eq!(
        ids(&bob, "SELECT id FROM support.ticket_entries").await,
        [f.bob_opening]
    );
    assert_eq!(count(&bob, "hdls.customer_accounts").await, 0);
    // Another workspace's settings with Alice's principal: nothing (the tenant policy).
    let (other_ws, _) = f.env.workspace("Other").await;
    let elsewhere = f
        .session_in(other_ws, Some("customer"), Some(f.alice))
        .await;
    for table in SUPPORT_TABLES {
        assert_eq!(count(&elsewhere, table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn without_a_principal_or_a_persona_every_support_table_is_empty() {
    let f = fixture().await;
    for (persona, principal) in [
        (Some("customer"), None),
        (None, None),
        (None, Some(f.alice)),
        (Some("somebody"), Some(f.alice)),
    ] {
        let session = f.session(persona, principal).await;
        for table in SUPPORT_TABLES {
            assert_eq!(
                count(&session, table).await,
                0,
                "{table} with persona {persona:?} principal {principal:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_agent_sees_everything() {
    let f = fixture().await;
    let agent = f.session(Some("agent"), None).await;
    assert_eq!(count(&agent, "support.requesters").await, 3);
    assert_eq!(count(&agent, "hdls.customer_accounts").await, 2);
    assert_eq!(count(&agent, "support.tickets").await, 2);
    assert_eq!(count(&agent, "support.ticket_entries").await, 4);
    assert_eq!(count(&agent, "support.sla_policies").await, 1);
    assert!(count(&agent, "hdls.change_events").await >= 9);
    assert_eq!(
        ids(
            &agent,
            "SELECT id FROM support.ticket_entries WHERE kind = 'internal_note'"
        )
        .await,
        [f.alice_note]
    );
}

#[tokio::test]
async fn a_customer_writes_only_as_themselves() {
    let f = fixture().await;
    let (alice_id, bob_ticket, alice_ticket) = (f.alice, f.bob_ticket, f.alice_ticket);
    let bob = f.bob;
    for (statement, code, reason) in [
        // A ticket for someone else.
        (
            format!(
                "INSERT INTO support.tickets (id, subject, requester_id) VALUES (gen_random_uuid(), 'x', '{bob}')"
            ),
            SqlState::INSUFFICIENT_PRIVILEGE,
            RLS_CHECK,
        ),
        // An entry on someone else's ticket, even claiming to be on their requester.
        (
            format!(
                "INSERT INTO support.ticket_entries (id, ticket_id, kind, body, requester_id)
                 VALUES (gen_random_uuid(), '{bob_ticket}', 'reply', 'hi', '{alice_id}')"
            ),
            SqlState::INSUFFICIENT_PRIVILEGE,
            RLS_CHECK,
        ),
        // An internal note, even on their own ticket and claiming to be an agent.
        (
            format!(
                "INSERT INTO support.ticket_entries (id, ticket_id, kind, body, author_kind)
                 VALUES (gen_random_uuid(), '{alice_ticket}', 'internal_note', 'x', 'agent')"
            ),
            SqlState::INSUFFICIENT_PRIVILEGE,
            RLS_CHECK,
        ),
        // Their own requester row (name, disabled flag) is the team's to change.
        (
            format!("UPDATE support.requesters SET name = 'Boss' WHERE id = '{alice_id}'"),
            SqlState::INSUFFICIENT_PRIVILEGE,
            RLS_CHECK,
        ),
        (
            "INSERT INTO support.requesters (id, email, created_at, updated_at)
             VALUES (gen_random_uuid(), 'new@example.com', now(), now())"
                .to_owned(),
            SqlState::INSUFFICIENT_PRIVILEGE,
            RLS_CHECK,
        ),
        // Their own ticket's subject, priority, assignee, tags, requester or a status other
        // than reopening: the trigger refuses.
        (
            format!("UPDATE support.tickets SET subject = 'changed' WHERE id = '{alice_ticket}'"),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "a customer cannot change this ticket",
        ),
        (
            format!("UPDATE support.tickets SET priority = 'urgent' WHERE id = '{alice_ticket}'"),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "a customer cannot change this ticket",
        ),
        (
            format!(
                "UPDATE support.tickets SET assignee = '00000000-0000-4000-8000-000000000001' WHERE id = '{alice_ticket}'"
            ),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "a customer cannot change this ticket",
        ),
        (
            format!("UPDATE support.tickets SET tags = '{{vip}}' WHERE id = '{alice_ticket}'"),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "a customer cannot change this ticket",
        ),
        (
            format!("UPDATE support.tickets SET status = 'resolved' WHERE id = '{alice_ticket}'"),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "a customer cannot change this ticket",
        ),
        (
            format!(
                "UPDATE support.tickets SET requester_id = '{bob}' WHERE id = '{alice_ticket}'"
            ),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "a customer cannot change this ticket",
        ),
        // A rating before the ticket is resolved.
        (
            format!("UPDATE support.tickets SET csat_score = 5 WHERE id = '{alice_ticket}'"),
            SqlState::CHECK_VIOLATION,
            "only a resolved ticket can be rated",
        ),
        // The thread is append-only.
        (
            format!(
                "UPDATE support.ticket_entries SET body = 'rewritten' WHERE id = '{}'",
                f.alice_opening
            ),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "append-only",
        ),
    ] {
        let alice = f.alice().await;
        let result = alice.batch_execute(&statement).await;
        let refused_code = result.as_ref().err().and_then(|e| e.code().cloned());
        if refused_code.as_ref() != Some(&code) {
            // Name the statement when the refusal is not the expected one.
            eprintln!("{statement}: {result:?}");
        }
        assert_refused(result, &code, reason, &statement);
    }

    // What a customer cannot see, they cannot change or delete: zero rows, no error.
    let alice = f.alice().await;
    for statement in [
        format!("UPDATE support.tickets SET status = 'open' WHERE id = '{bob_ticket}'"),
        format!("DELETE FROM support.tickets WHERE id = '{alice_ticket}'"),
        format!("DELETE FROM support.tickets WHERE id = '{bob_ticket}'"),
        format!("DELETE FROM support.ticket_entries WHERE ticket_id = '{alice_ticket}'"),
        "DELETE FROM support.ticket_entries".to_owned(),
        "DELETE FROM support.requesters".to_owned(),
        "DELETE FROM hdls.customer_accounts".to_owned(),
    ] {
        let changed = alice
            .execute(&statement, &[])
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
        assert_eq!(changed, 0, "{statement}");
    }
    alice.batch_execute("COMMIT").await.unwrap();
    // Nothing refers to Carol's requester row: only the policy keeps her from deleting it
    // (and with it her account and keys).
    let carol = f.session(Some("customer"), Some(f.carol)).await;
    for table in ["support.requesters", "hdls.customer_accounts"] {
        assert_eq!(count(&carol, table).await, 1, "{table}");
        let deleted = carol
            .execute(&format!("DELETE FROM {table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(deleted, 0, "{table}");
    }
    carol.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        f.superuser_count("SELECT count(*) FROM support.requesters")
            .await,
        3
    );
    assert_eq!(
        f.superuser_count("SELECT count(*) FROM hdls.customer_accounts")
            .await,
        2
    );
    assert_eq!(
        f.superuser_count("SELECT count(*) FROM support.ticket_entries")
            .await,
        4
    );
    assert_eq!(
        f.superuser_count("SELECT count(*) FROM support.tickets")
            .await,
        2
    );
}

#[tokio::test]
async fn a_customer_writes_their_own_rows_stamped_by_the_database() {
    let f = fixture().await;
    let alice = f.alice().await;
    // Forged author, author kind and requester are overwritten from the settings.
    let row = alice
        .query_one(
            &format!(
                "INSERT INTO support.ticket_entries (id, ticket_id, kind, body, author, author_kind, requester_id)
                 VALUES (gen_random_uuid(), '{}', 'reply', 'thanks', 'user:forged', 'agent', '{}')
                 RETURNING author, author_kind, requester_id",
                f.alice_ticket, f.bob
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), format!("requester:{}", f.alice));
    assert_eq!(row.get::<_, &str>(1), "customer");
    assert_eq!(row.get::<_, Uuid>(2), f.alice);
    let ticket: Uuid = alice
        .query_one(
            &format!(
                "INSERT INTO support.tickets (id, subject, requester_id)
                 VALUES (gen_random_uuid(), 'New', '{}') RETURNING id",
                f.alice
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    alice.batch_execute("COMMIT").await.unwrap();

    // Rated once, once resolved (by an agent).
    let agent = f.session(Some("agent"), None).await;
    agent
        .batch_execute(&format!(
            "UPDATE support.tickets SET status = 'resolved' WHERE id = '{ticket}'; COMMIT;"
        ))
        .await
        .unwrap();
    let alice = f.alice().await;
    alice
        .batch_execute(&format!(
            "UPDATE support.tickets SET csat_score = 5, csat_comment = 'great' WHERE id = '{ticket}'; COMMIT;"
        ))
        .await
        .unwrap();
    let alice = f.alice().await;
    assert_refused(
        alice
            .batch_execute(&format!(
                "UPDATE support.tickets SET csat_score = 1 WHERE id = '{ticket}'"
            ))
            .await,
        &SqlState::CHECK_VIOLATION,
        "rated already",
        "re-rating",
    );
    assert_eq!(
        f.superuser_count(&format!(
            "SELECT csat_score::bigint FROM support.tickets WHERE id = '{ticket}'"
        ))
        .await,
        5
    );
}
