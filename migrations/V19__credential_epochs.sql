-- Per-call cost (issue 15): credentials resolved once per process, checked on every call
-- inside the round trip the call makes anyway; admission stamped with SET LOCAL only.
--
-- Credential epochs. Each workspace has a counter that every change able to narrow (or
-- widen) what a credential of the workspace may do moves forward, in the same transaction as
-- the change: a key revoked, expired early or re-bound; an OAuth connection revoked or
-- forgotten; a member's role changed or the member removed; a customer account or requester
-- changed; a product installed or removed; the workspace renamed. A process keeps the
-- credentials it resolved with the epoch it read alongside them (src/auth/cache.rs) and
-- every call checks the epoch in the statement that opens or admits it, so a change made on
-- any node takes effect on the next call on every node, exactly as when each request
-- resolved its credential afresh. Changes are rare (people and admin actions), so the one
-- row per workspace is written rarely and read by primary key on every call.
CREATE TABLE hdls.credential_epochs (
    workspace_id uuid NOT NULL PRIMARY KEY DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    epoch        bigint NOT NULL DEFAULT 0
);
ALTER TABLE hdls.credential_epochs ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.credential_epochs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.credential_epochs
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
-- The credential path revokes connections and keys of any workspace (refresh reuse,
-- RFC 7009, a new password): its bumps follow.
CREATE POLICY credential_path ON hdls.credential_epochs TO hdls_auth USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE ON hdls.credential_epochs TO hdls_runtime, hdls_auth;

-- Existing workspaces get their row (the owner runs migrations; RLS is forced on it too).
ALTER TABLE hdls.credential_epochs NO FORCE ROW LEVEL SECURITY;
INSERT INTO hdls.credential_epochs (workspace_id) SELECT workspace_id FROM hdls.workspaces;
ALTER TABLE hdls.credential_epochs FORCE ROW LEVEL SECURITY;

-- A new workspace starts at epoch 0. A missing row means the workspace is gone, which a
-- cached credential must not survive (the check compares with IS DISTINCT FROM).
CREATE FUNCTION hdls.open_credential_epoch() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    INSERT INTO hdls.credential_epochs (workspace_id) VALUES (NEW.workspace_id)
    ON CONFLICT (workspace_id) DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER open_credential_epoch AFTER INSERT ON hdls.workspaces
    FOR EACH ROW EXECUTE FUNCTION hdls.open_credential_epoch();

-- Moves the changed row's workspace forward. Rows of one workspace only, as every trigger
-- here (DESIGN §3, scale-out).
CREATE FUNCTION hdls.bump_credential_epoch() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
DECLARE
    workspace uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.workspace_id ELSE NEW.workspace_id END;
BEGIN
    UPDATE hdls.credential_epochs SET epoch = epoch + 1 WHERE workspace_id = workspace;
    RETURN NULL;
END
$$;

-- Only the columns a resolved credential depends on: last_used_at, labels and reasons move
-- without invalidating anything.
CREATE TRIGGER credential_epoch AFTER UPDATE OF secret_hash, role, expires_at, revoked_at, products,
        persona, principal_id, data_source_id, data_source_schema ON hdls.api_keys
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch_delete AFTER DELETE ON hdls.api_keys
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch AFTER UPDATE OF user_id, products, revoked_at, persona, principal_id
        ON hdls.oauth_grants
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch_delete AFTER DELETE ON hdls.oauth_grants
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch AFTER UPDATE OR DELETE ON hdls.members
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch AFTER UPDATE OR DELETE ON hdls.customer_accounts
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch AFTER UPDATE OF disabled_at OR DELETE ON support.requesters
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch AFTER INSERT OR UPDATE OR DELETE ON hdls.installed_products
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();
CREATE TRIGGER credential_epoch AFTER UPDATE OF name ON hdls.workspaces
    FOR EACH ROW EXECUTE FUNCTION hdls.bump_credential_epoch();

-- One counter row per call instead of two. The per-minute window moves into the usage
-- ledger's row for the month (the window is always inside the month, since months start on
-- a minute), so admitting a call is one upsert of one row instead of an upsert of the
-- UNLOGGED window row and another of the ledger row (measured: the admission cost about as
-- much PostgreSQL time as the search it admitted). The window's count is now logged with the
-- ledger; it is written anyway, and losing it in a crash is as harmless as before.
DROP TABLE hdls.rate_windows;
ALTER TABLE hdls.usage_ledger
    ADD COLUMN window_start timestamptz,
    ADD COLUMN window_calls integer NOT NULL DEFAULT 0 CHECK (window_calls >= 0);
GRANT UPDATE (window_start, window_calls) ON hdls.usage_ledger TO hdls_runtime;

-- Admission, stamped with SET LOCAL by its caller (src/db/scope.rs) rather than by
-- set_config() here: Citus forwards only SET LOCAL to the workers (DESIGN §3). The
-- workspace is an argument (so Citus can delegate the call to the workspace's shard) and
-- every write names it; the time is an argument, never now(), in the upsert.
-- `expected_epoch` is the credential epoch the caller's credential was resolved at (NULL:
-- resolved for this very request); a different one refuses the call as 'credential' before
-- anything is counted, and the caller resolves the credential again.
-- The upsert counts the call in the minute and the month only if both have room, so a
-- refused call is counted nowhere; its row lock makes the limits exact across any number of
-- hdls processes.
DROP FUNCTION hdls.admit_call(uuid, timestamptz);
CREATE FUNCTION hdls.admit_call(workspace uuid, at timestamptz, expected_epoch bigint,
                                OUT allowed boolean, OUT refused_window text,
                                OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
DECLARE
    plan_name text;
    per_minute integer;
    budget bigint;
    minute_start timestamptz := date_trunc('minute', at, 'UTC');
    month_start date := date_trunc('month', at, 'UTC')::date;
    counted hdls.usage_ledger%ROWTYPE;
BEGIN
    IF expected_epoch IS NOT NULL AND expected_epoch IS DISTINCT FROM
            (SELECT e.epoch FROM hdls.credential_epochs e WHERE e.workspace_id = workspace) THEN
        allowed := false; refused_window := 'credential'; call_limit := 0; retry_after_s := 0;
        RETURN;
    END IF;
    -- Scalar lookups, not an outer join to the plans (a reference table under Citus).
    SELECT w.plan INTO plan_name FROM hdls.workspaces w WHERE w.workspace_id = workspace;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no workspace in scope' USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT p.per_minute, p.monthly_budget INTO per_minute, budget
    FROM hdls_catalog.plans p WHERE p.name = plan_name;
    per_minute := coalesce(per_minute, 120);

    INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls)
    VALUES (workspace, month_start, 1, at, minute_start, 1)
    ON CONFLICT (workspace_id, period) DO UPDATE
        SET calls = u.calls + 1,
            updated_at = excluded.updated_at,
            window_start = excluded.window_start,
            window_calls = CASE WHEN u.window_start = excluded.window_start
                                THEN u.window_calls + 1 ELSE 1 END
        WHERE (u.window_start IS DISTINCT FROM excluded.window_start OR u.window_calls < per_minute)
          AND (budget IS NULL OR u.calls < budget)
    RETURNING u.* INTO counted;
    IF counted.workspace_id IS NOT NULL THEN
        allowed := true;
        RETURN;
    END IF;

    -- Refused (only the refusal pays for a second look): which window is full?
    SELECT * INTO counted FROM hdls.usage_ledger u
    WHERE u.workspace_id = workspace AND u.period = month_start;
    allowed := false;
    IF counted.window_start = minute_start AND counted.window_calls >= per_minute THEN
        refused_window := 'minute'; call_limit := per_minute;
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
    ELSE
        refused_window := 'month'; call_limit := budget;
        retry_after_s := greatest(1, ceil(extract(epoch FROM
            ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC' - at)))::integer);
    END IF;
END
$$;

-- A call the permit rule refused takes a slot in the minute window (never the month's
-- count, which bills calls that ran); with the workspace named for the same reasons.
DROP FUNCTION hdls.count_refusal(timestamptz);
CREATE FUNCTION hdls.count_refusal(workspace uuid, at timestamptz,
                                   OUT allowed boolean, OUT refused_window text,
                                   OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
DECLARE
    per_minute integer;
    minute_start timestamptz := date_trunc('minute', at, 'UTC');
    month_start date := date_trunc('month', at, 'UTC')::date;
    taken integer;
BEGIN
    per_minute := coalesce((SELECT p.per_minute FROM hdls_catalog.plans p
                            WHERE p.name = (SELECT w.plan FROM hdls.workspaces w
                                            WHERE w.workspace_id = workspace)), 120);
    INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls)
    VALUES (workspace, month_start, 0, at, minute_start, 1)
    ON CONFLICT (workspace_id, period) DO UPDATE
        SET window_start = excluded.window_start,
            window_calls = CASE WHEN u.window_start = excluded.window_start
                                THEN u.window_calls + 1 ELSE 1 END
        WHERE u.window_start IS DISTINCT FROM excluded.window_start OR u.window_calls < per_minute
    RETURNING u.window_calls INTO taken;
    allowed := taken IS NOT NULL;
    IF NOT allowed THEN
        refused_window := 'minute';
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
    END IF;
    call_limit := per_minute;
END
$$;
