-- Signed webhooks: subscriptions (standing credentials, bound by their creator), and one
-- delivery row per (change event, matching subscription), made in the writer's own
-- transaction so a committed event can never miss its deliveries and a rolled-back one
-- never has any.
--
-- Who claims deliveries. The worker in every `hdls serve` must find due deliveries of every
-- workspace, but the runtime role sees one workspace per transaction (RLS, forced), and it
-- must never bypass that. So the one cross-workspace step is a narrow SECURITY DEFINER
-- function, `hdls.claim_webhook_deliveries`, owned by hdls_owner with a pinned search_path:
-- it leases due rows (FOR UPDATE SKIP LOCKED, so N processes never claim the same row) and
-- returns only (workspace_id, delivery id). The worker then opens an ordinary tenant Scope
-- (persona agent) per workspace to read the event and the subscription under RLS, and
-- another to record the outcome. The owner is bound by the forced policies like everyone,
-- so two policies below let it (and only it, only on this table, only SELECT and UPDATE)
-- see deliveries of every workspace; the owner could lift RLS on its own tables anyway, so
-- this grants nothing new, and it never reaches product data or secrets.
--
-- The lease is `next_attempt_at` itself: a claim moves it ahead by the lease (60 s by
-- default), so a delivery whose process died is due again when the lease runs out, and
-- nothing is marked delivered before the receiver's 2xx.

CREATE TABLE hdls.webhook_subscriptions (
    workspace_id    uuid NOT NULL DEFAULT hdls.current_workspace()
                    REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id              uuid NOT NULL,
    target_url      text NOT NULL CHECK (length(target_url) BETWEEN 8 AND 2000),
    schema_name     text NOT NULL CHECK (schema_name IN ('crm', 'support', 'contacts')),
    event_types     text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 3
                                           AND event_types <@ ARRAY['insert', 'update', 'delete']),
    -- NULL: every table of the schema.
    tables          text[] CHECK (cardinality(tables) BETWEEN 1 AND 50),
    description     text CHECK (length(description) <= 500),
    -- `whsec_…` sealed under the master key (AES-256-GCM, bound to workspace and id).
    secret_sealed   bytea NOT NULL,
    -- The credential that made it (`key_…`, `grant_…`, `cli`), and who that is as records
    -- name people (`user:<uuid>` or the key): "own" subscriptions, and whose personal custom
    -- fields its deliveries may carry.
    created_by      text NOT NULL CHECK (length(created_by) <= 200),
    author          text NOT NULL CHECK (length(author) <= 200),
    -- Its maker, as on hdls.api_keys (V6): revoking that credential disables it.
    parent_key_id   text CHECK (parent_key_id ~ '^[0-9a-f]{16}$'),
    parent_grant_id uuid,
    CONSTRAINT one_parent CHECK (parent_key_id IS NULL OR parent_grant_id IS NULL),
    -- No later than its maker's own expiry (the credentials rule).
    expires_at      timestamptz,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_at     timestamptz,
    disabled_reason text CHECK (length(disabled_reason) <= 200),
    -- The first failed attempt since the last success; sustained failure disables.
    failing_since   timestamptz,
    created_at      timestamptz NOT NULL,
    secret_rotated_at timestamptz,
    PRIMARY KEY (workspace_id, id)
);
-- The fan-out trigger's lookup on every change event.
CREATE INDEX webhook_subscriptions_match ON hdls.webhook_subscriptions (workspace_id, schema_name)
    WHERE status = 'active';
CREATE INDEX webhook_subscriptions_parent_key ON hdls.webhook_subscriptions (workspace_id, parent_key_id)
    WHERE parent_key_id IS NOT NULL;
CREATE INDEX webhook_subscriptions_parent_grant ON hdls.webhook_subscriptions (workspace_id, parent_grant_id)
    WHERE parent_grant_id IS NOT NULL;
ALTER TABLE hdls.webhook_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.webhook_subscriptions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.webhook_subscriptions
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
-- Agents only: a customer transaction never reads or writes a subscription.
CREATE POLICY persona ON hdls.webhook_subscriptions AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent()) WITH CHECK (hdls.acting_as_agent());
GRANT SELECT, INSERT, DELETE ON hdls.webhook_subscriptions TO hdls_runtime;
GRANT UPDATE (target_url, secret_sealed, secret_rotated_at, status, disabled_at, disabled_reason,
              failing_since) ON hdls.webhook_subscriptions TO hdls_runtime;

CREATE TABLE hdls.webhook_deliveries (
    workspace_id     uuid NOT NULL DEFAULT hdls.current_workspace(),
    id               uuid NOT NULL,
    subscription_id  uuid NOT NULL,
    event_id         uuid NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts made; the body and its event id are the same on every one.
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When it is next due. A claim moves it ahead by the lease (see the top of this file).
    next_attempt_at  timestamptz NOT NULL,
    claimed_at       timestamptz,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text CHECK (length(last_error) <= 300),
    last_duration_ms integer,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    PRIMARY KEY (workspace_id, id),
    -- Also serves the foreign key to the event (its cascade looks deliveries up by event).
    UNIQUE (workspace_id, event_id, subscription_id),
    FOREIGN KEY (workspace_id, subscription_id)
        REFERENCES hdls.webhook_subscriptions (workspace_id, id) ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, event_id)
        REFERENCES hdls.change_events (workspace_id, event_id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_by_subscription ON hdls.webhook_deliveries (workspace_id, subscription_id, id);
-- The one index that does not lead with workspace_id: it serves the claim, the only
-- cross-workspace query, which takes the earliest due rows of all workspaces. Led by
-- workspace_id it would have to read every pending row (retries scheduled days ahead
-- included) on every claim. It is not unique, so it reveals nothing across tenants; on Citus
-- each shard has its own and the claim fans out to all of them.
CREATE INDEX webhook_deliveries_due ON hdls.webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
ALTER TABLE hdls.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.webhook_deliveries
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
CREATE POLICY persona ON hdls.webhook_deliveries AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent()) WITH CHECK (hdls.acting_as_agent());
-- The claim function (SECURITY DEFINER, below) runs as the owner.
CREATE POLICY dispatch_read ON hdls.webhook_deliveries FOR SELECT TO hdls_owner USING (true);
CREATE POLICY dispatch_claim ON hdls.webhook_deliveries FOR UPDATE TO hdls_owner
    USING (true) WITH CHECK (true);
-- Rows are made by the fan-out trigger and removed with their event or subscription; the
-- runtime reads them and records attempts.
GRANT SELECT ON hdls.webhook_deliveries TO hdls_runtime;
GRANT UPDATE (status, attempts, next_attempt_at, claimed_at, last_attempt_at, last_status_code,
              last_error, last_duration_ms, delivered_at) ON hdls.webhook_deliveries TO hdls_runtime;

-- Fan-out: each change event becomes one delivery per matching active subscription, in the
-- writer's transaction. No NOTIFY: it takes a lock at commit that serialises every notifying
-- transaction; the process that served the write wakes its own worker after the commit, and
-- every worker also looks for due deliveries on a timer.
-- SECURITY DEFINER because a customer's writes (support) record events too, and a customer
-- transaction may not read subscriptions; it reads only the new event row it is handed and
-- the subscriptions of that event's workspace (the tenant policy still applies: the
-- transaction's workspace is the event's).
CREATE FUNCTION hdls.fan_out_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
    INSERT INTO hdls.webhook_deliveries
        (workspace_id, id, subscription_id, event_id, next_attempt_at, created_at)
    SELECT NEW.workspace_id, hdls.uuid_v7(NEW.occurred_at), s.id, NEW.event_id,
           NEW.occurred_at, NEW.occurred_at
    FROM hdls.webhook_subscriptions s
    WHERE s.workspace_id = NEW.workspace_id AND s.schema_name = NEW.schema_name
      AND s.status = 'active'
      AND NEW.op = ANY (s.event_types)
      AND (s.tables IS NULL OR NEW.table_name = ANY (s.tables))
      AND (s.expires_at IS NULL OR s.expires_at > NEW.occurred_at);
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION hdls.fan_out_change() FROM PUBLIC;
CREATE TRIGGER fan_out AFTER INSERT ON hdls.change_events
    FOR EACH ROW EXECUTE FUNCTION hdls.fan_out_change();

-- The claim: up to `max_rows` due deliveries of any workspace, earliest first, leased until
-- `lease_until`. Returns ids only; everything else is read under RLS afterwards.
CREATE FUNCTION hdls.claim_webhook_deliveries(at timestamptz, lease_until timestamptz, max_rows integer)
    RETURNS TABLE (workspace_id uuid, delivery_id uuid)
    LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    UPDATE hdls.webhook_deliveries d
    SET next_attempt_at = lease_until, claimed_at = at
    FROM (SELECT q.workspace_id, q.id FROM hdls.webhook_deliveries q
          WHERE q.status = 'pending' AND q.next_attempt_at <= at
          ORDER BY q.next_attempt_at
          LIMIT least(greatest(max_rows, 0), 500)
          FOR UPDATE SKIP LOCKED) due
    WHERE d.workspace_id = due.workspace_id AND d.id = due.id
    RETURNING d.workspace_id, d.id
$$;
REVOKE EXECUTE ON FUNCTION hdls.claim_webhook_deliveries(timestamptz, timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hdls.claim_webhook_deliveries(timestamptz, timestamptz, integer) TO hdls_runtime;

-- Retention: removes the current workspace's change events older than `before` (and with
-- them their deliveries) unless a delivery of theirs is still pending. The runtime role can
-- never remove an event itself (V7); this runs in the caller's tenant transaction (the
-- tenant policy binds the owner too), so it touches one workspace, the caller's.
CREATE FUNCTION hdls.purge_change_events(before timestamptz, before_id uuid)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    removed bigint;
BEGIN
    DELETE FROM hdls.change_events e
    WHERE e.workspace_id = hdls.current_workspace()
      AND e.event_id < before_id AND e.occurred_at < before
      AND NOT EXISTS (SELECT 1 FROM hdls.webhook_deliveries d
                      WHERE d.workspace_id = e.workspace_id AND d.event_id = e.event_id
                        AND d.status = 'pending');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;
REVOKE EXECUTE ON FUNCTION hdls.purge_change_events(timestamptz, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hdls.purge_change_events(timestamptz, uuid) TO hdls_runtime;

-- A subscription is a standing credential: revoking the key or connection that made it (by
-- any path: revoke_api_key, the cascade of V6, revoke_connection, /oauth/revoke, a reused
-- refresh token, a new password, a removed member) disables it, with the reason. Triggers on
-- the same revocations as V6's, so every path that revokes a key or connection covers it.
CREATE FUNCTION hdls.disable_minted_webhooks() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    IF TG_TABLE_NAME = 'api_keys' THEN
        UPDATE hdls.webhook_subscriptions SET status = 'disabled', disabled_at = NEW.revoked_at,
               disabled_reason = left('creator revoked: key_' || NEW.key_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_key_id = NEW.key_id AND status = 'active';
    ELSE
        UPDATE hdls.webhook_subscriptions SET status = 'disabled', disabled_at = NEW.revoked_at,
               disabled_reason = left('creator revoked: grant_' || NEW.grant_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_grant_id = NEW.grant_id AND status = 'active';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER disable_minted_webhooks AFTER UPDATE OF revoked_at ON hdls.api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.disable_minted_webhooks();
CREATE TRIGGER disable_minted_webhooks AFTER UPDATE OF revoked_at ON hdls.oauth_grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.disable_minted_webhooks();
-- The credential path revokes connections as hdls_auth; it may disable what they made, and
-- read no more of a subscription than that needs (never the sealed secret).
GRANT SELECT (workspace_id, id, parent_key_id, parent_grant_id, status)
    ON hdls.webhook_subscriptions TO hdls_auth;
GRANT UPDATE (status, disabled_at, disabled_reason) ON hdls.webhook_subscriptions TO hdls_auth;
CREATE POLICY credential_path ON hdls.webhook_subscriptions FOR SELECT TO hdls_auth USING (true);
CREATE POLICY credential_path_disable ON hdls.webhook_subscriptions FOR UPDATE TO hdls_auth
    USING (true) WITH CHECK (status = 'disabled');

-- Subscribing needs member or higher: a person demoted to reader stops the subscriptions
-- their connections made (their keys keep their own, immutable, role).
CREATE FUNCTION hdls.disable_webhooks_of_demoted() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    UPDATE hdls.webhook_subscriptions s SET status = 'disabled', disabled_at = statement_timestamp(),
           disabled_reason = 'creator demoted to reader'
    WHERE s.workspace_id = NEW.workspace_id AND s.status = 'active'
      AND s.parent_grant_id IN (SELECT g.grant_id FROM hdls.oauth_grants g
                                WHERE g.workspace_id = NEW.workspace_id AND g.user_id = NEW.user_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER disable_webhooks_of_demoted AFTER UPDATE OF role ON hdls.members
    FOR EACH ROW WHEN (NEW.role = 'reader' AND OLD.role <> 'reader')
    EXECUTE FUNCTION hdls.disable_webhooks_of_demoted();
